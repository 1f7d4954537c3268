"""The registry of SmolVLM releases, model names on the command line, the local store and its index.

Nothing here touches a network: the store is filled by building tiny pairs locally.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from smolcli.cli.app import app
from smolcli.convert import MMPROJ_TYPES, QUANT_TYPES, convert_checkpoint
from smolcli.errors import SmolcliError
from smolcli.models import registry
from smolcli.models.smolvlm_shapes import SHAPES, image_seq_len
from smolcli.store.model_ref import ModelName, parse_model_ref
from smolcli.store.model_store import ModelStore, Provenance
from smolcli.synthetic.random_checkpoint import tensor_shapes, write_random_checkpoint
from smolcli.util.units import size_text

from cli_checks import one_line_error

runner = CliRunner()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """A private SMOLCLI_HOME: the store starts empty and the user's is never touched."""
    monkeypatch.setenv("SMOLCLI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


# --- the registry ---------------------------------------------------------------------------


def test_every_name_alias_and_repo_id_finds_one_entry():
    names = [name.lower() for model in registry.MODELS for name in {n.lower() for n in model.names()}]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("model", registry.MODELS, ids=lambda m: m.name)
def test_entries_agree_with_the_release_dimensions(model):
    assert model.repo_id.startswith("HuggingFaceTB/") and registry.REPO_ID.fullmatch(model.repo_id)
    assert model.release in ("SmolVLM", "SmolVLM2") and model.repo_id.split("/")[1].startswith(model.release + "-")
    shape = SHAPES[model.shape]
    assert model.tile_size == shape["vision"]["image_size"]
    assert model.tokens_per_tile == image_seq_len(shape)
    counted = sum(int(np.prod(dims)) for dims in tensor_shapes(shape).values())
    assert abs(model.parameters - counted) / counted < 0.01
    assert model.default_quant in QUANT_TYPES and model.default_mmproj_type in MMPROJ_TYPES


@pytest.mark.parametrize("model", [m for m in registry.MODELS if m.prebuilt], ids=lambda m: m.name)
def test_prebuilt_pairs_name_gguf_files_of_ggml_org(model):
    pair = model.prebuilt
    stem = model.repo_id.split("/")[1]
    assert pair.repo_id == f"ggml-org/{stem}-GGUF"
    assert pair.models and pair.mmprojs
    assert all(t in QUANT_TYPES and f.startswith(stem) and f.endswith(".gguf") for t, f in pair.models.items())
    assert all(t in MMPROJ_TYPES and f.startswith(f"mmproj-{stem}") for t, f in pair.mmprojs.items())


def test_the_family_is_covered():
    repos = {m.repo_id.split("/")[1] for m in registry.MODELS}
    for release in (
        "SmolVLM-256M-Instruct",
        "SmolVLM-256M-Base",
        "SmolVLM-500M-Instruct",
        "SmolVLM-500M-Base",
        "SmolVLM-Instruct",
        "SmolVLM-Base",
        "SmolVLM-Synthetic",
        "SmolVLM2-2.2B-Instruct",
        "SmolVLM2-256M-Video-Instruct",
        "SmolVLM2-500M-Video-Instruct",
    ):
        assert release in repos


def test_lookup_by_name_alias_or_repo_id_ignores_case():
    for text in ("smolvlm-256m", "SmolVLM-256M-Instruct", "huggingfacetb/smolvlm-256m-instruct", " SMOLVLM-256M "):
        assert registry.find(text).repo_id == "HuggingFaceTB/SmolVLM-256M-Instruct"
    assert registry.find("smolvlm2").name == "smolvlm2-2.2b"
    assert registry.find("llava") is None


def test_close_names_for_typos():
    assert registry.close_names("smolvlm-265m")[0] == "smolvlm-256m"
    assert registry.close_names("smolvml2-500m")[0] == "smolvlm2-500m"
    assert registry.close_names("qwen2-vl") == []


# --- what -m and pull accept -----------------------------------------------------------------


def test_paths_win_over_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_model_ref("missing.gguf") == Path("missing.gguf")
    assert parse_model_ref(str(tmp_path / "nowhere")) == tmp_path / "nowhere"
    assert parse_model_ref("./smolvlm-256m") == Path("smolvlm-256m")
    (tmp_path / "smolvlm-256m").mkdir()  # a folder that happens to carry a model's name
    assert parse_model_ref("smolvlm-256m") == Path("smolvlm-256m")


def test_names_and_repo_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ref = parse_model_ref("SmolVLM2-256M-Video-Instruct")
    assert isinstance(ref, ModelName) and ref.name == "smolvlm2-256m" and ref.entry is not None
    other = parse_model_ref("someone/SmolVLM-finetune")
    assert other == ModelName("someone/SmolVLM-finetune", "someone/SmolVLM-finetune", None)


def test_unknown_name_suggests_close_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SmolcliError, match="no such file or folder, nor a known model name; did you mean smolvlm-256m"):
        parse_model_ref("smolvlm-265m")
    result = runner.invoke(app, ["ask", "-m", "smolvm2-2.2b", "hello"])
    one_line_error(result, "smolvm2-2.2b", "did you mean smolvlm2-2.2b")
    one_line_error(runner.invoke(app, ["pull", "smollvm"]), "unknown model 'smollvm'", "did you mean")


# --- the store -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("registry")
    checkpoint = write_random_checkpoint(folder / "SmolVLM-256M-Instruct", "tiny", "SmolVLM", "BF16")
    result = convert_checkpoint(checkpoint, folder / "pair", "F16", "F16")
    return result.model, result.mmproj


def origin(
    quant="Q8_0", mmproj_type="F16", repo_id="HuggingFaceTB/SmolVLM-256M-Instruct", name="smolvlm-256m"
) -> Provenance:
    return Provenance(name, repo_id, "smolvlm", "converted", repo_id, "main", "c" * 40, quant, mmproj_type)


