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
from transforms3d.euler import quat2euler

from .. import topics
from ..draw.plot import write_trajectory_png
from ..paths import DEFAULT_MODEL
from ..processes import stop
from ..sim.track import Track, track_path
from ..sim.world import RobotSpec


def _yaw(q) -> float:
    return quat2euler([q.w, q.x, q.y, q.z], axes="sxyz")[2]


def _start(track: str, model: str, steering_bias: float, adaptation: bool, bag: str | Path | None):
    """The recorder (first, so that it hears the robot from its first message), sim_node and
    controller_node, as processes of their own."""
    lib = Path(sys.prefix) / "lib" / "liquid_control"
    recorder = (
        subprocess.Popen([sys.executable, "-m", "liquid_control.cli", "record", "--output", str(bag)])
        if bag is not None
        else None
    )
    nodes = [
        subprocess.Popen(
            [str(lib / "sim_node"), "--ros-args", "-p", f"track:={track}", "-p", f"steering_bias:={steering_bias}"]
        ),
        subprocess.Popen(
            [
                str(lib / "controller_node"),
                "--ros-args",
                "-p",
                f"model_path:={model}",
                "-p",
                "use_sim_time:=true",
                "-p",
                f"adaptation.enabled:={str(adaptation).lower()}",
            ]
        ),
    ]
    return recorder, nodes


class _Progress:
    """What the robot's odometry says about the drive so far, against the track."""

    def __init__(self, track: Track) -> None:
        self.track = track
        self.xte: list[float] = []
        self.path: list[tuple[float, float]] = []
        self.distance = 0.0
        self.off = False
        self._last_s: float | None = None
        self._wheels = RobotSpec().wheel_contacts

    def add(self, window: list) -> list[float]:
        """Take these odometry messages; their |xte|."""
        xte = []
        for m in window:
            x, y = m.pose.pose.position.x, m.pose.pose.position.y
            where = self.track.project(x, y)
            xte.append(abs(where["xte"]))
            self.path.append((x, y))
            if self._last_s is not None:  # progress along the track, unwrapped across the start line
                half = self.track.length / 2
                self.distance += (where["s"] - self._last_s + half) % self.track.length - half
            self._last_s = where["s"]
            self.off = self.off or self.track.off_road(x, y, _yaw(m.pose.pose.orientation), self._wheels)
        self.xte += xte
        return xte


def drive(
    model: str | None = None,
    track: str = "oval",
    seconds: float = 30.0,
    steering_bias: float = 0.0,
    adaptation: bool = False,
    plot: str | Path | None = None,
    bag: str | Path | None = None,
    out=print,
) -> dict:
    import rclpy
    from geometry_msgs.msg import Twist
    from nav_msgs.msg import Odometry
    from rclpy.executors import SingleThreadedExecutor

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ["ROS_DOMAIN_ID"] = os.environ.get("LIQUID_CONTROL_DEMO_DOMAIN_ID", str(150 + os.getpid() % 80))
    model = str(model or DEFAULT_MODEL)
    the_track = Track.load(track_path(track))
    if bag is not None and Path(bag).exists():
        raise FileExistsError(f"{bag} exists; a bag is never written over")
    recorder, procs = _start(track, model, steering_bias, adaptation, bag)
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
    progress = _Progress(the_track)
    try:
        # The drive's seconds count from the controller's first command: the simulator's clock runs
        # while the controller still loads its model (seconds here, longer on a busy machine).
        deadline = time.monotonic() + 90
        while not (odom and commands[0]):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("the simulator or the controller did not come up")
            time.sleep(0.1)
        seen = len(odom) - 1
        t0 = sim_time(odom[seen])
        last_cmds, last_wall = commands[0], time.monotonic()
        while sim_time(odom[-1]) - t0 < seconds:
            time.sleep(5.0 if seconds >= 10 else 1.0)
            window = odom[seen:]
            seen = len(odom)
            xte = progress.add(window)
            rate = (commands[0] - last_cmds) / (time.monotonic() - last_wall)
            last_cmds, last_wall = commands[0], time.monotonic()
            speed = np.mean([m.twist.twist.linear.x for m in window]) if window else 0.0
            out(
                f"{sim_time(odom[-1]) - t0:>6.1f}{np.mean(xte) if xte else 0:>9.3f}{max(xte, default=0):>8.3f}"
                f"{speed:>7.2f}{rate:>7.0f}"
            )
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a node stopped")
    finally:
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.shutdown(context=context)
        stop(*procs, *([recorder] if recorder is not None else []), timeout=30.0)
    return _report(progress, seconds, plot, bag, recorder, out)


def _report(progress: _Progress, seconds: float, plot, bag, recorder, out) -> dict:
    track, off = progress.track, progress.off
    result = {
        "track": track.name,
        "sim_seconds": seconds,
        "laps": progress.distance / track.length,
        "distance_m": progress.distance,
        "mean_abs_xte_m": float(np.mean(progress.xte)),
        "max_abs_xte_m": float(np.max(progress.xte)),
        "stayed_on_road": not off,
        "ok": not off,
    }
    if plot is not None:
        label = (
            f"robot: {'stayed on the road' if not off else 'LEFT THE ROAD'}, {result['laps']:.2f} laps, "
            f"mean |xte| {result['mean_abs_xte_m']:.3f} m"
        )
        write_trajectory_png(
            plot,
            track.samples,
            track.road_width,
            {label: np.array(progress.path)},
            title=f"liquid-control drive over ROS 2 on {track.name}, {seconds:g} s of sim time",
        )
        result["plot"] = str(plot)
    if recorder is not None:
        result["bag"] = str(bag)
        result["ok"] = result["ok"] and recorder.returncode == 0
    out(
        f"{'success, stayed in the lane' if not off else 'FAILED, LEFT THE LANE'}: {result['laps']:.2f} laps "
        f"({progress.distance:.1f} m), mean |xte| {result['mean_abs_xte_m']:.3f} m, max "
        f"{result['max_abs_xte_m']:.3f} m over {seconds:.0f} s of sim time"
        + (f"; trajectory {plot}" if plot else "")
        + (f"; bag {bag}" if bag else "")
    )
    return result
