"""Training on files that could take the machine down, on real parts: bags written by rosbags' own
Writer holding a real PNG that declares 30000x30000 pixels (875 KB, 5.5 GB decoded), and frame caches
damaged, planted with links or left half-built by the test. A frame over the controller node's
max_image_pixels is skipped from its header and counted, as replay skips it; the cache rebuilds
whatever it cannot trust and never follows a link; `liquid-control train` says what is wrong in one
line with exit status 2."""

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from liquid_control.learning import cache
from liquid_control.learning.dataset import episodes_from_bag
from liquid_control.runtime.parameters import DEFAULTS

TS = get_typestore(Stores.ROS2_JAZZY)
CAMERA, IMU, TEACHER = "/camera/image_raw/compressed", "/imu/data", "/teacher/cmd_vel"
FIELDS = ("angular_velocity.z", "linear_acceleration.x")
LIMIT = DEFAULTS["max_image_pixels"]
HUGE = 30000


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, value: int = 0) -> bytes:
    """A grey PNG of one value, never held whole: deflate blocks of up to 100 rows, each ended by a
    full flush (which resets the compressor), are the same bytes every time, so one is compressed
    and repeated; the Adler-32 of the rows is summed block by block."""
    rows = min(height, 100)
    block_rows = (b"\x00" + bytes([value]) * width) * rows  # filter byte 0 (none), then the pixels
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(block_rows) + c.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(height, rows)
    tail = c.compress(block_rows[: rest * (width + 1)]) + c.flush()
    adler = 1
    for _ in range(full):
        adler = zlib.adler32(block_rows, adler)
    adler = zlib.adler32(block_rows[: rest * (width + 1)], adler)
    idat = b"\x78\xda" + block * full + tail + struct.pack(">I", adler)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def _time(t: float):
    sec = int(t)
    return TS.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=int(round((t - sec) * 1e9)))


def _header(t: float, frame_id: str):
    return TS.types["std_msgs/msg/Header"](stamp=_time(t), frame_id=frame_id)


def _write_bag(path, frame, episodes: int = 2, steps: int = 40):
    """A bag of `episodes` (5 s apart) of IMU and teacher commands at 100 Hz and a PNG camera at
    25 Hz, `frame(episode, k)` its PNG bytes; written by rosbags' Writer, not by the package."""
    v3 = TS.types["geometry_msgs/msg/Vector3"]
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        cam = w.add_connection(CAMERA, "sensor_msgs/msg/CompressedImage", typestore=TS)
        imu = w.add_connection(IMU, "sensor_msgs/msg/Imu", typestore=TS)
        cmd = w.add_connection(TEACHER, "geometry_msgs/msg/TwistStamped", typestore=TS)
        for ep in range(episodes):
            for k in range(steps):
                t = 10.0 + 5.0 * ep + 0.01 * k
                ns = int(round(t * 1e9))
                if k % 4 == 0:
                    msg = TS.types["sensor_msgs/msg/CompressedImage"](
                        header=_header(t, "camera_link"), format="png", data=np.frombuffer(frame(ep, k), np.uint8)
                    )
                    w.write(cam, ns, TS.serialize_cdr(msg, msg.__msgtype__))
                msg = TS.types["sensor_msgs/msg/Imu"](
                    header=_header(t, "imu_link"),
                    orientation=TS.types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
                    orientation_covariance=np.zeros(9),
                    angular_velocity=v3(x=0.0, y=0.0, z=0.01 * k),
                    angular_velocity_covariance=np.zeros(9),
                    linear_acceleration=v3(x=0.1, y=0.0, z=9.8),
                    linear_acceleration_covariance=np.zeros(9),
                )
                w.write(imu, ns + 1000, TS.serialize_cdr(msg, msg.__msgtype__))
                twist = TS.types["geometry_msgs/msg/Twist"](
                    linear=v3(x=0.5, y=0.0, z=0.0), angular=v3(x=0.0, y=0.0, z=0.02 * k)
                )
                msg = TS.types["geometry_msgs/msg/TwistStamped"](header=_header(t, "base_link"), twist=twist)
                w.write(cmd, ns + 2000, TS.serialize_cdr(msg, msg.__msgtype__))
    return path


