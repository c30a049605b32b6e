"""`liquid-control record / play / replay` with real bags and real DDS: a simulator recorded, played
back and recorded again byte for byte; play's options seen from a live recorder; replay writing what
the controller node publishes, deterministically, from bags of other writers too; bad bags as clear
errors. Every process a test starts is stopped by it (SIGINT, then kill)."""

import csv
import json
import signal
import time
from collections import defaultdict
from functools import partial

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from rosbags.interfaces import QosReliability  # noqa: E402
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_types_from_msg, get_typestore  # noqa: E402
from sensor_msgs.msg import Image, Imu  # noqa: E402
from support import CLI, SIM_NODE, run_cli, wait_for  # noqa: E402
from support import stop_process as _stop  # noqa: E402

from liquid_control.bags.configs import ReplayConfig  # noqa: E402
from liquid_control.bags.io import (  # noqa: E402
    TYPESTORE,
    BagError,
    BagWriter,
    image_msg,
    imu_msg,
    read_events,
    read_serialized,
    summarize,
    twist_stamped_msg,
)
from liquid_control.bags.replay import replay  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.sim]

T0 = 1_700_000_000  # sec of the synthetic bags' header stamps


# --- helpers ----------------------------------------------------------------------------------------
def _last_json(proc):
    lines = [line for line in proc.log.read_text().splitlines() if line.startswith("{")]
    assert lines, proc.log.read_text()
    return json.loads(lines[-1])


_cli = partial(run_cli, timeout=120)


def _by_topic(path):
    messages = defaultdict(list)
    for topic, msgtype, log_time, data in read_serialized(path):
        messages[topic].append((log_time, msgtype, data))
    return messages


