"""The car (sim.world.CarSpec) on real MuJoCo: it drives the bicycle model's path for a twist (the
curvature angular.z / linear.x, no tighter than its steering lock allows, never turning on the
spot), it leaves the road by any of its four wheels, and pure pursuit on the bicycle model keeps it
on every shipped track."""

import math
from pathlib import Path

import numpy as np
import pytest

from liquid_control.sim.track import Track, track_path
from liquid_control.sim.world import ROBOTS, CarSpec, RobotSpec

mujoco = pytest.importorskip("mujoco")

from liquid_control.sim.env import PurePursuit, TrackEnv  # noqa: E402

pytestmark = pytest.mark.sim

CAR = ROBOTS["car"]


@pytest.fixture(scope="module")
def env():
    env = TrackEnv(Track.load(track_path("oval")), robot=CAR, seed=0)
    yield env
    env.close()


def _steady(env, linear, angular, seconds=4.0):
    """Drive (linear, angular) from rest for `seconds`; the yaw rate and speed over the last second."""
    env.reset(s=0.0)
    yaw_rates, speeds = [], []
    for event in env.events(seconds):
        if event.kind == "imu":
            env.command(linear, angular)
            if event.stamp > seconds - 1.0:
                yaw_rates.append(float(env.data.qvel[5]))
                speeds.append(env.truth()["speed"])
    return float(np.mean(yaw_rates)), float(np.mean(speeds))


def test_the_car_is_a_car():
    assert isinstance(CAR, CarSpec) and CAR.drive == "ackermann" and RobotSpec().drive == "diff"
    assert CAR.max_curvature == pytest.approx(math.tan(CAR.max_steering) / CAR.wheelbase)
    assert RobotSpec().max_curvature == math.inf
    # Ackermann geometry: the inner wheel turns more, and both point at one centre on the rear axle.
    left, right = CAR.wheel_angles(0.3)
    radius = CAR.wheelbase / math.tan(0.3)
    assert left > 0.3 > right > 0
    assert CAR.wheelbase / math.tan(left) == pytest.approx(radius - CAR.wheel_separation / 2)
    assert CAR.wheelbase / math.tan(right) == pytest.approx(radius + CAR.wheel_separation / 2)


@pytest.mark.parametrize("curvature", [0.0, 1.0, -1.5])
def test_a_twist_within_the_lock_drives_its_curvature(env, curvature):
    linear = 0.5
    yaw_rate, speed = _steady(env, linear, linear * curvature)
    assert speed == pytest.approx(linear, rel=0.05)
    assert yaw_rate == pytest.approx(linear * curvature, abs=0.05 * linear * max(abs(curvature), 1.0))


def test_a_twist_beyond_the_lock_drives_the_tightest_circle_and_standing_still_it_cannot_turn(env):
    yaw_rate, _ = _steady(env, 0.5, 3.0)  # curvature 6 1/m: beyond the lock
    assert yaw_rate == pytest.approx(0.5 * CAR.max_curvature, rel=0.08)
    env.reset(s=0.0)
    x0, y0, yaw0 = (env.truth()[k] for k in ("x", "y", "yaw"))
    for event in env.events(2.0):
        if event.kind == "imu":
            env.command(0.0, 1.0)  # a differential drive would spin on the spot
    t = env.truth()
    assert math.hypot(t["x"] - x0, t["y"] - y0) < 0.01 and abs(t["yaw"] - yaw0) < 0.01


def test_the_car_leaves_the_road_by_a_front_wheel_where_a_differential_drive_would_not():
    track = Track.load(track_path("oval"))
    # Near the left edge and turned toward it: the rear axle's wheels are on the road, the front
    # left wheel, a wheelbase ahead, is past the edge.
    pose = {"s": 1.0, "offset": 0.3, "heading_error": 0.6}
    car, diff = TrackEnv(track, robot=CAR, seed=0), TrackEnv(track, robot=RobotSpec(), seed=0)
    try:
        car.reset(**pose)
        diff.reset(**pose)
        assert car.truth()["off_road"] and not diff.truth()["off_road"]
        x, y, yaw = (car.truth()[k] for k in ("x", "y", "yaw"))
        rear_only = [(fwd, left) for fwd, left in CAR.wheel_contacts if fwd == 0.0]
        assert not track.off_road(x, y, yaw, rear_only)
    finally:
        car.close()
        diff.close()


