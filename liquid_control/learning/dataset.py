"""Bags to training sequences, exactly as the controller sees them at run time: every message of
a sensor the model reads (camera, and IMU and odometry where it reads them) is a step, `dt` is the
difference of header stamps, the latest frame and samples are held between messages, and the label of a step is the latest teacher command stamped at or
before it. A gap above `max_gap` (or a stamp going back) starts a new episode, as it resets the
controller's state. Where the bag holds the controller node's ~/intervention marks, each step
also says whether a person commanded when it was logged (the last mark logged before it: a
takeover), which training can weight.

A bag is read once per input spec: its frames go, decoded and resized to the model's input as
uint8, into a memory-mapped file of the cache (`learning/cache.py`), and an Episode's frames are a
view of it, so the data in memory stays a few bytes per step whatever the hours of camera. An entry
of the cache is used only once its index is checked against its frames (`_check_entry`).

Frames are decoded within the controller node's image size limit (`max_image_pixels` of the
parameter table, runtime/parameters.py): a frame of more pixels is refused from its header, before
it is decoded (a 875 KB PNG declaring 30000x30000 would take 5.5 GB), and skipped and counted as
the node and `replay` skip it; the log says how many, of which bag and topic, and why. A bag left
with nothing to train on says so in its one-line error, with what was skipped.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import progress, topics
from ..bags.io import read_events, summarize
from ..model.labels import LabelMapping
from ..runtime.parameters import DEFAULTS
from ..runtime.sensing import FIELDS, model_frame
from . import cache

MIN_STEPS = 10  # an episode shorter than this (with a label) is not trained on
MAX_IMAGE_PIXELS = DEFAULTS["max_image_pixels"]  # the node's limit, as replay applies it


@dataclass
class Episode:
    frames: np.ndarray  # (F, H, W, 3) uint8 at the model's input size (a view of the cache)
    frame_index: np.ndarray  # (T,) the frame held at each step
    fields: np.ndarray  # (T, k) the IMU fields, then the odometry fields, held at each step
    dt: np.ndarray  # (T,) s since the previous step (the first: the median dt)
    target: np.ndarray  # (T, 2) teacher (linear.x, angular.z) at each step
    takeover: np.ndarray | None = None  # (T,) uint8: 1 where a person commanded (a takeover)
    weight: np.ndarray | None = None  # (T,) float32 loss weight of each step (None: all 1), set by train

    def __len__(self) -> int:
        return len(self.dt)


def episodes_from_bag(
    path: str | Path,
    width: int,
    height: int,
    imu_fields: tuple[str, ...],
    camera: str = topics.absolute(topics.CAMERA),
    imu: str | None = topics.absolute(topics.IMU),
    label: str = topics.absolute(topics.TEACHER),
    max_gap: float = 0.5,
    cache_dir: str | Path | None = None,
    log=print,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    skipped: dict[str, int] | None = None,
    odom_fields: tuple[str, ...] = (),
    odom: str | None = None,
    labels: LabelMapping | None = None,
    intervention: str | None = None,
) -> list[Episode]:
    """The bag's episodes, from its cache entry (built on first use). The IMU's fields are read
    from `imu`, the odometry's from `odom`; a sensor whose fields are empty is not read (its topic
    may be None: a camera-only robot). Frames of more than `max_image_pixels` are skipped (never
    decoded); `skipped` counts what was skipped, per topic and reason. The label topic's commands
    become (linear.x, angular.z) by `labels` (model/labels.py: Twist as it is, AckermannDrive by the
    bicycle model, normalised steering and throttle by their declared scale). `intervention`: the
    topic of the node's takeover marks (std_msgs/Bool), or None. ValueError (one line) when nothing
    is left to train on."""
    path = Path(path)
    labels = labels or LabelMapping()
    fields = {"imu": tuple(imu_fields), "odom": tuple(odom_fields)}
    sensors = {kind: topic for kind, topic in (("imu", imu), ("odom", odom)) if fields[kind]}
    for kind, topic in sensors.items():
        if topic is None:
            raise ValueError(f"the model reads {kind} fields {list(fields[kind])} but no {kind} topic was given")
    fields = {kind: fields[kind] for kind in sensors}
    inputs = {
        "width": width,
        "height": height,
        "camera": camera,
        "label": label,
        "max_gap": max_gap,
        "max_image_pixels": max_image_pixels,
        "labels": labels.record(),
        "sensors": {kind: [topic, list(fields[kind])] for kind, topic in sensors.items()},
        "intervention": intervention,
    }
    k = sum(map(len, fields.values()))
    entry = cache.cached(
        path,
        inputs,
        (height, width, 3),
        lambda sink: _build(
            path, sink, width, height, fields, camera, sensors, label, max_gap, max_image_pixels, labels, intervention
        ),
        root=cache_dir,
        log=log,
        check=lambda meta, arrays, frames: _check_entry(meta, arrays, frames, k),
    )
    names = {"camera": camera, **sensors}
    dropped = {
        f"{names.get(why.split(':', 1)[0], why.split(':', 1)[0])} ({why.split(': ', 1)[-1]})": n
        for why, n in sorted(entry.meta["skipped"].items())
    }
    if skipped is not None:
        for why, n in dropped.items():
            skipped[why] = skipped.get(why, 0) + n
    said = ", ".join(f"{n} message{'s' if n > 1 else ''} of {why}" for why, n in dropped.items())
    if entry.meta["episodes"] == 0:
        raise ValueError(entry.meta["problem"] + (f"; skipped {said}" if said else ""))
    if said:
        log(f"bag {path}: skipped {said}")
    frames, a = entry.frames(), entry.arrays()
    out = []
    for (f0, f1), (s0, s1) in zip(a["episode_frames"], a["episode_steps"], strict=True):
        out.append(
            Episode(
                frames=frames[f0:f1],
                frame_index=a["frame_index"][s0:s1],
                fields=a["fields"][s0:s1],
                dt=a["dt"][s0:s1],
                target=a["target"][s0:s1],
                takeover=a["takeover"][s0:s1],
            )
        )
    return out


def _check_entry(meta: dict, a: dict[str, np.ndarray], frames: int, k: int) -> str | None:
    """What is wrong with a cache entry's steps (None: nothing): the arrays _label writes, of the
    sizes the metadata declares, whose episodes tile the steps in order and each hold frames of
    the frame file, every step's frame one of its episode's, every value finite. Checked before
    any of it is used, so that a damaged or foreign entry is built again instead of failing later."""
    steps, episodes = meta.get("steps"), meta.get("episodes")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (steps, episodes)):
        return f"steps {steps!r} and episodes {episodes!r} are not counts"
    if not isinstance(meta.get("skipped"), dict) or not all(
        isinstance(w, str) and isinstance(n, int) for w, n in meta["skipped"].items()
    ):
        return "its count of skipped messages is malformed"
    if episodes == 0 and not isinstance(meta.get("problem"), str):
        return "it has no episode and no problem said"
    want = {
        "frame_index": (np.int64, (steps,)),
        "fields": (np.float32, (steps, k)),
        "dt": (np.float32, (steps,)),
        "target": (np.float32, (steps, 2)),
        "takeover": (np.uint8, (steps,)),
        "episode_frames": (np.int64, (episodes, 2)),
        "episode_steps": (np.int64, (episodes, 2)),
    }
    if set(a) != set(want):
        return f"its arrays are {sorted(a)}, not {sorted(want)}"
    for name, (dtype, shape) in want.items():
        if a[name].dtype != dtype or a[name].shape != shape:
            return f"{name} is {a[name].shape} {a[name].dtype}, not {shape} {np.dtype(dtype)}"
    for name in ("fields", "dt", "target"):
        if not np.isfinite(a[name]).all():
            return f"{name} holds values that are not finite"
    end = 0
    for (f0, f1), (s0, s1) in zip(a["episode_frames"].tolist(), a["episode_steps"].tolist(), strict=True):
        if s0 != end or s1 <= s0:
            return f"episode steps {s0}..{s1} do not follow the previous episode's (to {end})"
        if not 0 <= f0 < f1 <= frames:
            return f"an episode's frames {f0}..{f1} are not within the {frames} frames of the frame file"
        index = a["frame_index"][s0:s1]
        if index.min() < 0 or index.max() >= f1 - f0:
            return (
                f"steps {s0}..{s1} point at frames {int(index.min())}..{int(index.max())} of an "
                f"episode of {f1 - f0} frames"
            )
        end = s1
    if end != steps:
        return f"its episodes hold {end} steps, its metadata {steps}"
    return None


class _Builder:
    """One episode's steps while the bag is read: compact arrays, frames by index in the sink."""

    def __init__(self, first_frame: int) -> None:
        self.first_frame = first_frame  # the sink index of this episode's first frame
        self.frames = 0
        self.frame_index = array("q")  # per step, into this episode's frames
        self.values = array("f")  # per step, the held fields
        self.stamps = array("d")
        self.takeover = array("B")  # per step: whether a person commanded (the last mark before it)
        self.held: dict[str, np.ndarray] = {}  # the latest sample of each sensor beside the camera

    @property
    def steps(self) -> int:
        return len(self.stamps)


