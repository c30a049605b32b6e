"""What is in a bag from anywhere, and which of its topics training would use: `liquid-control info
BAG`, and the topic choice of `train --bag` and `replay` (camera, IMU, odometry and label topics
named, or found from the bag's types when exactly one topic fits). Any robot's bags: its own topic
names, namespaces, compressed cameras (image_transport's `.../compressed`), no IMU (a camera-only
car), wheel odometry, teleop commands as Twist or TwistStamped.

A bag recorded beside the controller node also holds its takeover marks (~/intervention, std_msgs/Bool):
`info` counts the takeovers, and training reads the marks (`--intervention-topic`, default the
bag's only `.../intervention` Bool topic) to weight them.

The camera and the label are always needed. The IMU is read when the bag has one (`--imu-topic
none`: not read); odometry when asked (`--odom-topic TOPIC`, or `auto` for the bag's only one), so
that a bag that holds odometry besides trains the same model as before unless the user says so.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import topics
from ..model.labels import COMMAND_TYPES
from ..model.labels import STAMPED as STAMPED_COMMANDS
from .io import (
    BOOL,
    COMPRESSED_IMAGE,
    IMAGE,
    IMU,
    ODOMETRY,
    TYPESTORE,
    BagError,
    read_serialized,
    summarize,
)

CAMERA_TYPES = (IMAGE, COMPRESSED_IMAGE)
LABEL_TYPES = COMMAND_TYPES  # Twist, TwistStamped, AckermannDrive, AckermannDriveStamped
STAMPED_TYPES = (IMAGE, COMPRESSED_IMAGE, IMU, ODOMETRY, *STAMPED_COMMANDS)
NONE, AUTO = "none", "auto"  # an optional sensor's topic: not read, or the bag's only one


def find_bags(path: str | Path) -> list[Path]:
    """The bags at `path`: itself if it is a bag (a directory with metadata.yaml, or a .mcap or
    .db3 file), else every bag below it, sorted. BagError when there is none."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path}: no such file or directory")
    if is_bag(path):
        return [path]
    found = sorted(p for p in path.rglob("*") if is_bag(p) and not any(is_bag(a) for a in p.parents))
    if not found:
        raise BagError(f"{path}: no bag in it (a bag is a directory with metadata.yaml, or a .mcap or .db3 file)")
    return found


def is_bag(path: Path) -> bool:
    if path.is_dir():  # whatever its metadata.yaml is: reading the bag says what is wrong with it
        return os.path.lexists(path / "metadata.yaml")
    return path.suffix in (".mcap", ".db3") and not (path.parent / "metadata.yaml").is_file()


@dataclass(frozen=True)
class TopicChoice:
    camera: str
    imu: str | None  # None: no IMU is read
    label: str
    label_stamped: bool  # TwistStamped, AckermannDriveStamped: matched by header stamp; else by bag time
    odom: str | None = None  # None: no odometry is read
    label_type: str = ""
    intervention: str | None = None  # the controller node's takeover marks (None: none read)

    @property
    def sensors(self) -> dict[str, str]:
        """The topic of each sensor read beside the camera ("imu", "odom")."""
        return {kind: topic for kind, topic in (("imu", self.imu), ("odom", self.odom)) if topic}


def _pick(path: Path, have: dict, role: str, types: tuple[str, ...], named: str | None, flag: str) -> str:
    if named is not None:
        if named not in have:
            raise BagError(f"bag {path}: no topic {named} for the {role} (it has {sorted(have)})")
        if have[named].msgtype not in types:
            raise BagError(
                f"bag {path}: topic {named} is {have[named].msgtype}; the {role} must be {' or '.join(types)}"
            )
        return named
    fits = sorted(t for t, info in have.items() if info.msgtype in types)
    if role == "label":  # the controller node's proposals are the policy's commands, never a label
        fits = [t for t in fits if t.rsplit("/", 1)[-1] != topics.PROPOSED.removeprefix("~/")]
    if len(fits) == 1:
        return fits[0]
    if role == "label":
        # A bag from our simulator (or one that records a teacher the same way) holds the applied
        # commands beside the teacher's: the teacher is the label.
        teachers = [t for t in fits if t.endswith("/" + topics.TEACHER)]
        if len(teachers) == 1:
            return teachers[0]
    if not fits:
        raise BagError(
            f"bag {path}: no {role} topic ({' or '.join(types)}); it has "
            f"{', '.join(f'{t} ({i.msgtype})' for t, i in sorted(have.items()))}"
        )
    raise BagError(f"bag {path}: {len(fits)} topics could be the {role} ({', '.join(fits)}): choose one with {flag}")


