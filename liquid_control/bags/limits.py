"""What reading a bag may cost: every bag file the bag tools open is checked here first, and every
compressed block they read is expanded here, so that no file, however damaged or hostile, can take
the machine down (its memory, its disk, a read that never returns).

A rosbag2 bag keeps its messages in MCAP files, in chunks that are compressed (zstd, lz4) or not and
that declare their uncompressed size, or in SQLite 3 files; a bag directory may also compress each
storage file whole or each message on its own (metadata.yaml `compression_mode: file / message`,
zstd). A 98 KB MCAP file can hold a chunk of 3 GiB of zeros (zstd run-length blocks, 4 bytes per
128 KiB), and a reader that expands first and compares sizes afterwards (rosbags, as it comes) runs
out of memory before it can say so. Hence:

- A path that is not a regular file (a FIFO, a device, a socket, a directory where a file is
  expected, a link to one of these or to nothing) is refused before it is opened: opening a FIFO
  waits for a writer that never comes, /dev/zero never ends. For a bag directory: its
  metadata.yaml and every storage file it lists.
- An MCAP file is walked record by record (record headers and chunk headers only, seeking over
  the bodies) before rosbags opens it, both its data section and its summary's chunk indexes,
  since rosbags reads chunks through either. What they declare must keep within the limits
  below, or the file is refused as a whole: nothing of it is decompressed.
- Every decompression stops one byte past the size its chunk declares: a chunk that expands
  beyond it is corrupt and refused without being expanded further. rosbags' MCAP decompressors
  and its per-message and per-file zstd are replaced by the bounded ones here (install(), at
  import), and `liquid-control recover` uses them for its own reading.

The limits:

MAX_CHUNK_BYTES (128 MiB): the most one MCAP chunk may declare uncompressed, and the most one
    message compressed on its own may expand to. rosbag2 closes a chunk at 768 KiB (4 MiB with its
    zstd presets); only a single larger message makes a larger chunk, and 128 MiB is five 4K rgb8
    images. MAX_RECORD_BYTES, a little more, is the most of one record read into memory (a chunk
    of data that did not compress is a little larger than what it holds).
FREE_BYTES (16 MiB) and MAX_RATIO (100): the chunks of one MCAP file may declare, all together,
    FREE_BYTES plus MAX_RATIO times the file's size. Recordings compress 2 to 10 times with zstd;
    a bomb expands thousands of times. This bounds time as well as memory: rosbags and recover
    walk a chunk's records one by one in Python, about 1.5 us each, and chunks of nothing but
    9-byte records are the slowest to walk. A 1 MB file made to declare all it may that way
    (117 MB) costs `info` about 35 s and 310 MB, `recover` 18 s: bounded, in proportion to the
    file, where before a 98 KB file cost minutes and 6 GB. MAX_RATIO is the one knob between
    the two: lower, and genuine bags of very compressible data (blank frames) are refused.
MAX_OPEN_BYTES (256 MiB): rosbags' indexed reader merges the chunks by time and holds every chunk
    whose time span covers the message it is at; a file's chunk index may not make it hold more
    than this at once (chunks written in time order overlap only at their ends).
MAX_METADATA_BYTES (16 MiB): the largest metadata.yaml read (a bag of a thousand topics has ~1 MiB).
MIN_FREE_DISK_BYTES (1 GiB): a storage file compressed whole is expanded by rosbags into a
    temporary file: to at most FREE_BYTES plus MAX_RATIO times its size, and never so far that
    less than this is left free there.

SQLite 3 storage holds messages as they are (no compression of its own): reading one costs what
the file holds, never more.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
import sys
import tempfile
from pathlib import Path, PurePath

import lz4.frame
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.reader import DirectoryReader
from rosbags.rosbag2.storage_mcap import McapReader
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader

if sys.version_info >= (3, 14):
    from compression import zstd
else:  # what rosbags uses too
    from backports import zstd

from .. import files
from ..files import FileRefused

MiB = 1 << 20
MAX_CHUNK_BYTES = 128 * MiB
MAX_RECORD_BYTES = MAX_CHUNK_BYTES + MiB
FREE_BYTES = 16 * MiB
MAX_RATIO = 100
MAX_OPEN_BYTES = 256 * MiB
MAX_METADATA_BYTES = 16 * MiB
MIN_FREE_DISK_BYTES = 1 << 30

MCAP_MAGIC = b"\x89MCAP0\r\n"
_RECORD = struct.Struct("<BQ")  # opcode, length
_CHUNK_HEAD = struct.Struct("<QQQII")  # start, end, uncompressed size, CRC, length of the compression name
HEADER, FOOTER, SCHEMA, CHANNEL, MESSAGE, CHUNK, CHUNK_INDEX, SUMMARY_OFFSET = (
    0x01,
    0x02,
    0x03,
    0x04,
    0x05,
    0x06,
    0x08,
    0x0E,
)
_READ_WHOLE = (HEADER, SCHEMA, CHANNEL, MESSAGE, CHUNK)  # the data section's records rosbags reads into memory
_FOOTER_BYTES = 37  # the footer record (opcode, length 20, three fields) and the closing magic
_HOSTILE = "a damaged or hostile file; nothing of it was decompressed"


class LimitError(FileRefused):
    """A bag file refused because reading it would cost too much, or is not a file at all. `file`:
    the file it is about (None: the one being read), `problem`: what it declares or is."""

    def about(self, bag: Path) -> str:
        """The problem as said of `bag`: the file named where it is one inside the bag."""
        if self.file is None or Path(self.file) == Path(bag):
            return self.problem
        return f"{PurePath(self.file).name}: {self.problem}"


def size_text(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def allowance(file_size: int) -> int:
    """What the chunks of an MCAP file of `file_size` bytes may declare uncompressed, all together."""
    return FREE_BYTES + MAX_RATIO * file_size


def stat_path(path: Path) -> os.stat_result:
    """os.stat of `path` (through links); LimitError naming a link to nothing or a stat that fails."""
    return files.stat_path(path, LimitError)


def regular_file(path: Path) -> os.stat_result:
    """os.stat of `path`, a regular file (through links), else LimitError: a FIFO, a device or a
    directory is never opened."""
    return files.regular_file(path, LimitError)


def check_bag(path: Path) -> None:
    """Refuse (LimitError) a bag `path` that is neither a regular file nor a directory, and a bag
    directory whose metadata.yaml or listed storage files are not regular files, or whose
    metadata.yaml is too large: before anything is opened. (Its MCAP files are checked by
    CheckedReader as it opens them.) A directory without metadata.yaml, a file list that cannot be
    read: left to the reader, which says so."""
    st = stat_path(path)
    if stat.S_ISREG(st.st_mode):
        return
    if not stat.S_ISDIR(st.st_mode):
        raise LimitError(path, f"is {files.kind(st.st_mode)}, not a bag (a directory, or a .mcap or .db3 file)")
    metadata = path / "metadata.yaml"
    if not os.path.lexists(metadata):
        return
    meta = regular_file(metadata)
    if meta.st_size > MAX_METADATA_BYTES:
        raise LimitError(
            metadata,
            f"is {size_text(meta.st_size)}, more than the {size_text(MAX_METADATA_BYTES)} a bag's metadata is read to",
        )
    for name in _storage_files(metadata):
        file = path / PurePath(name).name  # as rosbags finds them: by name, in the bag directory
        if os.path.lexists(file):
            regular_file(file)


def _storage_files(metadata: Path) -> list[str]:
    """relative_file_paths of a metadata.yaml (read as rosbags reads it); [] when it has none."""
    from ruamel.yaml import YAML

    try:
        info = YAML(typ="safe").load(metadata.read_text())["rosbag2_bagfile_information"]
        names = info["relative_file_paths"]
    except Exception:  # noqa: BLE001 - a metadata.yaml the reader cannot use either: it says why
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def check_mcap(path: Path, size: int | None = None) -> None:
    """Walk the records of an MCAP file (a regular file: check it first) and refuse it (LimitError)
    when a record rosbags reads whole is larger than MAX_RECORD_BYTES, a chunk declares more than
    MAX_CHUNK_BYTES uncompressed, its chunks declare more than allowance(size) in all, or its
    summary's chunk index points outside the file or holds more than MAX_OPEN_BYTES at once.
    Anything else wrong (a file cut short, a malformed record) is the reader's to report: the walk
    stops there. Not an MCAP file: nothing to check."""
    path = Path(path)
    size = os.stat(path).st_size if size is None else size
    with open(path, "rb") as f:
        if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            return
        _walk_data(f, path, size)
        _walk_summary(f, path, size)


def _record_at(f, pos: int, size: int) -> tuple[int, int] | None:
    """(opcode, length) of the record at `pos`, or None where not even its opcode and length fit
    in the file."""
    if pos + _RECORD.size > size:
        return None
    f.seek(pos)
    return _RECORD.unpack(f.read(_RECORD.size))


def _check_record(path: Path, pos: int, opcode: int, length: int) -> None:
    if length > MAX_RECORD_BYTES:
        raise LimitError(
            path,
            f"the record at byte {pos} (opcode 0x{opcode:02x}) is {size_text(length)} long, more "
            f"than the {size_text(MAX_RECORD_BYTES)} of one record that is read ({_HOSTILE})",
        )


def _check_chunk(path: Path, where: str, uncompressed: int, total: int, size: int) -> int:
    """The chunks' declared total with this one; LimitError beyond a limit."""
    if uncompressed > MAX_CHUNK_BYTES:
        raise LimitError(
            path,
            f"{where} declares {size_text(uncompressed)} uncompressed, more than the "
            f"{size_text(MAX_CHUNK_BYTES)} of one chunk that is read ({_HOSTILE})",
        )
    total += uncompressed
    if total > allowance(size):
        raise LimitError(
            path,
            f"its chunks declare {size_text(total)} uncompressed (by {where}) in a file of "
            f"{size_text(size)}: more than {size_text(FREE_BYTES)} and {MAX_RATIO} times its size, "
            f"which is what is read ({_HOSTILE}; a genuine bag this compressed can be written "
            "uncompressed with `ros2 bag convert`)",
        )
    return total


