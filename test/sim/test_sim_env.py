"""TrackEnv on real MuJoCo (offscreen EGL rendering): sensor streams, determinism, ground truth, expert."""

import math

import numpy as np
import pytest

from liquid_control.sim.track import Track, track_path

mujoco = pytest.importorskip("mujoco")

from liquid_control.sim.env import PurePursuit, SensorConfig, TrackEnv  # noqa: E402

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def oval():
    return Track.load(track_path("oval"))


def _run(env, seconds, policy=None):
    events = []
    for ev in env.events(seconds):
        events.append(ev)
        if policy is not None and ev.kind == "imu":
            env.command(*policy(env))
    return events


def test_sensor_rates_and_stamp_order(oval):
    env = TrackEnv(oval, sensors=SensorConfig(camera_jitter=0.003), seed=3)
    events = _run(env, 2.0)
    env.close()
    cams = [e.stamp for e in events if e.kind == "camera"]
    imus = [e.stamp for e in events if e.kind == "imu"]
    assert 59 <= len(cams) <= 61 and 400 <= len(imus) <= 401
    assert np.all(np.diff(cams) > 0) and np.allclose(np.diff(imus), 0.005)
    assert np.all(np.diff([e.stamp for e in events]) >= 0)
    # Jitter moves camera stamps off the 30 Hz grid, but by no more than configured.
    offsets = np.array(cams) - np.arange(len(cams)) / 30.0
    assert np.abs(offsets).max() <= 0.003 + 1e-9 and np.abs(offsets).max() > 0.0005
    assert events[0].data.shape == (64, 96, 3) or events[1].data.shape == (64, 96, 3)


def test_same_seed_same_stream_other_seed_other_noise(oval):
    def stream(seed):
        env = TrackEnv(oval, seed=seed)
        out = [(e.kind, e.stamp, e.data.copy()) for e in _run(env, 0.5, PurePursuit())]
        env.close()
        return out

    a, b, c = stream(5), stream(5), stream(6)
    assert len(a) == len(b)
    for (ka, ta, da), (kb, tb, db) in zip(a, b, strict=True):
        assert ka == kb and ta == tb and np.array_equal(da, db)
    imu_a = np.array([d for k, _, d in a if k == "imu"])
    imu_c = np.array([d for k, _, d in c if k == "imu"])
    assert not np.array_equal(imu_a[:, :3], imu_c[:, :3])


def test_camera_sees_road_on_the_road_and_grass_beside_it(oval):
    env = TrackEnv(oval, seed=0)
    # Low in the image, right of the dashed centre line: asphalt, lit by the headlight.
    road = env.render()[48:, 62:74].reshape(-1, 3).mean(0)
    env.reset(s=5.0, offset=3.0)
    grass = env.render()[48:, 62:74].reshape(-1, 3).mean(0)
    env.close()
    assert road.max() - road.min() < 0.06 and 0.1 < road.mean() < 0.45  # grey
    assert grass[1] > grass[0] + 0.08 and grass[1] > grass[2] + 0.08  # green


def test_imu_at_rest_reads_gravity_and_the_configured_bias(oval):
    env = TrackEnv(oval, sensors=SensorConfig(gyro_bias=0.1), seed=0)
    imu = np.array([e.data for e in _run(env, 1.0) if e.kind == "imu"][50:])
    env.close()
    assert np.mean(imu[:, 5]) == pytest.approx(9.81, abs=0.15)
    assert np.mean(imu[:, 2]) == pytest.approx(0.1, abs=0.01)
    assert np.abs(np.mean(imu[:, :2], axis=0)).max() < 0.01
    _, _, yaw = oval.pose_at(0.0)
    assert math.remainder(np.mean(imu[:, 8]) - yaw, 2 * math.pi) == pytest.approx(0.0, abs=0.02)


def test_ground_truth_xte_sign_and_off_road(oval):
    env = TrackEnv(oval, seed=0)
    env.reset(s=3.0, offset=0.3)
    assert env.truth()["xte"] == pytest.approx(0.3, abs=0.01) and not env.truth()["off_road"]
    env.reset(s=3.0, offset=-0.45)
    assert env.truth()["off_road"]  # the right wheel is past the right edge
    env.close()


def test_camera_drops(oval):
    env = TrackEnv(oval, sensors=SensorConfig(camera_drop=1.0), seed=0)
    assert not [e for e in _run(env, 0.5) if e.kind == "camera"]
    env.close()


@pytest.mark.parametrize("name", ["kidney", "serpentine"])
def test_expert_keeps_the_road_and_a_blind_driver_does_not(name):
    track = Track.load(track_path(name))
    env = TrackEnv(track, seed=1)
    worst, off = 0.0, False
    for ev in env.events(15.0):
        if ev.kind == "imu":
            env.command(*PurePursuit()(env))
            t = env.truth()
            worst, off = max(worst, abs(t["xte"])), off or t["off_road"]
    assert not off and worst < 0.1
    assert env.truth()["progress"] == pytest.approx(15.0 * 0.5, rel=0.05)
    env.reset(s=0.0)
    off = False
    for _ in env.events(15.0):
        env.command(0.5, 0.0)  # straight on, whatever the road does
        off = off or env.truth()["off_road"]
    env.close()
    assert off