def _build(
    path: Path,
    sink: cache.FrameSink,
    width: int,
    height: int,
    fields: dict[str, tuple[str, ...]],
    camera: str,
    sensors: dict[str, str],
    label: str,
    max_gap: float,
    max_image_pixels: int,
    labels: LabelMapping,
    intervention: str | None = None,
) -> tuple[dict, dict]:
    columns = {kind: [FIELDS[kind].index(f) for f in fields[kind]] for kind in sensors}
    episodes: list[_Builder] = []
    cmd_t, cmd_v = array("d"), array("f")
    state = _Builder(0)
    last_stamp = None
    counts = summarize(path).topics
    total = sum(counts[t].count for t in (camera, *sensors.values(), label, intervention) if t in counts)
    person = 0  # the last intervention mark logged
    skipped: dict[str, int] = {}
    # Frames decoded as the node decodes them: within its size limit (a frame over it refused from
    # its header, counted in `skipped`), a compressed camera at the smallest scale that covers the
    # model's input, 8-bit (no float pass before model_frame).
    events = read_events(
        path,
        camera=camera,
        imu=sensors.get("imu"),
        odom=sensors.get("odom"),
        command=label,
        camera_size=(width, height),
        skipped=skipped,
        max_image_pixels=max_image_pixels,
        image_dtype=np.uint8,
        intervention=intervention,
    )
    with progress.bar(events, total=total, desc=f"caching {path.name}", unit="msg") as bar:
        for event in bar:
            if event.kind == "intervention":
                person = int(event.data[0] > 0.5)
                continue
            if event.kind == "command":
                cmd_t.append(event.stamp)
                cmd_v.extend(labels.physical(event.msgtype, event.data))
                continue
            if last_stamp is not None and (event.stamp - last_stamp > max_gap or last_stamp - event.stamp > max_gap):
                episodes.append(state)
                state = _Builder(sink.count)
            last_stamp = event.stamp
            if event.kind == "camera":
                sink.append(model_frame(event.data, width, height))
                state.frames += 1
            else:
                state.held[event.kind] = event.data[columns[event.kind]]
            if not state.frames or len(state.held) < len(sensors):
                continue  # steps start once every sensor read has spoken
            if state.steps and event.stamp <= state.stamps[-1]:
                # A frame stamped before the last step: held from the next step on, no step of its
                # own (as the controller); the steps already taken keep the frame they saw.
                continue
            state.stamps.append(event.stamp)
            state.takeover.append(person)
            state.frame_index.append(state.frames - 1)
            for kind in sensors:  # in input order: the IMU's fields, then the odometry's
                state.values.extend(state.held[kind])
    episodes.append(state)
    if not cmd_t:
        raise ValueError(f"bag {path}: no commands on the label topic {label}")
    return _label(
        episodes,
        np.frombuffer(cmd_t, np.float64),
        np.frombuffer(cmd_v, np.float32).reshape(-1, 2),
        sum(map(len, columns.values())),
        path,
        camera,
        sensors,
        label,
        skipped,
    )


