"""The two runtime backends side by side, the shipped policy on both: torch (the .safetensors file)
and onnx (the same model through `liquid-control export`, run by ONNX Runtime without torch).

For each: start-up (controller_node spawned until its first command on cmd_vel, over real DDS),
resident memory after streaming 200 Hz IMU + 30 Hz camera for a few seconds, and in-process the
controller's time per camera frame (96x64 in: resize, encoder, step) and per IMU step. Optionally
the size of a venv holding each install (`--venv torch=PATH --venv onnx=PATH`).

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


def start_and_rss(backend: str, model: str, seconds: float = 4.0) -> tuple[float, float]:
    """(s from spawn to the first command, RSS MB after `seconds` of sensor data)."""
    import rclpy
    from geometry_msgs.msg import Twist
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, Imu

    ns = f"/bench_{backend}_{os.getpid()}"
    context = rclpy.context.Context()
    rclpy.init(context=context)
    peer = rclpy.create_node("bench_peer", namespace=ns, context=context)
    first: list[float] = []
    peer.create_subscription(Twist, "cmd_vel", lambda m: first.append(time.monotonic()) if not first else None, 10)
    imu = peer.create_publisher(Imu, "imu/data", qos_profile_sensor_data)
    camera = peer.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(peer)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    spawned = time.monotonic()
    proc = subprocess.Popen([str(EXECUTABLE), "--ros-args", "-r", f"__ns:={ns}", "-p", f"backend:={backend}",
                             "-p", f"model_path:={model}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = spawned + 120
        while not first and time.monotonic() < deadline:
            time.sleep(0.01)
        started = first[0] - spawned if first else float("nan")
        frame = Image(height=64, width=96, encoding="rgb8", step=96 * 3,
                      data=np.random.default_rng(0).integers(0, 256, 96 * 64 * 3, dtype=np.uint8).tobytes())
        msg = Imu()
        msg.linear_acceleration.z = 9.8
        for k in range(int(seconds * 200)):
            t = 100.0 + k * 0.005
            msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int(round((t % 1) * 1e9))
            imu.publish(msg)
            if k % 7 == 0:
                frame.header = msg.header
                camera.publish(frame)
            time.sleep(0.005)
        rss = rss_mb(proc.pid)
    finally:
        stop(proc)
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=5.0)
        peer.destroy_node()
        rclpy.shutdown(context=context)
    return started, rss


def in_process(policy, config, repeats: int) -> tuple[dict, dict]:
    from liquid_control.runtime.controller import LiquidController

    c = LiquidController(policy, config)
    rgb = np.random.default_rng(1).random((64, 96, 3)).astype(np.float32)
    imu = np.zeros(9)
    imu[5] = 9.8
    clock = [100.0]

    def frame():
        clock[0] += 0.005
        c.on_image(clock[0], rgb)

    def step():
        clock[0] += 0.005
        c.on_imu(clock[0], imu)

    frame()
    step()
    return measure(frame, repeats // 4), measure(step, repeats)


def _du_mb(path: str) -> float:
    out = subprocess.run(["du", "-sm", path], capture_output=True, text=True, check=True).stdout
    return float(out.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="node starts per backend (median reported)")
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--venv", action="append", default=[], metavar="NAME=PATH",
                        help="report the size of this venv under NAME (torch or onnx)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ["ROS_DOMAIN_ID"] = os.environ.get("LIQUID_CONTROL_BENCH_DOMAIN_ID", str(120 + os.getpid() % 50))
    import torch

    from liquid_control.runtime.export import export_onnx
    from liquid_control.runtime.modelfile import load_policy
    from liquid_control.runtime.onnx_policy import load_onnx_policy

    torch.set_num_threads(1)
    sizes = dict(item.split("=", 1) for item in args.venv)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = str(Path(tmp) / "shipped.onnx")
        export_onnx(DEFAULT_MODEL, onnx_path)
        models = {"torch": DEFAULT_MODEL, "onnx": onnx_path}
        loaders = {"torch": load_policy, "onnx": load_onnx_policy}
        rows = {}
        for backend, model in models.items():
            starts, rss = zip(*(start_and_rss(backend, model) for _ in range(args.rounds)), strict=True)
            cam, imu = in_process(*loaders[backend](model), args.repeats)
            rows[backend] = {"start_s": float(np.median(starts)), "rss_mb": float(np.median(rss)),
                             "frame_p50_us": cam["p50_us"], "imu_p50_us": imu["p50_us"],
                             "venv_mb": _du_mb(sizes[backend]) if backend in sizes else None}
    load = os.getloadavg()[0]
    print(f"Runtime backends, shipped policy, node over DDS and in-process, 1 thread, load average {load:.1f}")
    print(f"{'backend':<9}{'start s':>9}{'RSS MB':>9}{'frame us':>10}{'IMU us':>9}{'venv MB':>9}")
    for backend, r in rows.items():
        venv = f"{r['venv_mb']:.0f}" if r["venv_mb"] is not None else "-"
        print(f"{backend:<9}{r['start_s']:>9.2f}{r['rss_mb']:>9.0f}{r['frame_p50_us']:>10.1f}{r['imu_p50_us']:>9.1f}"
              f"{venv:>9}")
    t, o = rows["torch"], rows["onnx"]
    print(f"onnx vs torch: start {t['start_s'] / o['start_s']:.1f}x faster, RSS {t['rss_mb'] / o['rss_mb']:.1f}x "
          f"smaller, frame {t['frame_p50_us'] / o['frame_p50_us']:.1f}x, IMU step {t['imu_p50_us'] / o['imu_p50_us']:.1f}x "
          "(>1: onnx better)")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
