"""The errno values of a full disk (or a used-up quota), named once for every writer."""

from __future__ import annotations

import errno

DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


def is_disk_full(error: OSError) -> bool:
    """ENOSPC/EDQUOT, or a short write without an errno (numpy's tofile: "131072 requested and 90096 written"),
    which on a local disk means the same."""
    if error.errno in DISK_FULL:
        return True
    text = str(error)
    return error.errno is None and "requested and" in text and "written" in text
