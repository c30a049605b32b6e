"""`liquid-control recover`: a readable bag rebuilt from an MCAP bag whose writer never closed it
(killed with SIGKILL, power lost): no summary, no footer, often no metadata.yaml, maybe cut off
in the middle of a record. What `ros2 bag reindex` and `mcap recover` do, without ROS.

The MCAP file is read from its start, record by record (the mcap library's record readers), never
through its summary: the schemas and channels (rosbags writes them into the chunks), and every
complete message, from complete chunks and from the complete records at the start of a chunk cut
short (an uncompressed one, as the recorder writes them; compressed blocks cut short cannot be
decompressed). A chunk whose CRC does not match is left out whole. Reading stops at the footer, at the end
of the file, or at the first record that does not fit in what is left of it (the truncated tail:
its size is reported). The messages go, in the order they are in the file, to a new bag written by
liquid_control.bags.io (rosbags, MCAP, version 8) with the topics, types, message definitions and
offered QoS found in the file, which `replay`, `play` and `ros2 bag info` read. The original is
only read, never written.

Within the limits of liquid_control.bags.limits, since the files recovered are damaged by
definition: only regular files are opened; a chunk is expanded to at most what it declares (more
is corruption) and only while the file's chunks together declare no more than limits.allowance
of its size; a record larger than limits.MAX_RECORD_BYTES is skipped unread. A chunk beyond a limit
is left out and reported like any damaged one. The new bag is created only where nothing is.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from mcap.data_stream import ReadDataStream
from mcap.exceptions import McapError
from mcap.opcode import Opcode
from mcap.records import Channel, Message, Schema

from . import limits
from .io import BagError, BagWriter, check_new_bag

MAGIC = b"\x89MCAP0\r\n"
_HEADER = struct.Struct("<BQ")  # a record's opcode and length


@dataclass
class _Topic:
    name: str
    msgtype: str
    count: int = 0
    first_ns: int | None = None
    last_ns: int | None = None


@dataclass
class _Scan:
    """What was found in the files so far."""

    output: Path
    writer: BagWriter | None = None
    schemas: dict[int, Schema] = field(default_factory=dict)  # of the file being read
    channels: dict[int, str | None] = field(default_factory=dict)  # id -> topic, None: not recovered
    topics: dict[str, _Topic] = field(default_factory=dict)
    skipped_topics: dict[str, str] = field(default_factory=dict)
    skipped_messages: int = 0  # messages of channels that were not recovered or never defined
    chunks: int = 0  # complete chunks read
    partial_chunks: int = 0  # chunks cut short, their complete records read
    bad_chunks: list[str] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)
    file_size: int = 0  # of the file being read
    declared: int = 0  # uncompressed bytes its chunks declared so far


def _mcap_files(bag: Path) -> list[Path]:
    if not os.path.lexists(bag):
        raise BagError(f"bag {bag}: no such file or directory")
    try:
        st = limits.stat_path(bag)
        if not stat.S_ISDIR(st.st_mode):
            limits.regular_file(bag)  # a FIFO or a device is never opened (it would wait, or never end)
    except limits.LimitError as exc:
        raise BagError(f"bag {bag}: {exc.about(bag)}") from None
    files = sorted(bag.glob("*.mcap")) if stat.S_ISDIR(st.st_mode) else [bag]
    if not files:
        others = sorted(p.name for p in bag.glob("*.db3"))
        what = (
            f"SQLite 3 storage ({', '.join(others)}): recover reads MCAP bags only" if others else "no .mcap file in it"
        )
        raise BagError(f"bag {bag}: {what}")
    for path in files:
        try:
            limits.regular_file(path)
        except limits.LimitError as exc:
            raise BagError(f"bag {bag}: {exc.about(bag)}") from None
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise BagError(f"bag {bag}: {path.name} is not an MCAP file (it does not start with the MCAP magic)")
    return files


def default_output(bag: str | Path) -> Path:
    """BAG.recovered beside BAG (for run1/ or run1.mcap: run1.recovered)."""
    bag = Path(bag)
    name = bag.name[: -len(".mcap")] if bag.is_file() and bag.name.endswith(".mcap") else bag.name
    return bag.with_name(f"{name}.recovered")


def recover(bag: str | Path, output: str | Path | None = None) -> dict:
    """Rebuild a readable bag at `output` (default BAG.recovered) from every complete message in
    the MCAP file(s) of `bag` (a bag directory, with or without metadata.yaml, or a .mcap file).
    Returns the summary."""
    bag = Path(bag)
    files = _mcap_files(bag)
    output = Path(output) if output is not None else default_output(bag)
    check_new_bag(output)  # not over anything, not through a link: before the files are read
    scan = _Scan(output)
    try:
        for path in files:
            scan.schemas, scan.channels = {}, {}
            scan.files.append(_read_file(path, scan))
    finally:
        if scan.writer is not None:
            scan.writer.close()
    if scan.writer is None:
        raise BagError(
            f"bag {bag}: nothing to recover (no complete channel record in {', '.join(str(p) for p in files)})"
        )
    return {
        "bag": str(bag),
        "output": str(output),
        "messages": sum(t.count for t in scan.topics.values()),
        "topics": {
            t.name: {"type": t.msgtype, "count": t.count, "first_ns": t.first_ns, "last_ns": t.last_ns}
            for t in scan.topics.values()
        },
        "skipped_topics": scan.skipped_topics,
        "skipped_messages": scan.skipped_messages,
        "chunks": scan.chunks,
        "partial_chunks": scan.partial_chunks,
        "bad_chunks": scan.bad_chunks,
        "files": scan.files,
        "skipped_bytes": sum(f["skipped_bytes"] for f in scan.files),
        "complete": all(f["complete"] for f in scan.files),
    }


def _read_file(path: Path, scan: _Scan) -> dict:
    """Every usable record of one MCAP file, from its start; where and why reading stopped."""
    size = path.stat().st_size  # what is read (a file still being written may grow meanwhile)
    scan.file_size, scan.declared = size, 0
    used_to = len(MAGIC)  # the end of the last record that was read whole
    complete = False
    with open(path, "rb") as f:
        f.seek(len(MAGIC))
        while True:
            offset = f.tell()
            if offset + _HEADER.size > size:
                break  # the end (a file cut between records, or before the footer)
            head = f.read(_HEADER.size)
            opcode, length = _HEADER.unpack(head)
            if length > size - offset - _HEADER.size:
                # The record does not fit in what is left: the truncated tail. The complete
                # records at the start of a chunk cut short are still messages.
                if opcode == Opcode.CHUNK:
                    tail = f.read(min(size - offset - _HEADER.size, limits.MAX_RECORD_BYTES))
                    end = _partial_chunk(tail, offset + _HEADER.size, scan, path)
                    used_to = max(used_to, end)
                break
            used_to = offset + _HEADER.size + length
            if length > limits.MAX_RECORD_BYTES and opcode in (
                Opcode.CHUNK,
                Opcode.SCHEMA,
                Opcode.CHANNEL,
                Opcode.MESSAGE,
            ):
                scan.bad_chunks.append(
                    f"{path.name}@{offset}: a record of {limits.size_text(length)}, more than "
                    f"the {limits.size_text(limits.MAX_RECORD_BYTES)} of one that is read"
                )
                f.seek(used_to)
                continue
            body = f.read(length) if opcode in (Opcode.CHUNK, Opcode.SCHEMA, Opcode.CHANNEL, Opcode.MESSAGE) else b""
            if len(body) < length:
                f.seek(used_to)  # skipped unread: what recover has no use for (indexes, attachments)
            if opcode == Opcode.CHUNK:
                _chunk(body, scan, path, offset)
            elif opcode in (Opcode.SCHEMA, Opcode.CHANNEL, Opcode.MESSAGE):  # an unchunked file's data section
                if not _records(head + body, scan, path):
                    used_to = offset
                    break  # malformed: nothing after it can be trusted
            elif opcode == Opcode.DATA_END:
                complete = True  # the summary that follows repeats schemas and channels
                break
            elif opcode == Opcode.FOOTER:
                complete = True
                break
    return {"path": str(path), "size": size, "complete": complete, "skipped_bytes": 0 if complete else size - used_to}


def _chunk_header(body: bytes) -> tuple[int, str, int, int]:
    """(uncompressed CRC, compression, records length, offset of the records) of a Chunk record
    (struct.error when even its header is cut)."""
    _, _, _, crc, clen = struct.unpack_from("<QQQII", body, 0)
    compression = body[32 : 32 + clen].decode()
    (records_length,) = struct.unpack_from("<Q", body, 32 + clen)
    return crc, compression, records_length, 40 + clen


def _expand(body: bytes, scan: _Scan, whole: bool) -> tuple[bytes, int, int, str]:
    """(records, their CRC, offset of the compressed data, compression) of a chunk's body, expanded
    to at most what it declares and the file's allowance leaves (LimitError, ValueError, struct.error
    for a chunk that cannot be used); of a chunk cut short (`whole` false), as much as can be."""
    crc, compression, records_length, start = _chunk_header(body)
    declared = struct.unpack_from("<Q", body, 16)[0]
    if declared > limits.MAX_CHUNK_BYTES:
        raise limits.LimitError(
            None,
            f"it declares {limits.size_text(declared)} uncompressed, more than the "
            f"{limits.size_text(limits.MAX_CHUNK_BYTES)} of one chunk that is read",
        )
    if scan.declared + declared > limits.allowance(scan.file_size):
        raise limits.LimitError(
            None,
            f"with it the file's chunks declare {limits.size_text(scan.declared + declared)}"
            f" uncompressed, more than {limits.size_text(limits.FREE_BYTES)} and "
            f"{limits.MAX_RATIO} times its size ({limits.size_text(scan.file_size)})",
        )
    scan.declared += declared
    data = body[start : start + records_length] if whole else body[start:]
    if whole:
        records = limits.decompress(data, compression, declared)  # more than declared: refused
    else:
        try:
            records = limits.expand(data, compression, declared)
        except RuntimeError:  # lz4 data cut short
            records = b""
    return records, crc, start, compression


def _chunk(body: bytes, scan: _Scan, path: Path, offset: int) -> None:
    try:
        records, crc, _, _ = _expand(body, scan, whole=True)
    except Exception as exc:  # noqa: BLE001 - a damaged chunk is left out, the next one read
        scan.bad_chunks.append(f"{path.name}@{offset}: {type(exc).__name__}: {exc}")
        return
    if crc and zlib.crc32(records) != crc:
        scan.bad_chunks.append(f"{path.name}@{offset}: CRC mismatch")
        return
    scan.chunks += 1
    _records(records, scan, path)


def _partial_chunk(body: bytes, body_offset: int, scan: _Scan, path: Path) -> int:
    """The complete records of a chunk cut short; the file offset just past the last of them
    (exact for an uncompressed chunk; the chunk's start for a compressed one)."""
    try:
        records, _, start, compression = _expand(body, scan, whole=False)
    except Exception:  # noqa: BLE001 - nothing usable in it
        return 0
    used = _records(records, scan, path)
    if used:
        scan.partial_chunks += 1
    return body_offset + start + used if compression == "" and used else 0


def _records(data: bytes, scan: _Scan, path: Path) -> int:
    """Read the records of a chunk's content; how many bytes of it were complete records."""
    pos, n = 0, len(data)
    while pos + _HEADER.size <= n:
        opcode, length = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if end > n:
            break
        try:
            _record(opcode, data[pos + _HEADER.size : end], scan, path)
        except BagError:
            raise
        except (struct.error, UnicodeDecodeError, ValueError, KeyError, McapError) as exc:  # a malformed record
            scan.bad_chunks.append(
                f"{path.name}: a malformed record ({type(exc).__name__}: {exc}); "
                "the rest of its chunk (or file) left out"
            )
            break
        pos = end
    return pos


def _record(opcode: int, body: bytes, scan: _Scan, path: Path) -> None:
    stream = ReadDataStream(BytesIO(body))
    if opcode == Opcode.MESSAGE:
        message = Message.read(stream, len(body))
        topic = scan.channels.get(message.channel_id)
        if topic is None:
            scan.skipped_messages += 1
            return
        scan.writer.write_serialized(topic, message.data, message.log_time)
        item = scan.topics[topic]
        item.count += 1
        t = message.log_time
        item.first_ns = t if item.first_ns is None else min(item.first_ns, t)
        item.last_ns = t if item.last_ns is None else max(item.last_ns, t)
    elif opcode == Opcode.SCHEMA:
        schema = Schema.read(stream)
        scan.schemas[schema.id] = schema
    elif opcode == Opcode.CHANNEL:
        channel = Channel.read(stream)
        if channel.id not in scan.channels:
            scan.channels[channel.id] = _add_channel(channel, scan, path)


def _add_channel(channel: Channel, scan: _Scan, path: Path) -> str | None:
    """The channel's topic in the new bag (added there when new), or None when it cannot be."""
    from rosbags.rosbag2.metadata import parse_qos

    topic = channel.topic
    schema = scan.schemas.get(channel.schema_id)
    if schema is None:
        reason = f"its schema (id {channel.schema_id}) is not in {path.name}"
    elif channel.message_encoding != "cdr" or schema.encoding not in ("ros2msg", "ros2idl"):
        reason = f"not a ROS 2 message ({channel.message_encoding} / {schema.encoding})"
    elif topic in scan.topics:
        if scan.topics[topic].msgtype == schema.name:
            return topic  # the same topic in a later file of the bag, or a second channel of it
        reason = f"a second type {schema.name} beside {scan.topics[topic].msgtype}"
    else:
        if scan.writer is None:
            writer = BagWriter(scan.output)
            writer.__enter__()  # BagError where it cannot be created: the recovery's error, not the record's
            scan.writer = writer
        try:
            qos = (
                parse_qos(channel.metadata.get("offered_qos_profiles", ""))
                if channel.metadata.get("offered_qos_profiles")
                else []
            )
        except Exception:  # noqa: BLE001 - QoS we cannot read is left out, the messages are not
            qos = []
        try:
            scan.writer.add_topic(topic, schema.name, qos, msgdef=schema.data.decode())
        except BagError as exc:
            reason = str(exc)
        else:
            scan.topics[topic] = _Topic(topic, schema.name)
            return topic
    scan.skipped_topics.setdefault(topic, reason)
    return None


def _time(ns: int | None) -> str:
    return "-" if ns is None else f"{ns // 1_000_000_000}.{ns % 1_000_000_000 // 1_000_000:03d}"


def format_recover_summary(summary: dict) -> str:
    tail = (
        f"the file ended inside a record: {summary['skipped_bytes']} bytes at its end were skipped"
        if summary["skipped_bytes"]
        else "the file was closed properly"
        if summary["complete"]
        else "the file ended between records"
    )
    lines = [
        f"recovered {summary['messages']} messages from {summary['bag']} -> {summary['output']}",
        f"  {summary['chunks']} complete chunks"
        + (f", {summary['partial_chunks']} cut short" if summary["partial_chunks"] else "")
        + (f", {len(summary['bad_chunks'])} damaged (left out)" if summary["bad_chunks"] else "")
        + f"; {tail}",
    ]
    width = max([len(t) for t in [*summary["topics"], *summary["skipped_topics"]]] or [0])
    for topic, item in summary["topics"].items():
        lines.append(
            f"  {topic:<{width}}  {item['count']:>7}  {item['type']}  "
            f"{_time(item['first_ns'])} .. {_time(item['last_ns'])}"
        )
    for topic, reason in summary["skipped_topics"].items():
        lines.append(f"  {topic:<{width}}  {0:>7}  (not recovered: {reason})")
    if summary["skipped_messages"]:
        lines.append(f"  {summary['skipped_messages']} messages of channels not recovered")
    return "\n".join(lines)
