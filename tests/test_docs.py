"""The README stays a short front door and the docs/ pages stay true to the tree and the CLI.

What is checked: README.md's length and its two fresh-machine commands; every relative link (and its
anchor) in README.md and docs/*.md; every source path they name; every `smolcli COMMAND --option` they
show in code; and docs/cli.md against the Typer app's own commands and options, both ways.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import signal
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import typer

from smolcli.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 200
FRESH_MACHINE_COMMANDS = (
    "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/smolcli demo",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest",
)
# Folders whose paths the pages name from the repository root, and smolcli's sub-packages, which the
# pages often name without the leading smolcli/ (runtime/vision/onnx_graph.py).
TOP_FOLDERS = ("smolcli", "convert", "models", "benchmarks", "tests")
SMOLCLI_FOLDERS = tuple(path.name for path in (ROOT / "smolcli").iterdir() if (path / "__init__.py").exists())
SOURCE_PATH = re.compile(rf"(?<![\w/.-])((?:{'|'.join(TOP_FOLDERS + SMOLCLI_FOLDERS)})/[\w/*.-]*?\.py)(?![\w/])")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
OPTION = re.compile(r"^--?[A-Za-z][\w-]*$")
# Where a shell line stops being this command's arguments.
COMMAND_END = re.compile(r"\s(?:\||&&|;|#)\s|:::")


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@cache
def commands() -> dict[str, object]:
    """Each registered command by name; a group (cache) keeps its subcommands in .commands."""
    return dict(typer.main.get_command(app).commands)


def options_of(command: object) -> set[str]:
    """Every spelling of every option of a command (a group: of its subcommands too), and --help."""
    names = {"--help", "-h"}
    for param in getattr(command, "params", []):
        if param.param_type_name == "option":
            names.update(param.opts, param.secondary_opts)
    for sub in getattr(command, "commands", {}).values():
        names |= options_of(sub)
    return names


def code_of(text: str) -> list[str]:
    """The shell and Python code in a page: each line of its fenced blocks, and each inline code span."""
    fenced = [line for block in FENCE.findall(text) for line in block.splitlines()[1:-1]]
    return fenced + INLINE_CODE.findall(FENCE.sub("", text))


def smolcli_invocations(code: str) -> list[tuple[str, list[str]]]:
    """(command, the words after it) for each `smolcli COMMAND ...` in a line of code."""
    found = []
    for match in re.finditer(r"(?<![\w.-])smolcli\s+([a-z][\w-]*)", code):
        rest = code[match.end() :]
        rest = COMMAND_END.split(rest, maxsplit=1)[0]
        found.append((match.group(1), rest.split()))
    return found


def github_slug(heading: str) -> str:
    heading = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return heading.replace(" ", "-")


def anchors_of(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    slugs: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        slug, n = github_slug(heading), 1
        while slug in slugs:
            slug, n = f"{github_slug(heading)}-{n}", n + 1
        slugs.add(slug)
    return slugs


# --- the README -------------------------------------------------------------------------------


def test_readme_is_a_short_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move details to a docs/ page"


def test_readme_keeps_the_two_fresh_machine_commands_verbatim():
    code_lines = [line.strip() for line in code_of(README.read_text(encoding="utf-8"))]
    for command in FRESH_MACHINE_COMMANDS:
        assert command in code_lines, f"README.md lost the fresh-machine command: {command}"


def test_every_docs_page_is_linked_from_the_readme_or_another_page():
    linked = {
        (page.parent / target.split("#")[0]).resolve()
        for page in PAGES
        for target in LINK.findall(page.read_text(encoding="utf-8"))
        if not target.startswith(("http://", "https://", "#"))
    }
    orphans = [page_id(page) for page in DOCS.glob("*.md") if page.resolve() not in linked]
    assert not orphans, f"pages no other page links: {orphans}"


def test_each_feature_in_the_readme_links_its_docs_page():
    features = README.read_text(encoding="utf-8").split("\n## Features\n", 1)[1].split("\n## ", 1)[0]
    items = re.split(r"^- ", features, flags=re.M)[1:]
    assert len(items) >= 10
    unlinked = [item.split("\n")[0] for item in items if not re.search(r"\]\(docs/[\w-]+\.md(#[\w-]+)?\)", item)]
    assert not unlinked, f"features without their docs/ page: {unlinked}"


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=page_id)
def test_each_docs_page_opens_with_a_title_and_what_it_covers(page: Path):
    paragraphs = [part.strip() for part in page.read_text(encoding="utf-8").split("\n\n") if part.strip()]
    assert re.fullmatch(r"# [^\n]+", paragraphs[0]), f"{page_id(page)} does not start with one # title"
    assert not paragraphs[1].startswith(("#", "```", "|", "-")), f"{page_id(page)}: say what the page covers first"


# --- links and paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_point_to_files_and_headings_that_exist(page: Path):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors_of(file):
            broken.append(f"{target}: no heading with that anchor in {page_id(file)}")
    assert not broken, f"{page_id(page)}: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_source_paths_named_exist(page: Path):
    missing = []
    for name in set(SOURCE_PATH.findall(page.read_text(encoding="utf-8"))):
        root = ROOT if name.split("/")[0] in TOP_FOLDERS else ROOT / "smolcli"
        if not list(root.glob(name)):
            missing.append(name)
    assert not missing, f"{page_id(page)} names files that are not in the tree: {sorted(missing)}"


def test_the_path_pattern_finds_paths_both_ways():
    # Guards the guard: a pattern that matched nothing would pass every page.
    text = "see `smolcli/runtime/llama/engine.py`, runtime/vision/onnx_graph.py and tests/test_faults_*.py"
    assert set(SOURCE_PATH.findall(text)) == {
        "smolcli/runtime/llama/engine.py",
        "runtime/vision/onnx_graph.py",
        "tests/test_faults_*.py",
    }


# --- commands and options -----------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_smolcli_command_and_option_shown_in_code_exists(page: Path):
    unknown = []
    for code in code_of(page.read_text(encoding="utf-8")):
        for name, words in smolcli_invocations(code):
            if name not in commands():
                unknown.append(f"smolcli {name}: no such command")
                continue
            allowed = options_of(commands()[name])
            unknown += [f"smolcli {name} {word}" for word in words if OPTION.match(word) and word not in allowed]
    assert not unknown, f"{page_id(page)}: {unknown}"


def test_readme_names_only_real_commands_and_some_of_them():
    invocations = [
        name for code in code_of(README.read_text(encoding="utf-8")) for name, _ in smolcli_invocations(code)
    ]
    assert {"ask", "chat", "serve", "pull", "demo"} <= set(invocations)
    assert set(invocations) <= set(commands())


def cli_sections() -> list[tuple[str, set[str], str]]:
    """docs/cli.md's `## ` sections: heading, the commands it names, its text."""
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    sections = []
    for chunk in re.split(r"^## ", text, flags=re.M)[1:]:
        heading, _, body = chunk.partition("\n")
        named = {name for name in commands() if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", heading)}
        sections.append((heading, named, body))
    return sections


def options_in(body: str) -> set[str]:
    """Options a section documents: the first word of each inline code span that is an option."""
    spans = INLINE_CODE.findall(FENCE.sub("", body))
    return {span.split()[0] for span in spans if OPTION.match(span.split()[0])}


def test_cli_page_documents_only_options_that_its_commands_have():
    wrong = []
    for heading, named, body in cli_sections():
        for option in options_in(body):
            wrong += [
                f"{heading}: {option} is not an option of {name}"
                for name in named
                if option not in options_of(commands()[name])
            ]
    assert not wrong, wrong


def test_cli_page_has_a_section_for_every_command_and_names_every_option():
    sections = cli_sections()
    documented = {name for _, named, _ in sections for name in named}
    assert set(commands()) <= documented, f"commands without a section in docs/cli.md: {set(commands()) - documented}"
    missing = []
    for name, command in commands().items():
        named_here = set().union(*(options_in(body) for _, named, body in sections if name in named))
        for param in [*getattr(command, "params", [])]:
            if param.param_type_name == "option" and not set(param.opts) & named_here:
                missing.append(f"smolcli {name} {max(param.opts, key=len)}")
    assert not missing, f"options docs/cli.md does not describe: {missing}"


# --- benchmarks/speed.py keeps the hand-written measurements ------------------------------------


def test_speed_write_docs_replaces_only_its_own_section(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # speed.py imports measure.py, beside it
    spec = importlib.util.spec_from_file_location("speed_script", ROOT / "benchmarks" / "speed.py")
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    page = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    new = "<!-- shape 500m -->\nnew 500m figures\n<!-- /shape -->\n"
    written = speed.with_shape_section(page, "500m", new)
    assert "new 500m figures" in written and "## SmolVLM 500m shapes" not in written
    assert written.replace(new, "") == speed.SECTION.sub(lambda m: "" if m.group(1) == "500m" else m.group(0), page)
    tiny = speed.with_shape_section(page, "tiny", "<!-- shape tiny -->\ntiny figures\n<!-- /shape -->\n")
    assert tiny.index("tiny figures") < tiny.index("<!-- shape 256m -->")
    assert tiny.replace("<!-- shape tiny -->\ntiny figures\n<!-- /shape -->\n\n", "") == page
    assert speed.with_shape_section("", "256m", new).startswith(speed.PAGE_HEAD)


# --- the README's quickstarts run ----------------------------------------------------------------


def readme_blocks(language: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    return [block for lang, block in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S) if lang == language]


def on_the_tiny_pair(code: str, model: Path, image: Path) -> str:
    """README code with the registry name and the picture replaced by the test pair and a real image."""
    for name in ("photo.jpg", "scan.png"):
        code = code.replace(name, str(image))
    return code.replace("smolvlm-256m", str(model))


def test_readme_python_quickstart_runs(tiny_pair, images, capsys):
    model, _ = tiny_pair
    (quickstart,) = [block for block in readme_blocks("python") if "smolcli.load" in block]
    # A few tokens are enough to show the code runs; random weights would fill 256.
    short = quickstart.replace("max_tokens=64", "max_tokens=4").replace(
        'system="Be brief."', 'system="Be brief.", max_tokens=4'
    )
    assert short.count("max_tokens=4") == 2
    exec(compile(on_the_tiny_pair(short, model, images["photo"]), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "Usage(" in printed and "Timings(" in printed, printed


def test_readme_command_line_quickstart_runs(tiny_pair, images, tmp_path):
    model, _ = tiny_pair
    (quickstart,) = [block for block in readme_blocks("sh") if "smolcli ask" in block]
    local = [line for line in quickstart.splitlines() if re.search(r"smolcli (ask|chat)\b", line)]
    assert len(local) >= 3
    for line in local:
        command = on_the_tiny_pair(line.split("  #")[0], model, images["photo"])
        command = command.replace("smolcli ", f"{sys.executable} -m smolcli ") + " -n 4"
        result = subprocess.run(
            command, shell=True, input=b"Hi\n", capture_output=True, cwd=tmp_path, timeout=300, check=False
        )
        assert result.returncode == 0, (line, result.stderr.decode()[-2000:])
        assert result.stdout.strip(), line
        if "--json" in line:
            assert json.loads(result.stdout)["usage"]["completion_tokens"] == 4


def test_readme_serve_quickstart_answers(tiny_pair, images, tmp_path, capsys):
    from test_serve import start_process  # the real `smolcli serve`, on a free loopback port

    model, _ = tiny_pair
    (start,) = [line for block in readme_blocks("sh") for line in block.splitlines() if "smolcli serve" in line]
    assert start.split("#")[0].split() == ["smolcli", "serve", "-m", "smolvlm-256m"]
    (client,) = [block for block in readme_blocks("python") if "OpenAI(" in block]
    process, running = start_process(model, tmp_path, tmp_path / "serve.log")
    try:
        photo = base64.b64encode(images["photo"].read_bytes()).decode()
        code = client.replace("http://127.0.0.1:8080/v1", running.base + "/v1").replace("max_tokens=64", "max_tokens=4")
        code = code.replace("data:image/jpeg;base64,...", f"data:image/jpeg;base64,{photo}")
        exec(compile(on_the_tiny_pair(code, model, images["photo"]), "README.md", "exec"), {})
        assert capsys.readouterr().out.strip()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            exit_code = process.wait(timeout=30)
        finally:
            process.kill()
    assert exit_code == 0, (tmp_path / "serve.log").read_text()


# --- the library's keywords -------------------------------------------------------------------------


def test_python_page_lists_every_load_keyword_and_no_other():
    import dataclasses
    import inspect

    import smolcli
    from smolcli.api.options import GenerationSettings

    text = (DOCS / "python.md").read_text(encoding="utf-8")
    table = set(re.findall(r"^\| `(\w+)` \|", text, flags=re.M))
    settings = {field.name for field in dataclasses.fields(smolcli.LoadOptions)}
    parameters = set(inspect.signature(smolcli.load).parameters) - {"model"}
    assert settings <= table, f"load() keywords missing from docs/python.md: {settings - table}"
    assert table <= settings | parameters, (
        f"docs/python.md lists keywords load() does not take: {table - settings - parameters}"
    )
    generation = {field.name for field in dataclasses.fields(GenerationSettings)}
    ask = text.split("`Model.ask(prompt", 1)[1].split("\n\n", 1)[0]
    assert all(f"`{name}`" in ask or f"`{name}=" in ask for name in generation), "ask()'s settings in docs/python.md"
