"""A small byte-level BPE tokenizer with SmolVLM's special tokens, written as Hugging Face files.

Random-weight checkpoints (tests, the offline demo, benchmarks) need a tokenizer
of the real kind: SmolLM2's pre-tokenizer, byte-level BPE, the image tokens, and
"\\n\\n" as one token (mtmd looks it up by its text).
"""

from __future__ import annotations

from functools import lru_cache

LEADING_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
IMAGE_SPECIALS = ("<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>")
MAX_GRID = 6
# Each merge joins two existing tokens; the list favours the words of chat prompts.
MERGES = (
    ("Ċ", "Ċ"),
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("Ġ", "a"),
    ("e", "r"),
    ("o", "n"),
    ("Ġ", "i"),
    ("Ġ", "w"),
    ("a", "t"),
    ("i", "s"),
    ("Ġi", "s"),
    ("Ġw", "h"),
    ("Ġwh", "at"),
    ("U", "s"),
    ("Us", "er"),
    ("A", "s"),
    ("s", "i"),
    ("s", "t"),
    ("a", "n"),
    ("Ġ", "c"),
    ("o", "r"),
    ("e", "n"),
    ("Ġ", "s"),
    ("Ġ", "o"),
    ("i", "m"),
    ("Ġ", "p"),
    ("Ġ", "d"),
    ("e", "s"),
    ("o", "u"),
)
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# SmolVLM2's template: a video item stands as <video>, which the processor expands into its frames
VIDEO_CHAT_TEMPLATE = CHAT_TEMPLATE.replace(
    "{% elif line['type'] == 'image' %}{{ '<image>' }}",
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}",
)


@lru_cache(maxsize=1)
def byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each byte value, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def grid_tokens() -> list[str]:
    return [f"<row_{r}_col_{c}>" for r in range(1, MAX_GRID + 1) for c in range(1, MAX_GRID + 1)]


def tokenizer_json() -> dict:
    vocab: dict[str, int] = {}
    for token in (*LEADING_SPECIALS, *byte_symbols()):
        vocab[token] = len(vocab)
    for left, right in MERGES:
        assert left in vocab and right in vocab, (left, right)
        vocab.setdefault(left + right, len(vocab))
    added = [(token, vocab[token]) for token in LEADING_SPECIALS]
    next_id = len(vocab)
    for token in (*IMAGE_SPECIALS, *grid_tokens()):
        added.append((token, next_id))
        next_id += 1
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": t,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for t, i in added
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            ],
        },
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [f"{a} {b}" for a, b in MERGES],
        },
    }


def token_count() -> int:
    return max(t["id"] for t in tokenizer_json()["added_tokens"]) + 1


def tokenizer_config(chat_template_inline: bool) -> dict:
    config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": "<|im_start|>",
        "eos_token": "<end_of_utterance>",
        "pad_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "model_max_length": 16384,
        "tokenizer_class": "GPT2Tokenizer",
        "clean_up_tokenization_spaces": False,
        "additional_special_tokens": ["<fake_token_around_image>", "<image>", "<end_of_utterance>"],
    }
    if chat_template_inline:
        config["chat_template"] = CHAT_TEMPLATE
    return config
