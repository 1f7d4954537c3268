"""The errno values of a full disk (or a used-up quota), named once for every writer."""

from __future__ import annotations

import errno

DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
