"""A Hugging Face SmolVLM checkpoint folder: configs read, quirks resolved, tensors indexed and checked."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from smolcli.convert.safetensors_file import TensorEntry, read_header
from smolcli.errors import SmolcliError
from smolcli.models import family_for
from smolcli.models.family import ModelFamily
from smolcli.models.smolvlm_video import checkpoint_video_sampling

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise SmolcliError(f"{path.parent}: missing {path.name} ({what}); download the complete checkpoint")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SmolcliError(f"{path}: not valid JSON ({error}); re-download it") from None
    if not isinstance(value, dict):
        raise SmolcliError(f"{path}: expected a JSON object")
    return value


def read_optional_json(path: Path) -> dict:
    return read_json(path, "") if path.is_file() else {}


@dataclass
class Checkpoint:
    root: Path
    family: ModelFamily
    generation: str
    config: dict
    text: dict  # text hyper-parameters, defaults filled in
    vision: dict  # vision hyper-parameters, defaults filled in
    preprocessor: dict
    tensors: dict[str, TensorEntry] = field(repr=False)

    @property
    def scale_factor(self) -> int:
        return int(self.config["scale_factor"])

    @property
    def source_dtype(self) -> str:
        """The float type most weights are stored in (decides the lossless intermediate)."""
        counts: dict[str, int] = {}
        for entry in self.tensors.values():
            if len(entry.shape) >= 2:
                counts[entry.dtype] = counts.get(entry.dtype, 0) + entry.nbytes
        return max(counts, key=counts.__getitem__) if counts else "F32"

    def text_tensors(self) -> list[TensorEntry]:
        return [e for n, e in self.tensors.items() if not n.startswith(("model.vision_model.", "model.connector."))]

    def vision_tensors(self) -> list[TensorEntry]:
        return [e for n, e in self.tensors.items() if n.startswith(("model.vision_model.", "model.connector."))]


def open_checkpoint(source: Path) -> Checkpoint:
    root = Path(source)
    if not root.exists():
        raise SmolcliError(f"{root}: no such folder; give a local Hugging Face checkpoint folder")
    if not root.is_dir():
        raise SmolcliError(f"{root}: not a folder; give the checkpoint folder that holds config.json")

    config = read_json(root / "config.json", "the model configuration")
    architectures = config.get("architectures") or [None]
    family = family_for(architectures[0])
    generation = family.architectures[architectures[0]]

    config = {**family.top_defaults, **config}
    text = resolve_text_config(family, config.get("text_config") or {})
    vision = resolve_vision_config(family, config.get("vision_config") or {})
    preprocessor = resolve_preprocessor(family, root, vision)
    tensors = index_tensors(root, family)
    checkpoint = Checkpoint(root, family, generation, config, text, vision, preprocessor, tensors)
    check_shapes(checkpoint)
    return checkpoint


def resolve_text_config(family: ModelFamily, raw: dict) -> dict:
    architectures = raw.get("architectures") or [None]
    if architectures[0] not in family.text_architectures:
        raise SmolcliError(f"unsupported text model {architectures[0]!r} in config.json; expected a Llama text model")
    text = {**family.text_defaults, **{k: v for k, v in raw.items() if v is not None}}
    text.setdefault("num_key_value_heads", text["num_attention_heads"])
    text.setdefault("head_dim", text["hidden_size"] // text["num_attention_heads"])
    rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    text["rope_theta"] = float(rope.get("rope_theta", text["rope_theta"]))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "linear"):
        raise SmolcliError(f"unsupported rope scaling {rope_type!r} in config.json; smolcli handles default and linear")
    text["rope_type"] = rope_type
    text["rope_factor"] = float(rope.get("factor", 1.0))
    if text["hidden_act"] != "silu":
        raise SmolcliError(f"unsupported text activation {text['hidden_act']!r}; SmolVLM's Llama text model uses silu")
    return text


def resolve_vision_config(family: ModelFamily, raw: dict) -> dict:
    model_type = raw.get("model_type", family.vision_model_types[0])
    if model_type not in family.vision_model_types:
        raise SmolcliError(
            f"unsupported vision model_type {model_type!r}; expected one of {', '.join(family.vision_model_types)}"
        )
    vision = {**family.vision_defaults, **{k: v for k, v in raw.items() if v is not None}}
    if not vision["hidden_act"].startswith("gelu"):
        raise SmolcliError(f"unsupported vision activation {vision['hidden_act']!r}; SigLIP uses gelu")
    return vision


def resolve_preprocessor(family: ModelFamily, root: Path, vision: dict) -> dict:
    """Merge preprocessor_config.json with processor_config.json's image processor, as transformers does."""
    merged = {**family.preprocessor_defaults}
    merged.update(read_optional_json(root / "preprocessor_config.json"))
    processor = read_optional_json(root / "processor_config.json")
    merged.update(processor.get("image_processor", {}))
    merged.update({k: v for k, v in processor.items() if k not in ("image_processor", "video_processor")})
    video = processor.get("video_processor") or {}
    if isinstance(video, dict) and "video_sampling" in video:  # a newer processor_config.json nests it here
        merged["video_sampling"] = video["video_sampling"]
    size = merged.get("size") or {}
    merged["longest_edge"] = int(size.get("longest_edge", vision["image_size"]))
    tile = (merged.get("max_image_size") or {}).get("longest_edge", vision["image_size"])
    merged["tile_size"] = int(tile)
    if merged["tile_size"] != vision["image_size"]:
        raise SmolcliError(
            f"preprocessor tile size {merged['tile_size']} differs from the vision encoder's image_size "
            f"{vision['image_size']}; the checkpoint's configs disagree"
        )
    checkpoint_video_sampling(merged)  # a malformed video_sampling fails here, before anything is written
    return merged


