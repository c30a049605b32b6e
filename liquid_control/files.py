"""What opening a file that a user names may cost: nothing but the file. A path that is not a
regular file (a FIFO waits forever for a writer, /dev/zero never ends, a directory is not a file)
is refused from its stat before it is opened, and a small text file (a track, a parameters file) is
read only up to a size. No ROS, no torch here.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_TEXT_BYTES = 16 << 20  # a track or parameters file larger than this is not one (ours are a few KB)


class FileRefused(ValueError):
    """A file refused before it was read: `file` the path, `problem` what it is or declares."""

    def __init__(self, file: Path | None, problem: str) -> None:
        super().__init__(f"{file}: {problem}" if file is not None else problem)
        self.file, self.problem = file, problem


def kind(mode: int) -> str:
    """What a stat's mode says a path is, as a user reads it."""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "of an unknown kind"


def stat_path(path: Path, error: type[FileRefused] = FileRefused) -> os.stat_result:
    """os.stat of `path` (through links); `error` naming a link to nothing or a stat that fails."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise error(path, f"is a symbolic link to {os.readlink(path)}, which does not exist") from None
        raise error(path, "no such file or directory") from None
    except OSError as exc:
        raise error(path, exc.strerror or type(exc).__name__) from None


def regular_file(path: Path, error: type[FileRefused] = FileRefused) -> os.stat_result:
    """os.stat of `path`, a regular file (through links), else `error`: a FIFO, a device or a
    directory is never opened."""
    st = stat_path(path, error)
    if not stat.S_ISREG(st.st_mode):
        raise error(path, f"is {kind(st.st_mode)}, not a regular file")
    return st


def read_text(path: str | Path, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The text of a regular file of at most `max_bytes`; FileRefused otherwise (never a wait on a
    FIFO, never more read than the limit, even if the file grows meanwhile)."""
    path = Path(path)
    st = regular_file(path)
    if st.st_size > max_bytes:
        raise FileRefused(path, f"is {st.st_size} bytes, more than the {max_bytes} such a file is read to")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # swapped for a FIFO since the stat: no wait
    except OSError as exc:
        raise FileRefused(path, exc.strerror or type(exc).__name__) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise FileRefused(path, "is not a regular file")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileRefused(path, f"is more than the {max_bytes} bytes such a file is read to")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise FileRefused(path, f"is not text (UTF-8): {exc}") from None
