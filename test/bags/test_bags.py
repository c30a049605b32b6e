"""rosbag2 bags written and read with real files; checked against an independent MCAP reader."""

import math

import numpy as np
import pytest

from liquid_control.bags.io import (
    BagError,
    BagWriter,
    image_msg,
    imu_msg,
    odometry_msg,
    read_events,
    read_serialized,
    summarize,
    twist_stamped_msg,
)

mcap_reader = pytest.importorskip("mcap_ros2.reader")


def _write_sample(path, n_imu=40):
    rng = np.random.default_rng(0)
    frames, imus = [], []
    with BagWriter(path) as bag:
        for k in range(n_imu):
            t = 100.0 + k * 0.005
            if k % 7 == 0:
                rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
                bag.write("/camera/image_raw", image_msg(t - 0.001, rgb), t)
                frames.append((t - 0.001, rgb))
            values = np.concatenate([rng.normal(size=3), [0.1, 0.0, 9.8], [0.01, -0.02, 1.0 + k * 0.01]])
            bag.write("/imu/data", imu_msg(t, values), t + 0.0002)
            imus.append((t, values))
            bag.write("/cmd_vel", twist_stamped_msg(t, 0.5, 0.1 * k), t + 0.0004)
            bag.write("/odom", odometry_msg(t, 1.0, 2.0, 0.3, 0.5, 0.1), t + 0.0004)
    return frames, imus


def test_round_trip_keeps_stamps_and_values(tmp_path):
    path = tmp_path / "bag"
    frames, imus = _write_sample(path)
    events = list(read_events(path))
    cams = [e for e in events if e.kind == "camera"]
    imu = [e for e in events if e.kind == "imu"]
    cmds = [e for e in events if e.kind == "command"]
    assert len(cams) == len(frames) and len(imu) == len(imus) and len(cmds) == len(imus)
    for e, (t, rgb) in zip(cams, frames, strict=True):
        assert e.stamp == pytest.approx(t, abs=1e-9)
        np.testing.assert_allclose(e.data, rgb / 255.0, atol=1e-6)
    for e, (t, values) in zip(imu, imus, strict=True):
        assert e.stamp == pytest.approx(t, abs=1e-9)
        np.testing.assert_allclose(e.data, values, atol=1e-9)
    assert cmds[3].data.tolist() == pytest.approx([0.5, 0.3])
    # Logged order: a frame before the IMU sample logged after it.
    assert [e.kind for e in events[:3]] == ["camera", "imu", "command"]


def test_an_independent_mcap_reader_decodes_our_bag(tmp_path):
    path = tmp_path / "bag"
    _, imus = _write_sample(path, n_imu=10)
    mcap_file = next(path.glob("*.mcap"))
    seen = {}
    with open(mcap_file, "rb") as f:
        for msg in mcap_reader.read_ros2_messages(f):
            seen.setdefault(msg.channel.topic, []).append(msg.ros_msg)
    assert set(seen) == {"/camera/image_raw", "/imu/data", "/cmd_vel", "/odom"}
    first = seen["/imu/data"][0]
    assert first.angular_velocity.x == pytest.approx(imus[0][1][0])
    assert first.header.stamp.sec == 100
    assert seen["/camera/image_raw"][0].encoding == "rgb8"
    metadata = (path / "metadata.yaml").read_text()
    assert "version: 8" in metadata and "storage_identifier: mcap" in metadata  # what Jazzy writes


def test_bad_bags_name_the_bag_and_the_problem(tmp_path):
    with pytest.raises(BagError, match="no such file"):
        list(read_events(tmp_path / "missing"))
    path = tmp_path / "bag"
    _write_sample(path, n_imu=5)
    with pytest.raises(BagError, match="no topic /front/image"):
        list(read_events(path, camera="/front/image"))
    with pytest.raises(BagError, match="is sensor_msgs/msg/Imu, expected"):
        list(read_events(path, command="/imu/data"))
    mcap_file = next(path.glob("*.mcap"))
    mcap_file.write_bytes(mcap_file.read_bytes()[:200])  # truncated
    with pytest.raises(BagError, match="cannot be read"):
        list(read_events(path))
    with pytest.raises(BagError, match="exists already"):
        BagWriter(path)


def test_nan_imu_inside_a_bag_is_skipped_like_the_controller_rejects_it(tmp_path):
    path = tmp_path / "bag"
    with BagWriter(path) as bag:
        good = np.array([0.0, 0.0, 0.1, 0.0, 0.0, 9.8, 0.0, 0.0, 0.5])
        bag.write("/camera/image_raw", image_msg(1.0, np.zeros((4, 4, 3))), 1.0)
        bag.write("/imu/data", imu_msg(1.0, good), 1.0)
        bad = good.copy()
        bad[2] = math.nan
        bag.write("/imu/data", imu_msg(1.005, bad), 1.005)
        bag.write("/imu/data", imu_msg(1.010, good), 1.010)
    events = list(read_events(path, command=None))
    assert [e.kind for e in events] == ["camera", "imu", "imu"]


def test_serialized_messages_pass_through_untouched_with_exact_stamps(tmp_path):
    src = tmp_path / "src"
    _, imus = _write_sample(src, n_imu=8)
    summary = summarize(src)
    assert summary.topics["/imu/data"].count == 8 and summary.topics["/imu/data"].msgtype == "sensor_msgs/msg/Imu"
    assert summary.count == 8 + 2 + 8 + 8 and summary.duration == pytest.approx(7 * 0.005 + 0.0004, abs=1e-6)
    copy = tmp_path / "copy"
    with BagWriter(copy) as bag:
        for topic, msgtype, log_time, data in read_serialized(src):
            if topic not in bag._connections:
                bag.add_topic(topic, msgtype)
            bag.write_serialized(topic, data, log_time)
    assert list(read_serialized(copy)) == list(read_serialized(src))
    later = list(read_serialized(src, ["/imu/data"], start_ns=int(round(100.0102 * 1e9))))
    assert len(later) == 6 and {t for t, *_ in later} == {"/imu/data"}  # from start_ns on, inclusive
    # A header stamp given as (sec, nanosec) is kept to the nanosecond; events carry it and the bag time.
    exact = tmp_path / "exact"
    with BagWriter(exact) as bag:
        bag.write("/imu/data", imu_msg((1_700_000_000, 123_456_789), imus[0][1]), log_time_ns=42)
        bag.write("/camera/image_raw", image_msg((1_700_000_000, 123_456_790), np.zeros((2, 2, 3))), log_time_ns=43)
    events = list(read_events(exact, command=None))
    assert [(e.header_stamp, e.log_time_ns) for e in events] == [
        ((1_700_000_000, 123_456_789), 42),
        ((1_700_000_000, 123_456_790), 43),
    ]


def test_bag_helpers_fail_with_the_bag_and_the_problem(tmp_path):
    with BagWriter(tmp_path / "bag") as bag, pytest.raises(BagError, match="does not know"):
        bag.add_topic("/x", "acme_msgs/msg/Unknown")
    with pytest.raises(BagError, match="no topic /nope"):
        list(read_serialized(tmp_path / "bag", ["/nope"]))
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "killed_0.mcap").write_bytes(b"")
    with pytest.raises(BagError, match="no metadata.yaml"):
        summarize(tmp_path / "killed")
    path = tmp_path / "truncated"
    _write_sample(path, n_imu=5)
    mcap_file = next(path.glob("*.mcap"))
    mcap_file.write_bytes(mcap_file.read_bytes()[:-40])
    with pytest.raises(BagError, match="truncated"):
        summarize(path)
