"""The on-disk cache of a bag's training sequences: its camera frames decoded once, at the model's
input size, as uint8, in one memory-mapped file; its steps (frame held, IMU, dt, label) beside them.

One entry per bag and input spec, under the cache root (`--cache-dir`, else `$LIQUID_CONTROL_CACHE`,
else `$XDG_CACHE_HOME/liquid_control`, else `~/.cache/liquid_control`). An entry's name is a hash of
what its content depends on: the bag's files (names, sizes, modification times), the image size,
the IMU fields, the three topics, the episode-splitting gap, the image size limit and the cache
format version; change any of them and a new entry is built, and the bag's stale entries are
removed. Building happens in a temporary folder renamed into place when complete, under a lock
file, so a killed build leaves no half entry and several processes (torchrun ranks) build a bag once.

The cache heals itself rather than trusting what it finds: an entry is used only when its folder
and files are real (no symbolic link is ever followed in the cache folder: files are opened with
O_NOFOLLOW below a folder opened with O_NOFOLLOW), its metadata is this bag's and these inputs', its
frame file holds exactly the frames its metadata declares and its step arrays are well formed (and
pass the caller's check of the index against the frames) -- all before anything is reshaped or
mapped. Anything else (a damaged, foreign or half-built entry, a planted link, a stale `.partial`
or lock file that is not a regular file) is removed and the entry built again. A build stops with
CacheError, rather than fill the disk, when less than MIN_FREE_BYTES would be left there.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..paths import cache_root

# What an entry holds or how frames are made (2: sensing.model_frame; 3: each step's takeover
# flag): bump to invalidate every cache.
VERSION = 3
FRAMES, ARRAYS, META = "frames.u8", "steps.npz", "meta.json"
MAX_META_BYTES = 16 << 20  # a meta.json larger than this is not one of ours (a bag of 10k files: ~1 MB)
MIN_FREE_BYTES = 1 << 30  # a build stops before the cache's disk has less than this left
_FREE_CHECK_EVERY = 256  # frames between two looks at the free space (256 frames of 64x48: 2.4 MB)
_NAME_CHARS = 100  # of a bag's name in the cache's file names (the rest of NAME_MAX is ours)
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: a planted FIFO never waits
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


default_root = cache_root


class CacheError(ValueError):
    """The cache cannot be used or written; the message names the path and the problem."""


class _Damaged(Exception):
    """An entry that is not to be trusted; the message says why (it is then built again)."""


def bag_files(bag: Path) -> list[dict]:
    """What identifies a bag's content without reading it: every file's name, size and mtime."""
    files = [bag] if bag.is_file() else sorted(p for p in bag.rglob("*") if p.is_file())
    out = []
    for f in files:
        st = f.stat()
        out.append(
            {"file": f.name if f == bag else str(f.relative_to(bag)), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        )
    return out


@contextmanager
def _folder(path: Path):
    """A file descriptor of the real folder `path` (_Damaged if it is a link or not a folder): the
    entry's files are opened relative to it, so nothing is reached through a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise _Damaged(_why(exc, path)) from None
    try:
        yield fd
    finally:
        os.close(fd)


def _why(exc: OSError, path: Path) -> str:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
        return f"{path.name} is a symbolic link"
    if exc.errno == errno.ENOTDIR:
        return f"{path.name} is not a folder"
    return f"{path.name}: {exc.strerror or exc}"


