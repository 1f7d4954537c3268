"""The `llm` plugin (simonw/llm): SmolVLM pairs as llm models, and `llm smolvlm add|remove|pairs`.

Registered through the `llm` entry point in smolcli's pyproject, so installing smolcli into
llm's environment (`llm install smolcli`) is enough:

    llm -m smolvlm-256m "Describe this" -a photo.jpg
    llm smolvlm add ./models/SmolVLM-256M-Instruct-Q8_0.gguf --name my-smolvlm
    llm chat -m my-smolvlm -f image:photo.jpg     # in the chat: !fragment image:other.jpg

llm's `-a` attaches images to a prompt; `llm chat` takes no attachments of its own, so the
`image:` fragment loader turns a path into one (on the command line with -f, in the chat with
`!fragment`).
"""

from __future__ import annotations

from pathlib import Path

import click
import llm

from smolcli.errors import SmolcliError
from smolcli.plugins.llm_model import SmolVLM, llm_spelling
from smolcli.plugins.llm_pairs import LlmPair, add_pair, added_pairs, all_pairs, remove_pair


@llm.hookimpl
def register_models(register):
    try:
        pairs = all_pairs(llm.user_dir())
    except SmolcliError as error:
        click.echo(f"smolvlm: {error}", err=True)  # a broken pairs file must not break every llm command
        return
    for pair in pairs:
        register(SmolVLM(pair), aliases=pair.aliases)


@llm.hookimpl
def register_fragment_loaders(register):
    register("image", image_attachment)


def image_attachment(argument: str) -> llm.Attachment:
    """`image:PATH` -> the image at PATH as an attachment (llm chat has no -a)."""
    path = Path(argument).expanduser()
    if not path.is_file():
        raise ValueError(f"image:{argument}: no such file")
    return llm.Attachment(path=str(path.resolve()))


@llm.hookimpl
def register_commands(cli):
    @cli.group(name="smolvlm")
    def smolvlm():
        """SmolVLM pairs run by smolcli"""

    @smolvlm.command(name="add")
    @click.argument("path", type=click.Path(exists=True, path_type=Path))
    @click.option("--name", help="Model id to use with -m (default: the path as given, made absolute)")
    @click.option("--mmproj", type=click.Path(exists=True, path_type=Path), help="The mmproj GGUF, if not beside it")
    def add(path: Path, name: str | None, mmproj: Path | None):
        """Offer a local pair (a language-model GGUF or a folder holding one pair) as an llm model."""
        from smolcli.api.resolve import model_files

        try:
            files = model_files(path.resolve(), mmproj.resolve() if mmproj else None)
        except SmolcliError as error:
            raise click.ClickException(error.text(llm_spelling)) from None
        model_id = name or str(path.resolve())
        found_mmproj = str(files.mmproj.path) if files.mmproj else None
        add_pair(llm.user_dir(), LlmPair(model_id, str(files.model.path), found_mmproj))
        click.echo(model_id)

    @smolvlm.command(name="remove")
    @click.argument("model_id")
    def remove(model_id: str):
        """Forget a pair added with `llm smolvlm add` (its files stay)."""
        if not remove_pair(llm.user_dir(), model_id):
            raise click.ClickException(f"{model_id}: not an added pair; `llm smolvlm pairs` lists them")

    @smolvlm.command(name="pairs")
    def pairs():
        """The pairs added with `llm smolvlm add`: model id, model file, mmproj file."""
        for pair in added_pairs(llm.user_dir()):
            click.echo(f"{pair.model_id}\t{pair.model}\t{pair.mmproj or '-'}")
