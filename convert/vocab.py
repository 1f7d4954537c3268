"""The tokenizer as llama.cpp wants it: a gpt2-style BPE vocabulary with its pre-tokenizer named."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf

from smolcli.convert.checkpoint import read_json, read_optional_json
from smolcli.errors import SmolcliError
from smolcli.models.family import ModelFamily


@dataclass
class Vocabulary:
    tokens: list[str]
    token_types: list[int]
    pre_tokenizer: str
    special: gguf.SpecialVocab
    add_bos: bool

    def write(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre_tokenizer)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        self.special.add_to_gguf(writer, quiet=True)
        if "bos" not in self.special.add_special_token:
            writer.add_add_bos_token(self.add_bos)


def matches(pattern, actual) -> bool:
    """True when every key the pattern names has the same value in actual (extra keys are ignored)."""
    if isinstance(pattern, dict):
        return isinstance(actual, dict) and all(matches(v, actual.get(k)) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(actual, list) and len(pattern) == len(actual) and all(map(matches, pattern, actual))
    return pattern == actual


def pre_tokenizer_name(family: ModelFamily, definition: dict | None) -> str:
    for name, pattern in family.pre_tokenizers.items():
        if matches(pattern, definition):
            return name
    kinds = definition.get("type") if isinstance(definition, dict) else definition
    raise SmolcliError(
        f"unsupported tokenizer pre-tokenizer ({kinds}); smolcli knows {', '.join(family.pre_tokenizers)} "
        "(SmolLM2's digits + byte-level split)"
    )


def load_vocabulary(root: Path, family: ModelFamily, vocab_size: int) -> Vocabulary:
    tokenizer = read_json(root / "tokenizer.json", "the tokenizer")
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE":
        raise SmolcliError(f"{root / 'tokenizer.json'}: a {model.get('type')} tokenizer; SmolVLM uses byte-level BPE")
    pre = pre_tokenizer_name(family, tokenizer.get("pre_tokenizer"))

    by_id: dict[int, tuple[str, int]] = {i: (t, gguf.TokenType.NORMAL) for t, i in model.get("vocab", {}).items()}
    for added in tokenizer.get("added_tokens", []):
        kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        by_id[int(added["id"])] = (added["content"], kind)
    if not by_id:
        raise SmolcliError(f"{root / 'tokenizer.json'}: the vocabulary is empty; re-download it")
    largest = max(by_id)
    if largest >= vocab_size:
        raise SmolcliError(
            f"{root / 'tokenizer.json'}: token id {largest} does not fit the model's {vocab_size} embeddings; "
            "tokenizer and config.json disagree"
        )

    tokens, types = [], []
    for i in range(vocab_size):
        token, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        tokens.append(token)
        types.append(int(kind))

    special = gguf.SpecialVocab(root, load_merges=True, n_vocab=vocab_size)
    tokenizer_config = read_optional_json(root / "tokenizer_config.json")
    return Vocabulary(tokens, types, pre, special, bool(tokenizer_config.get("add_bos_token", False)))
