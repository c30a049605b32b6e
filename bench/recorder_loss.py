"""Messages lost by `liquid-control record` under load: a publisher process sends N IMU samples at
200 Hz and camera frames at 30 Hz (reliable, so that DDS itself loses none: a loss is the
recorder's), each with its sequence number in the header stamp (sec 0, nanosec = sequence
number), while sim_node and controller_node run beside it (the simulator's robot driving, its
topics recorded too). Recorded = distinct sequence numbers in the bag, counted per topic; for
96x64 and 640x480 frames, one run each.

    .venv/bin/python bench/recorder_loss.py [--imu 2000] [--sizes 96x64 640x480] [--json]

`publish` is the publisher process (tests use it too): it waits until every topic has a matched
subscriber, publishes, waits until everything is acknowledged and prints what it sent as JSON.

    .venv/bin/python bench/recorder_loss.py publish --imu N [--size WxH] [--prefix /bench]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

IMU_HZ, CAMERA_HZ = 200.0, 30.0
LIB = Path(sys.prefix) / "lib" / "liquid_control"


def topics(prefix: str = "/bench") -> tuple[str, str]:
    return f"{prefix}/imu", f"{prefix}/camera"


def imu_bytes(seq: int) -> bytes:
    """The CDR bytes of IMU sample `seq` (rosbags serializes deterministically: padding is zero)."""
    from liquid_control.bags.io import TYPESTORE, imu_msg

    values = np.array([0.001 * seq, 0.0, -0.001 * seq, 0.0, 0.1, 9.8, 0.0, 0.0, 0.0])
    return bytes(TYPESTORE.serialize_cdr(imu_msg((0, seq), values), "sensor_msgs/msg/Imu"))


_BASE: dict[tuple[int, int], np.ndarray] = {}


def image_bytes(seq: int, width: int, height: int) -> bytes:
    """The CDR bytes of camera frame `seq`, rgb8 width x height, its pixels a function of `seq`."""
    from liquid_control.bags.io import TYPESTORE, image_msg

    base = _BASE.get((width, height))
    if base is None:
        base = _BASE[(width, height)] = (np.arange(height * width * 3) % 251).astype(np.uint8).reshape(height, width, 3)
    rgb = base + np.uint8(seq % 256)
    return bytes(TYPESTORE.serialize_cdr(image_msg((0, seq), rgb), "sensor_msgs/msg/Image"))


def sequence(data: bytes, msgtype: str) -> int:
    """The sequence number a message of this bench carries (header.stamp.nanosec)."""
    from liquid_control.bags.io import TYPESTORE

    return int(TYPESTORE.deserialize_cdr(data, msgtype).header.stamp.nanosec)


def publish(
    imu_count: int, width: int, height: int, prefix: str, best_effort: bool = False, wait_s: float = 60.0
) -> dict:
    """Publish `imu_count` IMU samples at 200 Hz and the camera frames of that time at 30 Hz, until
    done or SIGINT/SIGTERM; reliable (or best effort, as sensor drivers publish). Returns what was
    sent."""
    from rclpy.duration import Duration
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, Imu

    from liquid_control.bags.ros import ros_node, stop_on_signals

    imu_topic, camera_topic = topics(prefix)
    stop = threading.Event()
    sent = {imu_topic: 0, camera_topic: 0}
    with stop_on_signals(stop), ros_node(f"recorder_loss_publisher_{os.getpid()}") as node:

        def qos(depth):
            reliability = ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE
            return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability)

        imu = node.create_publisher(Imu, imu_topic, qos(1000))  # 5 s of IMU
        camera = node.create_publisher(Image, camera_topic, qos(200))  # 6.7 s of frames
        deadline = time.monotonic() + wait_s
        while imu.get_subscription_count() == 0 or camera.get_subscription_count() == 0:
            if stop.is_set() or time.monotonic() > deadline:
                raise SystemExit(f"no subscriber on {imu_topic} and {camera_topic} after {wait_s:.0f} s")
            time.sleep(0.02)
        frames = int(np.ceil(imu_count / IMU_HZ * CAMERA_HZ))
        events = sorted([(k / IMU_HZ, 0, k) for k in range(imu_count)] + [(j / CAMERA_HZ, 1, j) for j in range(frames)])
        next_frame = image_bytes(0, width, height)
        t0 = time.monotonic()
        for due, kind, seq in events:
            if stop.is_set():
                break
            delay = t0 + due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if kind == 0:
                imu.publish(imu_bytes(seq))
                sent[imu_topic] += 1
            else:
                camera.publish(next_frame)
                sent[camera_topic] += 1
                next_frame = image_bytes(seq + 1, width, height)  # made between frames, not on time
        if not best_effort and not stop.is_set():  # stopped: the subscriber may be gone, nothing to wait for
            for pub in (imu, camera):
                pub.wait_for_all_acked(Duration(seconds=10.0))
    return {"sent": sent, "seconds": round(time.monotonic() - t0, 3), "size": f"{width}x{height}"}


def _stop(*procs):
    from liquid_control.processes import stop

    return stop(*procs)


def _wait(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    imu_count: int, width: int, height: int, workdir: Path, robot: bool = True, best_effort: bool = False
) -> list[dict]:
    """One run: controller_node and sim_node (when `robot`), the recorder, the publisher. Rows of
    (topic, sent, recorded, lost, the recorder's CPU use while the publisher ran)."""
    import rclpy

    from liquid_control.bags.io import read_serialized

    imu_topic, camera_topic = topics()
    bag = workdir / f"bag_{width}x{height}"
    logs = []

    def start(name, args):
        out = open(workdir / f"{name}_{width}x{height}.log", "w")
        logs.append(out)
        return subprocess.Popen([str(a) for a in args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    context = rclpy.context.Context()
    rclpy.init(context=context)
    watcher = rclpy.create_node("recorder_loss_watch", context=context)
    procs = []
    try:
        if robot:
            procs.append(start("sim", [LIB / "sim_node"]))
            procs.append(start("controller", [LIB / "controller_node", "--ros-args", "-p", "use_sim_time:=true"]))
            _wait(
                lambda: watcher.count_publishers("/cmd_vel") > 0 and watcher.count_publishers("/imu/data") > 0,
                120,
                "sim_node and controller_node",
            )
        robot_topics = ["/camera/image_raw", "/imu/data", "/cmd_vel", "/odom", "/clock"] if robot else []
        recorder = start(
            "record",
            [
                sys.executable,
                "-m",
                "liquid_control.cli",
                "record",
                "-o",
                bag,
                imu_topic,
                camera_topic,
                *robot_topics,
                "--json",
            ],
        )
        publisher = start(
            "publish",
            [
                sys.executable,
                __file__,
                "publish",
                "--imu",
                imu_count,
                "--size",
                f"{width}x{height}",
                *(["--best-effort"] if best_effort else []),
            ],
        )
        procs += [recorder, publisher]
        _wait(
            lambda: watcher.count_subscribers(imu_topic) > 0 and watcher.count_subscribers(camera_topic) > 0,
            60,
            "the recorder's subscriptions",
        )
        cpu0, wall0 = _cpu_seconds(recorder.pid), time.monotonic()
        if publisher.wait(timeout=imu_count / IMU_HZ + 120) != 0:
            raise RuntimeError(f"publisher failed: {(workdir / f'publish_{width}x{height}.log').read_text()}")
        cpu = (_cpu_seconds(recorder.pid) - cpu0) / (time.monotonic() - wall0)
        if best_effort:
            time.sleep(1.0)  # nothing to wait for: what is still on its way arrives or is lost
        # Reliable: acknowledged, so every message is in the recorder's reader, or lost by the recorder.
        codes = _stop(recorder)
        if codes != [0]:
            raise RuntimeError(f"recorder exited {codes}: {(workdir / f'record_{width}x{height}.log').read_text()}")
    finally:
        _stop(*procs)
        for out in logs:
            out.close()
        watcher.destroy_node()
        rclpy.shutdown(context=context)
    sent = json.loads((workdir / f"publish_{width}x{height}.log").read_text().splitlines()[-1])["sent"]
    seqs: dict[str, set[int]] = {imu_topic: set(), camera_topic: set()}
    for topic, msgtype, _, data in read_serialized(bag, [imu_topic, camera_topic]):
        seqs[topic].add(sequence(data, msgtype))
    return [
        {
            "topic": f"{topic} ({'IMU 200 Hz' if topic == imu_topic else f'camera {width}x{height} 30 Hz'})",
            "sent": sent[topic],
            "recorded": len(seqs[topic]),
            "lost": sent[topic] - len(seqs[topic]),
            "recorder_cpu_pct": round(100 * cpu, 1),
        }
        for topic in (imu_topic, camera_topic)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    pub = sub.add_parser("publish", help="the publisher process")
    pub.add_argument("--imu", type=int, required=True, help="IMU samples to send (200 Hz)")
    pub.add_argument("--size", default="96x64", help="camera frame WIDTHxHEIGHT")
    pub.add_argument("--prefix", default="/bench", help="topics PREFIX/imu and PREFIX/camera")
    pub.add_argument("--best-effort", action="store_true", help="publish best effort (default reliable)")
    parser.add_argument("--imu", type=int, default=2000, help="IMU samples per run (200 Hz; 2000 = 10 s)")
    parser.add_argument("--sizes", nargs="+", default=["96x64", "640x480"], help="camera frame sizes, one run each")
    parser.add_argument("--no-robot", action="store_true", help="without sim_node and controller_node")
    parser.add_argument(
        "--best-effort",
        action="store_true",
        help="publish best effort, as sensor drivers do (losses are then DDS's too)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.command == "publish":
        width, height = map(int, args.size.split("x"))
        print(json.dumps(publish(args.imu, width, height, args.prefix, args.best_effort)), flush=True)
        return
    # A domain of its own (never the user's robots' domain), localhost only.
    os.environ["ROS_DOMAIN_ID"] = os.environ.get("LIQUID_CONTROL_BENCH_DOMAIN_ID", str(102 + os.getpid() % 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            width, height = map(int, size.split("x"))
            rows += run(args.imu, width, height, Path(tmp), robot=not args.no_robot, best_effort=args.best_effort)
    print(
        f"liquid-control record, {'best effort' if args.best_effort else 'reliable'} publisher, {args.imu} IMU "
        "samples at 200 Hz + camera at 30 Hz per run"
        + ("" if args.no_robot else ", sim_node and controller_node running beside")
    )
    print(f"{'topic':<44}{'sent':>7}{'recorded':>10}{'lost':>6}{'recorder CPU %':>16}")
    for r in rows:
        print(f"{r['topic']:<44}{r['sent']:>7}{r['recorded']:>10}{r['lost']:>6}{r['recorder_cpu_pct']:>16.1f}")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
