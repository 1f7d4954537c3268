"""An OSError as one line a user can act on: what is wrong with which file, and what to do.

The CLI's edge uses it for any OSError nothing else caught; writers that know more (which output, which
setting chooses the folder) raise their own typed error instead.
"""

from __future__ import annotations

import errno

from smolcli.util.disk_full import is_disk_full

# errno -> (what is wrong, what to do)
_CLASSES: dict[int, tuple[str, str]] = {
    errno.EROFS: ("is on a read-only file system", "choose a writable folder (or set SMOLCLI_HOME to one)"),
    errno.EACCES: ("permission denied", "check its permissions, or choose another folder"),
    errno.EPERM: ("operation not permitted", "check its permissions, or choose another folder"),
    errno.EISDIR: ("is a folder where a file was expected", "give a file, or remove the folder"),
    errno.ENOTDIR: ("a part of this path is a file, not a folder", "fix the path"),
    errno.EEXIST: ("already exists", "remove it or choose another name"),
    errno.ELOOP: ("is a loop of symbolic links", "fix or remove the link"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENAMETOOLONG: ("the name is too long for this file system", "choose a shorter name or path"),
    errno.EIO: ("input/output error", "the disk may be failing or was removed; check it"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) and run again"),
    errno.ENXIO: ("no such device", "check the path"),
}
_DISK_FULL_TEXT = ("no space left on the disk", "free some space, or write to another disk")


def os_error_text(error: OSError, fallback_file: str | None = None) -> str:
    """'<file>: <what is wrong>; <what to do>' for an OSError."""
    what, fix = _DISK_FULL_TEXT if is_disk_full(error) else _CLASSES.get(error.errno, (None, None))
    if what is None:
        what, fix = (error.strerror or str(error)).rstrip(".").lower(), "check the file and run again"
    name = error.filename if error.filename is not None else fallback_file
    if error.filename2 is not None:
        name = f"{error.filename} -> {error.filename2}"
    return f"{name}: {what}; {fix}" if name else f"{what}; {fix}"
