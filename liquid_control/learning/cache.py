"""The on-disk cache of a bag's training sequences: its camera frames decoded once, at the model's
input size, as uint8, in one memory-mapped file; its steps (frame held, IMU, dt, label) beside them.

One entry per bag and input spec, under the cache root (`--cache-dir`, else `$LIQUID_CONTROL_CACHE`,
else `$XDG_CACHE_HOME/liquid_control`, else `~/.cache/liquid_control`). An entry's name is a hash of
what its content depends on: the bag's files (names, sizes, modification times), the image size,
the IMU fields, the three topics, the episode-splitting gap and the cache format version; change
any of them and a new entry is built, and the bag's stale entries are removed. Building happens in a
temporary folder renamed into place when complete, under a lock file, so a killed build leaves no
half entry and several processes (torchrun ranks) build a bag once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..paths import cache_root

VERSION = 2  # what an entry holds or how frames are made (2: sensing.model_frame): bump to invalidate every cache
FRAMES, ARRAYS, META = "frames.u8", "steps.npz", "meta.json"


default_root = cache_root


def bag_files(bag: Path) -> list[dict]:
    """What identifies a bag's content without reading it: every file's name, size and mtime."""
    files = [bag] if bag.is_file() else sorted(p for p in bag.rglob("*") if p.is_file())
    out = []
    for f in files:
        st = f.stat()
        out.append({"file": f.name if f == bag else str(f.relative_to(bag)), "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns})
    return out


@dataclass(frozen=True)
class Entry:
    path: Path
    meta: dict

    def frames(self) -> np.ndarray:
        """All frames of the bag, (F, H, W, 3) uint8, memory-mapped (read only)."""
        shape = tuple(self.meta["frames_shape"])
        if shape[0] == 0:
            return np.zeros(shape, np.uint8)
        return np.memmap(self.path / FRAMES, dtype=np.uint8, mode="r", shape=shape)

    def arrays(self) -> dict[str, np.ndarray]:
        with np.load(self.path / ARRAYS, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


class FrameSink:
    """Appends uint8 frames to the entry's frame file as they are decoded (never all in memory)."""

    def __init__(self, file: BinaryIO, shape: tuple[int, int, int]) -> None:
        self._file, self.shape, self.count = file, shape, 0

    def append(self, frame: np.ndarray) -> int:
        if frame.shape != self.shape or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype}, expected {self.shape} uint8")
        self._file.write(np.ascontiguousarray(frame).tobytes())
        self.count += 1
        return self.count - 1


def cached(bag: Path, inputs: dict, frame_shape: tuple[int, int, int],
           build: Callable[[FrameSink], tuple[dict[str, np.ndarray], dict]],
           root: str | Path | None = None, log: Callable[[str], None] = print) -> Entry:
    """The bag's entry for these inputs: reused if present, else built by `build(sink)`, which
    appends frames to the sink and returns the step arrays and extra metadata."""
    bag = Path(bag).resolve()
    root = Path(root) if root is not None else default_root()
    root.mkdir(parents=True, exist_ok=True)
    key = {"version": VERSION, "bag": str(bag), "files": bag_files(bag), **inputs}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    final = root / f"{bag.name}-{digest}"
    with _locked(root / f"{bag.name}.lock"):
        if (final / META).is_file():
            return Entry(final, json.loads((final / META).read_text()))
        shutil.rmtree(final, ignore_errors=True)  # a folder without its META is not an entry
        tmp = root / f"{final.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)  # a build that was killed (we hold the lock)
        tmp.mkdir()
        try:
            with open(tmp / FRAMES, "wb") as f:
                sink = FrameSink(f, frame_shape)
                arrays, extra = build(sink)
            np.savez(tmp / ARRAYS, **arrays)
            meta = {**key, **extra, "frames_shape": [sink.count, *frame_shape]}
            (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        stale = [p for p in root.glob(f"{bag.name}-*") if p != final and _entry_of(p) == str(bag)]
        for p in stale:
            shutil.rmtree(p, ignore_errors=True)
        if stale:
            log(f"cache: removed {len(stale)} stale entr{'y' if len(stale) == 1 else 'ies'} of {bag}")
        return Entry(final, meta)


def _entry_of(path: Path) -> str | None:
    try:
        return json.loads((path / META).read_text()).get("bag")
    except (OSError, ValueError):
        return None


@contextmanager
def _locked(path: Path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