def _pick_optional(path: Path, have: dict, role: str, types: tuple[str, ...], named: str, flag: str) -> str | None:
    """An optional sensor's topic: None for "none"; for "auto" the bag's only one (None when it
    has none, BagError when it has several); else the topic named, checked."""
    if named == NONE:
        return None
    if named == AUTO:
        fits = sorted(t for t, info in have.items() if info.msgtype in types)
        if len(fits) > 1:
            raise BagError(
                f"bag {path}: {len(fits)} topics could be the {role} ({', '.join(fits)}): choose one "
                f"with {flag}, or {flag} none"
            )
        return fits[0] if fits else None
    return _pick(path, have, role, types, named, flag)


def _pick_intervention(path: Path, have: dict, named: str | None) -> str | None:
    """The takeover marks: "none" none; "auto" (default) the bag's only Bool topic named
    .../intervention, if any; else the topic named, checked."""
    if named == NONE:
        return None
    if named in (None, AUTO):
        fits = sorted(t for t, i in have.items() if i.msgtype == BOOL and t.rsplit("/", 1)[-1] == "intervention")
        if len(fits) > 1:
            raise BagError(
                f"bag {path}: {len(fits)} topics could be the takeover marks ({', '.join(fits)}): choose one "
                "with --intervention-topic, or --intervention-topic none"
            )
        return fits[0] if fits else None
    return _pick(path, have, "takeover marks", (BOOL,), named, "--intervention-topic")


def takeovers(path: str | Path, topic: str) -> list[tuple[int, int]]:
    """The takeovers marked on `topic` (std_msgs/Bool, true while a person commands): (start, end)
    in bag time (ns), each from the first true mark to the next false one (or the topic's last
    message, for one still going when the recording ended)."""
    out, start, last = [], None, None
    for _, _, log_time, data in read_serialized(Path(path), [topic]):
        try:
            value = TYPESTORE.deserialize_cdr(data, BOOL).data
        except Exception as exc:  # noqa: BLE001 - rosbags' CDR reader raises whatever the bytes lead it to
            raise BagError(
                f"bag {path}: a message on {topic} cannot be read as {BOOL} ({type(exc).__name__}: {exc})"
            ) from None
        last = log_time
        if value and start is None:
            start = log_time
        elif not value and start is not None:
            out.append((start, log_time))
            start = None
    if start is not None:
        out.append((start, last))
    return out


def pick_topics(
    path: str | Path,
    camera: str | None = None,
    imu: str | None = None,
    label: str | None = None,
    odom: str | None = None,
    intervention: str | None = None,
) -> TopicChoice:
    """The camera, IMU, odometry and label topics of a bag: the ones named, or the only one of its
    type. The IMU (default "auto") and the odometry (default "none") are optional: "none" leaves
    one out, "auto" takes the bag's only one, if any. BagError naming the bag, the topic and what
    is wrong."""
    path = Path(path)
    have = summarize(path).topics
    cam = _pick(path, have, "camera", CAMERA_TYPES, camera, "--camera-topic")
    imu_topic = _pick_optional(path, have, "IMU", (IMU,), imu or AUTO, "--imu-topic")
    odom_topic = _pick_optional(path, have, "odometry", (ODOMETRY,), odom or NONE, "--odom-topic")
    lab = _pick(path, have, "label", LABEL_TYPES, label, "--label-topic")
    label_type = have[lab].msgtype
    marks = _pick_intervention(path, have, intervention)
    return TopicChoice(cam, imu_topic, lab, label_type in STAMPED_COMMANDS, odom_topic, label_type, marks)


