"""The robot in simulation over real DDS: sim_node and controller_node as their own processes (the
installed executables), the controller on use_sim_time with the shipped model, driving the oval."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

pytestmark = [pytest.mark.ros, pytest.mark.sim]
pytest.importorskip("mujoco")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402

from liquid_control.paths import share_path  # noqa: E402
from liquid_control.processes import stop  # noqa: E402
from liquid_control.runtime.parameters import read_params  # noqa: E402
from liquid_control.sim.track import Track, track_path  # noqa: E402

LIB = Path(sys.prefix) / "lib" / "liquid_control"


def _start(name, *args):
    exe = LIB / name
    if not exe.exists():
        pytest.skip(f"{exe} not installed")
    return subprocess.Popen(
        [str(exe), "--ros-args", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _stop(proc):
    stop(proc, timeout=15.0)
    return proc.stdout.read()


def test_sim_and_controller_processes_drive_the_oval_on_sim_time():
    """The launch tests' scenarios, as plain processes (what sim.launch.py starts): commands at sensor
    rate, a parameter change through the parameter service takes effect, 30 s of sim time on the road
    with the shipped model, and a clean shutdown."""
    ns = f"/lc_sim_{os.getpid()}"

    def sim_time(m):
        return m.header.stamp.sec + m.header.stamp.nanosec * 1e-9

    params = share_path("config", "controller.yaml")
    sim = _start("sim_node", "-r", f"__ns:={ns}", "-p", "track:=oval", "-p", "seed:=2")
    ctl = _start("controller_node", "-r", f"__ns:={ns}", "--params-file", str(params), "-p", "use_sim_time:=true")
    context = rclpy.context.Context()
    rclpy.init(context=context)
    peer = rclpy.create_node("sim_peer", namespace=ns, context=context)
    odom, commands, diag_stamps = [], [], []
    peer.create_subscription(Odometry, "odom", lambda m: odom.append(m), 100)
    # Each command with the sim time of the odometry the peer had last seen (its callbacks run in
    # arrival order): what sim time it belongs to, however slowly the simulation runs here.
    peer.create_subscription(
        Twist, "cmd_vel", lambda m: commands.append((time.monotonic(), sim_time(odom[-1]) if odom else 0.0, m)), 100
    )
    peer.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda m: (
            diag_stamps.append(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)
            if any(s.hardware_id.startswith(ns) for s in m.status)
            else None
        ),
        10,
    )
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(peer)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    client = AsyncParameterClient(peer, f"{ns}/liquid_controller")

    try:
        deadline = time.monotonic() + 60
        while not any(m.twist.twist.linear.x > 0.3 for m in odom[-50:]):
            assert time.monotonic() < deadline, "the robot never started driving"
            assert sim.poll() is None and ctl.poll() is None, "a node died"
            time.sleep(0.1)
        start, n_cmd = len(odom), len(commands)
        time.sleep(10.0)
        # Commands per odometry message (the simulator publishes one per IMU sample, 200 Hz of sim
        # time): the controller answers each of the 230 sensor messages per sim second, however
        # fast the simulation runs on this machine.
        per_odom = (len(commands) - n_cmd) / max(len(odom) - start, 1)
        assert client.wait_for_services(timeout_sec=10.0)
        result = client.set_parameters([Parameter("max_linear_speed", value=0.3)])
        deadline = time.monotonic() + 10
        while not result.done():
            assert time.monotonic() < deadline, "no answer from the parameter service"
            time.sleep(0.05)
        assert result.result().results[0].successful
        changed, changed_sim = time.monotonic(), sim_time(odom[-1])
        while sim_time(odom[-1]) - sim_time(odom[start]) < 30.0:
            assert time.monotonic() - changed < 90, "the simulation stalled"
            assert sim.poll() is None and ctl.poll() is None, "a node died"
            time.sleep(0.2)
        driven = odom[start:]
    finally:
        executor.shutdown(timeout_sec=2.0)
        thread.join(timeout=5.0)
        peer.destroy_node()
        rclpy.shutdown(context=context)
        ctl_out, sim_out = _stop(ctl), _stop(sim)
    track = Track.load(track_path("oval"))
    xte = np.array([abs(track.project(m.pose.pose.position.x, m.pose.pose.position.y)["xte"]) for m in driven])
    assert sim_time(driven[-1]) - sim_time(driven[0]) >= 30.0
    assert per_odom > 0.8 * 230 / 200, f"{per_odom:.2f} commands per odometry message; expected ~1.15"
    # The new limit holds once the acceleration limit has let the robot slow down to it (the
    # controller brakes at max_linear_accel, from at most the old limit), in sim time.
    shipped = read_params(params)
    braking = (shipped["max_linear_speed"] - 0.3) / shipped["max_linear_accel"]
    after = [m.linear.x for _, s, m in commands if s > changed_sim + braking + 0.05]
    assert after and max(after) <= 0.3 + 1e-9
    assert max(m.linear.x for t, _, m in commands if t < changed) > 0.45  # and it was not so before
    assert xte.max() < track.road_width / 2 - 0.12, f"left the lane: max |xte| {xte.max():.3f} m"
    assert xte.mean() < 0.08
    # The controller's clock is the simulator's: diagnostics carry sim time, not wall time.
    assert diag_stamps and max(diag_stamps) < 1000.0
    # A clean shutdown: both exit 0 on SIGINT, without a traceback.
    assert ctl.returncode == 0 and sim.returncode == 0, (ctl.returncode, sim.returncode)
    assert "Traceback" not in ctl_out and "Traceback" not in sim_out, ctl_out + sim_out


def test_drive_command_runs_both_nodes_and_reports():
    result = subprocess.run(
        [sys.executable, "-m", "liquid_control.cli", "drive", "--seconds", "6", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    assert summary["stayed_on_road"] and summary["mean_abs_xte_m"] < 0.08 and summary["track"] == "oval"
    # About 6 s of sim time at 0.5 m/s, forward along the loop; laps count that distance.
    assert 1.5 < summary["distance_m"] < 4.0
    length = Track.load(track_path("oval")).length
    assert abs(summary["laps"] - summary["distance_m"] / length) < 1e-9


def _mean_frame_brightness(*params, frames=5):
    from sensor_msgs.msg import Image

    sim = _start("sim_node", *params)
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("brightness_probe", context=context)
    seen = []
    node.create_subscription(
        Image,
        "camera/image_raw",
        lambda m: seen.append(np.frombuffer(bytes(m.data), np.uint8).mean()),
        rclpy.qos.qos_profile_sensor_data,
    )
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 60
        while len(seen) < frames and time.monotonic() < deadline and sim.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        return float(np.mean(seen)) if len(seen) >= frames else None
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        _stop(sim)


def test_sim_node_applies_an_evaluation_condition_and_refuses_an_unknown_one():
    nominal = _mean_frame_brightness("-p", "seed:=1")
    dark = _mean_frame_brightness("-p", "seed:=1", "-p", "condition:=dark")
    assert nominal is not None and dark is not None and dark < 0.6 * nominal
    # A condition that changes the robot (the camera pitched 5 degrees up) reaches sim_node too:
    # more of the dark sky above the horizon in the frame.
    tilted = _mean_frame_brightness("-p", "seed:=1", "-p", "condition:=camera_tilt")
    assert tilted is not None and tilted < 0.97 * nominal, (tilted, nominal)
    bad = _start("sim_node", "-p", "condition:=fog")
    assert bad.wait(timeout=60) == 2
    assert "unknown condition 'fog'" in _stop(bad)


def _steady_yaw_rate(robot: str, linear: float, angular: float) -> float | None:
    """sim_node with `robot`, commanded (linear, angular) over DDS: the yaw rate its odometry reports
    (the gyro) over the second second of sim time after the command first arrived."""
    sim = _start("sim_node", "-p", f"robot:={robot}", "-p", "gyro_noise:=0.0")
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("car_probe", context=context)
    pub = node.create_publisher(Twist, "cmd_vel", 10)
    rates: list[tuple[float, float]] = []
    node.create_subscription(
        Odometry,
        "odom",
        lambda m: rates.append((m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, m.twist.twist.angular.z)),
        10,
    )
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    command = Twist()
    command.linear.x, command.angular.z = linear, angular
    try:
        deadline, started = time.monotonic() + 90, None
        while time.monotonic() < deadline and sim.poll() is None:
            pub.publish(command)
            executor.spin_once(timeout_sec=0.05)
            moving = [t for t, w in rates if abs(w) > 0.05]
            started = started if started is not None else (moving[0] if moving else None)
            if started is not None and rates[-1][0] > started + 2.0:
                return float(np.mean([w for t, w in rates if started + 1.0 < t <= started + 2.0]))
        return None
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        _stop(sim)


def test_sim_node_drives_the_car_which_turns_no_tighter_than_its_steering_lock():
    from liquid_control.sim.world import ROBOTS

    car = ROBOTS["car"]
    # 3 rad/s at 0.5 m/s: a 0.17 m circle, which the differential drive turns and the car cannot.
    diff, limited = _steady_yaw_rate("diff_drive", 0.5, 3.0), _steady_yaw_rate("car", 0.5, 3.0)
    assert diff is not None and limited is not None
    assert diff == pytest.approx(3.0, rel=0.1)
    assert limited == pytest.approx(0.5 * car.max_curvature, rel=0.1)
    bad = _start("sim_node", "-p", "robot:=tank")
    assert bad.wait(timeout=60) == 2
    assert "unknown robot 'tank'" in _stop(bad)
