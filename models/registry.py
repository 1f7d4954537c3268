"""The released SmolVLM models by name: one declarative entry each.

Repo ids are Hugging Face's (HuggingFaceTB/...). Parameter counts are counted from the
release dimensions in smolvlm_shapes.py (tests check that they agree); tile size and
tokens per tile, what one image tile costs the language model's context, follow from its shape.

Prebuilt pairs are the publisher's ready GGUF files in ggml-org/<name>-GGUF (the
repos are listed in ggml-org's "SmolVLM GGUF" collection). Their file names come
from several independent download scripts that fetch them, not from the repos'
own listings; a name missing upstream fails `pull --prebuilt` with the GGUF files
the repo does hold.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from smolcli.models.smolvlm import SMOLVLM
from smolcli.models.smolvlm_shapes import SHAPES, image_seq_len

# what the Hub accepts as owner/name
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class PrebuiltPair:
    repo_id: str
    models: dict[str, str]  # language-model type -> file name
    mmprojs: dict[str, str]  # mmproj type -> file name


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    repo_id: str
    release: str
    variant: str
    parameters: int
    shape: str  # key of smolvlm_shapes.SHAPES
    default_quant: str
    default_mmproj_type: str
    family: str = SMOLVLM.name
    aliases: tuple[str, ...] = ()
    prebuilt: PrebuiltPair | None = field(default=None, compare=False)

    @property
    def tile_size(self) -> int:
        """Pixels per tile side: the vision encoder's image size."""
        return SHAPES[self.shape]["vision"]["image_size"]

    @property
    def tokens_per_tile(self) -> int:
        return image_seq_len(SHAPES[self.shape])

    def names(self) -> tuple[str, ...]:
        """Everything that finds this entry: its name, aliases, repo ids, and repo names without the owner."""
        given = (self.name, *self.aliases, self.repo_id)
        return tuple(dict.fromkeys(given + tuple(name.split("/")[1] for name in given if "/" in name)))


def _ggml_org(stem: str, models: tuple[str, ...], mmprojs: tuple[str, ...]) -> PrebuiltPair:
    """ggml-org names files <stem>-<type>.gguf and mmproj-<stem>-<type>.gguf, with f16 in lower case."""

    def file_type(qtype: str) -> str:
        return "f16" if qtype == "F16" else qtype

    return PrebuiltPair(
        f"ggml-org/{stem}-GGUF",
        {q: f"{stem}-{file_type(q)}.gguf" for q in models},
        {q: f"mmproj-{stem}-{file_type(q)}.gguf" for q in mmprojs},
    )


# The 256M and 500M text models are 576 and 960 wide: not multiples of 256, so K-quants
# fall back to legacy types anyway, and at this size Q8_0 keeps quality for little disk.
# The 2.2B models take K-quants; their 400M-parameter vision encoder halves in Q8_0.
SMALL = {"default_quant": "Q8_0", "default_mmproj_type": "F16"}
LARGE = {"default_quant": "Q4_K_M", "default_mmproj_type": "Q8_0"}

