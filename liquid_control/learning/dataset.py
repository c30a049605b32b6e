"""Bags to training sequences, exactly as the controller sees them at run time: every camera or
IMU message is a step, `dt` is the difference of header stamps, the latest frame and IMU sample
are held between messages, and the label of a step is the latest teacher command stamped at or
before it. A gap above `max_gap` (or a stamp going back) starts a new episode, as it resets the
controller's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import topics
from ..bags.io import read_events
from ..runtime.sensing import IMU_FIELDS, resize


@dataclass
class Episode:
    frames: np.ndarray       # (F, H, W, 3) float32, at the model's input size
    frame_index: np.ndarray  # (T,) the frame held at each step
    imu: np.ndarray          # (T, k) the IMU fields held at each step
    dt: np.ndarray           # (T,) s since the previous step (the first: the median dt)
    target: np.ndarray       # (T, 2) teacher (linear.x, angular.z) at each step

    def __len__(self) -> int:
        return len(self.dt)


def episodes_from_bag(path: str | Path, width: int, height: int, imu_fields: tuple[str, ...],
                      camera: str = topics.absolute(topics.CAMERA), imu: str = topics.absolute(topics.IMU),
                      label: str = topics.absolute(topics.TEACHER), max_gap: float = 0.5) -> list[Episode]:
    columns = [IMU_FIELDS.index(f) for f in imu_fields]
    episodes: list[Episode] = []
    commands: list[tuple[float, np.ndarray]] = []
    state = _Builder()
    last_stamp = None
    # Frames decoded (a compressed camera) at the smallest scale that covers the model's input,
    # as the node decodes them.
    for event in read_events(path, camera=camera, imu=imu, command=label, camera_size=(width, height)):
        if event.kind == "command":
            commands.append((event.stamp, event.data))
            continue
        if last_stamp is not None and (event.stamp - last_stamp > max_gap or last_stamp - event.stamp > max_gap):
            episodes.append(state)
            state = _Builder()
        last_stamp = event.stamp
        if event.kind == "camera":
            state.frames.append(resize(event.data, width, height))
        else:
            state.imu = event.data[columns]
        if not state.frames or state.imu is None:
            continue  # steps start once both sensors have spoken
        if state.steps and event.stamp <= state.stamps[-1]:
            # A frame stamped before the last step: held from the next step on, no step of its
            # own (as the controller); the steps already taken keep the frame they saw.
            continue
        state.stamps.append(event.stamp)
        state.frame_index.append(len(state.frames) - 1)
        state.imus.append(state.imu)
        state.steps += 1
    episodes.append(state)
    if not commands:
        raise ValueError(f"bag {path}: no commands on the label topic {label}")
    cmd_t = np.array([t for t, _ in commands])
    order = np.argsort(cmd_t, kind="stable")
    cmd_t, cmd_v = cmd_t[order], np.array([v for _, v in commands])[order]
    out = []
    for b in episodes:
        if b.steps < 10:
            continue
        stamps = np.array(b.stamps)
        which = np.searchsorted(cmd_t, stamps + 1e-9, side="right") - 1
        keep = which >= 0
        if keep.sum() < 10:
            continue
        dt = np.diff(stamps, prepend=stamps[0])
        dt[0] = np.median(dt[1:]) if len(dt) > 1 else 0.005
        first_frame = int(np.array(b.frame_index)[keep][0])
        out.append(Episode(
            frames=np.stack(b.frames[first_frame:]).astype(np.float32),
            frame_index=np.array(b.frame_index)[keep] - first_frame,
            imu=np.array(b.imus)[keep].astype(np.float32),
            dt=dt[keep].astype(np.float32),
            target=cmd_v[which[keep]].astype(np.float32),
        ))
    if not out:
        steps = sum(b.steps for b in episodes)
        raise ValueError(f"bag {path}: nothing to train on: {steps} steps of camera {camera} and IMU {imu}, but "
                         f"no episode of 10 or more steps with a command on {label} stamped at or before it "
                         "(no overlap between the sensors and the label, or episodes too short)")
    return out


class _Builder:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.frame_index: list[int] = []
        self.imus: list[np.ndarray] = []
        self.stamps: list[float] = []
        self.imu: np.ndarray | None = None
        self.steps = 0
