"""A model name or repo id -> a GGUF pair in the local store: downloaded and converted once, offline after."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from smolcli.errors import HubError, SmolcliError
from smolcli.models.registry import PrebuiltPair
from smolcli.store import hub
from smolcli.store.model_ref import ModelName
from smolcli.store.model_store import ModelStore, Provenance, StoredModel
from smolcli.util.threads import check_threads
from smolcli.util.user_cache import HOME_ENV, cache_dir

Report = Callable[[str], None]
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"  # a PEFT adapter repo


@dataclass(frozen=True)
class PullOptions:
    quant: str | None = None
    mmproj_type: str | None = None
    prebuilt: bool = False
    revision: str = "main"
    force: bool = False
    threads: int | None = None

    def __post_init__(self) -> None:
        check_threads(self.threads)  # before anything is downloaded


def offline_error(ref: ModelName, store: ModelStore) -> HubError:
    return HubError(
        f"{ref.name} is not in the model store ({store.root}) and offline mode is on ({{offline}} or HF_HUB_OFFLINE=1); "
        f"on a connected machine run `smolcli pull {ref.name}`, then copy that machine's smolcli folder "
        f'({HOME_ENV}; `smolcli models --json` prints it as "home") to {cache_dir()} on this one'
    )


def prebuilt_pair(ref: ModelName) -> PrebuiltPair:
    if ref.entry is None or ref.entry.prebuilt is None:
        raise SmolcliError(
            f"no prebuilt GGUF pair is known for {ref.name}; pull it without {{prebuilt}} to convert it here"
        )
    return ref.entry.prebuilt


def chosen_types(ref: ModelName, options: PullOptions) -> tuple[str, str]:
    """The (language model, mmproj) types a pull makes: asked for, else the registry's defaults."""
    from smolcli.convert import DEFAULT_MMPROJ_TYPE, MMPROJ_TYPES, QUANT_TYPES
    from smolcli.convert.quantize import DEFAULT_QUANT, parse_quant

    entry = ref.entry
    quant = options.quant or (entry.default_quant if entry else DEFAULT_QUANT)
    mmproj_type = options.mmproj_type or (entry.default_mmproj_type if entry else DEFAULT_MMPROJ_TYPE)
    if not options.prebuilt:
        return parse_quant(quant, QUANT_TYPES, "quant type"), parse_quant(mmproj_type, MMPROJ_TYPES, "mmproj type")
    pair = prebuilt_pair(ref)
    # the publisher's files come in fewer types: fall back to what it offers unless asked
    quant = quant if options.quant or quant.upper() in pair.models else next(iter(pair.models))
    mmproj_type = (
        mmproj_type if options.mmproj_type or mmproj_type.upper() in pair.mmprojs else next(iter(pair.mmprojs))
    )
    return (
        parse_quant(quant, pair.models, f"type among {pair.repo_id}'s models"),
        parse_quant(mmproj_type, pair.mmprojs, f"type among {pair.repo_id}'s mmproj files"),
    )


def stored(ref: ModelName, store: ModelStore) -> StoredModel | None:
    """The pair to run for a name: the registry's default types when stored, else the newest intact one."""
    intact = [entry for entry in store.find(ref.repo_id) if store.is_intact(entry)]
    if ref.entry is not None:
        for entry in intact:
            if (entry.quant, entry.mmproj_type) == (ref.entry.default_quant, ref.entry.default_mmproj_type):
                return entry
    return max(intact, key=lambda entry: entry.added) if intact else None


def stored_or_pulled(ref: ModelName, offline: bool, report: Report, store: ModelStore | None = None) -> StoredModel:
    """What -m NAME runs: the stored pair, else a pull now (never with offline mode on)."""
    store = store or ModelStore()
    found = stored(ref, store)
    if found is not None:
        return found
    if offline or hub.offline_mode():
        raise offline_error(ref, store)
    report(
        f"{ref.name} is not in the model store yet: pulling it once from the Hugging Face Hub (later runs need no network)"
    )
    return pull(ref, PullOptions(), report, store)


