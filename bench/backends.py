"""The two runtime backends side by side, the shipped policy on both: torch (the .safetensors file)
and onnx (the same model through `liquid-control export`, run by ONNX Runtime without torch).

For each: start-up (controller_node spawned until its first command on cmd_vel, over real DDS),
against the bare rclpy relay (bench/relay_node.py) started the same way in the same run, as the
baseline for what any rclpy node takes (Python, rclpy, DDS discovery); resident memory after
streaming 200 Hz IMU + 30 Hz camera for a few seconds; and in-process the controller's time per
camera frame (a 96x64 rgb8 message in, as the node takes it: convert, resize, encoder, step) and per
IMU step. Optionally the size of a venv holding each install (`--venv torch=PATH --venv onnx=PATH`).
The torch backend runs its camera encoder in ONNX Runtime when onnxruntime is installed (the table
says which).

Fast DDS announces a participant a few times at its start, then every 3 s: a node whose participant
comes up after the bench's peer has stopped its first announcements waits for the next one, so with
the defaults a start is rounded up to ~3.7 s whenever it takes more than ~0.5 s (seen: 3.70 s in
five of five onnx starts, 1.0-1.5 s with the profile below). The bench therefore runs every process
with a Fast DDS profile announcing every 0.1 s (unless FASTRTPS_DEFAULT_PROFILES_FILE is already
set, or with --dds-defaults), so that the start measures the process, not the announcement period.

    .venv/bin/python bench/backends.py [--rounds 3] [--venv NAME=PATH ...] [--json]
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
from step_latency import measure

from liquid_control.paths import DEFAULT_MODEL
from liquid_control.processes import rss_mb, stop

EXECUTABLE = Path(sys.prefix) / "lib" / "liquid_control" / "controller_node"
RELAY = [sys.executable, str(Path(__file__).resolve().parent / "relay_node.py")]
FAST_DISCOVERY = """<?xml version="1.0" encoding="UTF-8" ?>
<profiles xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles">
  <participant profile_name="bench_fast_discovery" is_default_profile="true">
    <rtps><builtin><discovery_config>
      <leaseAnnouncement><sec>0</sec><nanosec>100000000</nanosec></leaseAnnouncement>
    </discovery_config></builtin></rtps>
  </participant>