@pytest.fixture(scope="module")
def huge_png():
    return _png(HUGE, HUGE)


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory):
    return _write_bag(tmp_path_factory.mktemp("bags") / "small", lambda ep, k: _png(16, 12, 3 * k + 100 * ep))


@pytest.fixture(scope="module")
def huge_bag(tmp_path_factory, huge_png):
    """The small bag's frames, one of which (episode 0, the sixth frame) declares 30000x30000."""
    return _write_bag(
        tmp_path_factory.mktemp("bags") / "huge",
        lambda ep, k: huge_png if (ep, k) == (0, 20) else _png(16, 12, 3 * k + 100 * ep),
    )


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _episodes(bag, root, log=None):
    return episodes_from_bag(
        bag,
        8,
        6,
        FIELDS,
        camera=CAMERA,
        imu=IMU,
        label=TEACHER,
        cache_dir=root,
        log=log if log is not None else (lambda *_: None),
    )


def _entry(root):
    (entry,) = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    return entry


def _held(episodes):
    """The episodes' content copied out of the cache (a damaged frame file changes what maps it)."""
    return [
        e
        if isinstance(e, dict)
        else {name: np.array(getattr(e, name)) for name in ("frames", "frame_index", "fields", "dt", "target")}
        for e in episodes
    ]


def _same(a, b):
    a, b = _held(a), _held(b)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for name in x:
            assert np.array_equal(x[name], y[name]), name


def test_the_png_writer_makes_real_pngs_and_the_huge_one_is_small():
    import cv2

    grey = cv2.imdecode(np.frombuffer(_png(230, 250, 77), np.uint8), cv2.IMREAD_UNCHANGED)
    assert grey.shape == (250, 230) and np.all(grey == 77)  # 2 blocks of 100 rows and 50 more
    huge = _png(HUGE, HUGE)
    assert len(huge) < 1 << 20 and struct.unpack(">II", huge[16:24]) == (HUGE, HUGE)


def test_a_frame_over_the_limit_is_skipped_from_its_header_counted_and_never_decoded(huge_bag, small_bag, tmp_path):
    """In a process of its own, so that its peak memory is the build's: decoding the frame would
    take 5.5 GB (measured before the limit: train's peak RSS 5.4 GiB on this kind of bag). The
    baseline is the same process after building the small bag (the same imports and frames, no
    huge one), so the bound does not depend on what the interpreter and torch take on a machine."""
    code = textwrap.dedent(f"""
        import json, resource
        from liquid_control.learning.dataset import episodes_from_bag
        def build(bag, cache, lines, skipped):
            return episodes_from_bag(bag, 8, 6, {FIELDS!r}, camera={CAMERA!r}, imu={IMU!r}, label={TEACHER!r},
                                     cache_dir=cache, log=lines.append, skipped=skipped)
        build({str(small_bag)!r}, {str(tmp_path / "warm")!r}, [], {{}})
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        lines, skipped = [], {{}}
        eps = build({str(huge_bag)!r}, {str(tmp_path / "cache")!r}, lines, skipped)
        print(json.dumps({{"frames": [len(e.frames) for e in eps], "lines": lines, "skipped": skipped,
                          "grew_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before}}))
    """)
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    why = f"{CAMERA} ({HUGE}x{HUGE} = {HUGE * HUGE} pixels is over max_image_pixels {LIMIT})"
    assert out["skipped"] == {why: 1}
    assert out["lines"] == [f"bag {huge_bag}: skipped 1 message of {why}"]
    assert out["frames"] == [9, 10]  # the 10 frames of each episode, less the one refused
    assert out["grew_kb"] < HUGE * HUGE // 2 // 1024, out  # under half of even a one-channel decode (450 MB)


@pytest.mark.slow
def test_train_skips_the_frame_and_says_so_in_one_line(huge_bag, tmp_path):
    model = tmp_path / "m.safetensors"
    result = _run(
        "-m",
        "liquid_control.cli",
        "train",
        "--bag",
        huge_bag,
        "--output",
        model,
        "--arch",
        "gru-small",
        "--iterations",
        "1",
        "--window",
        "12",
        "--warmup",
        "2",
        "--batch",
        "2",
        "--eval-every",
        "1",
        "--cache-dir",
        tmp_path / "cache",
    )
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stdout.splitlines() if "skipped" in line and not line.startswith("{")]
    assert said == [
        f"bag {huge_bag}: skipped 1 message of {CAMERA} ({HUGE}x{HUGE} = {HUGE * HUGE} pixels is "
        f"over max_image_pixels {LIMIT})"
    ]
    report = json.loads(result.stdout.splitlines()[-1])
    assert list(report["skipped_messages"][str(huge_bag)].values()) == [1] and model.is_file()