def _walk_data(f, path: Path, size: int) -> None:
    """The data section, as rosbags' scans read it: every chunk record, up to the footer."""
    pos, total = len(MCAP_MAGIC), 0
    while (record := _record_at(f, pos, size)) is not None:
        opcode, length = record
        if opcode == FOOTER:
            break
        if opcode in _READ_WHOLE:  # however far the file ends before it (a read allocates that much)
            _check_record(path, pos, opcode, length)
        if length > size - pos - _RECORD.size:
            break  # cut short: the reader says so
        if opcode == CHUNK:
            head = f.read(min(length, _CHUNK_HEAD.size + 64))
            if len(head) >= _CHUNK_HEAD.size:
                uncompressed = _CHUNK_HEAD.unpack_from(head)[2]
                total = _check_chunk(path, f"the chunk at byte {pos}", uncompressed, total, size)
        pos += _RECORD.size + length


def _walk_summary(f, path: Path, size: int) -> None:
    """The summary section, as rosbags' index reader reads it: its chunk indexes, from the footer's
    summary start to the footer (or the summary offsets)."""
    if size < len(MCAP_MAGIC) + _FOOTER_BYTES:
        return
    f.seek(size - _FOOTER_BYTES)
    footer = f.read(_FOOTER_BYTES)
    if footer[:9] != _RECORD.pack(FOOTER, 20) or footer[-8:] != MCAP_MAGIC:
        return
    (summary_start,) = struct.unpack_from("<Q", footer, 9)
    if not len(MCAP_MAGIC) < summary_start <= size - _FOOTER_BYTES:
        return
    pos, total, spans = summary_start, 0, []
    while (record := _record_at(f, pos, size)) is not None:
        opcode, length = record
        if opcode in (FOOTER, SUMMARY_OFFSET):
            break
        _check_record(path, pos, opcode, length)  # rosbags reads every summary record whole
        if length > size - pos - _RECORD.size:
            break
        if opcode == CHUNK_INDEX:
            index = _chunk_index(f.read(length))
            if index is not None:
                start, end, offset, chunk_length, compressed, uncompressed = index
                where = f"the chunk index at byte {pos}"
                if offset + chunk_length > size or compressed > chunk_length:
                    raise LimitError(
                        path,
                        f"{where} points past the end of the file (chunk at byte {offset}, "
                        f"{chunk_length} bytes, {compressed} of them compressed data; "
                        f"the file has {size}): {_HOSTILE}",
                    )
                total = _check_chunk(path, where, uncompressed, total, size)
                spans.append((start, end, uncompressed))
        pos += _RECORD.size + length
    peak = _peak_open(spans)
    if peak > MAX_OPEN_BYTES:
        raise LimitError(
            path,
            f"its chunks overlap in time so that reading it in time order holds "
            f"{size_text(peak)} of them at once, more than {size_text(MAX_OPEN_BYTES)} ({_HOSTILE})",
        )