def _sensor_stream(seconds=1.0, imu_hz=100, camera_every=4, seed=0, start_ns=0, sec=T0):
    """(topic, msg, header (sec, nanosec), bag time ns) of a synthetic camera + IMU + command stream.
    Header nanoseconds that float seconds cannot hold exactly (…000017), camera frames stamped at
    exposure just before the IMU sample they are logged after."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(int(seconds * imu_hz)):
        ns = 5_000_017 + k * (1_000_000_000 // imu_hz)
        log = start_ns + ns + 400_000
        if k % camera_every == 0:
            rgb = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
            stamp = (sec, ns - 1_000_000)
            out.append(("/camera/image_raw", image_msg(stamp, rgb), stamp, log))
        values = np.concatenate([rng.normal(0, 0.1, 3), [0.1, 0.0, 9.8], [0.01, -0.02, 0.3 + 0.01 * k]])
        out.append(("/imu/data", imu_msg((sec, ns), values), (sec, ns), log + 100_000))
        out.append(("/cmd_vel", twist_stamped_msg((sec, ns), 0.3, 0.1 * np.sin(k / 10)), (sec, ns), log + 200_000))
    return out


def _write_bag(path, stream):
    with BagWriter(path) as bag:
        for topic, msg, _, log in stream:
            bag.write(topic, msg, log_time_ns=log)
    return path


def _twist_fields(data):
    msg = TYPESTORE.deserialize_cdr(data, "geometry_msgs/msg/TwistStamped")
    t = msg.twist
    return (
        msg.header.stamp.sec,
        msg.header.stamp.nanosec,
        msg.header.frame_id,
        t.linear.x,
        t.linear.y,
        t.linear.z,
        t.angular.x,
        t.angular.y,
        t.angular.z,
    )


def _commands(path):
    return [(t, data) for topic, _, t, data in read_serialized(path) if topic == "/cmd_vel"]


# --- record -> play -> record, then replay ------------------------------------------------------------
def test_record_play_record_round_trip_keeps_every_byte_and_replays(tmp_path, processes, graph):
    if not SIM_NODE.exists():
        pytest.skip(f"{SIM_NODE} not installed (pip install the package into this venv)")
    live, played = tmp_path / "live", tmp_path / "played"
    sim = processes("sim", [SIM_NODE, "--ros-args", "-p", "imu_hz:=100.0", "-p", "seed:=3"])
    wait_for(lambda: graph.count_publishers("/camera/image_raw") > 0, what="sim_node")
    rec1 = processes("record1", [*CLI, "record", "-o", live, "--duration", "4", "--json"])
    assert rec1.wait(timeout=60) == 0, rec1.log.read_text()
    assert _stop(sim) == 0
    first = _last_json(rec1)
    # The default topics: what the simulator publishes is recorded, the rest is reported unseen.
    # Counts over the stamps recorded, not over wall time (a busy machine slows the simulator):
    # every frame and IMU sample between the first and the last one recorded is there.
    events = list(read_events(live, command=None))
    for kind, topic, hz in (("camera", "/camera/image_raw", 30.0), ("imu", "/imu/data", 100.0)):
        stamps = [e.stamp for e in events if e.kind == kind]
        assert first["topics"][topic]["count"] == len(stamps) >= 10, first
        assert len(stamps) >= (stamps[-1] - stamps[0]) * hz - 1, (topic, len(stamps), stamps[-1] - stamps[0])
    assert "/teacher/cmd_vel" in first["topics"]
    assert {"/clock", "/odom", "/camera/camera_info"} <= set(first["topics"])
    assert {"/cmd_vel", "/e_stop", "/diagnostics"} <= set(first["not_seen"])
    # The sensors' best-effort QoS is kept in the bag for ros2 bag play.
    qos = summarize(live).topics["/imu/data"].offered_qos
    assert qos and qos[0].reliability == QosReliability.BEST_EFFORT
    assert "version: 8" in (live / "metadata.yaml").read_text()

    topics = sorted(first["topics"])
    rec2 = processes("record2", [*CLI, "record", "-o", played, *topics, "--json"])
    player = processes("play", [*CLI, "play", live, "--wait-for-subscribers", "--json"])
    assert player.wait(timeout=60) == 0, player.log.read_text()
    assert _last_json(player)["messages"] == first["messages"]
    time.sleep(0.5)
    assert _stop(rec2) == 0, rec2.log.read_text()  # SIGINT: a clean stop that closes the bag
    second = _last_json(rec2)
    assert second["messages"] == first["messages"], (first, second)

    a, b = _by_topic(live), _by_topic(played)
    assert sorted(a) == sorted(b) == topics
    for topic in topics:
        assert [m[2] for m in a[topic]] == [m[2] for m in b[topic]], f"{topic}: bytes differ"
        assert {m[1] for m in a[topic]} == {m[1] for m in b[topic]}
        msgtype = a[topic][0][1]
        if "header" in TYPESTORE.get_msgdef(msgtype).cls.__dataclass_fields__:
            stamps = [TYPESTORE.deserialize_cdr(m[2], msgtype).header.stamp for m in b[topic]]
            assert stamps == [TYPESTORE.deserialize_cdr(m[2], msgtype).header.stamp for m in a[topic]]
        # New receive times, the same spacing: played with the original timing.
        assert b[topic][0][0] > a[topic][-1][0]
    # The same spacing: the typical gap between IMU messages, a median, so that a moment's stall of
    # the player or the recorder on a busy machine (a few gaps long, then a few short) does not
    # count; a player that ignored the timing (as fast as it can, or at another rate) would.
    gap_a = np.median(np.diff([m[0] for m in a["/imu/data"]]))
    gap_b = np.median(np.diff([m[0] for m in b["/imu/data"]]))
    assert abs(gap_b - gap_a) < 0.2 * gap_a, (gap_a, gap_b)

    out = tmp_path / "replayed_commands"
    result = _cli("replay", played, "--output", out, "--compare-topic", "/teacher/cmd_vel", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (
        summary["sensor_events"]
        == first["topics"]["/imu/data"]["count"] + first["topics"]["/camera/image_raw"]["count"]
    )
    # A step per recorded IMU sample, about (however many a busy machine's simulator made).
    assert summary["steps"] >= 0.8 * first["topics"]["/imu/data"]["count"] > 10
    assert summary["commands"] == len(_commands(out))
    # Every teacher command recorded (however many a busy machine's simulator made) is compared.
    assert summary["compare"]["matched_by"] == "bag time"
    assert summary["compare"]["recorded"] == first["topics"]["/teacher/cmd_vel"]["count"] > 10
    assert 0 < summary["latency_us"]["imu"]["p50"] <= summary["latency_us"]["imu"]["p99"]
    assert summary["latency_us"]["all"]["p50"] > 0 and summary["events_per_s"] > 0
    assert (tmp_path / "replayed_commands.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- play's options, seen by a live recorder -----------------------------------------------------------
IMU_MSGDEF = """std_msgs/Header header
geometry_msgs/Quaternion orientation
float64[9] orientation_covariance
geometry_msgs/Vector3 angular_velocity
float64[9] angular_velocity_covariance
geometry_msgs/Vector3 linear_acceleration
float64[9] linear_acceleration_covariance
================================================================================
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
================================================================================
MSG: geometry_msgs/Quaternion
float64 x
float64 y
float64 z
float64 w
================================================================================
MSG: geometry_msgs/Vector3
float64 x
float64 y
float64 z
"""
IMAGE_MSGDEF = """std_msgs/Header header
uint32 height
uint32 width
string encoding
uint8 is_bigendian
uint32 step
uint8[] data
================================================================================
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
"""


def _mcap_ros2_bag(path, seconds=1.0, imu_hz=100, camera_every=4, start_ns=1_000_000_000_000, seed=0):
    """A bare .mcap file from the mcap_ros2 writer (not rosbags, not our BagWriter), with the
    message definitions written out by hand. Returns the stream it holds."""
    mcap_writer = pytest.importorskip("mcap_ros2.writer")
    stream = _sensor_stream(seconds, imu_hz, camera_every, seed, start_ns)
    with open(path, "wb") as f:
        writer = mcap_writer.Writer(f)
        schemas = {
            "/imu/data": writer.register_msgdef("sensor_msgs/msg/Imu", IMU_MSGDEF),
            "/camera/image_raw": writer.register_msgdef("sensor_msgs/msg/Image", IMAGE_MSGDEF),
        }
        for topic, msg, (sec, nanosec), log in stream:
            header = {"stamp": {"sec": sec, "nanosec": nanosec}, "frame_id": msg.header.frame_id}
            if topic == "/imu/data":
                vec = lambda v: {"x": v.x, "y": v.y, "z": v.z}  # noqa: E731
                o = msg.orientation
                fields = {
                    "header": header,
                    "orientation": {"x": o.x, "y": o.y, "z": o.z, "w": o.w},
                    "orientation_covariance": [0.0] * 9,
                    "angular_velocity": vec(msg.angular_velocity),
                    "angular_velocity_covariance": [0.0] * 9,
                    "linear_acceleration": vec(msg.linear_acceleration),
                    "linear_acceleration_covariance": [0.0] * 9,
                }
            elif topic == "/camera/image_raw":
                fields = {
                    "header": header,
                    "height": msg.height,
                    "width": msg.width,
                    "encoding": msg.encoding,
                    "is_bigendian": 0,
                    "step": msg.step,
                    "data": bytes(msg.data),
                }
            else:
                continue
            writer.write_message(topic, schemas[topic], fields, log_time=log, publish_time=log)
        writer.finish()
    return [s for s in stream if s[0] != "/cmd_vel"]


def test_play_remaps_filters_offsets_scales_time_and_publishes_clock(tmp_path, processes):
    bag = tmp_path / "foreign.mcap"  # a bare MCAP file from another writer plays as well
    stream = _mcap_ros2_bag(bag, seconds=2.0)
    start = stream[0][3]
    recording = tmp_path / "heard"
    rec = processes("record", [*CLI, "record", "-o", recording, "/played/imu", "/clock", "/camera/image_raw", "--json"])
    player = processes(
        "play",
        [
            *CLI,
            "play",
            bag,
            "--topics",
            "/imu/data",
            "--remap",
            "/imu/data:=/played/imu",
            "--clock",
            "50",
            "--rate",
            "2",
            "--start-offset",
            "0.5",
            "--wait-for-subscribers",
            "--delay",
            "0.5",
            "--json",
        ],
    )
    assert player.wait(timeout=60) == 0, player.log.read_text()
    summary = _last_json(player)
    time.sleep(0.3)
    rec.send_signal(signal.SIGTERM)  # SIGTERM stops the recorder cleanly too
    assert rec.wait(timeout=10) == 0, rec.log.read_text()
    heard = _last_json(rec)
    assert heard["not_seen"] == ["/camera/image_raw"]  # filtered out by --topics

    expected = [
        TYPESTORE.serialize_cdr(msg, "sensor_msgs/msg/Imu")
        for topic, msg, _, log in stream
        if topic == "/imu/data" and log >= start + 500_000_000
    ]
    got = _by_topic(recording)
    assert summary["topics"] == {"/played/imu": len(expected)}
    # Best effort, as the sensor topics are played: what arrives is the bag's bytes, in order; on a
    # loaded machine one message may be lost on the way (never altered, duplicated or reordered).
    heard_bytes = [m[2] for m in got["/played/imu"]]
    assert len(heard_bytes) >= len(expected) - 1
    position = iter(expected)
    assert all(any(b == e for e in position) for b in heard_bytes)
    span = (got["/played/imu"][-1][0] - got["/played/imu"][0][0]) * 1e-9
    assert 0.6 < span < 1.2, span  # 1.5 s of bag at rate 2
    assert summarize(recording).topics["/played/imu"].offered_qos[0].reliability == QosReliability.BEST_EFFORT

    clock = [TYPESTORE.deserialize_cdr(m[2], "rosgraph_msgs/msg/Clock").clock for m in got["/clock"]]
    clock_ns = [c.sec * 1_000_000_000 + c.nanosec for c in clock]
    assert len(clock_ns) >= 20, clock_ns  # ~0.75 s at 50 Hz
    assert all(b > a for a, b in zip(clock_ns, clock_ns[1:], strict=False))
    assert start + 500_000_000 <= clock_ns[0] and clock_ns[-1] <= stream[-1][3] + 100_000_000
    # 50 Hz of wall time, 2x faster in bag time: about 40 ms of bag time per tick.
    assert np.median(np.diff(clock_ns)) == pytest.approx(40e6, rel=0.25)


def test_play_loops_until_interrupted(tmp_path, processes):
    bag = _write_bag(tmp_path / "short", _sensor_stream(seconds=0.3))
    player = processes("play", [*CLI, "play", bag, "--loop", "--rate", "3", "--json"])
    time.sleep(3.0)
    assert _stop(player) == 0, player.log.read_text()
    summary = _last_json(player)
    assert summary["interrupted"] and summary["loops"] >= 2, summary
    assert summary["topics"]["/imu/data"] >= 30 * summary["loops"]


# --- replay -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sensor_bag(tmp_path_factory):
    return _write_bag(tmp_path_factory.mktemp("replay") / "sensors", _sensor_stream(seconds=1.5))


def test_replay_writes_what_the_controller_node_publishes(sensor_bag, tmp_path):
    """The node's own callbacks fed the bag's messages (rclpy messages, the node's conversions and
    publisher), with the same parameters file, publish exactly the commands replay writes, stamp
    for stamp, bit for bit. (Compared decoded: rclpy leaves CDR padding bytes uninitialised, rosbags
    writes zeros.)"""
    from liquid_control.nodes.controller_node import LiquidControllerNode

    params = tmp_path / "tuned.yaml"
    params.write_text(
        "/**/liquid_controller:\n  ros__parameters:\n    max_angular_speed: 0.3\n"
        "    max_linear_accel: 0.5\n    frame_id: chassis\n"
    )
    out = tmp_path / "out"
    summary = replay(ReplayConfig(sensor_bag, out, params=params))
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = None
    try:
        overrides = [
            Parameter("cmd_vel_stamped", value=True),
            Parameter("max_angular_speed", value=0.3),
            Parameter("max_linear_accel", value=0.5),
            Parameter("frame_id", value="chassis"),
        ]
        node = LiquidControllerNode(context=context, namespace="/replay_check", parameter_overrides=overrides)
        sent, fed = [], set()
        publish = node.cmd_pub.publish
        node.cmd_pub.publish = lambda msg: (
            sent.append(((msg.header.stamp.sec, msg.header.stamp.nanosec), serialize_message(msg))),
            publish(msg),
        )
        for topic, _, _, data in read_serialized(sensor_bag, ["/camera/image_raw", "/imu/data"]):
            msg = deserialize_message(data, Image if topic == "/camera/image_raw" else Imu)
            fed.add((msg.header.stamp.sec, msg.header.stamp.nanosec))
            (node._on_image if topic == "/camera/image_raw" else node._on_imu)(msg)
        # The answers to the bag's messages carry their stamps; a zero of the node's own watchdog
        # (its safety thread runs, and this thread can stall past sensor_timeout on a busy
        # machine) carries the node clock's, and replay has no such thread.
        sent = [data for stamp, data in sent if stamp in fed]
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.shutdown(context=context)
    written = [_twist_fields(data) for _, data in _commands(out)]
    assert len(sent) == len(written) == summary["commands"] > 100
    assert written == [_twist_fields(data) for data in sent]
    assert summary["command_reasons"]["policy"] > 100
    assert {w[2] for w in written} == {"chassis"} and max(abs(w[8]) for w in written) <= 0.3
    assert max(abs(w[8]) for w in written) > 0.1  # the limits shaped commands that were not all zero


def test_replay_is_deterministic_and_stamps_commands_with_the_sensor_stamps(sensor_bag, tmp_path):
    runs = [replay(ReplayConfig(sensor_bag, tmp_path / name / "commands")) for name in ("a", "b")]
    for name in ("commands.mcap", "metadata.yaml"):  # identical files, not only identical messages
        assert (tmp_path / "a" / "commands" / name).read_bytes() == (tmp_path / "b" / "commands" / name).read_bytes()
    assert (tmp_path / "a" / "commands.csv").read_text() == (tmp_path / "b" / "commands.csv").read_text()
    summary = runs[0]
    assert summary["sensor_events"] == 150 + 38 and summary["commands"] == len(_commands(tmp_path / "a" / "commands"))

    sensors = {}
    for _, msgtype, log, data in read_serialized(sensor_bag, ["/camera/image_raw", "/imu/data"]):
        stamp = TYPESTORE.deserialize_cdr(data, msgtype).header.stamp
        sensors[(stamp.sec, stamp.nanosec)] = log
    rows = list(csv.DictReader(open(tmp_path / "a" / "commands.csv")))
    assert len(rows) == summary["commands"]
    for (log, data), row in zip(_commands(tmp_path / "a" / "commands"), rows, strict=True):
        msg = TYPESTORE.deserialize_cdr(data, "geometry_msgs/msg/TwistStamped")
        header = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        assert sensors[header] == log  # the exact stamp of the sensor message, at its bag time
        assert msg.header.frame_id == "base_link"
        assert row["stamp"] == f"{header[0]}.{header[1]:09d}"
        assert float(row["linear_x"]) == msg.twist.linear.x and float(row["angular_z"]) == msg.twist.angular.z

    # Against the recorded /cmd_vel (TwistStamped, matched by header stamp): the summary's errors
    # are the CSV's.
    compare = summary["compare"]
    assert compare["topic"] == "/cmd_vel" and compare["matched_by"] == "header stamp" and compare["recorded"] == 150
    error = np.array([float(r["angular_z"]) - float(r["recorded_angular_z"]) for r in rows])
    assert compare["angular.z"]["mean_abs_error"] == pytest.approx(np.abs(error).mean(), abs=1e-6)
    assert compare["angular.z"]["rms_error"] == pytest.approx(np.sqrt((error**2).mean()), abs=1e-6)
    assert summary["out_of_order"] == {"camera": 0, "imu": 0, "odom": 0}


def test_bags_from_other_writers_replay_to_the_same_commands(tmp_path):
    stream = _sensor_stream(seconds=0.5, seed=5)
    ours = _write_bag(tmp_path / "ours", stream)
    # 1. mcap_ros2's writer: a bare .mcap file, and the same file wrapped as a rosbag2 directory.
    foreign = tmp_path / "foreign.mcap"
    _mcap_ros2_bag(foreign, seconds=0.5, seed=5, start_ns=0)
    wrapped = tmp_path / "wrapped"
    wrapped.mkdir()
    (wrapped / "wrapped_0.mcap").write_bytes(foreign.read_bytes())
    counts = defaultdict(int)
    for topic, *_ in stream:
        counts[topic] += 1
    logs = [s[3] for s in stream if s[0] != "/cmd_vel"]
    topics_yaml = "".join(
        f"  - message_count: {counts[t]}\n    topic_metadata:\n      name: {t}\n      type: {m}\n"
        f"      serialization_format: cdr\n      offered_qos_profiles: ''\n      type_description_hash: ''\n"
        for t, m in (("/camera/image_raw", "sensor_msgs/msg/Image"), ("/imu/data", "sensor_msgs/msg/Imu"))
    )
    n = counts["/camera/image_raw"] + counts["/imu/data"]
    (wrapped / "metadata.yaml").write_text(
        "rosbag2_bagfile_information:\n  version: 8\n  storage_identifier: mcap\n"
        f"  duration:\n    nanoseconds: {max(logs) - min(logs)}\n"
        f"  starting_time:\n    nanoseconds_since_epoch: {min(logs)}\n  message_count: {n}\n"
        f"  topics_with_message_count:\n{topics_yaml}"
        "  compression_format: ''\n  compression_mode: ''\n  relative_file_paths:\n  - wrapped_0.mcap\n"
        "  files:\n  - path: wrapped_0.mcap\n"
        f"    starting_time:\n      nanoseconds_since_epoch: {min(logs)}\n"
        f"    duration:\n      nanoseconds: {max(logs) - min(logs)}\n    message_count: {n}\n"
        "  custom_data: {}\n  ros_distro: jazzy\n"
    )
    # 2. rosbag2's older default storage, SQLite 3, written with the rosbags Writer directly.
    sqlite = tmp_path / "sqlite"
    with Writer(sqlite, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        connections = {}
        for topic, msg, _, log in stream:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msg.__msgtype__, typestore=TYPESTORE)
            writer.write(connections[topic], log, TYPESTORE.serialize_cdr(msg, msg.__msgtype__))

    results = {}
    for name, bag in (("ours", ours), ("mcap_ros2", foreign), ("wrapped", wrapped), ("sqlite3", sqlite)):
        summary = replay(ReplayConfig(bag, tmp_path / f"{name}_out"))
        assert summary["sensor_events"] == n, name
        results[name] = _commands(tmp_path / f"{name}_out")
    assert results["ours"] and all(r == results["ours"] for r in results.values())


def test_out_of_order_stamps_are_counted_not_fatal(tmp_path):
    stream = [s for s in _sensor_stream(seconds=1.0) if s[0] != "/cmd_vel"]
    imu = [k for k, s in enumerate(stream) if s[0] == "/imu/data"]
    # An IMU sample logged twice, one stamped 20 ms back, and a restart 2 s back (a looping bag).
    disorder = list(stream)
    disorder.insert(imu[30] + 1, stream[imu[30]])
    back = stream[imu[40]]
    disorder.insert(
        imu[41] + 2,
        ("/imu/data", imu_msg((T0, back[2][1] - 20_000_000), np.zeros(9)), (T0, back[2][1] - 20_000_000), back[3] + 1),
    )
    restart = [s for s in _sensor_stream(seconds=0.4, seed=1, start_ns=2 * 10**9, sec=T0 - 2) if s[0] != "/cmd_vel"]
    bag = _write_bag(tmp_path / "disorder", disorder + restart)
    summary = replay(ReplayConfig(bag, tmp_path / "out"))
    assert summary["out_of_order"]["imu"] >= 3
    c = summary["controller"]
    assert c["stale_dropped"] >= 2 and c["time_jumps"] >= 1, c
    assert summary["commands"] > 50


# --- bad bags ----------------------------------------------------------------------------------------------
def test_bad_bags_are_clear_errors(sensor_bag, tmp_path):
    # Missing topics: the CLI names the bag and the topic, exits 2, no traceback, no output left.
    result = _cli("replay", sensor_bag, "--output", tmp_path / "out", "--camera-topic", "/front/image")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: bag {sensor_bag}: no topic /front/image" in result.stderr
    assert not (tmp_path / "out").exists()
    with pytest.raises(BagError, match="is sensor_msgs/msg/Imu, expected"):
        replay(ReplayConfig(sensor_bag, tmp_path / "out", compare_topic="/imu/data"))
    # Truncated (a recorder killed before it closed the bag).
    broken = tmp_path / "broken"
    _write_bag(broken, _sensor_stream(seconds=0.3))
    mcap = next(broken.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size * 2 // 3])
    with pytest.raises(BagError, match=f"bag {broken}: cannot be read"):
        replay(ReplayConfig(broken, tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    # An unknown message type: play says which topic and what to do.
    unknown = tmp_path / "unknown"
    store = get_typestore(Stores.EMPTY)
    store.register(get_types_from_msg("float64 speed", "acme_msgs/msg/Throttle"))
    with Writer(unknown, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/throttle", "acme_msgs/msg/Throttle", typestore=store)
        writer.write(
            connection,
            1,
            store.serialize_cdr(store.types["acme_msgs/msg/Throttle"](speed=1.0), "acme_msgs/msg/Throttle"),
        )
    result = _cli("play", unknown)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "topic /throttle cannot be played: message type acme_msgs/msg/Throttle is not installed" in result.stderr
    # A bag is never overwritten; a topic the bag does not have is named.
    result = _cli("record", "-o", sensor_bag, "--duration", "1")
    assert result.returncode == 2 and "exists already" in result.stderr and "Traceback" not in result.stderr
    result = _cli("play", sensor_bag, "--topics", "/nope")
    assert result.returncode == 2 and "no topic /nope" in result.stderr
