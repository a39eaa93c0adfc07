"""Output folders: checked before a run writes to them, and write errors that name the folder and say why.

A run that finds out after an hour that its checkpoint folder is read-only, or a cache build that dies of a full
disk with `[Errno 28]` and a temporary file name, wastes the user's time: the folders are checked up front
(`check_output_folder`), and a write that fails anyway raises `OutputFolderError` naming the folder and the reason.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

# The errors that mean "this folder cannot take the write", as opposed to a bug.
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


class OutputFolderError(OSError):
    """An output folder cannot take what a run writes (missing permission, read-only, full): names the folder."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"

    def __reduce__(self):
        return (type(self), (self.path, self.problem))


def describe_write_error(err: OSError) -> str:
    """A short reason for a failed write, in words (the errno's name is kept for searching)."""
    reasons = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EFBIG: "file too large for the file system",
    }
    name = errno.errorcode.get(err.errno or 0, "")
    return f"{reasons.get(err.errno or 0, err.strerror or str(err))} ({name})" if name else str(err)


def check_output_folder(path: str | Path, what: str, min_free_mb: float = 0.0) -> Path:
    """Make sure `path` exists, can be written and has `min_free_mb` free; raise OutputFolderError naming it.

    A probe file is written and removed (permission bits alone say nothing for root or on a read-only mount).
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputFolderError(folder, f"cannot create the folder for {what}: {describe_write_error(err)}") from None
    probe = folder / f".write-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise OutputFolderError(folder, f"cannot write {what} there: {describe_write_error(err)}") from None
    finally:
        probe.unlink(missing_ok=True)
    if min_free_mb > 0:
        free_mb = shutil.disk_usage(folder).free / 2**20
        if free_mb < min_free_mb:
            raise OutputFolderError(
                folder,
                f"only {free_mb:.0f} MB free for {what}; at least {min_free_mb:.0f} MB are needed (free some space "
                "or point the output elsewhere)",
            )
    return folder


def write_error_of(err: BaseException) -> OSError | None:
    """The OSError that says a write could not be taken (full, read-only, no permission), found in `err` or in
    what it was raised from (torch and numpy wrap the OSError of their writes in their own errors)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
            return err
        err = err.__cause__ or err.__context__
    return None
