"""No bag file can take the machine down (liquid_control.bags.limits): decompression bombs, chunks
that lie about their size, damaged records, FIFOs and devices named like bags, outputs through
dangling links. Each is refused with one line naming the file, exit status 2, without a hang and
within bounded memory, by the library functions `info`, `replay`, `play` and `recover` read with
and by the real command line.

The bags are real files: valid ones written by an independent writer (the `mcap` library, rosbags),
hostile ones built by hand after the MCAP specification (https://mcap.dev/spec), and the valid
ones damaged record by record (hypothesis, derandomized). Memory is the child's peak RSS
(getrusage) while it reads a 98 KB file that would expand to 3 GiB."""

import json
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from mcap.writer import CompressionType  # noqa: E402
from mcap.writer import Writer as McapWriter  # noqa: E402
from support import CLI, run_cli  # noqa: E402

from liquid_control.bags import limits  # noqa: E402
from liquid_control.bags.info import bag_info  # noqa: E402
from liquid_control.bags.io import (  # noqa: E402
    TYPESTORE,
    BagError,
    image_msg,
    imu_msg,
    read_events,
    read_serialized,
    summarize,
    twist_stamped_msg,
)
from liquid_control.bags.recover import recover  # noqa: E402

MAGIC = b"\x89MCAP0\r\n"
GiB = 1 << 30
BOMB_BYTES = 3 * GiB - (3 * GiB) % 9  # whole 9-byte records of zeros: what a reader that expands it walks
RSS_LIMIT_KB = 500 * 1024  # the peak a reader of a bomb may reach (the interpreter and its imports: ~110 MB)
CLI_TIMEOUT_S = 120  # generous: a refused bomb takes about a second; before the limits, minutes