def _label(
    episodes: list[_Builder],
    cmd_t: np.ndarray,
    cmd_v: np.ndarray,
    k: int,
    path: Path,
    camera: str,
    sensors: dict[str, str],
    label: str,
    skipped: dict,
) -> tuple[dict, dict]:
    """Each step's label (the latest command stamped at or before it), episodes without enough of
    them dropped; the step arrays of the kept episodes, concatenated."""
    order = np.argsort(cmd_t, kind="stable")
    cmd_t, cmd_v = cmd_t[order], cmd_v[order]
    parts: dict[str, list] = {"frame_index": [], "fields": [], "dt": [], "target": [], "takeover": []}
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
        parts["fields"].append(np.frombuffer(b.values, np.float32).reshape(b.steps, k)[keep])
        parts["dt"].append(dt[keep].astype(np.float32))
        parts["target"].append(cmd_v[which[keep]])
        parts["takeover"].append(np.frombuffer(b.takeover, np.uint8)[keep])
    meta = {"episodes": len(ep_steps), "steps": n, "skipped": skipped}
    if not ep_steps:
        steps = sum(b.steps for b in episodes)
        meta["problem"] = (
            f"bag {path}: nothing to train on: {steps} steps of camera {camera}"
            + "".join(f" and {kind} {topic}" for kind, topic in sensors.items())
            + ", but "
            f"no episode of {MIN_STEPS} or more steps with a command on {label} stamped at or before "
            "it (no overlap between the sensors and the label, or episodes too short)"
        )
    empty = {
        "frame_index": np.zeros(0, np.int64),
        "fields": np.zeros((0, k), np.float32),
        "dt": np.zeros(0, np.float32),
        "target": np.zeros((0, 2), np.float32),
        "takeover": np.zeros(0, np.uint8),
    }
    arrays = {name: np.concatenate(v) if v else empty[name] for name, v in parts.items()}
    arrays["episode_frames"] = np.array(ep_frames, np.int64).reshape(-1, 2)
    arrays["episode_steps"] = np.array(ep_steps, np.int64).reshape(-1, 2)
    return arrays, meta