@pytest.mark.slow
def test_train_errors_on_such_input_are_one_line_with_exit_status_2(huge_png, tmp_path):
    all_huge = _write_bag(tmp_path / "all_huge", lambda ep, k: huge_png, steps=12)
    args = ["-m", "liquid_control.cli", "train", "--output", tmp_path / "m.safetensors", "--iterations", "1"]
    result = _run(*args, "--bag", all_huge, "--cache-dir", tmp_path / "cache")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: bag {all_huge}: nothing to train on")
    assert (
        f"skipped 6 messages of {CAMERA} ({HUGE}x{HUGE}" in result.stderr
        and f"max_image_pixels {LIMIT}" in result.stderr
    )
    # A cache folder that is a file, or a link to nothing.
    (tmp_path / "file").write_text("")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    for root, what in (("file", "is not a folder"), ("dangling", f"is a symbolic link to {tmp_path / 'nowhere'}")):
        result = _run(*args, "--bag", all_huge, "--cache-dir", tmp_path / root)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith(f"error: cache folder {tmp_path / root}: {what}"), result.stderr
    assert not (tmp_path / "nowhere").exists()


def _index_past_frames(entry):
    with np.load(entry / cache.ARRAYS) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["episode_frames"][-1, 1] += 100
    arrays["frame_index"][-5:] += 100
    (entry / cache.ARRAYS).unlink()
    np.savez(entry / cache.ARRAYS, **arrays)


def _compressed(entry):
    with np.load(entry / cache.ARRAYS) as data:
        arrays = {k: data[k] for k in data.files}
    (entry / cache.ARRAYS).unlink()
    np.savez_compressed(entry / cache.ARRAYS, **arrays)  # a member could expand to anything


def _not_finite(entry):
    with np.load(entry / cache.ARRAYS) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["fields"][3, 0] = np.nan
    (entry / cache.ARRAYS).unlink()
    np.savez(entry / cache.ARRAYS, **arrays)


