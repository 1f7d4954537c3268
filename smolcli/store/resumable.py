"""A plain-HTTP download into the Hugging Face cache that the next process resumes.

huggingface_hub resumes a dropped connection only within one process: its temp file is
unique to the process and deleted on failure. Here the bytes go to a stable
`blobs/<etag>.smolcli-partial` beside the blob they become: on the cache's own disk (the
rename is free, and `hf cache rm` removes it with the repo), found again by the next pull,
which asks for the rest with a Range request through huggingface_hub's own `http_get`
(its session, retries and progress bar, which starts at the bytes already kept). Once the
blob is in place, `hf_hub_download` only links it into the snapshot.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from smolcli.errors import HubError
from smolcli.runtime.gguf.file_identity import hash_file

PARTIAL_SUFFIX = ".smolcli-partial"
SHA256 = re.compile(r"[0-9a-f]{64}")


def fetch_blob(repo_id: str, filename: str, commit: str) -> None:
    """Put the file's blob in the Hugging Face cache, continuing a partial one, unless Xet will fetch it."""
    from huggingface_hub import constants, file_download, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import WeakFileLock, build_hf_headers

    meta = get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=commit))
    if meta.etag is None or (meta.xet_file_data is not None and file_download.is_xet_available()):
        return  # Xet's chunk cache makes a second try cheap: hf_hub_download does it all
    cache = Path(constants.HF_HUB_CACHE).expanduser().resolve()  # as hf_hub_download resolves it
    folder = file_download.repo_folder_name(repo_id=repo_id, repo_type="model")
    blob = cache / folder / "blobs" / meta.etag
    blob.parent.mkdir(parents=True, exist_ok=True)
    lock = cache / ".locks" / folder / f"{meta.etag}.lock"  # huggingface_hub's own lock for this blob
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(lock):
        if not blob.exists():
            _download(meta, filename, blob, build_hf_headers())


def _download(meta, filename: str, blob: Path, headers: dict) -> None:
    from huggingface_hub import file_download

    partial = blob.with_name(blob.name + PARTIAL_SUFFIX)
    if meta.size is not None and partial.exists() and partial.stat().st_size > meta.size:
        partial.unlink()  # not a prefix of this file
    with partial.open("ab") as out:
        kept = out.tell()
        # a server that ignores Range answers 200: http_get then truncates and starts over
        file_download.http_get(
            meta.location, out, resume_size=kept, headers=headers, expected_size=meta.size, displayed_filename=filename
        )
    if SHA256.fullmatch(meta.etag) and hash_file(partial) != meta.etag:
        partial.unlink()  # bytes kept from an earlier try were not this file's
        raise HubError(f"{filename} came out corrupt (its sha256 is not the Hub's); pull again to download it afresh")
    os.replace(partial, blob)
