"""`liquid-control import-tub`: a DonkeyCar tub (v2), written here as DonkeyCar's tub_v2 writes one
(manifest.json, JSON-lines catalogs, a folder of JPEG frames), becomes a bag that info, train and
replay take; what cannot be used is skipped and counted, and a folder that is no tub is named."""

import json
import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from support import run_cli  # noqa: E402

TOP_SPEED, MAX_YAW_RATE = 2.0, 1.5  # what the car's owner declares


def write_tub(path: Path, seconds: float = 12.0, t0_ms: int = 1_700_000_000_000, seed: int = 0, period: float = 6.0):
    """A tub of a car driven at 20 Hz along a dark road band that drifts left and right in its
    160x120 camera; the driver steers toward it (user/angle positive to the right, as DonkeyCar's)
    at a steady throttle. Two sessions; record 7 deleted, records 30-34 driven by the autopilot,
    record 50's frame missing."""
    rng = np.random.default_rng(seed)
    (path / "images").mkdir(parents=True)
    n = int(seconds * 20)
    records = []
    for k in range(n):
        t = k / 20
        offset = 0.6 * math.sin(2 * math.pi * t / period)  # the band's offset, right positive
        angle = float(np.clip(1.2 * offset, -1, 1))  # steer toward it: right when it is right
        img = np.full((120, 160, 3), 170, np.uint8)
        centre = int(80 + offset * 60)
        img[:, max(centre - 15, 0) : centre + 15] = 40
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        name = f"{k}_cam_image_array_.jpg"
        if k != 50:
            cv2.imwrite(str(path / "images" / name), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
        records.append(
            {
                "_index": k,
                "_session_id": "21-12-05_0" if k < n // 2 else "21-12-05_1",
                "_timestamp_ms": t0_ms + k * 50 + (2000 if k >= n // 2 else 0),
                "cam/image_array": name,
                "user/angle": angle,
                "user/mode": "local" if 30 <= k < 35 else "user",
                "user/throttle": 0.2,
            }
        )
    catalogs = []
    for c in range(0, n, 100):  # DonkeyCar starts a new catalog every max_catalog_len records
        name = f"catalog_{c // 100}.catalog"
        catalogs.append(name)
        (path / name).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records[c : c + 100]))
    manifest = [
        ["cam/image_array", "user/angle", "user/throttle", "user/mode"],
        ["image_array", "float", "float", "str"],
        {},
        {"created_at": t0_ms / 1000},
        {"paths": catalogs, "current_index": n, "max_len": 100, "deleted_indexes": [7]},
    ]
    (path / "manifest.json").write_text("\n".join(json.dumps(line) for line in manifest) + "\n")
    return path


_cli = partial(run_cli, timeout=900)


def _import(tub: Path, bag: Path, *extra):
    return _cli(
        "import-tub", tub, "--output", bag, "--top-speed", TOP_SPEED, "--max-yaw-rate", MAX_YAW_RATE, "--json", *extra
    )


def test_a_tub_becomes_a_bag_of_its_frames_and_the_drivers_commands_in_si_units(tmp_path):
    from liquid_control.bags.io import read_events

    tub = write_tub(tmp_path / "tub")
    result = _import(tub, tmp_path / "bag")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["records"] == 240 and summary["sessions"] == 2
    assert summary["skipped"] == {"deleted in the tub": 1, "driven by an autopilot": 5, "frame file missing": 1}
    assert summary["imported"] == 240 - 7
    info = json.loads(_cli("info", tmp_path / "bag", "--json").stdout)
    assert info["training"]["camera"] == "/camera/image_raw/compressed" and info["training"]["imu"] is None
    assert info["training"]["label"] == "/cmd_vel" and info["training"]["label_matched_by"] == "header stamp"
    frames, commands = [], []
    for event in read_events(tmp_path / "bag", camera="/camera/image_raw/compressed", imu=None, command="/cmd_vel"):
        (frames if event.kind == "camera" else commands).append(event)
    assert len(frames) == len(commands) == 233
    assert frames[0].data.shape == (120, 160, 3)  # the JPEG as the car saved it
    records = [json.loads(line) for c in sorted(tub.glob("*.catalog")) for line in c.read_text().splitlines()]
    kept = [r for r in records if r["_index"] not in (7, 50) and r["user/mode"] == "user"]
    for event, r in zip(commands, kept, strict=True):
        assert event.stamp == pytest.approx(r["_timestamp_ms"] / 1000, abs=1e-6)
        # Throttle times the top speed; steering to the right (positive in the tub) is a negative,
        # clockwise yaw rate (REP 103).
        assert event.data[0] == pytest.approx(0.2 * TOP_SPEED)
        assert event.data[1] == pytest.approx(-r["user/angle"] * MAX_YAW_RATE)
    # The autopilot's records too, when asked.
    again = _import(tub, tmp_path / "all", "--all-modes")
    assert json.loads(again.stdout)["imported"] == 240 - 2


def test_what_is_no_tub_is_named_and_no_bag_is_left(tmp_path):
    (tmp_path / "empty").mkdir()
    result = _import(tmp_path / "empty", tmp_path / "bag")
    assert result.returncode == 2 and "no manifest.json" in result.stderr
    assert not (tmp_path / "bag").exists()
    tub = write_tub(tmp_path / "tub", seconds=2.0)
    manifest = (tub / "manifest.json").read_text().splitlines()
    manifest[4] = json.dumps({"paths": ["../elsewhere.catalog"], "deleted_indexes": []})
    (tub / "manifest.json").write_text("\n".join(manifest))
    result = _import(tub, tmp_path / "bag")
    assert result.returncode == 2 and "outside the tub" in result.stderr and not (tmp_path / "bag").exists()
    result = _cli(
        "import-tub", write_tub(tmp_path / "tub2", seconds=2.0), "--output", tmp_path / "bag", "--top-speed", 2
    )
    assert result.returncode == 2 and "--max-yaw-rate" in result.stderr


@pytest.mark.slow
def test_a_tub_trains_a_camera_only_policy_that_follows_the_driver_on_a_held_out_tub(tmp_path):
    write_tub(tmp_path / "tub1", seed=1)
    write_tub(tmp_path / "tub2", seed=2, t0_ms=1_700_000_100_000)
    write_tub(tmp_path / "held_out", seed=3, t0_ms=1_700_000_300_000, period=5.0)
    bags = tmp_path / "bags"
    for name in ("tub1", "tub2", "held_out"):
        result = _import(tmp_path / name, (bags if name != "held_out" else tmp_path) / f"{name}_bag")
        assert result.returncode == 0, result.stderr
    model = tmp_path / "donkey.safetensors"
    result = _cli("train", "--bag", bags, "--output", model, "--iterations", "80", "--window", "60", "--batch", "4")
    assert result.returncode == 0, result.stderr
    result = _cli("replay", tmp_path / "held_out_bag", "--model", model, "--output", tmp_path / "replayed", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["compare"]["topic"] == "/cmd_vel" and summary["compare"]["matched"] > 200
    import csv

    with open(summary["csv"], newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["reason"] == "policy" and r["recorded_angular_z"]]
    replayed = np.array([float(r["angular_z"]) for r in rows])
    driver = np.array([float(r["recorded_angular_z"]) for r in rows])
    error, constant = np.abs(replayed - driver).mean(), np.abs(driver - np.median(driver)).mean()
    assert len(rows) > 150 and error < 0.8 * constant, (error, constant)
