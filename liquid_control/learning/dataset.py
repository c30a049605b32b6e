"""Bags to training sequences, exactly as the controller sees them at run time: every camera or
IMU message is a step, `dt` is the difference of header stamps, the latest frame and IMU sample
are held between messages, and the label of a step is the latest teacher command stamped at or
before it. A gap above `max_gap` (or a stamp going back) starts a new episode, as it resets the
controller's state.

A bag is read once per input spec: its frames go, decoded and resized to the model's input as
uint8, into a memory-mapped file of the cache (`learning/cache.py`), and an Episode's frames are a
view of it, so the data in memory stays a few bytes per step whatever the hours of camera.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import progress, topics
from ..bags.io import read_events, summarize
from ..runtime.sensing import IMU_FIELDS, model_frame
from . import cache

MIN_STEPS = 10  # an episode shorter than this (with a label) is not trained on


@dataclass
class Episode:
    frames: np.ndarray       # (F, H, W, 3) uint8 at the model's input size (a view of the cache)
    frame_index: np.ndarray  # (T,) the frame held at each step
    imu: np.ndarray          # (T, k) the IMU fields held at each step
    dt: np.ndarray           # (T,) s since the previous step (the first: the median dt)
    target: np.ndarray       # (T, 2) teacher (linear.x, angular.z) at each step

    def __len__(self) -> int:
        return len(self.dt)


def episodes_from_bag(path: str | Path, width: int, height: int, imu_fields: tuple[str, ...],
                      camera: str = topics.absolute(topics.CAMERA), imu: str = topics.absolute(topics.IMU),
                      label: str = topics.absolute(topics.TEACHER), max_gap: float = 0.5,
                      cache_dir: str | Path | None = None, log=print) -> list[Episode]:
    """The bag's episodes, from its cache entry (built on first use)."""
    path = Path(path)
    inputs = {"width": width, "height": height, "imu_fields": list(imu_fields), "camera": camera, "imu": imu,
              "label": label, "max_gap": max_gap}
    entry = cache.cached(path, inputs, (height, width, 3),
                         lambda sink: _build(path, sink, width, height, imu_fields, camera, imu, label, max_gap),
                         root=cache_dir, log=log)
    if entry.meta["skipped"]:
        log(f"bag {path}: skipped " + ", ".join(f"{n} ({why})" for why, n in sorted(entry.meta["skipped"].items())))
    if entry.meta["episodes"] == 0:
        raise ValueError(entry.meta["problem"])
    frames, a = entry.frames(), entry.arrays()
    out = []
    for (f0, f1), (s0, s1) in zip(a["episode_frames"], a["episode_steps"], strict=True):
        out.append(Episode(frames=frames[f0:f1], frame_index=a["frame_index"][s0:s1], imu=a["imu"][s0:s1],
                           dt=a["dt"][s0:s1], target=a["target"][s0:s1]))
    return out


class _Builder:
    """One episode's steps while the bag is read: compact arrays, frames by index in the sink."""

    def __init__(self, first_frame: int) -> None:
        self.first_frame = first_frame  # the sink index of this episode's first frame
        self.frames = 0
        self.frame_index = array("q")   # per step, into this episode's frames
        self.imus = array("f")
        self.stamps = array("d")
        self.imu: np.ndarray | None = None

    @property
    def steps(self) -> int:
        return len(self.stamps)