def _chunk_index(body: bytes) -> tuple[int, int, int, int, int, int] | None:
    """(message start, end, chunk offset, chunk length, compressed size, uncompressed size) of a
    ChunkIndex record; None when malformed (the reader says so)."""
    try:
        start, end, offset, chunk_length, map_length = struct.unpack_from("<QQQQI", body, 0)
        pos = 36 + map_length + 8  # past the message index offsets and their length
        (name_length,) = struct.unpack_from("<I", body, pos)
        compressed, uncompressed = struct.unpack_from("<QQ", body, pos + 4 + name_length)
    except struct.error:
        return None
    return start, end, offset, chunk_length, compressed, uncompressed


def _peak_open(spans: list[tuple[int, int, int]]) -> int:
    """The most uncompressed bytes of chunks whose [start, end] time spans all cover one time."""
    events = sorted([(s, 0, n) for s, _, n in spans] + [(e, 1, -n) for _, e, n in spans])
    held = peak = 0
    for _, _, n in events:  # at a tie, chunks opening before those closing: spans include their ends
        held += n
        peak = max(peak, held)
    return peak


# --- bounded decompression ----------------------------------------------------------------------------
def expand(data: bytes, compression: str, limit: int) -> bytes:
    """At most `limit` bytes of zstd or lz4 `data` (frame after frame, as the one-shot
    decompressors read them); data that ends inside a frame gives what precedes its end. Memory:
    the output, never more than `limit`. ValueError for another compression."""
    if compression == "":
        return bytes(data[:limit])
    if compression not in ("zstd", "lz4"):
        raise ValueError(f"unsupported chunk compression {compression!r}")
    parts, n, rest = [], 0, data
    while rest and n < limit:
        d = zstd.ZstdDecompressor() if compression == "zstd" else lz4.frame.LZ4FrameDecompressor()
        part = d.decompress(rest, limit - n)
        parts.append(part)
        n += len(part)
        if not d.eof:
            break  # at the limit, or the data ends inside the frame
        rest = d.unused_data
    return parts[0] if len(parts) == 1 else b"".join(parts)