MODELS: tuple[RegisteredModel, ...] = (
    RegisteredModel(
        "smolvlm-256m",
        "HuggingFaceTB/SmolVLM-256M-Instruct",
        "SmolVLM",
        "Instruct",
        256_484_928,
        shape="256m",
        **SMALL,
        prebuilt=_ggml_org("SmolVLM-256M-Instruct", ("Q8_0", "F16"), ("Q8_0", "F16")),
    ),
    RegisteredModel(
        "smolvlm-256m-base",
        "HuggingFaceTB/SmolVLM-256M-Base",
        "SmolVLM",
        "Base",
        256_484_928,
        shape="256m",
        **SMALL,
    ),
    RegisteredModel(
        "smolvlm-500m",
        "HuggingFaceTB/SmolVLM-500M-Instruct",
        "SmolVLM",
        "Instruct",
        507_482_304,
        shape="500m",
        **SMALL,
        prebuilt=_ggml_org("SmolVLM-500M-Instruct", ("Q8_0",), ("F16", "Q8_0")),
    ),
    RegisteredModel(
        "smolvlm-500m-base",
        "HuggingFaceTB/SmolVLM-500M-Base",
        "SmolVLM",
        "Base",
        507_482_304,
        shape="500m",
        **SMALL,
    ),
    RegisteredModel(
        "smolvlm-2.2b",
        "HuggingFaceTB/SmolVLM-Instruct",
        "SmolVLM",
        "Instruct",
        2_246_272_880,
        shape="2.2b",
        **LARGE,
        aliases=("smolvlm",),
        prebuilt=_ggml_org("SmolVLM-Instruct", ("Q4_K_M", "Q8_0"), ("Q8_0", "F16")),
    ),
    RegisteredModel(
        "smolvlm-2.2b-base",
        "HuggingFaceTB/SmolVLM-Base",
        "SmolVLM",
        "Base",
        2_246_272_880,
        shape="2.2b",
        **LARGE,
    ),
    RegisteredModel(
        "smolvlm-2.2b-synthetic",
        "HuggingFaceTB/SmolVLM-Synthetic",
        "SmolVLM",
        "Synthetic",
        2_246_272_880,
        shape="2.2b",
        **LARGE,
    ),
    # SmolVLM2's small releases are published as "Video-Instruct" (they take image sequences);
    # "SmolVLM2-256M/500M-Instruct" also appear in third-party code, pinned to the same commits:
    # kept as aliases (unconfirmed whether the Hub redirects one name to the other).
    RegisteredModel(
        "smolvlm2-256m",
        "HuggingFaceTB/SmolVLM2-256M-Video-Instruct",
        "SmolVLM2",
        "Video-Instruct",
        256_484_928,
        shape="256m",
        **SMALL,
        aliases=("smolvlm2-256m-video", "HuggingFaceTB/SmolVLM2-256M-Instruct"),
        prebuilt=_ggml_org("SmolVLM2-256M-Video-Instruct", ("Q8_0",), ("Q8_0", "F16")),
    ),
    RegisteredModel(
        "smolvlm2-500m",
        "HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
        "SmolVLM2",
        "Video-Instruct",
        507_482_304,
        shape="500m",
        **SMALL,
        aliases=("smolvlm2-500m-video", "HuggingFaceTB/SmolVLM2-500M-Instruct"),
        prebuilt=_ggml_org("SmolVLM2-500M-Video-Instruct", ("Q8_0", "F16"), ("Q8_0",)),
    ),
    RegisteredModel(
        "smolvlm2-2.2b",
        "HuggingFaceTB/SmolVLM2-2.2B-Instruct",
        "SmolVLM2",
        "Instruct",
        2_246_272_880,
        shape="2.2b",
        **LARGE,
        aliases=("smolvlm2",),
        prebuilt=_ggml_org("SmolVLM2-2.2B-Instruct", ("Q4_K_M",), ("Q8_0", "F16")),
    ),
    RegisteredModel(
        "smolvlm2-2.2b-base",
        "HuggingFaceTB/SmolVLM2-2.2B-Base",
        "SmolVLM2",
        "Base",
        2_246_272_880,
        shape="2.2b",
        **LARGE,
    ),
)


def find(text: str) -> RegisteredModel | None:
    """The entry whose name, alias or repo id this is (case does not matter)."""
    wanted = text.strip().lower()
    for model in MODELS:
        if wanted in (name.lower() for name in model.names()):
            return model
    return None


def close_names(text: str, limit: int = 3) -> list[str]:
    """Registry names that look like a mistyped `text`, best first."""
    by_lower = {name.lower(): model.name for model in MODELS for name in model.names()}
    matches = difflib.get_close_matches(text.strip().lower(), list(by_lower), n=limit * 3, cutoff=0.6)
    return list(dict.fromkeys(by_lower[match] for match in matches))[:limit]