def _open_file(folder: int, name: str, where: Path) -> tuple[BinaryIO, int]:
    """(binary file, size) of the regular file `name` in the folder `folder`, never through a link."""
    try:
        fd = os.open(name, _READ, dir_fd=folder)
    except OSError as exc:
        raise _Damaged(_why(exc, where / name)) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _Damaged(f"{name} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), st.st_size


def _read_arrays(f: BinaryIO, size: int) -> dict[str, np.ndarray]:
    """The arrays of an .npz as np.savez writes it: stored members (never expanded: a member holds
    what it takes on disk), each a plain .npy (no objects, no pickle) whose header's shape is the
    data that follows. _Damaged for anything else, before any array is allocated."""
    try:
        with zipfile.ZipFile(f) as z:
            infos = z.infolist()
            if sum(i.file_size for i in infos) > size or any(i.compress_type != zipfile.ZIP_STORED for i in infos):
                raise _Damaged(f"{ARRAYS} is not as np.savez writes it (compressed members)")
            out = {}
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise _Damaged(f"{ARRAYS} holds {info.filename!r}")
                with z.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version not in ((1, 0), (2, 0)):
                        raise _Damaged(f"{ARRAYS}: {info.filename} is .npy version {version}")
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, fortran, dtype = read_header(member)
                    if dtype.hasobject or fortran:
                        raise _Damaged(f"{ARRAYS}: {info.filename} holds {dtype} (fortran order: {fortran})")
                    nbytes = math.prod(shape) * dtype.itemsize
                    if nbytes != info.file_size - member.tell():
                        raise _Damaged(
                            f"{ARRAYS}: {info.filename} declares {shape} {dtype}, "
                            f"its data is {info.file_size - member.tell()} bytes"
                        )
                    out[info.filename[:-4]] = np.frombuffer(member.read(nbytes), dtype).reshape(shape)
            return out
    except _Damaged:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile and numpy raise their own errors for a damaged file
        raise _Damaged(f"{ARRAYS} cannot be read ({type(exc).__name__}: {exc})") from None


def _frame_count(meta: dict, frame_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    shape = meta.get("frames_shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 4
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        or (frame_shape is not None and tuple(shape[1:]) != tuple(frame_shape))
    ):
        raise _Damaged(f"{META}: frames_shape {shape!r} is not [frames, {', '.join(map(str, frame_shape or ()))}]")
    return tuple(shape)


@dataclass(frozen=True)
class Entry:
    path: Path
    meta: dict
    _frames: np.ndarray | None = field(default=None, repr=False, compare=False)
    _arrays: dict | None = field(default=None, repr=False, compare=False)

    def frames(self) -> np.ndarray:
        """All frames of the bag, (F, H, W, 3) uint8, memory-mapped (read only). CacheError when the
        frame file is not a regular file holding exactly those frames."""
        if self._frames is not None:
            return self._frames
        try:
            with _folder(self.path) as folder:
                return _map_frames(folder, self.path, _frame_count(self.meta, None))
        except _Damaged as exc:
            raise CacheError(f"cache entry {self.path}: {exc}") from None

    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is not None:
            return dict(self._arrays)
        try:
            with _folder(self.path) as folder:
                f, size = _open_file(folder, ARRAYS, self.path)
                with f:
                    return _read_arrays(f, size)
        except _Damaged as exc:
            raise CacheError(f"cache entry {self.path}: {exc}") from None


def _map_frames(folder: int, path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The frame file mapped as `shape`, once its size is checked to be exactly that (the same open
    file: what is checked is what is mapped)."""
    f, size = _open_file(folder, FRAMES, path)
    with f:
        if size != math.prod(shape):
            raise _Damaged(
                f"{FRAMES} holds {size} bytes, its metadata declares {shape[0]} frames of "
                f"{'x'.join(map(str, shape[1:]))} ({math.prod(shape)} bytes)"
            )
        if shape[0] == 0:
            return np.zeros(shape, np.uint8)
        return np.memmap(f, dtype=np.uint8, mode="r", shape=shape)


def _load(
    path: Path,
    key: dict,
    frame_shape: tuple[int, int, int],
    check: Callable[[dict, dict[str, np.ndarray], int], str | None] | None,
) -> Entry:
    """The entry at `path`, every part of it checked (_Damaged naming what is wrong;
    FileNotFoundError when there is none)."""
    if not os.path.lexists(path):
        raise FileNotFoundError(path)
    with _folder(path) as folder:
        f, size = _open_file(folder, META, path)
        with f:
            if size > MAX_META_BYTES:
                raise _Damaged(f"{META} is {size} bytes")
            try:
                meta = json.loads(f.read(MAX_META_BYTES + 1))
            except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than json reads
                raise _Damaged(f"{META} is not JSON ({type(exc).__name__}: {exc})") from None
        if not isinstance(meta, dict):
            raise _Damaged(f"{META} is not an entry's metadata")
        differ = sorted(k for k in key if meta.get(k) != key[k])
        if differ:
            raise _Damaged(
                f"it is another bag's or other inputs' ({', '.join(differ)} differ{'s' if len(differ) == 1 else ''})"
            )
        shape = _frame_count(meta, frame_shape)
        f, size = _open_file(folder, ARRAYS, path)
        with f:
            arrays = _read_arrays(f, size)
        frames = _map_frames(folder, path, shape)
    if check is not None:
        problem = check(meta, arrays, shape[0])
        if problem:
            raise _Damaged(problem)
    return Entry(path, meta, frames, arrays)


class FrameSink:
    """Appends uint8 frames to the entry's frame file as they are decoded (never all in memory),
    and stops the build (CacheError) before the disk is nearly full."""

    def __init__(self, file: BinaryIO, shape: tuple[int, int, int], path: Path | None = None) -> None:
        self._file, self.shape, self.count, self._path = file, shape, 0, path

    def append(self, frame: np.ndarray) -> int:
        if frame.shape != self.shape or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype}, expected {self.shape} uint8")
        if self.count % _FREE_CHECK_EVERY == 0:
            self._check_room()
        try:
            self._file.write(np.ascontiguousarray(frame).tobytes())
        except OSError as exc:
            raise CacheError(f"cache {self._path}: cannot write frames ({exc.strerror or exc})") from None
        self.count += 1
        return self.count - 1

    def _check_room(self) -> None:
        try:
            st = os.fstatvfs(self._file.fileno())
        except (OSError, AttributeError, ValueError):
            return  # not a file on a disk (a test's buffer): nothing to fill
        free = st.f_bavail * st.f_frsize
        if free < MIN_FREE_BYTES:
            raise CacheError(
                f"cache {self._path}: {free >> 20} MiB left on its disk after {self.count} frames, less "
                f"than the {MIN_FREE_BYTES >> 20} MiB a build leaves free (make room, or choose "
                "another --cache-dir)"
            )


def cached(
    bag: Path,
    inputs: dict,
    frame_shape: tuple[int, int, int],
    build: Callable[[FrameSink], tuple[dict[str, np.ndarray], dict]],
    root: str | Path | None = None,
    log: Callable[[str], None] = print,
    check: Callable[[dict, dict[str, np.ndarray], int], str | None] | None = None,
) -> Entry:
    """The bag's entry for these inputs: reused if present and sound, else built by `build(sink)`,
    which appends frames to the sink and returns the step arrays and extra metadata.

    `check(meta, arrays, frame_count)`: what is wrong with an entry's arrays (None: nothing), for
    what only the builder knows (its index against the frames); an entry it faults is built again.
    CacheError (naming the path) when the cache folder cannot be used or written."""
    bag = Path(bag).resolve()
    root = Path(root) if root is not None else default_root()
    _make_root(root)
    key = json.loads(json.dumps({"version": VERSION, "bag": str(bag), "files": bag_files(bag), **inputs}))
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = bag.name[:_NAME_CHARS]
    final = root / f"{name}-{digest}"
    with _locked(root / f"{name}.lock"):
        try:
            return _load(final, key, frame_shape, check)
        except FileNotFoundError:
            pass
        except _Damaged as exc:
            log(f"cache: entry {final} not used ({exc}): building it again")
        _remove(final)  # whatever is there is not an entry (a link, a file, a damaged folder)
        ours = re.compile(re.escape(name) + r"-[0-9a-f]{16}")
        for other in _names(root):
            # Half-built entries of this bag name (a build killed; we hold the lock, so none is
            # running) and links planted where an entry of it would be: never ours to keep.
            if re.fullmatch(ours.pattern + r"\.(.*\.)?partial", other) or (
                ours.fullmatch(other) and not _is_folder(root / other)
            ):
                _remove(root / other)
        entry = _build(root, final, key, frame_shape, build)
        stale = [
            p for p in (root / n for n in _names(root) if ours.fullmatch(n)) if p != final and _entry_of(p) == str(bag)
        ]
        for p in stale:
            _remove(p)
        if stale:
            log(f"cache: removed {len(stale)} stale entr{'y' if len(stale) == 1 else 'ies'} of {bag}")
        return entry


def _build(
    root: Path,
    final: Path,
    key: dict,
    frame_shape: tuple[int, int, int],
    build: Callable[[FrameSink], tuple[dict[str, np.ndarray], dict]],
) -> Entry:
    """Build the entry in a new folder of our own (mkdtemp: a name nothing was planted at, only we
    may write in it), each file created there (O_EXCL, O_NOFOLLOW), then rename it into place."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}.", suffix=".partial", dir=root))
    except OSError as exc:
        raise CacheError(f"cache {root}: cannot create a folder in it ({exc.strerror or exc})") from None
    try:
        with _folder(tmp) as folder:
            with _create(folder, FRAMES, tmp) as f:
                sink = FrameSink(f, frame_shape, tmp / FRAMES)
                arrays, extra = build(sink)  # its errors (the bag's) go out as they are
            meta = {**key, **extra, "frames_shape": [sink.count, *frame_shape]}
            with _create(folder, ARRAYS, tmp) as f:
                _write(tmp / ARRAYS, lambda: np.savez(f, **arrays))
            with _create(folder, META, tmp) as f:
                _write(tmp / META, lambda: f.write(json.dumps(meta, indent=1, sort_keys=True).encode()))
            frames = _map_frames(folder, tmp, tuple(meta["frames_shape"]))
        _remove(final)
        _write(final, lambda: os.replace(tmp, final))
    except _Damaged as exc:  # our own new files are not what we wrote: someone else writes here
        _remove(tmp, quiet=True)
        raise CacheError(f"cache {tmp}: {exc}") from None
    except BaseException:
        _remove(tmp, quiet=True)
        raise
    return Entry(final, meta, frames, arrays)


@contextmanager
def _create(folder: int, name: str, where: Path):
    """A new file `name` in the folder `folder` (never one that is there, never through a link)."""
    try:
        fd = os.open(name, _CREATE, 0o644, dir_fd=folder)
    except OSError as exc:
        raise CacheError(f"cache {where / name}: cannot be created ({exc.strerror or exc})") from None
    f = os.fdopen(fd, "wb")
    try:
        yield f
    finally:
        _write(where / name, f.close)  # what is still buffered goes out here (a full disk says so)


def _write(path: Path, write: Callable[[], object]) -> None:
    try:
        write()
    except OSError as exc:
        raise CacheError(f"cache {path}: cannot be written ({exc.strerror or exc})") from None


def _make_root(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        pass  # not a folder: said below
    except OSError as exc:
        raise CacheError(f"cache folder {root}: cannot be created ({exc.strerror or exc})") from None
    if not root.is_dir():
        what = (
            f"a symbolic link to {os.readlink(root)}, which does not exist"
            if os.path.islink(root) and not root.exists()
            else "not a folder"
        )
        raise CacheError(f"cache folder {root}: is {what} (choose another with --cache-dir)")


def _names(root: Path) -> list[str]:
    try:
        return os.listdir(root)
    except OSError as exc:
        raise CacheError(f"cache folder {root}: cannot be listed ({exc.strerror or exc})") from None


def _is_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _remove(path: Path, quiet: bool = False) -> None:
    """Remove what is at `path`, whatever it is, without following a link: a link or file is
    unlinked, a real folder removed with its content (shutil.rmtree never follows a link in it)."""
    try:
        if _is_folder(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if not quiet:
            raise CacheError(f"cache {path}: cannot be removed ({exc.strerror or exc})") from None


def _entry_of(path: Path) -> str | None:
    """The bag an entry folder is of, from its metadata (None: not an entry, or a link)."""
    try:
        with _folder(path) as folder:
            f, size = _open_file(folder, META, path)
            with f:
                meta = json.loads(f.read(MAX_META_BYTES)) if size <= MAX_META_BYTES else None
        return meta.get("bag") if isinstance(meta, dict) else None
    except (_Damaged, OSError, ValueError, RecursionError):
        return None


@contextmanager
def _locked(path: Path):
    """An exclusive lock on the regular file `path`. What else is there (a link, a FIFO, a folder)
    is removed first; and since another process may remove or replace the file meanwhile, the lock
    counts only once the locked file is still the one at `path`."""
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):  # a link, a folder, a FIFO's kin
                _remove(path)
                continue
            raise CacheError(f"cache {path}: cannot be opened ({exc.strerror or exc})") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                _remove(path)
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                now = os.lstat(path)
            except FileNotFoundError:
                continue
            mine = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
                continue
            yield
            return
        finally:
            os.close(fd)  # unlocks
    raise CacheError(f"cache {path}: the lock file keeps being replaced")