def pull(ref: ModelName, options: PullOptions, report: Report, store: ModelStore | None = None) -> StoredModel:
    store = store or ModelStore()
    quant, mmproj_type = chosen_types(ref, options)
    source = "prebuilt" if options.prebuilt else "converted"
    existing = [
        e
        for e in store.find(ref.repo_id, source, quant, mmproj_type)
        if e.revision == options.revision and store.is_intact(e)
    ]
    if existing and not options.force:
        report(
            f"{ref.name} ({source} {quant}, mmproj {mmproj_type}) is already in the model store; --force pulls it again"
        )
        return existing[0]
    if hub.offline_mode():
        raise offline_error(ref, store)
    if options.prebuilt:
        return _pull_prebuilt(ref, prebuilt_pair(ref), quant, mmproj_type, options, report, store)
    return _pull_and_convert(ref, quant, mmproj_type, options, report, store)


def _check_architecture(config_path: Path, repo_id: str) -> str:
    """The family of the checkpoint, from config.json alone: no weights are fetched for a model we cannot convert."""
    from smolcli.models import family_for

    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise HubError(f"{repo_id}: config.json is not valid JSON ({error})") from None
    architecture = (config.get("architectures") or [None])[0]
    try:
        return family_for(architecture).name
    except SmolcliError as error:
        # the message as written, placeholders and all: each front end spells the settings its own way
        raise type(error)(f"{repo_id}: {error.message}", **error.facts) from None


def _download_report(snapshot: hub.RepoSnapshot, files: list[str], report: Report) -> None:
    from smolcli.util.units import size_text

    total = snapshot.size_of(files)
    size = f", {size_text(total)}" if total is not None else ""
    report(
        f"downloading {len(files)} files ({', '.join(files)}{size}) of {snapshot.repo_id} at {snapshot.commit[:12]} into {hub.cache_folder()}"
    )


def _pull_and_convert(
    ref: ModelName, quant: str, mmproj_type: str, options: PullOptions, report: Report, store: ModelStore
) -> StoredModel:
    from smolcli.convert import convert_checkpoint
    from smolcli.runtime.gguf.model_files import resolve_model_files

    snapshot = hub.resolve(ref.repo_id, options.revision)
    if "config.json" not in snapshot.sizes and ADAPTER_CONFIG in snapshot.sizes:
        return _pull_adapter_and_merge(ref, snapshot, quant, mmproj_type, options, report, store)
    files = hub.checkpoint_files(snapshot)
    if "config.json" not in files:
        raise HubError(f"{ref.repo_id} has no config.json: not a Hugging Face model checkpoint")
    config = hub.download(snapshot, "config.json")
    family = _check_architecture(config, ref.repo_id)
    _download_report(snapshot, files, report)
    for name in files:
        hub.download(snapshot, name)
    checkpoint = config.parent  # the cache's folder for this commit

    def build(stage: Path) -> tuple[Path, Path]:
        name = ref.repo_id.split("/")[-1]
        result = convert_checkpoint(
            checkpoint, stage, quant, mmproj_type, name=name, report=report, threads=options.threads
        )
        resolve_model_files(result.model, result.mmproj)  # the pair loads and fits, or nothing is stored
        return result.model, result.mmproj

    origin = Provenance(
        ref.name, ref.repo_id, family, "converted", ref.repo_id, options.revision, snapshot.commit, quant, mmproj_type
    )
    entry = store.add(origin, build)
    report(f"stored {ref.name} ({quant}, mmproj {mmproj_type}) in {store.root / entry.folder}")
    return entry


def _adapter_base(config_path: Path, repo_id: str) -> str:
    """The base repo id an adapter's adapter_config.json names (PEFT writes base_model_name_or_path)."""
    try:
        base = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (ValueError, AttributeError):
        raise HubError(f"{repo_id}: {ADAPTER_CONFIG} is not a valid JSON object") from None
    if not isinstance(base, str) or base.count("/") != 1 or base.startswith((".", "/", "~")):
        raise HubError(
            f"{repo_id}: {ADAPTER_CONFIG} names base {base!r}, not a Hub repo id; download the adapter and "
            "merge it into a local base: smolcli convert BASE --adapter DIR"
        )
    return base