def pickled_files(root: Path) -> list[str]:
    """Weights saved with pickle, which smolcli never loads (unpickling runs arbitrary code)."""
    return sorted(p.name for p in root.iterdir() if p.suffix in PICKLE_SUFFIXES)


def index_tensors(root: Path, family: ModelFamily) -> dict[str, TensorEntry]:
    index_path = root / "model.safetensors.index.json"
    if index_path.is_file():
        weight_map = read_json(index_path, "the shard index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise SmolcliError(f"{index_path}: has no weight_map; re-download it")
        files = sorted(set(weight_map.values()))
        for name in files:
            if not (root / name).is_file():
                raise SmolcliError(f"{root}: missing shard {name} listed in {index_path.name}; download it")
    else:
        files = sorted(p.name for p in root.glob("*.safetensors"))
        if not files:
            pickles = pickled_files(root)
            if pickles:
                raise SmolcliError(
                    f"{root}: only pickle checkpoints ({', '.join(pickles)}); smolcli never unpickles: "
                    "convert them to safetensors first, or download the safetensors release"
                )
            raise SmolcliError(f"{root}: no *.safetensors weights; download the complete checkpoint")

    tensors: dict[str, TensorEntry] = {}
    for name in files:
        for tensor_name, entry in read_header(root / name).items():
            if tensor_name.endswith(family.ignored_tensor_suffixes):
                continue
            tensors[tensor_name] = entry
    if index_path.is_file():
        missing = sorted(set(weight_map) - set(tensors))
        missing = [n for n in missing if not n.endswith(family.ignored_tensor_suffixes)]
        if missing:
            raise SmolcliError(f"{root}: tensor {missing[0]} is in the index but in no shard; re-download the shards")
    return tensors


def expand_blocks(table: dict[str, tuple[int, ...]], blocks: int) -> dict[str, tuple[int, ...]]:
    expanded = {}
    for pattern, shape in table.items():
        if "{bid}" in pattern:
            for bid in range(blocks):
                expanded[pattern.format(bid=bid)] = shape
        else:
            expanded[pattern] = shape
    return expanded


def check_shapes(checkpoint: Checkpoint) -> None:
    family, text, vision = checkpoint.family, checkpoint.text, checkpoint.vision
    expected = expand_blocks(family.text_shapes(text), text["num_hidden_layers"])
    expected.update(
        expand_blocks(
            family.vision_shapes(vision, checkpoint.scale_factor, text["hidden_size"]), vision["num_hidden_layers"]
        )
    )
    tied = text["tie_word_embeddings"] or checkpoint.config.get("tie_word_embeddings", False)
    if tied or "lm_head.weight" not in checkpoint.tensors:
        if not tied:
            raise SmolcliError(f"{checkpoint.root}: checkpoint is missing tensor lm_head.weight; re-download it")
        expected.pop("lm_head.weight")
        checkpoint.tensors.pop("lm_head.weight", None)

    for name, shape in expected.items():
        entry = checkpoint.tensors.get(name)
        if entry is None:
            raise SmolcliError(f"{checkpoint.root}: checkpoint is missing tensor {name}; re-download it")
        if entry.shape != shape:
            raise SmolcliError(
                f"{checkpoint.root}: tensor {name} has shape {list(entry.shape)} but config.json implies "
                f"{list(shape)}; the weights and config.json disagree"
            )
    unknown = sorted(set(checkpoint.tensors) - set(expected))
    if unknown:
        raise SmolcliError(
            f"{checkpoint.root}: unexpected tensor {unknown[0]} for {checkpoint.generation}; is this a SmolVLM checkpoint?"
        )


BLOCK_PATTERN = re.compile(r"\.(\d+)\.")


def gguf_name(table: dict[str, str], hf_name: str) -> tuple[str, str, int | None]:
    """(GGUF name, table pattern, block index) for a Hugging Face tensor name."""
    match = BLOCK_PATTERN.search(hf_name)
    if match:
        bid = int(match.group(1))
        pattern = hf_name[: match.start()] + ".{bid}." + hf_name[match.end() :]
        if pattern in table:
            return table[pattern].format(bid=bid), table[pattern], bid
    if hf_name in table:
        return table[hf_name], table[hf_name], None
    raise SmolcliError(f"no GGUF name for tensor {hf_name}")
