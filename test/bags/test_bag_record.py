"""`liquid-control record` under signals, SIGKILL and load, and `liquid-control recover`, with real
parts: recorder processes, real signals, real DDS, real MCAP files. The publisher is the one of
bench/recorder_loss.py (reliable, a sequence number in every header stamp, its messages'
bytes a function of that number), so a test knows exactly what each recorded message must be.
Every process a test starts is stopped by it."""

import hashlib
import importlib.util
import json
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.sim]

pytest.importorskip("rclpy")

from mcap.reader import make_reader  # noqa: E402
from mcap.records import Chunk, Message  # noqa: E402
from mcap.stream_reader import StreamReader  # noqa: E402
from support import CLI, SIM_NODE, wait_for  # noqa: E402
from support import stop_process as _stop  # noqa: E402

from liquid_control.bags.io import BagError, BagWriter, read_serialized, summarize  # noqa: E402
from liquid_control.bags.recover import recover  # noqa: E402

BENCH_PATH = Path(__file__).resolve().parents[2] / "bench" / "recorder_loss.py"
_spec = importlib.util.spec_from_file_location("recorder_loss", BENCH_PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
CONTROLLER_NODE = SIM_NODE.with_name("controller_node")


def _publisher(start, name, prefix, imu=100_000, size="96x64"):
    return start(name, [sys.executable, BENCH_PATH, "publish", "--imu", imu, "--size", size, "--prefix", prefix])


def _recorder(start, name, bag, prefix):
    imu, camera = bench.topics(prefix)
    return start(name, [*CLI, "record", "-o", bag, imu, camera, "--json"])


def _summary(proc):
    lines = [line for line in proc.log.read_text().splitlines() if line.startswith("{")]
    assert lines, proc.log.read_text()
    return json.loads(lines[-1])


def _complete_messages(mcap_file):
    """Messages in the complete chunks of an MCAP file being written (or cut short): what the
    mcap library's StreamReader yields before it runs into the end."""
    n = 0
    try:
        with open(mcap_file, "rb") as f:
            for record in StreamReader(f).records:
                n += isinstance(record, Message)
    except Exception:  # noqa: BLE001 - the end of a file without footer, in any of its forms
        pass
    return n


def _complete_chunks(mcap_file):
    n = 0
    try:
        with open(mcap_file, "rb") as f:
            for record in StreamReader(f, emit_chunks=True).records:
                n += isinstance(record, Chunk)
    except Exception:  # noqa: BLE001 - as above
        pass
    return n


def _expected(topic, seq, size=(96, 64)):
    return bench.imu_bytes(seq) if topic.endswith("/imu") else bench.image_bytes(seq, *size)


def _check_sequence(bag, topics, size=(96, 64), start_at_zero=False):
    """Every message of `topics` in the bag is the publisher's message of its sequence number,
    the numbers consecutive (none lost in between), in order. Counts per topic."""
    seqs = defaultdict(list)
    for topic, msgtype, _, data in read_serialized(bag, topics):
        seq = bench.sequence(data, msgtype)
        assert data == _expected(topic, seq, size), f"{topic} #{seq}: bytes differ from what was sent"
        seqs[topic].append(seq)
    for topic in topics:
        got = seqs[topic]
        assert got, f"nothing recorded on {topic}"
        first = 0 if start_at_zero else got[0]
        assert got == list(range(first, first + len(got))), f"{topic}: gaps or disorder in {got[:5]}..{got[-5:]}"
    return {t: len(s) for t, s in seqs.items()}


# --- 6: signals while recording and while closing -------------------------------------------------------
def _burst(proc, pattern):
    """Send the signals of `pattern` (('INT', gap s), ...) and, for 'storm', SIGINT and SIGTERM by
    turns every 10 ms until the process ends (at most 3 s): through draining, closing and exit."""
    for name, gap in pattern:
        if name == "storm":
            end = time.monotonic() + 3.0
            k = 0
            while proc.poll() is None and time.monotonic() < end:
                proc.send_signal(signal.SIGINT if k % 2 else signal.SIGTERM)
                k += 1
                time.sleep(0.01)
            return
        proc.send_signal(getattr(signal, f"SIG{name}"))
        time.sleep(gap)


BURSTS = {
    "two_sigints_30ms": [("INT", 0.03), ("INT", 0.0)],
    "sigint_then_sigterm_20ms": [("INT", 0.02), ("TERM", 0.0)],
    "sigterm_then_sigint_50ms": [("TERM", 0.05), ("INT", 0.0)],
    "sigint_then_a_storm_until_exit": [("INT", 0.005), ("storm", 0.0)],
}


def test_signal_bursts_while_recording_and_closing_leave_complete_bags(tmp_path, processes, graph):
    prefix = "/burst"
    recorders = {name: _recorder(processes, name, tmp_path / name, prefix) for name in BURSTS}
    publisher = _publisher(processes, "publisher", prefix)
    imu, camera = bench.topics(prefix)
    wait_for(
        lambda: graph.count_subscribers(imu) >= len(BURSTS) and graph.count_subscribers(camera) >= len(BURSTS),
        what="the recorders' subscriptions",
    )
    # Recording for real: each recorder has flushed messages to its file.
    files = {name: tmp_path / name / f"{name}.mcap" for name in BURSTS}
    wait_for(lambda: all(_complete_messages(f) > 20 for f in files.values()), what="recorded messages")
    assert publisher.poll() is None, publisher.log.read_text()

    exit_s = {}

    def signal_and_time(name):
        t0 = time.monotonic()
        _burst(recorders[name], BURSTS[name])
        recorders[name].wait(timeout=30)
        exit_s[name] = time.monotonic() - t0

    threads = [threading.Thread(target=signal_and_time, args=(name,)) for name in BURSTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, proc in recorders.items():
        log = proc.log.read_text()
        assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{log}"
        assert "Traceback" not in log, f"{name}:\n{log}"
        # Complete and readable, holding every message the recorder says it received.
        bag = tmp_path / name
        assert (bag / "metadata.yaml").exists(), name
        info = summarize(bag)
        counts = _check_sequence(bag, [imu, camera])
        said = _summary(proc)["topics"]
        assert counts == {t: info.topics[t].count for t in (imu, camera)} == {t: said[t]["count"] for t in said}, name
    # Generous next to the 2 s the executables promise: a wall-clock bound on a busy machine.
    assert max(exit_s.values()) < 5.0, exit_s


# --- 7: recover -----------------------------------------------------------------------------------------
def _digest(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_a_recording_killed_with_sigkill_is_recovered(tmp_path, processes, graph):
    prefix = "/killed"
    bag = tmp_path / "killed"
    recorder = _recorder(processes, "recorder", bag, prefix)
    publisher = _publisher(processes, "publisher", prefix)
    imu, camera = bench.topics(prefix)
    mcap_file = bag / "killed.mcap"
    wait_for(lambda: mcap_file.exists() and _complete_messages(mcap_file) > 300, what="two flushes' worth of messages")
    recorder.send_signal(signal.SIGKILL)
    assert recorder.wait(timeout=10) == -signal.SIGKILL
    assert publisher.poll() is None, publisher.log.read_text()
    _stop(publisher)

    # What a killed recorder leaves: no metadata.yaml, no summary; the bag tools refuse it.
    assert not (bag / "metadata.yaml").exists()
    with pytest.raises(BagError, match="no metadata.yaml"):
        summarize(bag)
    with pytest.raises(BagError, match="cannot be read"):
        summarize(mcap_file)
    held = _complete_messages(mcap_file)
    # Chunks closed and flushed twice a second, not at rosbags' 1 MiB (about 400 of these messages):
    # what a SIGKILL loses is the last half second.
    assert _complete_chunks(mcap_file) >= 2
    before = _digest(bag)

    result = subprocess.run([*CLI, "recover", bag, "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    out = tmp_path / "killed.recovered"
    assert report["output"] == str(out) and not report["complete"]
    assert _digest(bag) == before  # the original is only read

    # The new bag reads everywhere; its messages are the publisher's, byte for byte, in order,
    # at least all of the file's complete chunks.
    info = summarize(out)
    counts = _check_sequence(out, [imu, camera], start_at_zero=True)
    assert sum(counts.values()) == info.count == report["messages"] >= held > 300
    for topic in (imu, camera):
        item = report["topics"][topic]
        assert item["count"] == counts[topic] == info.topics[topic].count
        assert info.start_ns <= item["first_ns"] <= item["last_ns"] <= info.end_ns
        assert info.topics[topic].offered_qos, "the publishers' QoS is kept"
    text = subprocess.run([*CLI, "recover", bag, "-o", tmp_path / "again"], capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert f"recovered {report['messages']} messages from {bag}" in text.stdout and imu in text.stdout


def _synthetic_bag(path, imu_messages=300, chunk_every=100):
    """A closed bag of IMU samples (bench messages) in several chunks (BagWriter.flush)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    never = QosTime(2147483647, 4294967295)
    qos = Qos(
        QosHistory.KEEP_LAST,
        5,
        QosReliability.BEST_EFFORT,
        QosDurability.VOLATILE,
        never,
        never,
        QosLiveliness.AUTOMATIC,
        never,
        False,
    )
    with BagWriter(path) as writer:
        writer.add_topic("/imu/data", "sensor_msgs/msg/Imu", [qos])
        for seq in range(imu_messages):
            writer.write_serialized("/imu/data", bench.imu_bytes(seq), 1_000_000_000 + seq * 5_000_000)
            if (seq + 1) % chunk_every == 0:
                writer.flush()
    return path


def test_recover_a_healthy_bag_a_file_cut_inside_a_chunk_and_what_is_not_a_bag(tmp_path):
    healthy = _synthetic_bag(tmp_path / "healthy")
    original = list(read_serialized(healthy))
    # A healthy bag: the same messages, topics and QoS.
    report = recover(healthy, tmp_path / "same")
    assert report["complete"] and report["skipped_bytes"] == 0 and report["chunks"] == 3
    assert list(read_serialized(tmp_path / "same")) == original
    assert (
        summarize(tmp_path / "same").topics["/imu/data"].offered_qos
        == summarize(healthy).topics["/imu/data"].offered_qos
    )

    # Cut in the middle of the second chunk (as power loss may leave it): the first chunk, and the
    # complete messages at the start of the second.
    mcap_file = healthy / "healthy.mcap"
    with open(mcap_file, "rb") as f:
        chunks = make_reader(f).get_summary().chunk_indexes
    cut = chunks[1].chunk_start_offset + chunks[1].chunk_length // 2
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "broken.mcap").write_bytes(mcap_file.read_bytes()[:cut])
    before = _digest(broken)
    report = recover(broken)
    assert _digest(broken) == before
    got = list(read_serialized(tmp_path / "broken.recovered"))
    assert 100 < len(got) < 200 and got == original[: len(got)]
    assert report["messages"] == len(got) and report["chunks"] == 1 and report["partial_chunks"] == 1
    assert 0 < report["skipped_bytes"] < chunks[1].chunk_length  # the part-message at the cut, not more
    assert _complete_messages(broken / "broken.mcap") == 100  # what the mcap library alone reads of it
    # Cut inside the first record: nothing to recover is an error, not an empty bag.
    header_only = tmp_path / "header_only.mcap"
    header_only.write_bytes(mcap_file.read_bytes()[:40])
    with pytest.raises(BagError, match="nothing to recover"):
        recover(header_only)
    assert not (tmp_path / "header_only.recovered").exists()

    # Not a bag: exit 2 with the reason, no traceback, nothing written; never over an existing bag.
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a bag\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    for target, reason in (
        (text_file, "is not an MCAP file"),
        (tmp_path / "nothing", "no such file"),
        (empty, "no .mcap file"),
    ):
        result = subprocess.run(
            [*CLI, "recover", target, "-o", tmp_path / "out"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"error: bag {target}: " in result.stderr and reason in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()
    with pytest.raises(BagError, match="exists already"):
        recover(broken, tmp_path / "same")


def test_recover_keeps_a_type_the_jazzy_typestore_does_not_know(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.EMPTY)
    store.register(get_types_from_msg("float64 speed\nstring why", "acme_msgs/msg/Throttle"))
    bag = tmp_path / "acme"
    with Writer(bag, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/throttle", "acme_msgs/msg/Throttle", typestore=store)
        for k in range(5):
            msg = store.types["acme_msgs/msg/Throttle"](speed=float(k), why="test")
            writer.write(connection, 10 + k, store.serialize_cdr(msg, "acme_msgs/msg/Throttle"))
    (bag / "metadata.yaml").unlink()
    recover(bag)
    got = list(read_serialized(tmp_path / "acme.recovered"))
    assert [g[:3] for g in got] == [("/throttle", "acme_msgs/msg/Throttle", 10 + k) for k in range(5)]
    assert [store.deserialize_cdr(g[3], "acme_msgs/msg/Throttle").speed for g in got] == [0.0, 1.0, 2.0, 3.0, 4.0]


# --- 8: no loss under load ------------------------------------------------------------------------------
def test_recorder_loses_nothing_beside_the_controller_and_the_simulator(tmp_path, processes, graph):
    """200 Hz IMU + 30 Hz camera, 96x64 and 640x480 frames at once, reliable (a loss is the
    recorder's, not DDS's), with sim_node driving controller_node beside and their topics recorded
    too. Counted over sequence numbers: every message sent is in the bag, byte for byte."""
    if not SIM_NODE.exists():
        pytest.skip(f"{SIM_NODE} not installed (pip install the package into this venv)")
    processes("sim", [SIM_NODE])
    processes("controller", [CONTROLLER_NODE, "--ros-args", "-p", "use_sim_time:=true"])
    wait_for(
        lambda: graph.count_publishers("/cmd_vel") > 0 and graph.count_publishers("/imu/data") > 0,
        timeout=120,
        what="sim_node and controller_node",
    )
    small, large = bench.topics("/small"), bench.topics("/large")
    bag = tmp_path / "loaded"
    recorder = processes(
        "recorder",
        [*CLI, "record", "-o", bag, *small, *large, "/camera/image_raw", "/imu/data", "/cmd_vel", "/odom", "--json"],
    )
    publishers = [
        _publisher(processes, "small", "/small", imu=400, size="96x64"),
        _publisher(processes, "large", "/large", imu=400, size="640x480"),
    ]
    for publisher in publishers:
        assert publisher.wait(timeout=120) == 0, publisher.log.read_text()
    # The publishers waited until all was acknowledged: it is in the recorder's reader, or lost by it.
    assert _stop(recorder) == 0, recorder.log.read_text()
    sent = {}
    for publisher in publishers:
        sent.update(_summary(publisher)["sent"])
    assert sent == {small[0]: 400, small[1]: 60, large[0]: 400, large[1]: 60}
    counts = _check_sequence(bag, list(small), size=(96, 64), start_at_zero=True)
    counts.update(_check_sequence(bag, list(large), size=(640, 480), start_at_zero=True))
    assert counts == sent
    recorded = _summary(recorder)["topics"]
    assert recorded["/cmd_vel"]["count"] > 0 and recorded["/imu/data"]["count"] > 0  # the robot ran beside