def _pull_adapter_and_merge(
    ref: ModelName, snapshot: hub.RepoSnapshot, quant: str, mmproj_type: str, options: PullOptions, report, store
) -> StoredModel:
    """An adapter repo: the adapter and the base its config names are fetched, merged and converted as one pair."""
    from smolcli.convert import convert_checkpoint
    from smolcli.runtime.gguf.model_files import resolve_model_files

    if ADAPTER_WEIGHTS not in snapshot.sizes:
        raise HubError(
            f"{ref.repo_id} has no {ADAPTER_WEIGHTS} (smolcli never unpickles adapter_model.bin); "
            "ask its author for the safetensors file"
        )
    adapter_config = hub.download(snapshot, ADAPTER_CONFIG)
    base_id = _adapter_base(adapter_config, ref.repo_id)
    base = hub.resolve(base_id, "main")
    files = hub.checkpoint_files(base)
    if "config.json" not in files:
        raise HubError(f"{base_id} (the base {ref.repo_id} names) has no config.json: not a model checkpoint")
    family = _check_architecture(hub.download(base, "config.json"), base_id)
    _download_report(snapshot, [ADAPTER_CONFIG, ADAPTER_WEIGHTS], report)
    hub.download(snapshot, ADAPTER_WEIGHTS)
    _download_report(base, files, report)
    checkpoint = None
    for name in files:
        checkpoint = hub.download(base, name).parent

    def build(stage: Path) -> tuple[Path, Path]:
        result = convert_checkpoint(
            checkpoint,
            stage,
            quant,
            mmproj_type,
            name=base_id.split("/")[-1],
            report=report,
            threads=options.threads,
            adapter=adapter_config.parent,
            adapter_name=ref.repo_id.split("/")[-1],
        )
        resolve_model_files(result.model, result.mmproj)
        return result.model, result.mmproj

    origin = Provenance(
        ref.name, ref.repo_id, family, "converted", base_id, options.revision, snapshot.commit, quant, mmproj_type
    )
    entry = store.add(origin, build)
    report(f"stored {ref.name} (merged into {base_id}, {quant}, mmproj {mmproj_type}) in {store.root / entry.folder}")
    return entry


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link to the cached blob where the disk allows it: the store then costs no extra space."""
    try:
        os.link(os.path.realpath(source), target)
    except OSError:
        shutil.copyfile(source, target)


def _pull_prebuilt(  # only registry entries have a prebuilt pair
    ref: ModelName,
    pair: PrebuiltPair,
    quant: str,
    mmproj_type: str,
    options: PullOptions,
    report: Report,
    store: ModelStore,
) -> StoredModel:
    from smolcli.runtime.gguf.model_files import resolve_model_files

    snapshot = hub.resolve(pair.repo_id, options.revision)
    wanted = [pair.models[quant], pair.mmprojs[mmproj_type]]
    missing = [name for name in wanted if name not in snapshot.sizes]
    if missing:
        offered = ", ".join(sorted(n for n in snapshot.sizes if n.endswith(".gguf"))) or "none"
        raise HubError(
            f"{pair.repo_id} has no {missing[0]} (its GGUF files: {offered}); choose another {{quant}} / {{mmproj_type}}"
        )
    _download_report(snapshot, wanted, report)
    model_file, mmproj_file = (hub.download(snapshot, name) for name in wanted)

    def build(stage: Path) -> tuple[Path, Path]:
        model, mmproj = stage / model_file.name, stage / mmproj_file.name
        _link_or_copy(model_file, model)
        _link_or_copy(mmproj_file, mmproj)
        resolve_model_files(model, mmproj)
        return model, mmproj

    origin = Provenance(
        ref.name,
        ref.repo_id,
        ref.entry.family,
        "prebuilt",
        pair.repo_id,
        options.revision,
        snapshot.commit,
        quant,
        mmproj_type,
    )
    entry = store.add(origin, build)
    report(f"stored {ref.name} (prebuilt {quant}, mmproj {mmproj_type}) in {store.root / entry.folder}")
    return entry
