"""`liquid-control import-tub TUB --output BAG`: a DonkeyCar tub as a rosbag2 bag (MCAP) that
`info`, `train` and `replay` take, so that the recordings of the largest community of hobby
self-driving cars train liquid policies.

A tub (DonkeyCar's tub v2, `donkeycar/parts/tub_v2.py`) is a folder: `manifest.json` (newline
separated JSON: the record keys, their types, user metadata, manifest metadata, and the catalogs'
metadata with their file names and the deleted record indexes), catalogs `catalog_N.catalog` of one
JSON record per line, and `images/` with each record's camera frame as a JPEG. A record holds
`cam/image_array` (the frame's file name), `user/angle` and `user/throttle` (the driver's steering
and throttle in [-1, 1]; DonkeyCar's angle is positive to the right), `user/mode` ("user" while a
person drives, "local" or "local_angle" while an autopilot does) and `_timestamp_ms`.

The bag holds the frames as they are (sensor_msgs/CompressedImage, JPEG bytes untouched) on
/camera/image_raw/compressed, and the driver's commands as geometry_msgs/TwistStamped on /cmd_vel
in SI units: throttle times the declared top speed, and the steering as a yaw rate (the declared
yaw rate at full steering, or the bicycle model with the declared full-lock steering angle and
wheelbase), made positive to the left as REP 103 has it. Both are stamped with the record's time.
Only records a person drove are kept (an autopilot's commands are no labels), unless asked.
What cannot be used (a deleted record, a missing or non-JPEG frame, a record without finite
steering and throttle) is skipped and counted.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .. import topics
from ..files import FileRefused, read_text, regular_file
from ..model.labels import TWIST, LabelMapping
from .io import COMPRESSED_IMAGE, BagError, BagWriter, check_new_bag, compressed_image_msg, twist_stamped_msg

CAMERA_TOPIC = topics.absolute(topics.CAMERA_COMPRESSED)
LABEL_TOPIC = topics.absolute(topics.CMD_VEL)
KEYS = ("cam/image_array", "user/angle", "user/throttle")
MAX_FRAME_BYTES = 16 << 20  # a hobby car's JPEG is tens of KB; anything this large is not one


def _tub_error(tub: Path, why: str) -> BagError:
    return BagError(f"tub {tub}: {why}")


def _manifest(tub: Path) -> tuple[list[str], list[str], set[int]]:
    """The record keys, the catalog file names and the deleted indexes of a tub's manifest.json."""
    path = tub / "manifest.json"
    if not path.exists():
        raise _tub_error(tub, "no manifest.json (not a DonkeyCar tub v2 folder)")
    try:
        lines = [line for line in read_text(path).splitlines() if line.strip()]
        inputs, catalogs = json.loads(lines[0]), json.loads(lines[4])
        paths, deleted = catalogs["paths"], catalogs.get("deleted_indexes", [])
    except (FileRefused, OSError) as exc:
        raise _tub_error(tub, f"manifest.json cannot be read: {exc}") from None
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise _tub_error(tub, f"manifest.json is not a tub v2 manifest ({type(exc).__name__}: {exc})") from None
    if not isinstance(inputs, list) or not isinstance(paths, list) or not isinstance(deleted, list):
        raise _tub_error(tub, "manifest.json is not a tub v2 manifest (its keys or catalogs are not lists)")
    missing = [k for k in KEYS if k not in inputs]
    if missing:
        raise _tub_error(tub, f"its records have no {', '.join(missing)} (it records {', '.join(map(str, inputs))})")
    for name in paths:  # catalogs lie in the tub itself, by name
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise _tub_error(tub, f"manifest.json names a catalog {name!r} outside the tub")
    return inputs, paths, {int(i) for i in deleted if isinstance(i, int)}


def _frame(tub: Path, name, skipped: dict) -> bytes | None:
    """A record's JPEG bytes from images/, or None (counted in `skipped`)."""
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        why = "frame name not in images/"
    else:
        path = tub / "images" / name
        if not os.path.lexists(path):
            skipped["frame file missing"] = skipped.get("frame file missing", 0) + 1
            return None
        try:
            size = regular_file(path).st_size
            if size > MAX_FRAME_BYTES:
                raise FileRefused(f"{path}: {size} bytes, over {MAX_FRAME_BYTES}")
            data = path.read_bytes()
        except (FileRefused, OSError):
            why = "frame file unreadable"
        else:
            if data[:3] == b"\xff\xd8\xff":
                return data
            why = "frame not a JPEG"
    skipped[why] = skipped.get(why, 0) + 1
    return None


