"""Downloads from the Hugging Face Hub, through huggingface_hub: its cache, its token, its progress bars.

Files land in the Hugging Face cache (HF_HOME / HF_HUB_CACHE) one at a time, so a pull
cut short keeps every file it finished and the next pull fetches only the rest. A file
cut mid-way is kept too, and the next pull asks for the rest with a Range request
(smolcli/resumable.py: huggingface_hub drops a partial file when its process gives up).
The token comes from where huggingface_hub looks: HF_TOKEN, then the `hf auth login` token file.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from smolcli.errors import DiskFull, HubError
from smolcli.util.disk_full import DISK_FULL

# What convert/ reads from a checkpoint folder: the weights, the configs and the tokenizer.
CHECKPOINT_FILES = (
    "config.json",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "processor_config.json",
    "generation_config.json",
)
WEIGHTS_SUFFIX = ".safetensors"
TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class RepoSnapshot:
    """A repo at one commit: what a branch or tag named when we asked."""

    repo_id: str
    revision: str
    commit: str
    sizes: dict[str, int | None]  # file -> bytes, where the Hub said

    def size_of(self, files: list[str]) -> int | None:
        sizes = [self.sizes.get(name) for name in files]
        return None if None in sizes else sum(sizes)


def offline_mode() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").upper() in TRUE_VALUES or constants.is_offline_mode()


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def cache_folder() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def checkpoint_files(snapshot: RepoSnapshot) -> list[str]:
    """The files of the repo's top folder that conversion reads (not onnx/ exports, not pickles).

    Small files first and weights last: a pull cut in the weights has kept all the rest.
    """
    wanted = [
        name
        for name in snapshot.sizes
        if "/" not in name and (name in CHECKPOINT_FILES or name.endswith(WEIGHTS_SUFFIX))
    ]
    return sorted(wanted, key=lambda name: (name.endswith(WEIGHTS_SUFFIX), name))


def resolve(repo_id: str, revision: str) -> RepoSnapshot:
    from huggingface_hub import HfApi

    with hub_errors(repo_id, revision):
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
    return RepoSnapshot(repo_id, revision, info.sha, {s.rfilename: s.size for s in info.siblings or []})


def download(snapshot: RepoSnapshot, filename: str) -> Path:
    """One file of the snapshot, from the cache when it is there (no request at all for a cached commit)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    from smolcli.store.resumable import fetch_blob

    with hub_errors(snapshot.repo_id, snapshot.revision):
        if not isinstance(try_to_load_from_cache(snapshot.repo_id, filename, revision=snapshot.commit), str):
            fetch_blob(snapshot.repo_id, filename, snapshot.commit)
        return Path(hf_hub_download(snapshot.repo_id, filename, revision=snapshot.commit))


def _status(error) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def hub_errors(repo_id: str, revision: str) -> Iterator[None]:
    """huggingface_hub's exceptions, as one line that names the problem and the fix."""
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub import errors as hf

    page = f"{endpoint()}/{repo_id}"
    login = "log in with `hf auth login` or set HF_TOKEN"
    kept = "nothing was added to the model store; what was downloaded stays in the Hugging Face cache for the next pull"
    try:
        yield
    except hf.GatedRepoError as error:
        raise HubError(
            f"{repo_id} is a gated repo (HTTP {_status(error)}): accept its conditions at {page} with your account, then {login}"
        ) from None
    except hf.RevisionNotFoundError:
        raise HubError(f"{repo_id} has no revision {revision!r}; give a branch, tag or commit that exists") from None
    except hf.RepositoryNotFoundError as error:
        if _status(error) == 401:
            raise HubError(
                f"{repo_id}: HTTP 401 unauthorized: no such repo, or it is private or gated and needs a token; "
                f"check the name, or {login}"
            ) from None
        raise HubError(f"{repo_id}: no such repo on the Hub (HTTP {_status(error)}); check the name") from None
    except hf.RemoteEntryNotFoundError as error:
        raise HubError(
            f"{repo_id}@{revision}: the Hub lists a file it cannot serve ({_first_line(error)}); try again later"
        ) from None
    except hf.OfflineModeIsEnabled:
        raise HubError(
            f"offline mode is on (HF_HUB_OFFLINE=1): cannot download {repo_id}; unset it to download"
        ) from None
    except hf.LocalEntryNotFoundError as error:
        cause = error.__cause__ or error
        raise HubError(f"cannot reach the Hugging Face Hub at {endpoint()} ({_first_line(cause)}); {kept}") from None
    except hf.HfHubHTTPError as error:
        status = _status(error)
        if status == 401:
            raise HubError(f"{repo_id}: HTTP 401 unauthorized: the Hub rejected your token; {login} again") from None
        if status == 403:
            raise HubError(
                f"{repo_id}: HTTP 403 forbidden: your token may not read this repo; ask for access at {page} or use a token with read access ({login})"
            ) from None
        raise HubError(f"the Hugging Face Hub answered HTTP {status} for {repo_id}; try again later; {kept}") from None
    except httpx2.TransportError as error:
        raise HubError(
            f"cannot reach the Hugging Face Hub at {endpoint()} ({type(error).__name__}: {_first_line(error)}); "
            f"check the connection and pull again; {kept}"
        ) from None
    except OSError as error:
        if error.errno in DISK_FULL:
            raise DiskFull(
                f"no space left for the download in the Hugging Face cache ({cache_folder()}); free some space "
                "(or point HF_HUB_CACHE at a bigger disk) and pull again; the model store is unchanged"
            ) from None
        if "Consistency check failed" in str(error):
            raise HubError(
                f"a download from {repo_id} came out the wrong size (the connection was cut?); pull again"
            ) from None
        raise
