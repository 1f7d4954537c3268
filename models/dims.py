"""The dimensions of a SmolVLM language model and vision encoder, from a config, a shape entry or a GGUF header."""

from __future__ import annotations

from dataclasses import dataclass

from gguf import Keys

from smolcli.errors import SmolcliError


@dataclass(frozen=True)
class TextDims:
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int

    @classmethod
    def from_config(cls, text: dict) -> "TextDims":
        """From a config.json text section or a smolvlm_shapes entry."""
        n_embd, n_head = text["hidden_size"], text["num_attention_heads"]
        return cls(
            text["num_hidden_layers"],
            n_embd,
            n_head,
            text["num_key_value_heads"],
            text.get("head_dim", n_embd // n_head),
            text["intermediate_size"],
            text["vocab_size"],
            int(text.get("max_position_embeddings", 0)),
        )

    @classmethod
    def from_gguf(cls, metadata: dict, vocab_entries: int | None = None) -> "TextDims":
        arch = metadata[Keys.General.ARCHITECTURE]

        def key(template: str) -> int:
            name = template.format(arch=arch)
            value = metadata.get(name)
            if value is None:
                raise SmolcliError(f"the model file lacks {name}; convert it again")
            return int(value)

        n_embd, n_head = key(Keys.LLM.EMBEDDING_LENGTH), key(Keys.Attention.HEAD_COUNT)
        head_dim = int(metadata.get(Keys.Attention.KEY_LENGTH.format(arch=arch), n_embd // n_head))
        n_vocab = int(metadata.get(Keys.LLM.VOCAB_SIZE.format(arch=arch), vocab_entries or 0))
        return cls(
            key(Keys.LLM.BLOCK_COUNT),
            n_embd,
            n_head,
            key(Keys.Attention.HEAD_COUNT_KV),
            head_dim,
            key(Keys.LLM.FEED_FORWARD_LENGTH),
            n_vocab,
            int(metadata.get(Keys.LLM.CONTEXT_LENGTH.format(arch=arch), 0)),
        )

    @property
    def n_embd_kv(self) -> int:
        return self.n_head_kv * self.head_dim

    def as_config(self) -> dict:
        return {
            "hidden_size": self.n_embd,
            "num_attention_heads": self.n_head,
            "num_key_value_heads": self.n_head_kv,
            "head_dim": self.head_dim,
            "intermediate_size": self.n_ff,
            "vocab_size": self.n_vocab,
        }


@dataclass(frozen=True)
class VisionDims:
    image_size: int
    patch_size: int
    n_embd: int
    n_ff: int
    n_layer: int
    scale_factor: int
    longest_edge: int
    projection_dim: int  # the language model's embedding width

    @classmethod
    def from_shape(cls, shape: dict) -> "VisionDims":
        """From a smolvlm_shapes entry."""
        vision = shape["vision"]
        return cls(
            vision["image_size"],
            vision["patch_size"],
            vision["hidden_size"],
            vision["intermediate_size"],
            vision["num_hidden_layers"],
            shape["scale_factor"],
            shape["longest_edge"],
            shape["text"]["hidden_size"],
        )

    @classmethod
    def from_gguf(cls, metadata: dict) -> "VisionDims":
        def key(name: str) -> int:
            value = metadata.get(name)
            if value is None:
                raise SmolcliError(f"the mmproj file lacks {name}; convert it again")
            return int(value)

        vision = Keys.ClipVision
        return cls(
            key(vision.IMAGE_SIZE),
            key(vision.PATCH_SIZE),
            key(vision.EMBEDDING_LENGTH),
            key(vision.FEED_FORWARD_LENGTH),
            key(vision.BLOCK_COUNT),
            key(vision.Projector.SCALE_FACTOR),
            key(vision.PREPROC_IMAGE_SIZE),
            key(vision.PROJECTION_DIM),
        )

    @property
    def patches_per_tile(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens_per_tile(self) -> int:
        return self.patches_per_tile // self.scale_factor**2