def import_tub(tub: str | Path, output: str | Path, labels: LabelMapping, all_modes: bool = False) -> dict:
    """Write the tub's records as a bag at `output` (a new bag); `labels`: the normalised mapping
    of the car (kind "normalised", with its top speed and full-lock angle and wheelbase or yaw rate,
    positive magnitudes: the tub's right-positive steering is turned around here). Returns the
    summary; BagError for a tub that cannot be read (nothing is left behind then)."""
    tub, output = Path(tub), Path(output)
    if labels.kind != "normalised":
        raise ValueError(
            "a tub's steering and throttle are normalised: give --top-speed and --max-yaw-rate, or --full-lock and --wheelbase"
        )
    if labels.full_lock < 0 or labels.max_yaw_rate < 0:
        raise ValueError(
            "give --full-lock and --max-yaw-rate as positive magnitudes: a tub's right-positive steering is turned around on import"
        )
    if not tub.is_dir():
        raise _tub_error(tub, "no such folder")
    _, catalogs, deleted = _manifest(tub)
    check_new_bag(output)
    # DonkeyCar's angle is positive to the right; REP 103's yaw rate positive to the left.
    mapping = LabelMapping(
        kind="normalised",
        wheelbase=labels.wheelbase,
        top_speed=labels.top_speed,
        full_lock=-labels.full_lock,
        max_yaw_rate=-labels.max_yaw_rate,
    )
    skipped: dict[str, int] = {}
    records, stamps, sessions = 0, [], set()
    try:
        with BagWriter(output) as bag:
            bag.add_topic(CAMERA_TOPIC, COMPRESSED_IMAGE)
            for name in catalogs:
                path = tub / name
                try:
                    text = read_text(path)
                except (FileRefused, OSError) as exc:
                    raise _tub_error(tub, f"catalog {name} cannot be read: {exc}") from None
                for line in text.splitlines():
                    if not line.strip():
                        continue
                    records += 1
                    written = _write_record(tub, bag, line, deleted, all_modes, mapping, skipped)
                    if written is not None:
                        stamps.append(written[0])
                        sessions.add(written[1])
    except BaseException:
        import shutil

        shutil.rmtree(output, ignore_errors=True)  # ours: check_new_bag made sure nothing was there
        raise
    if not stamps:
        import shutil

        shutil.rmtree(output, ignore_errors=True)
        raise _tub_error(tub, f"no record to import ({records} records; skipped {skipped or 'none'})")
    return {
        "tub": str(tub),
        "output": str(output),
        "records": records,
        "imported": len(stamps),
        "sessions": len(sessions),
        "seconds": round(max(stamps) - min(stamps), 3),
        "skipped": skipped,
        "labels": mapping.record([TWIST]),
        "topics": {"camera": CAMERA_TOPIC, "label": LABEL_TOPIC},
    }


def _write_record(tub, bag, line, deleted, all_modes, mapping, skipped) -> tuple[float, str] | None:
    """One catalog line into the bag: (its stamp, its session), or None and why in `skipped`."""

    def skip(why: str) -> None:
        skipped[why] = skipped.get(why, 0) + 1

    try:
        record = json.loads(line)
    except ValueError:
        return skip("record not JSON")
    if not isinstance(record, dict):
        return skip("record not JSON")
    if record.get("_index") in deleted:
        return skip("deleted in the tub")
    if not all_modes and record.get("user/mode", "user") != "user":
        return skip("driven by an autopilot")
    angle, throttle, ms = record.get("user/angle"), record.get("user/throttle"), record.get("_timestamp_ms")
    numbers = (angle, throttle, ms)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        return skip("steering, throttle or time not a finite number")
    data = _frame(tub, record.get("cam/image_array"), skipped)
    if data is None:
        return None
    stamp = ms / 1000.0
    bag.write(CAMERA_TOPIC, compressed_image_msg(stamp, data), stamp)
    linear, angular = mapping.physical(TWIST, [throttle, angle])
    bag.write(LABEL_TOPIC, twist_stamped_msg(stamp, float(linear), float(angular)), stamp)
    return stamp, str(record.get("_session_id", ""))


def format_import_summary(s: dict) -> str:
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(s["skipped"].items()))
    return (
        f"tub {s['tub']}: {s['imported']} of {s['records']} records -> {s['output']} "
        f"({s['seconds']:.1f} s, {s['sessions']} session{'s' if s['sessions'] != 1 else ''}; "
        f"camera {s['topics']['camera']}, commands {s['topics']['label']})"
        + (f"\n  skipped: {skipped}" if skipped else "")
    )