def copier(files: tuple[Path, Path]):
    def build(stage: Path) -> tuple[Path, Path]:
        return tuple(Path(shutil.copy(source, stage / source.name)) for source in files)

    return build


def index_bytes(store: ModelStore) -> bytes | None:
    return store.index_path.read_bytes() if store.index_path.exists() else None


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != ".lock") if root.exists() else []


def test_store_adds_a_whole_pair_and_indexes_it(tiny_files, home):
    store = ModelStore()
    assert store.root == home / "models" and store.entries() == []
    entry = store.add(origin(), copier(tiny_files))
    assert store.entries() == [entry]
    assert store.model_path(entry).read_bytes() == tiny_files[0].read_bytes()
    assert entry.model.size == tiny_files[0].stat().st_size
    assert entry.mmproj.sha256 == hashlib.sha256(tiny_files[1].read_bytes()).hexdigest()
    assert not [p for p in store.root.rglob(".staging-*")]
    # the same types again replace the pair; others sit beside it
    again = store.add(origin(), copier(tiny_files))
    other = store.add(origin("F16"), copier(tiny_files))
    assert [e.key for e in store.entries()] == [again.key, other.key]


def test_a_failed_build_leaves_the_store_as_it_was(tiny_files):
    store = ModelStore()
    kept = store.add(origin(), copier(tiny_files))
    before, listing = index_bytes(store), files_under(store.root)

    def half_then_fail(stage: Path):
        (stage / "half.gguf").write_bytes(b"GGUF")
        raise SmolcliError("conversion failed")

    for doomed in (origin(), origin("Q4_K_M")):  # replacing a stored pair, and a new one
        with pytest.raises(SmolcliError):
            store.add(doomed, half_then_fail)
        assert index_bytes(store) == before and files_under(store.root) == listing
    assert store.is_intact(kept)


def test_full_disk_while_writing_the_index(tiny_files, monkeypatch):
    """ENOSPC on the index write: a clean error, the index and the stored files unchanged."""
    import smolcli.util.atomic_file as atomic_file  # the index is written through it

    store = ModelStore()
    kept = store.add(origin(), copier(tiny_files))
    before, listing = index_bytes(store), files_under(store.root)

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        return FullDisk(handle) if "w" in mode else handle

    monkeypatch.setattr(atomic_file, "open", open_on_a_full_disk, raising=False)
    for attempt in (origin(), origin("Q4_K_M")):
        with pytest.raises(SmolcliError, match="no space left on the disk that holds .*the model store is unchanged"):
            store.add(attempt, copier(tiny_files))
        assert index_bytes(store) == before and files_under(store.root) == listing
    monkeypatch.undo()
    assert store.entries() == [kept] and store.is_intact(kept)


def test_an_unreadable_index_is_named():
    store = ModelStore()
    store.root.mkdir(parents=True)
    store.index_path.write_text("{not json")
    with pytest.raises(SmolcliError, match="unreadable store index"):
        store.entries()


# --- smolcli models and rm -------------------------------------------------------------------


def test_models_lists_the_registry_and_what_is_stored(tiny_files):
    store = ModelStore()
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "REPO", "PARAMS"]
    assert len(lines) == len(registry.MODELS) + 2 and lines[-1].startswith(f"store: {store.root}")
    assert all(line.rstrip().endswith("-") for line in lines[1:-1])

    stored = store.add(origin(), copier(tiny_files))
    store.add(origin(repo_id="someone/SmolVLM-finetune", name="someone/SmolVLM-finetune"), copier(tiny_files))
    text = runner.invoke(app, ["models"]).stdout
    row = next(line for line in text.splitlines() if line.startswith("smolvlm-256m "))
    assert row.endswith(f"Q8_0/F16 {size_text(stored.size)}")
    assert any(line.startswith("someone/SmolVLM-finetune") for line in text.splitlines())

    report = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    assert report["store"] == str(store.root) and report["home"] == str(store.root.parent)
    entry = next(m for m in report["models"] if m["name"] == "smolvlm-256m")
    assert (
        entry["tile_size"] == 512
        and entry["tokens_per_tile"] == 64
        and entry["prebuilt"]["repo_id"].startswith("ggml-org/")
    )
    (local,) = entry["local"]
    assert local["size"] == stored.size and local["intact"] is True
    assert local["model"]["sha256"] == stored.model.sha256 and Path(local["model"]["path"]).is_file()

    store.model_path(stored).unlink()
    row = next(line for line in runner.invoke(app, ["models"]).stdout.splitlines() if line.startswith("smolvlm-256m "))
    assert "files missing" in row


def test_rm_removes_the_entry_then_the_files(tiny_files):
    store = ModelStore()
    q8 = store.add(origin(), copier(tiny_files))
    f16 = store.add(origin("F16"), copier(tiny_files))
    result = runner.invoke(app, ["rm", "SmolVLM-256M-Instruct", "--quant", "q8_0"])
    assert result.exit_code == 0, result.stderr
    assert "removed smolvlm-256m (converted Q8_0, mmproj F16" in result.stderr
    assert store.entries() == [f16] and not (store.root / q8.folder).exists()
    assert runner.invoke(app, ["rm", "smolvlm-256m"]).exit_code == 0
    assert store.entries() == [] and not (store.root / "HuggingFaceTB--SmolVLM-256M-Instruct").exists()
    one_line_error(runner.invoke(app, ["rm", "smolvlm-256m"]), "smolvlm-256m has no pair in the model store")
    one_line_error(runner.invoke(app, ["rm", "smolvlm-256"]), "did you mean smolvlm-256m")
