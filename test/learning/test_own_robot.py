"""A robot's own bags, written by an independent writer (the rosbags library directly, not our
record): a compressed OAK-D-style preview on namespaced topics, its IMU, and the human driver's
teleop commands as the label. `info` finds the topics, `train` learns from them, `replay` runs the
model on the same bag, and what is wrong is named."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

CLI = [sys.executable, "-m", "liquid_control.cli"]
TS = get_typestore(Stores.ROS2_JAZZY)
CAMERA = "/robot1/oakd/rgb/preview/image_raw/compressed"
IMU = "/robot1/imu"
LABEL = "/cmd_vel"


def _header(t: float, frame: str):
    sec = int(t)
    return TS.types["std_msgs/msg/Header"](
        stamp=TS.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=int(round((t - sec) * 1e9))), frame_id=frame
    )


def _v3(x=0.0, y=0.0, z=0.0):
    return TS.types["geometry_msgs/msg/Vector3"](x=x, y=y, z=z)


def write_robot_bag(
    path: Path,
    seconds: float = 12.0,
    stamped_label: bool = True,
    corrupt_at: float | None = None,
    t0: float = 1_700_000_000.0,
    second_camera: bool = False,
) -> Path:
    """A dark road band that drifts left and right in the camera; the driver steers toward it
    (angular.z = -1.2 x the band's offset): a mapping from pixels to commands to learn."""
    rng = np.random.default_rng(7)
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        cam = w.add_connection(CAMERA, "sensor_msgs/msg/CompressedImage", typestore=TS)
        imu = w.add_connection(IMU, "sensor_msgs/msg/Imu", typestore=TS)
        label_type = "geometry_msgs/msg/TwistStamped" if stamped_label else "geometry_msgs/msg/Twist"
        lab = w.add_connection(LABEL, label_type, typestore=TS)
        other = (
            w.add_connection("/robot1/oakd/rgb/image_raw/compressed", "sensor_msgs/msg/CompressedImage", typestore=TS)
            if second_camera
            else None
        )
        for k in range(int(seconds * 100)):  # IMU at 100 Hz, camera at 20 Hz, teleop at 20 Hz
            t = t0 + k * 0.01
            offset = 0.6 * np.sin(2 * np.pi * (t - t0) / 6.0)
            angular = -1.2 * offset
            ns = int(round(t * 1e9))
            msg = TS.types["sensor_msgs/msg/Imu"](
                header=_header(t, "imu_link"),
                orientation=TS.types["geometry_msgs/msg/Quaternion"](x=0, y=0, z=0, w=1),
                orientation_covariance=np.array([-1.0] + [0.0] * 8),
                angular_velocity=_v3(z=angular + rng.normal(0, 0.02)),
                angular_velocity_covariance=np.zeros(9),
                linear_acceleration=_v3(z=9.81),
                linear_acceleration_covariance=np.zeros(9),
            )
            w.write(imu, ns + 200_000, TS.serialize_cdr(msg, "sensor_msgs/msg/Imu"))
            if k % 5 == 0:
                img = np.full((240, 320, 3), 170, np.uint8)
                centre = int(160 + offset * 120)
                img[:, max(centre - 30, 0) : centre + 30] = 40
                img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
                data = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
                if corrupt_at is not None and abs((t - t0) - corrupt_at) < 0.005:
                    data = data[: len(data) // 3]  # truncated: a broken frame in a good bag
                frame = TS.types["sensor_msgs/msg/CompressedImage"](
                    header=_header(t, "oakd_rgb_camera_optical_frame"),
                    format="rgb8; jpeg compressed bgr8",
                    data=np.frombuffer(data, np.uint8),
                )
                w.write(cam, ns + 20_000_000, TS.serialize_cdr(frame, "sensor_msgs/msg/CompressedImage"))
                if other is not None:
                    w.write(other, ns + 20_000_000, TS.serialize_cdr(frame, "sensor_msgs/msg/CompressedImage"))
                twist = TS.types["geometry_msgs/msg/Twist"](linear=_v3(x=0.3), angular=_v3(z=angular))
                if stamped_label:
                    cmd = TS.types["geometry_msgs/msg/TwistStamped"](header=_header(t, "base_link"), twist=twist)
                    w.write(lab, ns + 1_000_000, TS.serialize_cdr(cmd, label_type))
                else:
                    w.write(lab, ns + 1_000_000, TS.serialize_cdr(twist, label_type))
    return path


def _cli(*args, timeout=900):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("robot")
    folder = root / "robot1_bags"
    folder.mkdir()
    write_robot_bag(folder / "run1", corrupt_at=3.0)
    write_robot_bag(folder / "run2", seconds=10.0, t0=1_700_000_100.0, stamped_label=False)
    return folder


def test_info_finds_the_camera_imu_and_label_of_a_robot_bag(bags):
    result = _cli("info", bags / "run1", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["training"] == {"camera": CAMERA, "imu": IMU, "label": LABEL, "label_matched_by": "header stamp"}
    topic = info["topics"][CAMERA]
    assert topic["type"] == "sensor_msgs/msg/CompressedImage" and topic["count"] == 240
    assert topic["median_dt_s"] == pytest.approx(0.05, abs=1e-6) and topic["jumps_back"] == 0
    assert info["topics"][IMU]["rate_hz"] == pytest.approx(100.0, rel=0.02)
    assert info["topics"][IMU]["rate_publishing_hz"] == pytest.approx(100.0, rel=0.02)
    text = _cli("info", bags / "run2").stdout
    assert f"label {LABEL} (matched by bag time)" in text  # a Twist label: by bag time


def test_header_stamps_read_from_the_bytes_equal_the_deserialized_ones(bags):
    """info reads header stamps from the CDR bytes (an hour of frames in seconds); on every stamped
    message of a rosbags-written bag, and on big-endian CDR, they equal rosbags' own reading."""
    from liquid_control.bags.info import header_stamp
    from liquid_control.bags.io import read_serialized

    seen = 0
    for _, msgtype, _, raw in read_serialized(bags / "run1", [CAMERA, IMU, LABEL]):
        stamp = TS.deserialize_cdr(raw, msgtype).header.stamp
        assert header_stamp(raw, msgtype) == stamp.sec + stamp.nanosec * 1e-9
        big = bytes(TS.serialize_cdr(TS.deserialize_cdr(raw, msgtype), msgtype, little_endian=False))
        assert big[1] == 0 and header_stamp(big, msgtype) == stamp.sec + stamp.nanosec * 1e-9
        seen += 1
    assert seen > 1000


@pytest.mark.slow
def test_train_on_a_folder_of_robot_bags_then_replay_the_model_on_one(bags, tmp_path):
    model = tmp_path / "robot1.safetensors"
    result = _cli("train", "--bag", bags, "--output", model, "--iterations", "60", "--window", "80", "--batch", "4")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(Path(b).name for b in report["bags"]) == ["run1", "run2"]
    assert report["topics"][str(bags / "run1")] == {"camera": CAMERA, "imu": IMU, "label": LABEL}
    result = _cli(
        "replay",
        bags / "run1",
        "--model",
        model,
        "--output",
        tmp_path / "replayed",
        "--camera-topic",
        CAMERA,
        "--imu-topic",
        IMU,
        "--compare-topic",
        LABEL,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["camera_frames"] == 239  # one of the 240 frames is the truncated JPEG
    assert any("corrupt or truncated JPEG" in reason for reason in summary["skipped_messages"])
    assert summary["compare"]["matched_by"] == "header stamp" and summary["commands"] > 1000
    # Even a short training follows the driver better than not steering at all.
    teacher_abs = 1.2 * 0.6 * 2 / np.pi  # mean |angular.z| of the driver over whole periods
    assert summary["compare"]["angular.z"]["mean_abs_error"] < 0.8 * teacher_abs, summary["compare"]


@pytest.mark.slow
def test_wrong_topics_and_ambiguous_bags_are_named(bags, tmp_path):
    result = _cli("train", "--bag", bags / "run1", "--output", tmp_path / "m.safetensors", "--imu-topic", "/imu")
    assert result.returncode == 2
    assert "run1" in result.stderr and "no topic /imu for the IMU" in result.stderr
    result = _cli("train", "--bag", bags / "run1", "--output", tmp_path / "m.safetensors", "--label-topic", IMU)
    assert result.returncode == 2 and f"topic {IMU} is sensor_msgs/msg/Imu; the label must be" in result.stderr
    two = write_robot_bag(tmp_path / "two_cameras", seconds=2.0, second_camera=True)
    result = _cli("info", two)
    assert "2 topics could be the camera" in result.stdout and "--camera-topic" in result.stdout
    result = _cli("train", "--bag", tmp_path / "nothing_here", "--output", tmp_path / "m.safetensors")
    assert result.returncode == 2 and "no such file or directory" in result.stderr