def _truncated(entry):
    with open(entry / cache.FRAMES, "r+b") as f:
        f.truncate(os.path.getsize(entry / cache.FRAMES) // 2)


def _frames_linked(entry):
    outside = entry.parent.parent / "outside.u8"
    shutil.move(entry / cache.FRAMES, outside)
    os.symlink(outside, entry / cache.FRAMES)


def _entry_linked(entry):
    outside = entry.parent.parent / "outside"
    shutil.move(entry, outside)
    os.symlink(outside, entry)


DAMAGE = {
    "index past its frames": (_index_past_frames, "are not within the"),
    "frame file cut short": (_truncated, "its metadata declares"),
    "half built (no metadata)": (lambda e: (e / cache.META).unlink(), "meta.json: No such file"),
    "metadata not JSON": (lambda e: (e / cache.META).write_text("{"), "meta.json is not JSON"),
    "steps not an npz": (lambda e: (e / cache.ARRAYS).write_bytes(b"PK\x03\x04junk"), "steps.npz cannot be read"),
    "steps compressed": (_compressed, "compressed members"),
    "a value not finite": (_not_finite, "fields holds values that are not finite"),
    "frame file a link": (_frames_linked, "frames.u8 is a symbolic link"),
    "entry a link": (_entry_linked, "is a symbolic link"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_entry_is_built_again_never_trusted_nor_followed(small_bag, tmp_path, damage):
    root = tmp_path / "cache"
    first = _held(_episodes(small_bag, root))
    entry = _entry(root)
    spoil, why = DAMAGE[damage]
    spoil(entry)
    outside = {
        p: p.read_bytes()
        for p in tmp_path.rglob("*")
        if p.is_file() and not p.is_symlink() and p.relative_to(tmp_path).parts[0] != "cache"
    }
    lines = []
    again = _episodes(small_bag, root, lines.append)
    assert len(lines) == 1 and lines[0].startswith(f"cache: entry {entry} not used (") and why in lines[0], lines
    _same(first, again)
    assert _entry(root) == entry and not entry.is_symlink()
    assert all(p.is_file() and not p.is_symlink() for p in entry.iterdir())
    assert sorted(p.name for p in root.iterdir()) == sorted([entry.name, "small.lock"])  # no .partial left
    assert {p: p.read_bytes() for p in outside} == outside  # what a link pointed at is untouched
    _same(_episodes(small_bag, root, lines.append), first)
    assert len(lines) == 1  # the rebuilt entry is trusted


def test_an_entry_of_another_bag_is_not_this_bags(small_bag, tmp_path):
    root = tmp_path / "cache"
    other = shutil.copytree(small_bag, tmp_path / "other")
    first = _episodes(small_bag, root)
    entry = _entry(root)
    shutil.rmtree(entry)
    _episodes(other, root)
    theirs = _entry(root)
    os.rename(theirs, entry)  # the other bag's entry, under this bag's name
    lines = []
    _same(_episodes(small_bag, root, lines.append), first)
    assert len(lines) == 1 and "it is another bag's or other inputs' (bag differs)" in lines[0], lines


def test_planted_partials_and_lock_links_are_replaced_not_followed(small_bag, tmp_path):
    root = tmp_path / "cache"
    first = _episodes(small_bag, root)
    entry = _entry(root)
    shutil.rmtree(entry)
    (root / "small.lock").unlink()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("keep")
    os.symlink(victim, root / f"{entry.name}.partial")  # where the build used to happen
    (root / f"{entry.name}.x1y2.partial").mkdir()  # a build killed half way
    (root / f"{entry.name}.x1y2.partial" / cache.FRAMES).write_bytes(b"half")
    os.symlink(tmp_path / "created-by-lock", root / "small.lock")  # a link to nothing
    _same(_episodes(small_bag, root), first)
    assert sorted(p.name for p in root.iterdir()) == sorted([entry.name, "small.lock"])
    assert not (root / "small.lock").is_symlink() and (root / "small.lock").is_file()
    assert [p.name for p in victim.iterdir()] == ["keep"] and not (tmp_path / "created-by-lock").exists()


def test_a_build_stops_before_the_disk_is_full(small_bag, tmp_path, monkeypatch):
    """The real free space of the test's disk, against a margin larger than the disk."""
    root = tmp_path / "cache"
    monkeypatch.setattr(cache, "MIN_FREE_BYTES", shutil.disk_usage(tmp_path).total + 1)
    with pytest.raises(cache.CacheError, match=r"MiB left on its disk after 0 frames, less than the"):
        _episodes(small_bag, root)
    assert sorted(p.name for p in root.iterdir()) == ["small.lock"]  # nothing half-built left


def test_concurrent_builds_of_a_bag_build_it_once(small_bag, tmp_path):
    """Two processes wait on the lock the test holds (as torchrun ranks start together), over a
    damaged entry and a stale .partial; once it is released one builds, the other reuses."""
    import fcntl

    root = tmp_path / "cache"
    first = _episodes(small_bag, root)
    entry = _entry(root)
    (entry / cache.META).write_text("{")
    (root / f"{entry.name}.partial").mkdir()
    code = textwrap.dedent(f"""
        import json, os, sys
        from liquid_control.learning.dataset import episodes_from_bag
        print("ready", flush=True)
        lines = []
        eps = episodes_from_bag({str(small_bag)!r}, 8, 6, {FIELDS!r}, camera={CAMERA!r}, imu={IMU!r},
                                label={TEACHER!r}, cache_dir={str(root)!r}, log=lines.append)
        st = os.stat({str(entry / cache.FRAMES)!r})
        print(json.dumps({{"lines": lines, "inode": st.st_ino, "frames": [e.frames.tolist() for e in eps]}}))
    """)
    with open(root / "small.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        procs = [
            subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.communicate()
        fcntl.flock(lock, fcntl.LOCK_UN)
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(json.loads(out.splitlines()[-1]))
    assert outs[0]["inode"] == outs[1]["inode"]  # one entry, built once
    assert sorted(len(o["lines"]) for o in outs) == [0, 1]  # the builder said why; the other reused it
    assert outs[0]["frames"] == outs[1]["frames"] == [e.frames.tolist() for e in first]
    assert sorted(p.name for p in root.iterdir()) == sorted([entry.name, "small.lock"])