def decompress(data: bytes, compression: str, size: int) -> bytes:
    """A chunk's records: the `size` bytes it declares, from its `compression`ed `data`.
    LimitError when it declares more than MAX_CHUNK_BYTES or expands beyond `size` (expanded to
    one byte past it, no further); fewer bytes than declared are the caller's to refuse."""
    if size > MAX_CHUNK_BYTES:
        raise LimitError(
            None,
            f"a chunk declares {size_text(size)} uncompressed, more than the "
            f"{size_text(MAX_CHUNK_BYTES)} of one chunk that is read ({_HOSTILE})",
        )
    if compression == "":
        return data
    out = expand(data, compression, size + 1)
    if len(out) > size:
        raise LimitError(
            None,
            f"a chunk ({compression}) expands beyond the {size} bytes it declares: corrupt "
            "(refused without expanding it further)",
        )
    return out


class _BoundedZstd:
    """Stands in for the zstd module in rosbags.rosbag2.reader, whose only uses of it are
    `decompress` (a bag compressed per message) and `open` (per storage file, expanded into a
    temporary directory): both bounded here."""

    def __getattr__(self, name: str):
        return getattr(zstd, name)

    @staticmethod
    def decompress(data: bytes) -> bytes:
        out = expand(data, "zstd", MAX_CHUNK_BYTES + 1)
        if len(out) > MAX_CHUNK_BYTES:
            raise LimitError(
                None,
                f"a message compressed on its own expands to more than "
                f"{size_text(MAX_CHUNK_BYTES)}, the most one message may ({_HOSTILE})",
            )
        return out

    @staticmethod
    def open(file, mode: str = "rb", **kwargs):
        name = Path(getattr(file, "name", "") or "storage file")
        compressed = os.fstat(file.fileno()).st_size
        tmp = tempfile.gettempdir()
        room = shutil.disk_usage(tmp).free - MIN_FREE_DISK_BYTES
        return _ExpandedFile(
            zstd.open(file, mode, **kwargs),
            name,
            min(allowance(compressed), room),
            f"more than {size_text(FREE_BYTES)} and {MAX_RATIO} times its {size_text(compressed)}"
            if allowance(compressed) <= room
            else f"so far that less than {size_text(MIN_FREE_DISK_BYTES)} would be left free in {tmp}",
        )