# --- MCAP by hand (the specification's records) ---------------------------------------------------------------
def _str(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<I", len(data)) + data


def _rec(opcode: int, body: bytes) -> bytes:
    return struct.pack("<BQ", opcode, len(body)) + body


def _rle_zstd(n: int) -> bytes:
    """A zstd frame of `n` zero bytes in run-length blocks (4 bytes per 128 KiB), without its
    content size: 3 GiB in 98 KB, written in no time."""
    out = [struct.pack("<I", 0xFD2FB528), bytes([0x00, 7 << 3])]  # no content size; window 128 KiB
    while n > 0:
        k = min(128 * 1024, n)
        n -= k
        out.append(((n == 0) | (1 << 1) | (k << 3)).to_bytes(3, "little") + b"\0")  # last?, RLE, size
    return b"".join(out)


def _lz4_zeros(n: int) -> bytes:
    """An lz4 frame of `n` zero bytes (about 1/250 of n), streamed."""
    import lz4.frame

    c, zeros = lz4.frame.LZ4FrameCompressor(), bytes(16 << 20)
    parts = [c.begin()]
    for k in range(0, n, len(zeros)):
        parts.append(c.compress(zeros[: min(len(zeros), n - k)]))
    return b"".join([*parts, c.flush()])


SCHEMA = _rec(0x03, struct.pack("<H", 1) + _str("sensor_msgs/msg/Imu") + _str("ros2msg") + _str("float64 x"))
CHANNEL = _rec(0x04, struct.pack("<HH", 1, 1) + _str("/imu/data") + _str("cdr") + struct.pack("<I", 0))


def _chunk(data: bytes, compression: str, declared: int, start: int = 0, end: int = 10) -> bytes:
    return _rec(
        0x06, struct.pack("<QQQI", start, end, declared, 0) + _str(compression) + struct.pack("<Q", len(data)) + data
    )


def _mcap(chunks: list[tuple[bytes, str, int, int, int]], summary: bool) -> bytes:
    """An MCAP file: the schema and channel of /imu/data, then chunks (data, compression, declared
    uncompressed size, start, end); with summary, their chunk indexes (what rosbags reads them by)."""
    body = MAGIC + _rec(0x01, _str("ros2") + _str("test_bag_limits")) + SCHEMA + CHANNEL
    indexes = []
    for data, compression, declared, start, end in chunks:
        record = _chunk(data, compression, declared, start, end)
        indexes.append(
            _rec(
                0x08,
                struct.pack("<QQQQ", start, end, len(body), len(record))
                + struct.pack("<I", 10)
                + struct.pack("<HQ", 1, 0)
                + struct.pack("<Q", 0)
                + _str(compression)
                + struct.pack("<QQ", len(data), declared),
            )
        )
        body += record
    body += _rec(0x0F, struct.pack("<I", 0))
    start = 0
    if summary:
        start = len(body)
        statistics = _rec(
            0x0B,
            struct.pack("<QHIIIIQQ", len(chunks), 1, 1, 0, 0, len(chunks), 0, 10)
            + struct.pack("<I", 10)
            + struct.pack("<HQ", 1, len(chunks)),
        )
        body += SCHEMA + CHANNEL + b"".join(indexes) + statistics
    return body + _rec(0x02, struct.pack("<QQI", start, 0, 0)) + MAGIC


def _bomb(
    path: Path, summary: bool = False, declared: int = BOMB_BYTES, data: bytes | None = None, compression: str = "zstd"
) -> Path:
    """One chunk expanding to 3 GiB of zeros (declaring that, or `declared`: a lie)."""
    path.write_bytes(
        _mcap([(data if data is not None else _rle_zstd(BOMB_BYTES), compression, declared, 0, 10)], summary)
    )
    return path


# --- valid bags by independent writers -----------------------------------------------------------------------
TOPICS = {
    "/camera/image_raw": "sensor_msgs/msg/Image",
    "/imu/data": "sensor_msgs/msg/Imu",
    "/cmd_vel": "geometry_msgs/msg/TwistStamped",
}


def _messages(steps: int = 24) -> list[tuple[str, int, bytes]]:
    """(topic, log time ns, CDR) of a small camera + IMU + command stream."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(steps):
        ns = 1_000_000_000 + k * 10_000_000
        stamp = (1_700_000_000, ns)
        if k % 3 == 0:
            msg = image_msg(stamp, rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
            out.append(("/camera/image_raw", ns, TYPESTORE.serialize_cdr(msg, TOPICS["/camera/image_raw"])))
        values = np.concatenate([rng.normal(0, 0.1, 3), [0.1, 0.0, 9.8], [0.01, -0.02, 0.3]])
        out.append(("/imu/data", ns + 1, TYPESTORE.serialize_cdr(imu_msg(stamp, values), TOPICS["/imu/data"])))
        out.append(
            ("/cmd_vel", ns + 2, TYPESTORE.serialize_cdr(twist_stamped_msg(stamp, 0.3, 0.1), TOPICS["/cmd_vel"]))
        )
    return out


MESSAGES = _messages()


def _mcap_library_bag(path: Path, compression: CompressionType) -> Path:
    """A ros2-profile MCAP file written by the `mcap` library: several chunks, a full summary."""
    with open(path, "wb") as f:
        writer = McapWriter(f, chunk_size=2048, compression=compression)
        writer.start(profile="ros2", library="test_bag_limits")
        channels = {}
        for topic, msgtype in TOPICS.items():
            schema = writer.register_schema(msgtype, "ros2msg", b"")
            channels[topic] = writer.register_channel(topic, "cdr", schema)
        for topic, ns, data in MESSAGES:
            writer.add_message(channels[topic], ns, data, ns)
        writer.finish()
    return path


COMPRESSIONS = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}


@pytest.fixture(scope="module")
def valid_bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("valid")
    return {name: _mcap_library_bag(root / f"{name}.mcap", kind) for name, kind in COMPRESSIONS.items()}


# --- what the tools read, guarded -----------------------------------------------------------------------------
class Hang(BaseException):  # noqa: N818 - not an Exception: the bag readers' own `except Exception` lets it through
    """A read that did not return."""


@contextmanager
def _no_hang(seconds: float):
    """Hang raised in the reading code if it has not returned after `seconds` (a wall-clock guard
    against a read that never ends, far beyond what any read here takes)."""

    def alarm(*_):
        raise Hang(f"no return after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _read_everything(path: Path, out: Path) -> list[str]:
    """What `info`, `replay`, `play` and `recover` read of a bag, in-process: the BagErrors raised
    (anything else fails the test)."""
    errors = []
    for read in (
        lambda: summarize(path),
        lambda: list(read_serialized(path)),
        lambda: bag_info(path),
        lambda: list(read_events(path)),
        lambda: recover(path, out),
    ):
        try:
            with _no_hang(60):
                read()
        except BagError as exc:
            errors.append(str(exc))
    return errors


_cli = partial(run_cli, timeout=CLI_TIMEOUT_S)


# The child's peak resident memory: run in a process of its own, whose only child is the command.
_PEAK = (
    "import json, resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[2:], capture_output=True, text=True, timeout=float(sys.argv[1]))\n"
    "print(json.dumps({'rc': r.returncode, 'stderr': r.stderr, 'stdout': r.stdout,\n"
    "                  'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
)


def _cli_peak(*args, timeout: float = CLI_TIMEOUT_S) -> dict:
    """The command's exit status, output and peak RSS (KB)."""
    result = subprocess.run(
        [sys.executable, "-c", _PEAK, str(timeout), *CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _one_line_error(stderr: str, path: Path) -> str:
    """The single line a bag command prints when it refuses `path`."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(f"error: bag {path}: "), stderr
    return lines[0]


# --- bombs: refused before they expand -----------------------------------------------------------------------
@pytest.mark.parametrize("summary", [False, True], ids=["no-summary", "indexed"])
def test_a_zstd_bomb_is_refused_by_info_and_recover_with_bounded_memory(tmp_path, summary):
    bomb = _bomb(tmp_path / "bomb.mcap", summary=summary)
    assert bomb.stat().st_size < 100_000  # 98 KB for 3 GiB
    info = _cli_peak("info", bomb)
    assert info["rc"] == 2 and info["maxrss_kb"] < RSS_LIMIT_KB, info
    line = _one_line_error(info["stderr"], bomb)
    assert "declares 3.0 GiB uncompressed" in line and "128.0 MiB" in line
    # recover leaves the chunk out, says so, and keeps the channel it found beside it.
    report = _cli_peak("recover", bomb, "-o", tmp_path / "out", "--json")
    assert report["rc"] == 0 and report["maxrss_kb"] < RSS_LIMIT_KB, report
    summary_ = json.loads(report["stdout"])
    assert summary_["messages"] == 0 and summary_["chunks"] == 0
    assert len(summary_["bad_chunks"]) == 1 and "declares 3.0 GiB uncompressed" in summary_["bad_chunks"][0]


def test_replay_refuses_a_bomb_before_it_loads_a_model(tmp_path):
    bomb = _bomb(tmp_path / "bomb.mcap", summary=True)
    result = _cli_peak("replay", bomb, "--output", tmp_path / "out")
    assert result["rc"] == 2 and result["maxrss_kb"] < RSS_LIMIT_KB, result
    _one_line_error(result["stderr"], bomb)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("summary", [False, True], ids=["no-summary", "indexed"])
def test_a_chunk_that_expands_beyond_what_it_declares_is_refused_unexpanded(tmp_path, summary):
    # 3 GiB of zstd (98 KB) declaring 1 MiB: within every limit on paper, so it is expanded, to
    # 1 MiB and a byte, and no further.
    liar = _bomb(tmp_path / "liar.mcap", summary=summary, declared=1 << 20)
    result = _cli_peak("info", liar)
    assert result["rc"] == 2 and result["maxrss_kb"] < RSS_LIMIT_KB, result
    assert "expands beyond the 1048576 bytes it declares" in _one_line_error(result["stderr"], liar)
    with pytest.raises(BagError, match="expands beyond"):
        list(read_serialized(liar))
    report = recover(liar, tmp_path / "recovered")
    assert report["chunks"] == 0 and "expands beyond" in report["bad_chunks"][0]


def test_an_lz4_chunk_that_expands_beyond_what_it_declares_is_refused_unexpanded(tmp_path):
    liar = _bomb(tmp_path / "lz4.mcap", summary=True, declared=1 << 20, data=_lz4_zeros(GiB), compression="lz4")
    result = _cli_peak("info", liar)  # 1 GiB expanded whole before the limits
    assert result["rc"] == 2 and result["maxrss_kb"] < RSS_LIMIT_KB, result
    assert "chunk (lz4) expands beyond" in _one_line_error(result["stderr"], liar)
    result = _cli_peak("recover", liar, "-o", tmp_path / "out", "--json")
    assert result["rc"] == 0 and result["maxrss_kb"] < RSS_LIMIT_KB, result
    assert "expands beyond" in json.loads(result["stdout"])["bad_chunks"][0]


def test_chunks_beyond_the_files_allowance_or_overlapping_beyond_the_limit_are_refused(tmp_path):
    # Many chunks, each well within the per-chunk limit, together beyond what the file's size allows.
    many = tmp_path / "many.mcap"
    many.write_bytes(_mcap([(_rle_zstd(1 << 20), "zstd", 1 << 20, k, k) for k in range(30)], summary=False))
    with pytest.raises(
        BagError,
        match=r"its chunks declare 17\.0 MiB uncompressed \(by the chunk at byte \d+\) in "
        r"a file of .*: more than 16\.0 MiB and 100 times its size",
    ):
        summarize(many)
    # Three 100 MiB chunks of one time span, in a file large enough for them (3 MiB of data that
    # does not compress): reading them in time order would hold all three at once.
    rng = random.Random(0)
    spans = [(rng.randbytes(1 << 20), "zstd", 100 << 20, 0, 10) for _ in range(3)]
    overlapping = tmp_path / "overlapping.mcap"
    overlapping.write_bytes(_mcap(spans, summary=True))
    with pytest.raises(BagError, match=r"overlap in time so that reading it in time order holds 300\.0 MiB"):
        summarize(overlapping)
    # The same chunks one after another in time pass that check (and fail as what they are: not zstd).
    in_order = tmp_path / "in_order.mcap"
    in_order.write_bytes(_mcap([(d, c, n, 20 * k, 20 * k + 10) for k, (d, c, n, _, _) in enumerate(spans)], True))
    with pytest.raises(BagError) as refused:
        list(read_serialized(in_order))
    assert "overlap" not in str(refused.value) and "cannot be read" in str(refused.value)


def test_rosbag2_file_and_message_compression_read_within_limits(tmp_path):
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    def write(path, mode, data=None):
        writer = Writer(path, version=8, storage_plugin=StoragePlugin.MCAP)
        if mode is not None:
            writer.set_compression(mode, CompressionFormat.ZSTD)  # before it opens
        with writer:
            connection = writer.add_connection("/imu/data", "sensor_msgs/msg/Imu", typestore=TYPESTORE)
            for topic, ns, cdr in MESSAGES:
                if topic == "/imu/data":
                    writer.write(connection, ns, cdr if data is None else data)
        return path

    imu = [(ns, cdr) for topic, ns, cdr in MESSAGES if topic == "/imu/data"]
    # Genuine bags compressed per file and per message read as they were written.
    for mode in (CompressionMode.FILE, CompressionMode.MESSAGE):
        bag = write(tmp_path / mode.name.lower(), mode)
        assert [(t, d) for _, _, t, d in read_serialized(bag)] == imu
    # Per message: a message that would expand to 3 GiB stops at the per-message limit.
    bag = write(tmp_path / "message_bomb", None, data=_rle_zstd(BOMB_BYTES))
    meta = bag / "metadata.yaml"
    meta.write_text(
        meta.read_text()
        .replace("compression_mode: ''", "compression_mode: message")
        .replace("compression_format: ''", "compression_format: zstd")
    )
    result = _cli_peak("info", bag)
    assert result["rc"] == 2 and result["maxrss_kb"] < RSS_LIMIT_KB, result
    assert "a message compressed on its own expands to more than 128.0 MiB" in _one_line_error(result["stderr"], bag)
    # Per file: a storage file that would expand to 3 GiB (into a temporary file) stops at the file's allowance.
    bag = write(tmp_path / "file_bomb", CompressionMode.FILE)
    storage = next(bag.glob("*.mcap.zstd"))
    storage.write_bytes(_rle_zstd(BOMB_BYTES))
    result = _cli_peak("info", bag)
    assert result["rc"] == 2 and result["maxrss_kb"] < RSS_LIMIT_KB, result
    line = _one_line_error(result["stderr"], bag)
    assert f"{storage.name}: expands more than 16.0 MiB and 100 times its" in line, line


# --- what is not a file ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fifos_devices_and_directories_named_like_bags_are_refused_before_they_are_opened(tmp_path, valid_bags):
    fifo = tmp_path / "pipe.mcap"
    os.mkfifo(fifo)
    for command in (["info", fifo], ["recover", fifo, "-o", tmp_path / "out"], ["play", fifo]):
        result = _cli(*command, timeout=60)
        assert result.returncode == 2, result
        assert "is a FIFO (named pipe)" in _one_line_error(result.stderr, fifo)
    zero = tmp_path / "zero.mcap"
    zero.symlink_to("/dev/zero")
    with _no_hang(30), pytest.raises(BagError, match=f"bag {zero}: is a character device"):
        summarize(zero)
    with _no_hang(30), pytest.raises(BagError, match="is a character device, not a regular file"):
        recover(zero, tmp_path / "out")
    # A bag directory: its metadata.yaml, and each storage file it lists.
    bag = tmp_path / "bag"
    bag.mkdir()
    os.mkfifo(bag / "metadata.yaml")
    result = _cli("info", bag, timeout=60)
    assert result.returncode == 2 and "metadata.yaml: is a FIFO" in _one_line_error(result.stderr, bag)
    (bag / "metadata.yaml").unlink()
    (bag / "metadata.yaml").write_text(
        "rosbag2_bagfile_information:\n  version: 8\n  storage_identifier: mcap\n"
        "  relative_file_paths:\n  - bag_0.mcap\n  - bag_1.mcap\n"
    )
    shutil.copy(valid_bags["zstd"], bag / "bag_0.mcap")
    os.mkfifo(bag / "bag_1.mcap")
    result = _cli("info", bag, timeout=60)
    assert result.returncode == 2 and "bag_1.mcap: is a FIFO" in _one_line_error(result.stderr, bag)
    (bag / "bag_1.mcap").unlink()
    (bag / "bag_1.mcap").mkdir()
    with _no_hang(30), pytest.raises(BagError, match="bag_1.mcap: is a directory, not a regular file"):
        summarize(bag)
    assert not (tmp_path / "out").exists()


def test_replay_refuses_a_fifo_for_its_model_parameters_or_outputs(tmp_path, valid_bags):
    from liquid_control.bags.configs import ReplayConfig
    from liquid_control.bags.replay import replay

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for option in ("model", "params", "csv", "activity"):
        with _no_hang(60), pytest.raises(ValueError, match=f"{fifo}: is a FIFO"):
            replay(ReplayConfig(str(valid_bags["none"]), str(tmp_path / "out"), **{option: str(fifo)}))
    assert not (tmp_path / "out").exists()


def test_outputs_are_never_written_through_a_dangling_link_over_a_file_or_below_one(tmp_path, valid_bags):
    source = valid_bags["none"]
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory\n")
    for output, reason in (
        (dangling, f"is a symbolic link to {tmp_path / 'nowhere'}, which does not exist"),
        (a_file, "exists already"),
        (a_file / "below", f"{a_file} is not a directory"),
    ):
        result = _cli("recover", source, "-o", output, timeout=60)
        assert result.returncode == 2, result
        assert reason in _one_line_error(result.stderr, output)
    assert not (tmp_path / "nowhere").exists() and a_file.read_text() == "not a directory\n"
    result = _cli("record", "-o", dangling, "--duration", "1", timeout=60)
    assert result.returncode == 2 and "symbolic link" in _one_line_error(result.stderr, dangling)
    assert not (tmp_path / "nowhere").exists()


# --- damaged bags: fuzzed -------------------------------------------------------------------------------------
def _fields(data: bytes) -> tuple[list[tuple[int, str]], list[tuple[int, int]]]:
    """The mutable fields of an MCAP file, walked after the specification: (offset, struct format)
    of every record's length, every chunk's times, declared size, CRC, compressed size and
    compression name length, every chunk index's times, offset, lengths and sizes, the footer's
    offsets; and the (start, end) of every chunk's compressed data."""
    fields, regions, pos = [], [], len(MAGIC)
    while pos + 9 <= len(data):
        opcode, length = struct.unpack_from("<BQ", data, pos)
        fields.append((pos + 1, "<Q"))
        body = pos + 9
        if opcode == 0x06:
            (name,) = struct.unpack_from("<I", data, body + 28)
            fields += [
                (body, "<Q"),
                (body + 8, "<Q"),
                (body + 16, "<Q"),
                (body + 24, "<I"),
                (body + 28, "<I"),
                (body + 32 + name, "<Q"),
            ]
            (compressed,) = struct.unpack_from("<Q", data, body + 32 + name)
            regions.append((body + 40 + name, body + 40 + name + compressed))
        elif opcode == 0x08:
            (count,) = struct.unpack_from("<I", data, body + 32)
            after = body + 36 + count + 8
            (name,) = struct.unpack_from("<I", data, after)
            fields += [(body + k, "<Q") for k in (0, 8, 16, 24)] + [
                (body + 32, "<I"),
                (after, "<I"),
                (after + 4 + name, "<Q"),
                (after + 12 + name, "<Q"),
            ]
        elif opcode in (0x03, 0x04):
            fields.append((body + (2 if opcode == 0x03 else 4), "<I"))  # the first string's length
        elif opcode == 0x02:
            fields += [(body, "<Q"), (body + 8, "<Q")]
            break
        pos = body + length
    return fields, regions


SPECIAL = [0, 1, 9, 40, 255, (1 << 20), (1 << 31), (1 << 32) - 1, 3 * GiB, (1 << 63), (1 << 64) - 1]


def _mutations(data: bytes):
    fields, regions = _fields(data)
    assert fields and regions
    field = st.tuples(
        st.just("set"),
        st.sampled_from(fields),
        st.one_of(st.sampled_from(SPECIAL), st.integers(0, (1 << 64) - 1), st.integers(-64, 64)),
    )
    flip = st.tuples(st.just("flip"), st.sampled_from(regions), st.integers(0, 1 << 16), st.integers(1, 255))
    byte = st.tuples(st.just("byte"), st.integers(0, len(data) - 1), st.integers(0, 255))
    cut = st.tuples(st.just("cut"), st.integers(0, len(data) - 1))
    return st.lists(st.one_of(field, field, flip, flip, byte, cut), min_size=1, max_size=3)


def _mutate(data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for m in mutations:
        if m[0] == "set":
            (offset, fmt), value = m[1], m[2]
            width = struct.calcsize(fmt)
            if offset + width > len(out):
                continue
            if -64 <= value <= 64:  # a small change of what is there
                value = struct.unpack_from(fmt, out, offset)[0] + value
            struct.pack_into(fmt, out, offset, value % (1 << (8 * width)))
        elif m[0] == "flip":
            (start, end), at, mask = m[1], m[2], m[3]
            if start < min(end, len(out)):
                out[start + at % (min(end, len(out)) - start)] ^= mask
        elif m[0] == "byte":
            if m[1] < len(out):
                out[m[1]] = m[2]
        else:
            del out[m[1] :]
    return bytes(out)


@pytest.mark.parametrize("compression", list(COMPRESSIONS))
def test_damaged_bags_raise_only_bag_errors_never_hang_and_stay_small(valid_bags, compression):
    original = valid_bags[compression].read_bytes()
    # The bag as written reads whole: every message, in order.
    assert [(t, n, d) for t, _, n, d in read_serialized(valid_bags[compression])] == MESSAGES
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seen = {"errors": 0, "read": 0}

    @settings(
        max_examples=100, derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(_mutations(original))
    def damaged(mutations):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "damaged.mcap"
            path.write_bytes(_mutate(original, mutations))
            errors = _read_everything(path, Path(tmp) / "recovered")
            for error in errors:
                assert error.startswith(f"bag {path}") or error.startswith(f"bag {Path(tmp) / 'recovered'}"), error
            seen["errors" if errors else "read"] += 1

    damaged()
    assert seen["errors"] > 0  # the mutations did damage
    # In-process too, whatever the damage, nothing expanded beyond the limits (the test process's own
    # peak grows by less than two chunks' worth: 3 GiB declared, or expanded, would show).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 2 * limits.MAX_CHUNK_BYTES // 1024


@pytest.mark.slow
def test_damaged_bags_on_the_command_line_are_one_line_errors(tmp_path, valid_bags):
    original = valid_bags["zstd"].read_bytes()
    _, regions = _fields(original)
    declared = (regions[0][0] - 40 - len("zstd") + 16, "<Q")  # the first chunk's uncompressed size
    cases = {
        "declares_3GiB": [("set", declared, 3 * GiB)],
        "flipped": [("flip", regions[0], 7, 0x5A)],
        "cut": [("cut", len(original) * 3 // 5)],
    }
    for name, mutations in cases.items():
        path = tmp_path / f"{name}.mcap"
        path.write_bytes(_mutate(original, mutations))
        result = _cli("info", path)
        assert result.returncode == 2, (name, result)
        _one_line_error(result.stderr, path)
        result = _cli("recover", path, "-o", tmp_path / f"{name}.recovered", "--json")
        assert result.returncode in (0, 2) and "Traceback" not in result.stderr, (name, result)
        if result.returncode == 2:
            _one_line_error(result.stderr, path)
        else:
            assert json.loads(result.stdout)["messages"] < len(MESSAGES), name


def test_the_valid_bags_read_whole_under_the_limits(valid_bags, tmp_path):
    for name, path in valid_bags.items():
        assert summarize(path).count == len(MESSAGES), name
        assert len(list(read_events(path))) == len(MESSAGES), name
        report = recover(path, tmp_path / name)
        assert report["messages"] == len(MESSAGES) and not report["bad_chunks"], (name, report)