def test_distractors_stand_beside_the_road_and_show_in_the_camera(oval):
    plain = TrackEnv(oval, seed=5)
    busy = TrackEnv(oval, seed=5, distractors=40)
    try:
        assert len(busy.distractors) == 40
        for d in busy.distractors:  # every object is clear of the road
            assert abs(oval.project(d.x, d.y)["xte"]) > oval.road_width / 2 + d.size
        differs = 0
        for s in np.linspace(0, oval.length, 12, endpoint=False):
            plain.reset(s=float(s))
            busy.reset(s=float(s))
            differs += int(np.abs(plain.render() - busy.render()).max() > 0.1)
        assert differs >= 3
    finally:
        plain.close()
        busy.close()


@pytest.mark.parametrize("name", ["oval", "kidney", "serpentine"])
def test_expert_completes_a_lap_of_every_shipped_track(name):
    track = Track.load(track_path(name))
    env = TrackEnv(track, seed=4)
    expert = PurePursuit(speed=1.0)
    off = False
    try:
        for ev in env.events(track.length / 1.0 * 1.1):
            if ev.kind == "imu":
                env.command(*expert(env))
                off = off or env.truth()["off_road"]
            if env.truth()["progress"] >= track.length:
                break
        assert not off
        assert env.truth()["progress"] >= track.length  # a whole lap
    finally:
        env.close()


def test_the_shipped_policy_completes_a_short_nominal_episode():
    from liquid_control.learning.configs import EvalConfig
    from liquid_control.learning.evaluate import evaluate
    from liquid_control.paths import DEFAULT_MODEL

    summary = evaluate(EvalConfig(DEFAULT_MODEL, track="oval", condition="nominal", episodes=1, seconds=10.0, seed=7))
    assert summary["success_rate"] == 1.0 and summary["mean_abs_xte_m"] < 0.05
    assert summary["mean_speed_mps"] > 0.4


def test_renders_headless_without_mujoco_gl_set():
    """A user on a server runs `liquid-control collect` with no display and no MUJOCO_GL: the
    simulator picks EGL itself instead of failing in GLFW."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY")}
    code = (
        "from liquid_control.sim.env import TrackEnv; from liquid_control.sim.track import Track, track_path; "
        "env = TrackEnv(Track.load(track_path('oval'))); env.reset(s=0.0); "
        "frame = next(e for e in env.events(0.1) if e.kind == 'camera').data; "
        "print(frame.shape, float(frame.std()) > 0); env.close()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[0].endswith("True")


def test_expert_completes_a_lap_of_the_tight_track_at_1_mps():
    """The tight_turns condition's track (1.3 m radius turns) is drivable at 1.0 m/s: the expert keeps
    every wheel on the road for a whole lap at that speed, so a policy that leaves it fails on its own."""
    from liquid_control.sim.conditions import CONDITIONS

    track = Track.load(track_path(CONDITIONS["tight_turns"].track))
    env = TrackEnv(track, seed=4)
    expert = PurePursuit(speed=1.0)
    off, speeds = False, []
    try:
        for ev in env.events(track.length / 1.0 * 1.1):
            if ev.kind == "imu":
                env.command(*expert(env))
                truth = env.truth()
                off = off or truth["off_road"]
                speeds.append(truth["speed"])
            if env.truth()["progress"] >= track.length:
                break
        assert not off
        assert env.truth()["progress"] >= track.length  # a whole lap
        assert np.mean(speeds) == pytest.approx(1.0, abs=0.05)
    finally:
        env.close()


@pytest.mark.parametrize("robot", ["diff_drive", "car"])
def test_wheel_odometry_measures_the_drive_and_counts_the_road_a_slipping_wheel_did_not_cover(robot):
    """TrackEnv.odometry is a base's wheel odometry: on grip it gives the body's forward speed and
    yaw rate (from the physics state, not from the odometry's own formula); where the wheels
    slip it counts road that was not covered, as encoders do."""
    from liquid_control.sim.conditions import CONDITIONS
    from liquid_control.sim.world import robot_spec

    kidney = Track.load(track_path("kidney"))
    measured = {}
    for condition in ("nominal", "low_friction"):
        c = CONDITIONS[condition]
        track, sensors = c.apply(kidney, SensorConfig())
        env = TrackEnv(track, sensors=sensors, seed=0, **c.env_kwargs(robot_spec(robot)))
        env.reset(s=1.0)
        expert, odom, truth = PurePursuit(speed=0.5, max_speed=1.0), [], []
        for event in env.events(4.0):
            if event.kind != "imu":
                continue
            env.command(*expert(env))
            yaw = env.truth()["yaw"]
            vx, vy = env.data.qvel[0:2]
            odom.append(env.odometry())
            truth.append((math.cos(yaw) * vx + math.sin(yaw) * vy, env.data.qvel[5]))
        env.close()
        measured[condition] = np.array(odom)[200:], np.array(truth)[200:]  # past the first second
    odom, truth = measured["nominal"]
    assert np.all(odom[:, 1] == 0.0)  # wheels cannot measure sideways speed
    assert truth[:, 0].mean() > 0.4 and np.abs(truth[:, 1]).mean() > 0.1  # it drove and turned
    assert np.abs(odom[:, 0] - truth[:, 0]).mean() < 0.1 * truth[:, 0].mean()
    assert np.abs(odom[:, 2] - truth[:, 1]).mean() < 0.3 * np.abs(truth[:, 1]).mean()
    slipping, truth_slipping = measured["low_friction"]
    err = lambda o, t: np.abs(o[:, 2] - t[:, 1]).mean() + np.abs(o[:, 0] - t[:, 0]).mean()  # noqa: E731
    assert err(slipping, truth_slipping) > 2.0 * err(odom, truth)