def _build(path: Path, sink: cache.FrameSink, width: int, height: int, imu_fields: tuple[str, ...],
           camera: str, imu: str, label: str, max_gap: float) -> tuple[dict, dict]:
    columns = [IMU_FIELDS.index(f) for f in imu_fields]
    episodes: list[_Builder] = []
    cmd_t, cmd_v = array("d"), array("f")
    state = _Builder(0)
    last_stamp = None
    counts = summarize(path).topics
    total = sum(counts[t].count for t in (camera, imu, label) if t in counts)
    skipped: dict[str, int] = {}
    # Frames decoded (a compressed camera) at the smallest scale that covers the model's input,
    # as the node decodes them.
    events = read_events(path, camera=camera, imu=imu, command=label, camera_size=(width, height), skipped=skipped,
                         image_dtype=np.uint8)  # the node's 8-bit frames: no float pass before model_frame
    with progress.bar(events, total=total, desc=f"caching {path.name}", unit="msg") as bar:
        for event in bar:
            if event.kind == "command":
                cmd_t.append(event.stamp)
                cmd_v.extend(event.data)
                continue
            if last_stamp is not None and (event.stamp - last_stamp > max_gap or last_stamp - event.stamp > max_gap):
                episodes.append(state)
                state = _Builder(sink.count)
            last_stamp = event.stamp
            if event.kind == "camera":
                sink.append(model_frame(event.data, width, height))
                state.frames += 1
            else:
                state.imu = event.data[columns]
            if not state.frames or state.imu is None:
                continue  # steps start once both sensors have spoken
            if state.steps and event.stamp <= state.stamps[-1]:
                # A frame stamped before the last step: held from the next step on, no step of its
                # own (as the controller); the steps already taken keep the frame they saw.
                continue
            state.stamps.append(event.stamp)
            state.frame_index.append(state.frames - 1)
            state.imus.extend(state.imu)
    episodes.append(state)
    if not cmd_t:
        raise ValueError(f"bag {path}: no commands on the label topic {label}")
    return _label(episodes, np.frombuffer(cmd_t, np.float64), np.frombuffer(cmd_v, np.float32).reshape(-1, 2),
                  len(columns), path, camera, imu, label, skipped)


def _label(episodes: list[_Builder], cmd_t: np.ndarray, cmd_v: np.ndarray, k: int, path: Path, camera: str,
           imu: str, label: str, skipped: dict) -> tuple[dict, dict]:
    """Each step's label (the latest command stamped at or before it), episodes without enough of
    them dropped; the step arrays of the kept episodes, concatenated."""
    order = np.argsort(cmd_t, kind="stable")
    cmd_t, cmd_v = cmd_t[order], cmd_v[order]
    parts: dict[str, list] = {"frame_index": [], "imu": [], "dt": [], "target": []}
    ep_frames, ep_steps, n = [], [], 0
    for b in episodes:
        if b.steps < MIN_STEPS:
            continue
        stamps = np.frombuffer(b.stamps, np.float64)
        which = np.searchsorted(cmd_t, stamps + 1e-9, side="right") - 1
        keep = which >= 0
        if keep.sum() < MIN_STEPS:
            continue
        dt = np.diff(stamps, prepend=stamps[0])
        dt[0] = np.median(dt[1:]) if len(dt) > 1 else 0.005
        index = np.frombuffer(b.frame_index, np.int64)[keep]
        first = int(index[0])
        ep_frames.append((b.first_frame + first, b.first_frame + b.frames))
        ep_steps.append((n, n + int(keep.sum())))
        n += int(keep.sum())
        parts["frame_index"].append(index - first)
        parts["imu"].append(np.frombuffer(b.imus, np.float32).reshape(-1, k)[keep])
        parts["dt"].append(dt[keep].astype(np.float32))
        parts["target"].append(cmd_v[which[keep]])
    meta = {"episodes": len(ep_steps), "steps": n, "skipped": skipped}
    if not ep_steps:
        steps = sum(b.steps for b in episodes)
        meta["problem"] = (f"bag {path}: nothing to train on: {steps} steps of camera {camera} and IMU {imu}, but "
                           f"no episode of {MIN_STEPS} or more steps with a command on {label} stamped at or before "
                           "it (no overlap between the sensors and the label, or episodes too short)")
    empty = {"frame_index": np.zeros(0, np.int64), "imu": np.zeros((0, k), np.float32),
             "dt": np.zeros(0, np.float32), "target": np.zeros((0, 2), np.float32)}
    arrays = {name: np.concatenate(v) if v else empty[name] for name, v in parts.items()}
    arrays["episode_frames"] = np.array(ep_frames, np.int64).reshape(-1, 2)
    arrays["episode_steps"] = np.array(ep_steps, np.int64).reshape(-1, 2)
    return arrays, meta