def sensor_topics(
    path: str | Path,
    sensors: tuple[str, ...],
    camera: str | None = None,
    imu: str | None = None,
    odom: str | None = None,
) -> dict[str, str]:
    """The topic of each sensor a model reads (`sensors`: "camera", "imu", "odom"), named or the
    bag's only one of its type, as training finds them; BagError when the bag lacks one."""
    path = Path(path)
    have = summarize(path).topics
    named = {"camera": camera, "imu": imu, "odom": None if odom == AUTO else odom}
    roles = {"camera": ("camera", CAMERA_TYPES), "imu": ("IMU", (IMU,)), "odom": ("odometry", (ODOMETRY,))}
    return {kind: _pick(path, have, roles[kind][0], roles[kind][1], named[kind], f"--{kind}-topic") for kind in sensors}


def header_stamp(data: bytes, msgtype: str) -> float:
    """The header stamp (s) of a serialized message whose first field is a std_msgs/Header,
    read from the CDR bytes without deserializing the rest (an hour of camera frames in seconds):
    after the 4-byte encapsulation header come int32 sec and uint32 nanosec, little-endian for
    CDR_LE (encapsulation 0x0001, what ROS 2 writes) or big-endian (0x0000)."""
    if len(data) >= 12 and data[0] == 0 and data[1] in (0, 1):
        order = "<" if data[1] == 1 else ">"
        sec, nanosec = struct.unpack_from(order + "iI", data, 4)
        return sec + nanosec * 1e-9
    header = TYPESTORE.deserialize_cdr(data, msgtype).header  # anything else: the full reader
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def _stamps(path: Path, topics: list[str]) -> dict[str, np.ndarray]:
    """Header stamps (s) of each stamped topic, in bag order."""
    out: dict[str, list[float]] = {t: [] for t in topics}
    for topic, msgtype, _, data in read_serialized(path, topics):
        try:
            out[topic].append(header_stamp(data, msgtype))
        except Exception as exc:  # noqa: BLE001 - rosbags' CDR reader raises whatever the bytes lead it to
            raise BagError(
                f"bag {path}: a message on {topic} cannot be read as {msgtype} ({type(exc).__name__}: {exc})"
            ) from None
    return {t: np.array(v) for t, v in out.items()}


