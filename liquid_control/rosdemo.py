"""`liquid-control drive`: the real thing, end to end over ROS 2. sim_node and controller_node run
as their own processes (the installed executables, as `ros2 run` starts them) in a DDS domain of
their own; this process watches odometry and commands and prints how the robot drives."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import topics
from .learning.plot import xy_plot_png
from .paths import DEFAULT_MODEL
from .processes import stop
from .sim.track import Track, track_path


def drive(model: str | None = None, track: str = "oval", seconds: float = 30.0, steering_bias: float = 0.0,
          adaptation: bool = False, plot: str | Path | None = None, bag: str | Path | None = None,
          out=print) -> dict:
    import rclpy
    from geometry_msgs.msg import Twist
    from nav_msgs.msg import Odometry
    from rclpy.executors import SingleThreadedExecutor

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ["ROS_DOMAIN_ID"] = os.environ.get("LIQUID_CONTROL_DEMO_DOMAIN_ID", str(150 + os.getpid() % 80))
    os.environ.setdefault("MUJOCO_GL", "egl")
    model = str(model or DEFAULT_MODEL)
    lib = Path(sys.prefix) / "lib" / "liquid_control"
    the_track = Track.load(track_path(track))
    if bag is not None and Path(bag).exists():
        raise FileExistsError(f"{bag} exists; a bag is never written over")
    # The recorder first, so that it hears the robot from its first message.
    recorder = (subprocess.Popen([sys.executable, "-m", "liquid_control.cli", "record", "--output", str(bag)])
                if bag is not None else None)
    procs = [
        subprocess.Popen([str(lib / "sim_node"), "--ros-args", "-p", f"track:={track}",
                          "-p", f"steering_bias:={steering_bias}"]),
        subprocess.Popen([str(lib / "controller_node"), "--ros-args", "-p", f"model_path:={model}",
                          "-p", "use_sim_time:=true", "-p", f"adaptation.enabled:={str(adaptation).lower()}"]),
    ]
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("liquid_drive_demo", context=context)
    odom: list = []
    commands = [0]
    node.create_subscription(Odometry, topics.ODOM, odom.append, 100)
    node.create_subscription(Twist, topics.CMD_VEL, lambda m: commands.__setitem__(0, commands[0] + 1), 100)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()

    def sim_time(m) -> float:
        return m.header.stamp.sec + m.header.stamp.nanosec * 1e-9

    out(f"sim_node + controller_node on track {the_track.name}, model {model}")
    out(f"{'sim s':>6}{'|xte| m':>9}{'max m':>8}{'speed':>7}{'cmd/s':>7}")
    xte_all: list[float] = []
    path: list[tuple[float, float]] = []
    progress, last_s = 0.0, None
    off = False
    try:
        deadline = time.monotonic() + 90
        while not odom:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("the simulator or the controller did not come up")
            time.sleep(0.1)
        t0 = sim_time(odom[0])
        seen, last_cmds, last_wall = 0, commands[0], time.monotonic()
        while sim_time(odom[-1]) - t0 < seconds:
            time.sleep(5.0 if seconds >= 10 else 1.0)
            window = odom[seen:]
            seen = len(odom)
            where = [the_track.project(m.pose.pose.position.x, m.pose.pose.position.y) for m in window]
            xte = [abs(w["xte"]) for w in where]
            xte_all += xte
            path += [(m.pose.pose.position.x, m.pose.pose.position.y) for m in window]
            for w in where:  # progress along the track, unwrapped across the start line
                if last_s is not None:
                    progress += (w["s"] - last_s + the_track.length / 2) % the_track.length - the_track.length / 2
                last_s = w["s"]
            off = off or any(e > the_track.road_width / 2 - 0.12 for e in xte)
            rate = (commands[0] - last_cmds) / (time.monotonic() - last_wall)
            last_cmds, last_wall = commands[0], time.monotonic()
            speed = np.mean([m.twist.twist.linear.x for m in window]) if window else 0.0
            out(f"{sim_time(odom[-1]) - t0:>6.1f}{np.mean(xte) if xte else 0:>9.3f}{max(xte, default=0):>8.3f}"
                f"{speed:>7.2f}{rate:>7.0f}")
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a node stopped")
    finally:
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.shutdown(context=context)
        stop(*procs, *([recorder] if recorder is not None else []), timeout=30.0)
    result = {"track": the_track.name, "sim_seconds": seconds, "laps": progress / the_track.length,
              "distance_m": progress, "mean_abs_xte_m": float(np.mean(xte_all)),
              "max_abs_xte_m": float(np.max(xte_all)), "stayed_on_road": not off, "ok": not off}
    if plot is not None:
        centre = np.vstack([the_track.samples, the_track.samples[:1]])
        xy = np.array(path)
        Path(plot).write_bytes(xy_plot_png({"centreline": (centre[:, 0], centre[:, 1]), "robot": (xy[:, 0], xy[:, 1])}))
        result["plot"] = str(plot)
    if recorder is not None:
        result["bag"] = str(bag)
        result["ok"] = result["ok"] and recorder.returncode == 0
    out(f"{'success, stayed in the lane' if not off else 'FAILED, LEFT THE LANE'}: {result['laps']:.2f} laps "
        f"({progress:.1f} m), mean |xte| {result['mean_abs_xte_m']:.3f} m, max {result['max_abs_xte_m']:.3f} m "
        f"over {seconds:.0f} s of sim time" + (f"; trajectory {plot}" if plot else "") + (f"; bag {bag}" if bag else ""))
    return result