class _ExpandedFile:
    """A zstd file read through, to at most `limit` bytes (LimitError past them)."""

    def __init__(self, stream, name: Path, limit: int, why: str) -> None:
        self._stream, self._name, self._left, self._why = stream, name, limit, why

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = max(self._left, 0) + 1
        data = self._stream.read(min(n, max(self._left, 0) + 1))
        self._left -= len(data)
        if self._left < 0:
            raise LimitError(self._name, f"expands {self._why} ({_HOSTILE}: expanding stopped there)")
        return data

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> _ExpandedFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def install() -> None:
    """Put the bounded decompressors into rosbags (idempotent): its MCAP chunk decompressors by
    compression, called with the chunk's declared size, and the zstd its directory reader expands
    messages and storage files with. A rosbags without them is refused here rather than read
    without bounds."""
    from rosbags.rosbag2 import reader, storage_mcap

    table = getattr(storage_mcap, "DECOMPRESSORS", None)
    if not isinstance(table, dict) or not hasattr(reader, "zstd"):
        raise ImportError(
            "liquid_control.bags.limits: this rosbags has no DECOMPRESSORS table or reader.zstd "
            "to bound; its reading is not safe from decompression bombs"
        )
    for compression in ("", "zstd", "lz4"):
        table[compression] = lambda data, size, c=compression: decompress(data, c, size)
    reader.zstd = _BoundedZstd()


class CheckedMcapReader(McapReader):
    """rosbags' MCAP reader, which checks the file (check_mcap) before it reads any of it."""

    def open(self) -> None:
        path = Path(self.path)
        check_mcap(path, regular_file(path).st_size)
        super().open()


class _CheckedDirectoryReader(DirectoryReader):
    STORAGE_PLUGINS = {"mcap": CheckedMcapReader, "sqlite3": Sqlite3Reader}


class CheckedReader(Reader):
    """rosbags' Reader, which checks every MCAP file it opens before reading it: the bag's own, and
    those it expands from storage files compressed whole (into a temporary directory)."""

    STORAGE_PLUGINS = {"dir": _CheckedDirectoryReader, ".mcap": CheckedMcapReader, ".db3": Sqlite3Reader}