def bag_info(
    path: str | Path,
    camera: str | None = None,
    imu: str | None = None,
    label: str | None = None,
    gap_s: float = 0.5,
    odom: str | None = None,
    intervention: str | None = None,
) -> dict:
    """Topics, types, message counts, rates, header-stamp gaps and jumps back, duration, and the
    topics a training run would pick (or why it cannot)."""
    path = Path(path)
    summary = summarize(path)
    stamped = [t for t, i in summary.topics.items() if i.msgtype in STAMPED_TYPES]
    stamps = _stamps(path, stamped) if stamped else {}
    duration = summary.duration
    topics = {}
    for name, topic in sorted(summary.topics.items()):
        entry = {
            "type": topic.msgtype,
            "count": topic.count,
            "rate_hz": round(topic.count / duration, 2) if duration > 0 else None,
        }
        s = stamps.get(name)
        if s is not None and len(s) > 1:
            d = np.diff(s)
            publishing = float(d[(d >= 0) & (d <= gap_s)].sum())  # the span without gaps
            entry.update(
                stamp_span_s=round(float(s[-1] - s[0]), 3),
                rate_publishing_hz=round(int(((d >= 0) & (d <= gap_s)).sum()) / publishing, 2)
                if publishing > 0
                else None,
                median_dt_s=round(float(np.median(d)), 6),
                max_gap_s=round(float(d.max()), 3),
                gaps_over_s={str(gap_s): int((d > gap_s).sum())},
                jumps_back=int((d < 0).sum()),
                repeated_stamps=int((d == 0).sum()),
            )
        topics[name] = entry
    info = {
        "bag": str(path),
        "messages": summary.count,
        "duration_s": round(duration, 3),
        "start_ns": summary.start_ns,
        "topics": topics,
    }
    try:
        choice = pick_topics(path, camera, imu, label, odom, intervention)
        if choice.intervention:
            spans = takeovers(path, choice.intervention)
            lengths = [(b - a) * 1e-9 for a, b in spans]
            info["takeovers"] = {
                "topic": choice.intervention,
                "count": len(spans),
                "seconds": round(sum(lengths), 3),
                "longest_s": round(max(lengths), 3) if lengths else 0.0,
                "spans_s": [
                    [round((a - summary.start_ns) * 1e-9, 3), round((b - summary.start_ns) * 1e-9, 3)] for a, b in spans
                ],
            }
        info["training"] = {
            "camera": choice.camera,
            "imu": choice.imu,
            "odom": choice.odom,
            "label": choice.label,
            "label_type": choice.label_type,
            "label_matched_by": "header stamp" if choice.label_stamped else "bag time",
            "intervention": choice.intervention,
        }
        unread = sorted(t for t, i in summary.topics.items() if i.msgtype == ODOMETRY and t != choice.odom)
        if unread:
            info["training"]["odometry_not_read"] = unread
    except BagError as exc:
        info["training"] = {"error": str(exc)}
    return info


def format_bag_info(info: dict) -> str:
    lines = [f"bag {info['bag']}: {info['messages']} messages, {info['duration_s']:.1f} s"]
    width = max((len(t) for t in info["topics"]), default=0)
    for name, t in info["topics"].items():
        rate = f"{t['rate_hz']:8.2f} Hz" if t["rate_hz"] is not None else "           "
        line = f"  {name:<{width}}  {t['count']:>8}  {rate}  {t['type']}"
        if "max_gap_s" in t:
            line += (
                f"  stamps: dt {t['median_dt_s'] * 1e3:.1f} ms, max gap {t['max_gap_s']:.3f} s, "
                f"{t['jumps_back']} back, {t['repeated_stamps']} repeated"
            )
            gaps = next(iter(t["gaps_over_s"].items()))
            if gaps[1] and t.get("rate_publishing_hz"):
                line += f"; {t['rate_publishing_hz']:.2f} Hz between its {gaps[1]} gaps over {gaps[0]} s"
        lines.append(line)
    training = info["training"]
    if "error" in training:
        lines.append(f"training: cannot pick the topics: {training['error']}")
    else:
        sensors = [f"camera {training['camera']}"]
        sensors.append(f"imu {training['imu']}" if training["imu"] else "no IMU")
        if training["odom"]:
            sensors.append(f"odometry {training['odom']}")
        lines.append(
            f"training would use: {', '.join(sensors)}, label {training['label']} "
            f"({training['label_type'].rsplit('/', 1)[-1]}, matched by {training['label_matched_by']})"
            + ("; a camera-only model" if not training["imu"] and not training["odom"] else "")
        )
        for topic in training.get("odometry_not_read", []):
            lines.append(f"  odometry {topic} is not read: --odom-topic {topic} trains on it")
    marks = info.get("takeovers")
    if marks:
        share = f" of {info['duration_s']:.1f} s" if info["duration_s"] > 0 else ""
        lines.append(
            f"takeovers: {marks['count']} on {marks['topic']}, {marks['seconds']:.1f} s{share} "
            f"(the longest {marks['longest_s']:.1f} s)"
            + ("; train --takeover-weight weights them" if marks["count"] else "")
        )
        for a, b in marks["spans_s"][:10]:
            lines.append(f"  a person commanded from {a:.2f} s to {b:.2f} s")
        if len(marks["spans_s"]) > 10:
            lines.append(f"  ... and {len(marks['spans_s']) - 10} more")
    return "\n".join(lines)