@pytest.mark.parametrize("name", ["kidney", "hairpin", "serpentine"])
def test_pure_pursuit_keeps_the_car_on_the_road_and_a_blind_driver_does_not(name):
    track = Track.load(track_path(name))
    env = TrackEnv(track, robot=CAR, seed=1)
    expert = PurePursuit(speed=0.5, max_speed=1.0)
    try:
        env.reset(s=0.0, offset=0.15)
        worst, off = 0.0, False
        for event in env.events(15.0):
            if event.kind == "imu":
                linear, angular = expert(env)
                assert abs(angular) <= linear * CAR.max_curvature + 1e-9  # it asks only what the car can do
                env.command(linear, angular)
                t = env.truth()
                worst, off = max(worst, abs(t["xte"])), off or t["off_road"]
        assert not off and worst < track.road_width / 2 - CAR.wheel_separation / 2
        assert env.truth()["progress"] > 15.0 * 0.5 * 0.95
        env.reset(s=0.0)
        off = False
        for _ in env.events(15.0):
            env.command(0.5, 0.0)
            off = off or env.truth()["off_road"]
        assert off
    finally:
        env.close()


def test_the_shipped_camera_only_car_policy_keeps_the_held_out_road_closed_loop():
    """models/ncp_cfc_car_camera_only.safetensors, trained on the car's expert on oval and kidney
    (models/README.md), drives the car on serpentine, a track it never saw, through the controller
    the node runs: the camera alone, every wheel on the road, at the speed the expert drives."""
    pytest.importorskip("torch")
    from liquid_control.learning.configs import EvalConfig
    from liquid_control.learning.evaluate import evaluate
    from liquid_control.model.modelfile import load_policy
    from liquid_control.paths import share_path

    model = share_path("models", "ncp_cfc_car_camera_only.safetensors")
    policy, _ = load_policy(model)
    assert policy.spec.sensors == ("camera",)
    summary = evaluate(
        EvalConfig(str(model), track="serpentine", episodes=2, seconds=20.0, seed=7, robot="car"), show_progress=False
    )
    assert [e["success"] for e in summary["per_episode"]] == [True, True], summary["per_episode"]
    # The expert drives 0.5-1.0 m/s, and the node's default limit is 0.5 m/s.
    assert summary["mean_speed_mps"] > 0.4
    assert summary["mean_abs_xte_m"] < 0.25 * Track.load(track_path("serpentine")).road_width


@pytest.mark.slow
def test_a_model_knows_its_robot_from_the_simulators_bags_and_drives_no_other(tmp_path):
    """collect writes the robot into the bag's metadata (rosbag2 custom_data), train records it in
    the model file, and eval refuses to drive another robot with it; bags of two robots do not
    train one model. The shipped files say theirs."""
    import json
    import os
    from functools import partial

    from support import run_cli

    from liquid_control.bags.io import bag_robot
    from liquid_control.model.modelfile import load_model
    from liquid_control.paths import DEFAULT_MODEL

    env = {**os.environ, "MUJOCO_GL": "egl"}

    cli = partial(run_cli, timeout=600, env=env)

    for robot in ("car", "diff_drive"):
        result = cli("collect", "--robot", robot, "--track", "oval", "--episodes", "2", "--seconds", "3",
                     "--output", tmp_path / robot)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert bag_robot(tmp_path / robot) == robot
    result = cli("train", "--bag", tmp_path / "car", "--output", tmp_path / "car.safetensors", "--iterations", "2",
                 "--window", "60", "--batch", "2", "--warmup", "10", "--imu-topic", "none")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["robot"] == "car"
    assert load_model(tmp_path / "car.safetensors")[1].provenance["robot"] == "car"
    refused = cli("eval", "--model", tmp_path / "car.safetensors", "--robot", "diff_drive", "--episodes", "1")
    assert refused.returncode == 2 and "was trained on the car robot; it cannot drive the diff_drive" in refused.stderr
    mixed = cli("train", "--bag", tmp_path / "car", "--bag", tmp_path / "diff_drive", "--output",
                tmp_path / "mixed.safetensors", "--imu-topic", "none")  # fmt: skip
    assert mixed.returncode == 2 and "driven by different robots" in mixed.stderr
    shipped = Path(__file__).resolve().parents[2] / "models"
    assert load_model(shipped / Path(DEFAULT_MODEL).name)[1].provenance["robot"] == "diff_drive"
    assert load_model(shipped / "ncp_cfc_car_camera_only.safetensors")[1].provenance["robot"] == "car"