</profiles>
"""


def node_command(backend: str, model: str) -> list[str]:
    return [
        str(EXECUTABLE),
        "--ros-args",
        "-p",
        f"backend:={backend}",
        "-p",
        f"model_path:={model}",
        "-p",
        "cmd_vel_stamped:=true",
    ]


def start_and_rss(name: str, command: list[str], seconds: float = 4.0) -> tuple[float, float]:
    """(s from spawn to the first command, RSS MB after `seconds` of sensor data) of the node that
    `command` starts (it answers on cmd_vel with TwistStamped, as the relay does)."""
    import rclpy
    from geometry_msgs.msg import TwistStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, Imu

    ns = f"/bench_{name}_{os.getpid()}"
    context = rclpy.context.Context()
    rclpy.init(context=context)
    peer = rclpy.create_node("bench_peer", namespace=ns, context=context)
    first: list[float] = []
    sent: set[tuple[int, int]] = set()

    def on_command(m) -> None:  # the first answer to a message sent here (not, say, a watchdog's zero)
        if not first and (m.header.stamp.sec, m.header.stamp.nanosec) in sent:
            first.append(time.monotonic())

    peer.create_subscription(TwistStamped, "cmd_vel", on_command, 10)
    imu = peer.create_publisher(Imu, "imu/data", qos_profile_sensor_data)
    camera = peer.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(peer)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    frame = Image(
        height=64,
        width=96,
        encoding="rgb8",
        step=96 * 3,
        data=np.random.default_rng(0).integers(0, 256, 96 * 64 * 3, dtype=np.uint8).tobytes(),
    )
    msg = Imu()
    msg.linear_acceleration.z = 9.8
    k = 0

    def publish() -> None:  # 200 Hz IMU and ~30 Hz camera, from the moment the process is spawned
        nonlocal k
        t = 100.0 + k * 0.005
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int(round((t % 1) * 1e9))
        sent.add((msg.header.stamp.sec, msg.header.stamp.nanosec))
        imu.publish(msg)
        if k % 7 == 0:
            frame.header = msg.header
            camera.publish(frame)
        k += 1
        time.sleep(0.005)

    spawned = time.monotonic()
    proc = subprocess.Popen(
        [*command, "--ros-args", "-r", f"__ns:={ns}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = spawned + 120
        while not first and time.monotonic() < deadline:
            publish()
        started = first[0] - spawned if first else float("nan")
        for _ in range(int(seconds * 200)):
            publish()
        rss = rss_mb(proc.pid)
    finally:
        stop(proc)
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=5.0)
        peer.destroy_node()
        rclpy.shutdown(context=context)
    return started, rss


def in_process(policy, config):
    """(camera frame, IMU step, encoder name) of a controller on this policy: the frame a 96x64
    rgb8 message as the node takes it (image_to_array uint8, then on_image)."""
    import types

    from liquid_control.runtime.controller import LiquidController
    from liquid_control.runtime.sensing import image_to_array

    c = LiquidController(policy, config)
    msg = types.SimpleNamespace(
        encoding="rgb8",
        height=64,
        width=96,
        step=96 * 3,
        is_bigendian=0,
        data=np.random.default_rng(1).integers(0, 256, 64 * 96 * 3, dtype=np.uint8).tobytes(),
    )
    imu = np.zeros(9)
    imu[5] = 9.8
    clock = [100.0]

    def frame():
        clock[0] += 0.005
        c.on_image(clock[0], image_to_array(msg, dtype=np.uint8))

    def step():
        clock[0] += 0.005
        c.on_imu(clock[0], imu)

    frame()
    step()
    return frame, step, getattr(c.run, "encoder", "onnxruntime")


def _du_mb(path: str) -> float:
    out = subprocess.run(["du", "-sm", path], capture_output=True, text=True, check=True).stdout
    return float(out.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=5, help="starts per target, alternating (median and fastest reported)"
    )
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument(
        "--venv",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="report the size of this venv under NAME (torch or onnx)",
    )
    parser.add_argument(
        "--dds-defaults",
        action="store_true",
        help="keep Fast DDS's 3 s participant announcements (starts then round up to them)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ["ROS_DOMAIN_ID"] = os.environ.get("LIQUID_CONTROL_BENCH_DOMAIN_ID", str(120 + os.getpid() % 50))
    import torch

    from liquid_control.model.export import export_onnx
    from liquid_control.model.modelfile import load_policy
    from liquid_control.runtime.onnx_policy import load_onnx_policy

    torch.set_num_threads(1)
    sizes = dict(item.split("=", 1) for item in args.venv)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.dds_defaults and "FASTRTPS_DEFAULT_PROFILES_FILE" not in os.environ:
            profile = Path(tmp) / "fast_discovery.xml"
            profile.write_text(FAST_DISCOVERY)
            os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(profile)  # this process's peer and every spawned one
        dds = os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE", "Fast DDS defaults")
        onnx_path = str(Path(tmp) / "shipped.onnx")
        export_onnx(DEFAULT_MODEL, onnx_path)
        models = {"torch": DEFAULT_MODEL, "onnx": onnx_path}
        loaders = {"torch": load_policy, "onnx": load_onnx_policy}
        commands = {"relay": RELAY, **{backend: node_command(backend, model) for backend, model in models.items()}}
        # Alternating rounds: this machine's speed drifts from minute to minute.
        measured = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                measured[name].append(start_and_rss(name, command))
        rows = {}
        for name in commands:
            starts, rss = zip(*measured[name], strict=True)
            rows[name] = {
                "start_s": float(np.median(starts)),
                "fastest_start_s": float(np.min(starts)),
                "starts_s": list(starts),
                "rss_mb": float(np.median(rss)),
            }
        loops = {backend: in_process(*loaders[backend](model)) for backend, model in models.items()}
        times = {backend: ([], []) for backend in models}
        for _ in range(args.rounds):  # alternating, as the starts: the median of the rounds' p50s
            for backend, (frame, step, _) in loops.items():
                times[backend][0].append(measure(frame, args.repeats // 4)["p50_us"])
                times[backend][1].append(measure(step, args.repeats)["p50_us"])
        for backend, (frames, steps) in times.items():
            rows[backend].update(
                {
                    "encoder": loops[backend][2],
                    "frame_p50_us": float(np.median(frames)),
                    "imu_p50_us": float(np.median(steps)),
                    "venv_mb": _du_mb(sizes[backend]) if backend in sizes else None,
                }
            )
    load = os.getloadavg()[0]
    relay, relay_fastest = rows["relay"]["start_s"], rows["relay"]["fastest_start_s"]
    print(f"Runtime backends, shipped policy, node over DDS and in-process, 1 thread, load average {load:.1f}")
    print(
        "start: spawn to the first answer to sensor data sent from the spawn on, median (fastest) of "
        f"{args.rounds}; DDS profile: {'0.1 s announcements' if dds.endswith('fast_discovery.xml') else dds}"
    )
    print(
        f"{'backend':<9}{'start s':>14}{'- relay s':>14}{'RSS MB':>8}{'frame us':>10}{'IMU us':>8}{'venv MB':>9}"
        "   encoder; starts"
    )
    for name, r in rows.items():
        start = f"{r['start_s']:.2f} ({r['fastest_start_s']:.2f})"
        beyond = f"{r['start_s'] - relay:.2f} ({r['fastest_start_s'] - relay_fastest:.2f})"
        starts = ", ".join(f"{x:.2f}" for x in r["starts_s"])
        if name == "relay":
            print(f"{'relay':<9}{start:>14}{'-':>14}{r['rss_mb']:>8.0f}{'-':>10}{'-':>8}{'-':>9}   -; {starts}")
            continue
        venv = f"{r['venv_mb']:.0f}" if r["venv_mb"] is not None else "-"
        print(
            f"{name:<9}{start:>14}{beyond:>14}{r['rss_mb']:>8.0f}{r['frame_p50_us']:>10.1f}{r['imu_p50_us']:>8.1f}"
            f"{venv:>9}   {r['encoder']}; {starts}"
        )
    t, o = rows["torch"], rows["onnx"]
    print(
        f"onnx vs torch: start {t['start_s'] / o['start_s']:.1f}x faster, RSS {t['rss_mb'] / o['rss_mb']:.1f}x "
        f"smaller, frame {t['frame_p50_us'] / o['frame_p50_us']:.1f}x, IMU step {t['imu_p50_us'] / o['imu_p50_us']:.1f}x "
        f"(>1: onnx better); start beyond the bare relay's (fastest): onnx {o['fastest_start_s'] - relay_fastest:.2f} s, "
        f"torch {t['fastest_start_s'] - relay_fastest:.2f} s"
    )
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
