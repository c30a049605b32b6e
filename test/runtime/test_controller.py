"""LiquidController without ROS: time handling, hold, limits, safety, adaptation, hot swap."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from liquid_control import nets
from liquid_control.model.modelfile import OutputSpec, load_model, save_model
from liquid_control.model.policy import EncoderSpec, LiquidPolicy
from liquid_control.runtime.controller import LiquidController, Settings
from liquid_control.runtime.sensing import IMU_FIELDS

OUTPUTS = OutputSpec(("linear.x", "angular.z"), ("m/s", "rad/s"), ((0.0, 0.5), (-1.5, 1.5)), scale=(0.5, 1.5))
SPEC = EncoderSpec(
    image_width=16,
    image_height=12,
    channels=(4,),
    camera_features=4,
    imu_fields=("angular_velocity.z", "linear_acceleration.x"),
)


def _policy(seed=0, units=10, bias=None):
    torch.manual_seed(seed)
    policy = LiquidPolicy(SPEC, nets.CfC(SPEC.core_inputs, nets.AutoNCP(units, 2, seed=seed)), outputs=2).eval()
    if bias is not None:
        with torch.no_grad():
            policy.readout.bias[:] = torch.tensor(bias)
    return policy


@pytest.fixture
def model_file(tmp_path):
    policy = _policy()
    path = tmp_path / "p.safetensors"
    save_model(path, policy, policy.sensor_spec(), OUTPUTS)
    return path


def _controller(model_file, **settings):
    policy, config = load_model(model_file)
    return LiquidController(policy, config, Settings(**settings))


def _imu(wz=0.1, ax=0.2):
    v = np.zeros(len(IMU_FIELDS))
    v[IMU_FIELDS.index("angular_velocity.z")] = wz
    v[IMU_FIELDS.index("linear_acceleration.x")] = ax
    return v


FRAME = np.random.default_rng(0).random((48, 64, 3)).astype(np.float32)


def test_waits_for_every_sensor_then_steps_with_stamp_differences(model_file):
    c = _controller(model_file)
    assert c.on_imu(10.000, _imu()).reason == "waiting"
    assert c.on_image(10.010, FRAME).reason == "waiting"  # first step point, nothing to integrate yet
    # Reference: the same policy stepped by hand with the same dt.
    run = c.policy.streamer()
    state = run.initial_state()
    cam = run.encode_image(FRAME)
    imu = run.normalize_imu(_imu()[[IMU_FIELDS.index(f) for f in SPEC.imu_fields]])
    for stamp in (10.015, 10.020, 10.0275):
        cmd = c.on_imu(stamp, _imu())
        assert cmd.reason == "policy"
    for dt in (0.005, 0.005, 0.0075):
        run.step(cam, imu, state, dt)
    np.testing.assert_allclose(c.state, state, atol=1e-12)
    assert c.counters.steps == 3


def test_late_camera_frame_updates_the_hold_without_stepping(model_file):
    c = _controller(model_file)
    c.on_image(1.0, FRAME)
    c.on_imu(1.001, _imu())
    c.on_imu(1.006, _imu())
    steps = c.counters.steps
    assert c.on_image(1.004, FRAME * 0.5) is None  # stamped at exposure, arrives after IMU 1.006
    assert c.counters.late == 1 and c.counters.steps == steps
    assert c.on_imu(1.011, _imu()).reason == "policy"


def test_repeated_and_backward_stamps_are_dropped(model_file):
    c = _controller(model_file)
    c.on_image(1.0, FRAME)
    c.on_imu(1.001, _imu())
    c.on_imu(1.006, _imu())
    state = c.state.copy()
    assert c.on_imu(1.006, _imu(5.0)) is None
    assert c.on_imu(1.003, _imu(5.0)) is None
    assert c.counters.stale_dropped == 2
    np.testing.assert_array_equal(c.state, state)


def test_a_big_jump_back_in_time_resets(model_file):
    c = _controller(model_file, max_dt=0.2)
    c.on_image(100.0, FRAME)
    for k in range(1, 20):
        c.on_imu(100.0 + 0.005 * k, _imu())
    assert np.abs(c.hidden).sum() > 0
    cmd = c.on_imu(3.0, _imu())  # a looping bag starts over
    assert c.counters.time_jumps == 1 and cmd.reason == "waiting"
    assert np.all(c.state == 0)
    c.on_image(3.001, FRAME)
    assert c.on_imu(3.006, _imu()).reason == "policy"


def test_a_gap_above_max_dt_resets_the_state(model_file):
    c = _controller(model_file, max_dt=0.1)
    c.on_image(0.0, FRAME)
    for k in range(1, 10):
        c.on_imu(0.005 * k, _imu())
    cmd = c.on_imu(0.5, _imu())
    assert cmd.reason == "gap_reset" and (cmd.linear_x, cmd.angular_z) == (0.0, 0.0)
    assert c.counters.gap_resets == 1 and np.all(c.state == 0)


def test_nan_imu_is_rejected_and_counted(model_file):
    c = _controller(model_file)
    assert c.on_imu(1.0, _imu(wz=math.nan)) is None
    assert c.on_imu(1.1, _imu(ax=math.inf)) is None
    assert c.counters.rejected == {"imu_not_finite": 2}
    # A NaN in a field the model does not read is no reason to reject.
    v = _imu()
    v[IMU_FIELDS.index("orientation.yaw")] = math.nan
    assert c.on_imu(1.2, v) is not None


def test_nan_in_the_state_resets_and_commands_zero(model_file):
    c = _controller(model_file)
    c.on_image(0.0, FRAME)
    c.on_imu(0.005, _imu())
    c.on_imu(0.010, _imu())
    c.state[0] = math.nan
    cmd = c.on_imu(0.015, _imu())
    assert cmd.reason == "nan_reset" and cmd.angular_z == 0.0 and c.counters.nan_resets == 1
    assert np.all(np.isfinite(c.state))
    assert c.on_imu(0.020, _imu()).reason == "policy"


@pytest.mark.parametrize("mode", ["curvature", "independent"])
@pytest.mark.parametrize("bias", [(50.0, -50.0), (-50.0, 50.0)])
def test_commands_respect_speed_and_acceleration_limits(tmp_path, bias, mode):
    policy = _policy(bias=bias)
    path = tmp_path / "wild.safetensors"
    save_model(path, policy, policy.sensor_spec(), OUTPUTS)
    c = _controller(
        path,
        max_linear_speed=0.3,
        max_angular_speed=1.0,
        max_linear_accel=0.5,
        max_angular_accel=2.0,
        speed_limit_mode=mode,
    )
    c.on_image(0.0, FRAME)
    last = None
    for k in range(1, 400):
        if k % 7 == 0:  # a camera at ~30 Hz keeps the camera watchdog quiet
            c.on_image(0.005 * k - 0.001, FRAME)
        cmd = c.on_imu(0.005 * k, _imu())
        assert abs(cmd.linear_x) <= 0.3 + 1e-12 and abs(cmd.angular_z) <= 1.0 + 1e-12
        if last is not None and last.reason == "policy":
            dt = cmd.stamp - last.stamp
            assert abs(cmd.linear_x - last.linear_x) <= 0.5 * dt + 1e-12
            assert abs(cmd.angular_z - last.angular_z) <= 2.0 * dt + 1e-12
        last = cmd
    if mode == "independent":
        assert abs(last.linear_x) == pytest.approx(0.3) and abs(last.angular_z) == pytest.approx(1.0)
    else:  # one of the two reached, the other below it
        assert abs(last.linear_x) == pytest.approx(0.3) or abs(last.angular_z) == pytest.approx(1.0)


@pytest.mark.parametrize("linear_accel", [20.0, 0.5])
def test_curvature_mode_keeps_the_policys_path_under_the_speed_and_acceleration_limits(tmp_path, linear_accel):
    """The same events through an unlimited controller (what the policy asks) and limited ones:
    curvature mode commands angular.z / linear.x as asked, at the speed the limits allow (while the
    linear acceleration limit ramps it up, too); independent mode keeps angular.z as asked at a lower
    speed, a tighter turn."""
    policy = _policy(bias=(1.6, 0.6))
    path = tmp_path / "turning.safetensors"
    save_model(path, policy, policy.sensor_spec(), OUTPUTS)
    free = dict(max_linear_speed=5.0, max_angular_speed=10.0, max_linear_accel=20.0, max_angular_accel=50.0)
    tight = dict(max_linear_speed=0.3, max_angular_speed=1.5, max_linear_accel=linear_accel, max_angular_accel=50.0)
    asked = _controller(path, **free)
    curved = _controller(path, **tight)
    independent = _controller(path, **tight, speed_limit_mode="independent")
    compared = 0
    for k in range(1, 200):
        stamp = 0.005 * k
        commands = []
        for c in (asked, curved, independent):
            if k % 7 == 1:
                c.on_image(stamp - 0.001, FRAME)
            commands.append(c.on_imu(stamp, _imu()))
        a, b, i = commands
        if a is None or a.reason != "policy" or k < 30:  # after the unlimited one's own ramp
            continue
        assert a.linear_x > 0.3 and 0.0 < a.angular_z < 1.5  # the policy asks for more speed than allowed
        assert 0.0 < b.linear_x <= 0.3 + 1e-12
        assert b.angular_z / b.linear_x == pytest.approx(a.angular_z / a.linear_x, rel=1e-9)
        # Independent: the same speed, the turn as asked (tighter than the policy's path).
        assert i.linear_x == pytest.approx(b.linear_x, rel=1e-12) and i.angular_z == pytest.approx(
            a.angular_z, rel=1e-9
        )
        assert i.angular_z > b.angular_z
        compared += 1
    assert compared > 100
    assert b.linear_x == pytest.approx(0.3)  # at the limit by the end, on the policy's path


def test_e_stop_latches_zero_until_released_and_stops_adaptation(model_file):
    c = _controller(model_file, max_linear_accel=20.0, max_angular_accel=50.0, adaptation_enabled=True)
    c.on_image(0.0, FRAME)
    c.on_imu(0.001, _imu())
    assert c.on_teacher(0.5, 0.3)
    updates = c.adaptation.updates
    stop = c.set_e_stop(True, 0.002)
    assert (stop.linear_x, stop.angular_z, stop.reason) == (0.0, 0.0, "e_stop")
    for k in range(1, 20):
        cmd = c.on_imu(0.005 * k, _imu())
        assert (cmd.linear_x, cmd.angular_z, cmd.reason) == (0.0, 0.0, "e_stop")
        assert not c.on_teacher(0.5, 0.3)  # no adaptation toward a teacher while stopped
    assert c.adaptation.updates == updates
    assert c.set_e_stop(False, 0.15) is None
    assert c.on_imu(0.2, _imu()).reason == "policy"


def test_a_controller_made_under_e_stop_starts_stopped(model_file):
    policy, config = load_model(model_file)
    c = LiquidController(policy, config, Settings(), e_stop=True)
    c.on_image(0.0, FRAME)
    c.on_imu(0.001, _imu())
    assert all(c.on_imu(0.001 + 0.005 * k, _imu()).reason == "e_stop" for k in range(1, 10))


def test_watchdog_waits_for_sensors_then_stops_on_silence(model_file):
    c = _controller(model_file, sensor_timeout=0.3)
    assert c.watchdog(5.0).reason == "waiting"  # nothing ever arrived: waiting, not a timeout
    assert c.health(5.0).level == "waiting" and "waiting for sensors" in c.health(5.0).message
    c.on_image(5.0, FRAME)
    assert c.health(5.1).level == "waiting" and "waiting for imu" in c.health(5.1).message
    c.on_imu(5.01, _imu())
    assert c.watchdog(5.2) is None and c.health(5.2).ok
    cmd = c.watchdog(5.4)
    assert cmd.reason == "timeout" and cmd.linear_x == 0.0
    assert "camera silent for 0.40 s" in c.health(5.4).message and "imu silent" in c.health(5.4).message


def test_a_sensor_that_never_speaks_is_an_error_after_its_timeout(model_file):
    c = _controller(model_file, sensor_timeout=0.3)
    for k in range(100):
        c.on_imu(0.005 * k, _imu())
    health = c.health(0.5)
    assert health.level == "error" and "no camera data" in health.message


def _drive(c, t0, t1, camera=True, camera_stamp=None, imu_stamp=None):
    """IMU at 200 Hz and camera at 40 Hz from t0 to t1 (received = t); stamps frozen if given."""
    commands = []
    for k in range(int(round((t1 - t0) / 0.005))):
        t = t0 + 0.005 * k
        if camera and k % 5 == 0:
            c.on_image(t if camera_stamp is None else camera_stamp, FRAME, received=t)
        cmd = c.on_imu(t + 0.0005 if imu_stamp is None else imu_stamp, _imu(), received=t + 0.0005)
        commands.append(cmd)
    return commands


def test_a_dead_camera_with_a_live_imu_stops_the_robot_then_resumes(model_file):
    c = _controller(model_file, camera_timeout=0.2, sensor_timeout=1.0, max_linear_accel=20.0, max_angular_accel=50.0)
    before = _drive(c, 0.0, 1.0)
    assert before[-1].reason == "policy"
    silent = _drive(c, 1.0, 2.0, camera=False)
    # Zero within the camera's own timeout (0.2 s, not sensor_timeout's 1 s) of its last frame.
    late = [cmd for k, cmd in enumerate(silent) if 1.0 + 0.005 * k > 0.995 + 0.2 + 0.006]
    assert late and all(cmd.reason == "timeout" and cmd.linear_x == cmd.angular_z == 0.0 for cmd in late)
    health = c.health(2.0)
    assert health.level == "error" and health.message.startswith("camera silent") and "imu" not in health.message
    after = _drive(c, 2.0, 2.5)
    assert after[-1].reason == "policy" and c.health(2.5).ok  # clean resume when it returns
    assert after[0].linear_x == 0.0 or abs(after[0].linear_x) <= 20.0 * 0.005 + 1e-9  # ramps from zero


@pytest.mark.parametrize("frozen", ["camera", "imu"])
def test_frozen_stamps_stop_the_robot_within_the_timeout_and_say_why(model_file, frozen):
    c = _controller(model_file, sensor_timeout=0.3)
    _drive(c, 0.0, 1.0)
    stuck = 0.9
    commands = _drive(
        c, 1.0, 2.0, camera_stamp=stuck if frozen == "camera" else None, imu_stamp=stuck if frozen == "imu" else None
    )
    # Messages keep arriving, but none is accepted: zero commands from the watchdog (the
    # robot's only commands once the IMU is frozen) and from every step (camera frozen).
    cmd = c.watchdog(2.0, stamp=2.0)
    assert cmd is not None and cmd.reason == "timeout"
    health = c.health(2.0)
    assert health.level == "error" and health.message.startswith(f"{frozen} stamps frozen or going back"), health
    if frozen == "camera":
        steps = [x for x in commands[80:] if x is not None]
        assert steps and all(x.reason == "timeout" for x in steps)


def test_a_frame_encoded_by_a_swapped_out_model_is_encoded_again(model_file, tmp_path):
    c = _controller(model_file)
    frame = c.encode_image(FRAME)
    other = _policy(seed=3)
    c.swap_policy(other)
    c.on_image(0.0, frame)
    np.testing.assert_array_equal(c.run.inputs[: c.run.camera_features], c.run.encode_image(FRAME))


def test_tau_scale_scales_time(model_file):
    """tau_scale 2 on 10 ms steps = the shipped time constants on 5 ms steps, and the reported
    time constants double."""
    a = _controller(model_file, tau_scale=2.0)
    b = _controller(model_file)
    a.on_image(0.0, FRAME)
    b.on_image(0.0, FRAME)
    for k in range(1, 30):
        a.on_imu(0.01 * k, _imu())
        b.on_imu(0.005 * k, _imu())  # half the elapsed time = time constants twice as long
    np.testing.assert_allclose(a.state, b.state, atol=1e-12)
    np.testing.assert_allclose(a.time_constants, 2.0 * b.time_constants, rtol=1e-12)


def test_invalid_settings_are_refused_and_the_old_ones_kept(model_file):
    c = _controller(model_file)
    with pytest.raises(ValueError, match=r"max_linear_speed must be in \[0, 5\] m/s, got -1.0"):
        c.update_settings(max_linear_speed=-1.0)
    with pytest.raises(ValueError, match=r"tau_scale must be in \[0.05, 20\], got 0.0"):
        c.update_settings(tau_scale=0.0)
    with pytest.raises(ValueError, match="sensor_timeout must be in .*, got nan"):
        c.update_settings(sensor_timeout=float("nan"))
    with pytest.raises(ValueError, match="adaptation_enabled|adaptation.enabled must be a bool"):
        c.update_settings(adaptation_enabled="yes")
    assert c.settings == Settings()
    c.on_image(0.0, FRAME)
    c.on_imu(0.005, _imu())
    c.on_imu(0.010, _imu())
    state = c.state.copy()
    c.update_settings(max_linear_speed=0.2)
    np.testing.assert_array_equal(c.state, state)  # a valid change keeps the network state


def test_hot_swap_keeps_state_when_it_fits_and_refuses_a_model_that_does_not(model_file):
    c = _controller(model_file)
    c.on_image(0.0, FRAME)
    for k in range(1, 10):
        c.on_imu(0.005 * k, _imu())
    state = c.state.copy()
    c.swap_policy(_policy(seed=1))  # same core size
    np.testing.assert_array_equal(c.state, state)
    with pytest.raises(ValueError, match="magnetic_field.x"):  # no such spec: an Imu has no magnetometer
        EncoderSpec(image_width=16, image_height=12, channels=(4,), camera_features=4, imu_fields=("magnetic_field.x",))
    _, config = load_model(model_file)
    steering = OutputSpec(("steering_angle",), ("rad",), ((-0.4, 0.4),))
    with pytest.raises(ValueError, match="steering_angle"):  # a command this controller cannot send
        c.swap_policy(_policy(seed=1), type(config)(config.network, config.sensors, steering, encoder=config.encoder))
    assert c.on_imu(0.05, _imu()).reason == "policy"  # the old model runs on
    c.swap_policy(_policy(seed=2, units=14))
    assert c.state.shape == (14,) and np.all(c.state == 0)


def test_a_swap_to_another_camera_encoder_steps_at_once_on_the_held_frame_and_sample(model_file):
    """The held sensor values go through the new model's encoders: a model with another camera
    size and feature count steps on the very next event, as if it had seen them itself."""
    c = _controller(model_file)
    c.on_image(0.0, FRAME)
    for k in range(1, 5):
        c.on_imu(0.005 * k, _imu())
    spec = EncoderSpec(
        image_width=24,
        image_height=18,
        channels=(3, 5),
        camera_features=6,
        imu_fields=("linear_acceleration.x", "angular_velocity.z", "angular_velocity.x"),
    )
    torch.manual_seed(4)
    other = LiquidPolicy(spec, nets.CfC(spec.core_inputs, nets.AutoNCP(10, 2, seed=4)), outputs=2).eval()
    state = c.state.copy()
    c.swap_policy(other)
    command = c.on_imu(0.025, _imu())
    assert command.reason == "policy"
    # Reference: the new policy stepped by hand from the kept state on the same frame and sample.
    run = other.streamer()
    expected = state.copy()
    imu = run.normalize_imu(_imu()[[IMU_FIELDS.index(f) for f in spec.imu_fields]])
    run.step(run.encode_image(FRAME), imu, expected, 0.005)
    np.testing.assert_allclose(c.state, expected, atol=1e-12)


def test_adaptation_learns_a_steering_bias_and_reset_restores(model_file):
    c = _controller(
        model_file,
        adaptation_enabled=False,
        max_angular_accel=50.0,
        max_linear_accel=20.0,
        max_angular_speed=10.0,
        max_linear_speed=5.0,
        speed_limit_mode="independent",  # angular.z as the readout gives it, from the first step on
    )
    rng = np.random.default_rng(0)
    c.on_image(0.0, FRAME)
    shipped = []
    errors = []
    t = 0.0
    for k in range(1, 200 * 32):  # 2 s without adaptation, then 30 s with it (IMU 200 Hz, camera ~30 Hz)
        t = 0.005 * k
        if k == 400:
            c.update_settings(adaptation_enabled=True)
        if k % 7 == 0:
            c.on_image(t - 0.002, FRAME * rng.uniform(0.5, 1.0))
        cmd = c.on_imu(t, _imu(wz=np.sin(t), ax=np.cos(0.7 * t)))
        if k == 1:
            continue
        # The teacher is the shipped policy plus a steering bias it never saw.
        run = c.run
        base = (run.readout_w @ c.hidden + run.readout_b) * np.array([0.5, 1.5])
        teacher = base + np.array([0.0, 0.3])
        errors.append(abs(cmd.angular_z - teacher[1]))
        shipped.append(base)
        c.on_teacher(*teacher)
    before, after = np.mean(errors[:390]), np.mean(errors[-2000:])
    assert before == pytest.approx(0.3, abs=1e-6)
    assert after < before / 2
    assert c.adaptation.updates > 1000 and c.adaptation.drift > 0
    c.reset_adaptation()
    assert c.adaptation.drift == 0.0


def test_one_parameter_table_gives_settings_defaults_checks_and_the_shipped_defaults_file():
    import dataclasses

    from liquid_control.runtime.parameters import BY_SETTING, DEFAULTS, GENERATED, read_params, render_config

    fields = {f.name: f.default for f in dataclasses.fields(Settings)}
    assert set(fields) == set(BY_SETTING)
    assert fields == {name: p.default for name, p in BY_SETTING.items()}
    # The shipped defaults file is the table's rendering, and reads back as the table.
    root = Path(__file__).resolve().parents[2]
    shipped = root / "config" / "controller.yaml"
    for rel, render in GENERATED.items():  # the defaults file and docs/parameters.md
        assert (root / rel).read_text() == render(), (
            f"{rel} is stale: python -m liquid_control.runtime.parameters --write"
        )
    assert shipped.read_text() == render_config()
    assert read_params(shipped) == DEFAULTS
    for name, p in BY_SETTING.items():
        if p.range is None:
            continue
        lo, hi = p.range
        Settings(**{name: lo}).check()
        Settings(**{name: hi}).check()
        for bad in (lo - 1e-3 * max(1.0, abs(lo)), hi + 1e-3 * max(1.0, abs(hi)), float("nan")):
            with pytest.raises(ValueError, match=p.name):
                Settings(**{name: bad}).check()


def _sensor_model(tmp_path, name, **fields):
    """A model file of SPEC's camera with these IMU and odometry fields (camera-only with none)."""
    spec = EncoderSpec(**{**SPEC.__dict__, "imu_fields": (), **fields})
    torch.manual_seed(3)
    policy = LiquidPolicy(spec, nets.CfC(spec.core_inputs, nets.AutoNCP(10, 2, seed=3)), outputs=2).eval()
    with torch.no_grad():
        policy.imu_mean[:] = torch.linspace(0.1, 0.3, len(spec.held_fields))
        policy.imu_std[:] = torch.linspace(0.5, 2.0, len(spec.held_fields))
    save_model(tmp_path / name, policy, policy.sensor_spec(), OUTPUTS)
    return tmp_path / name


def test_a_camera_only_model_steps_on_frames_ignores_the_imu_and_watches_the_camera_alone(tmp_path):
    c = _controller(_sensor_model(tmp_path, "camera.safetensors"), sensor_timeout=0.3)
    assert c.sensors == ("camera",) and c.policy.spec.core_inputs == SPEC.camera_features
    assert c.on_imu(1.0, _imu()) is None and c.counters.unread == 1  # not read: no step, no command
    assert c.health(1.1).level == "waiting"  # an IMU sample is nobody's first word here
    assert c.on_image(1.00, FRAME).reason == "waiting"
    assert c.health(1.01).ok  # the camera alone is every sensor it reads
    run = c.policy.streamer()
    state = run.initial_state()
    frames = [np.random.default_rng(k).random((48, 64, 3)).astype(np.float32) for k in range(3)]
    for k, (frame, dt) in enumerate(zip(frames, (0.05, 0.05, 0.07), strict=True)):
        assert c.on_imu(1.0 + 0.01 * (k + 1), _imu()) is None
        assert c.on_image(1.0 + sum((0.05, 0.05, 0.07)[: k + 1]), frame).reason == "policy"
        run.step(run.encode_image(frame), np.zeros(0), state, dt)
    np.testing.assert_allclose(c.state, state, atol=1e-12)
    assert c.counters.steps == 3 and c.counters.imu == 0
    # The camera goes quiet while IMU samples go on: zero at the camera's timeout, naming it alone.
    for k in range(100):
        c.on_imu(1.2 + 0.005 * k, _imu())
    health = c.health(1.6)
    assert health.level == "error" and health.message.startswith("camera silent") and "imu" not in health.message
    assert c.watchdog(1.6).reason == "timeout"


def _odom(vx=0.4, vy=0.01, wz=-0.2):
    return np.array([vx, vy, wz])


def test_a_model_that_reads_odometry_waits_for_it_steps_on_it_and_stops_when_it_goes_quiet(tmp_path):
    path = _sensor_model(
        tmp_path,
        "odom.safetensors",
        imu_fields=("angular_velocity.z",),
        odom_fields=("twist.angular.z", "twist.linear.x"),
    )
    c = _controller(path, sensor_timeout=1.0, odom_timeout=0.2)
    assert c.sensors == ("camera", "imu", "odom")
    assert c.on_image(0.0, FRAME).reason == "waiting" and c.on_imu(0.005, _imu()).reason == "waiting"
    assert "waiting for odom" in c.health(0.01).message
    assert c.on_odom(0.01, _odom()).reason == "waiting"  # every sensor has spoken: the first step point
    # Reference by hand: inputs are the camera's features, the IMU fields, then the odometry
    # fields, in the order the model declares them, each normalised by its own mean and std.
    run = c.policy.streamer()
    state = run.initial_state()
    held = run.normalize_imu(np.array([_imu()[IMU_FIELDS.index("angular_velocity.z")], -0.2, 0.4]))
    assert c.on_odom(0.03, _odom()).reason == "policy" and c.on_imu(0.035, _imu()).reason == "policy"
    for dt in (0.02, 0.005):
        run.step(run.encode_image(FRAME), held, state, dt)
    np.testing.assert_allclose(c.state, state, atol=1e-12)
    assert c.on_odom(0.04, _odom(wz=math.nan)) is None and c.counters.rejected == {"odom_not_finite": 1}
    # The odometry stops while camera and IMU go on: zero after odom_timeout, naming the odometry.
    commands = [c.on_imu(0.04 + 0.005 * k, _imu()) for k in range(1, 60)]
    assert commands[-1].reason == "timeout" and commands[10].reason == "policy"
    assert c.health(0.35).message.startswith("odom") and "camera" not in c.health(0.35).message


def _go_model(tmp_path, bias=(1.0, 1.0)):
    policy = _policy(bias=bias)
    path = tmp_path / "go.safetensors"
    save_model(path, policy, policy.sensor_spec(), OUTPUTS)
    return path


LIMITS = dict(max_linear_speed=0.3, max_angular_speed=1.0, max_linear_accel=0.5, max_angular_accel=2.0)


def test_a_takeover_sends_the_persons_command_through_the_limits_while_the_policy_steps_and_proposes(tmp_path):
    path = _go_model(tmp_path)
    c = _controller(path, **LIMITS, teleop_timeout=0.1)
    twin = _controller(path, **LIMITS)  # never taken over: the policy's own run
    for ctl in (c, twin):
        _drive(ctl, 0.0, 1.0)
    sent = before = c._last_command
    assert sent.reason == "policy" and sent.linear_x > 0.0
    person = []
    for k in range(100):  # 1.0-1.5 s: the person asks for more than the limits, backwards and turning right
        t = 1.0 + 0.005 * k
        if k % 5 == 0:
            cmd = c.on_teleop(t + 0.002, -2.0, -3.0, received=t + 0.002)
            assert cmd is not None and cmd.reason == "teleop" and not cmd.proposal
            assert abs(cmd.linear_x) <= 0.3 + 1e-12 and abs(cmd.angular_z) <= 1.0 + 1e-12
            dt = cmd.stamp - sent.stamp
            assert abs(cmd.linear_x - sent.linear_x) <= 0.5 * dt + 1e-12
            assert abs(cmd.angular_z - sent.angular_z) <= 2.0 * dt + 1e-12
            sent = cmd
            person.append(cmd)
        if k % 5 == 0:
            c.on_image(t, FRAME, received=t)
            twin.on_image(t, FRAME, received=t)
        proposal = c.on_imu(t + 0.0005, _imu(), received=t + 0.0005)
        own = twin.on_imu(t + 0.0005, _imu(), received=t + 0.0005)
        # The policy's proposal: what it commands when it drives on alone, never ramped from the person's.
        assert proposal.proposal and proposal.reason == "policy"
        assert (proposal.linear_x, proposal.angular_z) == (own.linear_x, own.angular_z)
    # It went the person's way, braking at the acceleration limit (0.5 m/s^2 for 0.48 s).
    assert person[-1].linear_x == pytest.approx(before.linear_x - 0.5 * (person[-1].stamp - before.stamp))
    np.testing.assert_array_equal(c.state, twin.state)  # the policy stepped through the takeover
    assert c.takeovers == 1
    # teleop silent from 1.497 s: after teleop_timeout (0.1 s) the policy commands again, ramping
    # from the person's last command.
    back = _drive(c, 1.5, 1.8)
    first = next(cmd for cmd in back if not cmd.proposal)
    assert first.reason == "policy" and first.stamp > person[-1].stamp + 0.1 - 0.006
    assert abs(first.linear_x - person[-1].linear_x) <= 0.5 * (first.stamp - person[-1].stamp) + 1e-12
    assert all(not cmd.proposal for cmd in back[back.index(first) :])
    assert not c.takeover(1.8) and c.takeovers == 1


def test_the_e_stop_zeroes_a_takeover_and_the_watchdog_does_not_stop_a_person_who_drives(tmp_path):
    c = _controller(_go_model(tmp_path), **LIMITS, sensor_timeout=0.2, teleop_timeout=0.1)
    _drive(c, 0.0, 0.5)
    # Sensors silent from 0.5 s; a person drives from 0.6 s at 20 Hz.
    for k in range(20):
        t = 0.6 + 0.05 * k
        assert c.on_teleop(t, 0.2, 0.1, received=t).reason == "teleop"
        assert c.watchdog(t + 0.01) is None  # the policy's sensors are silent, the person drives
    assert c.health(1.6).level == "error"  # still said
    assert c.watchdog(1.64) is None and c.watchdog(1.66).reason == "timeout"  # the last came at 1.55
    c.set_e_stop(True, 1.7)
    cmd = c.on_teleop(1.7, 0.2, 0.1, received=1.7)
    assert (cmd.reason, cmd.linear_x, cmd.angular_z) == ("e_stop", 0.0, 0.0)


def test_a_takeover_needs_a_fresh_enable_where_one_is_required_and_ignores_non_finite_commands(tmp_path):
    c = _controller(_go_model(tmp_path), **LIMITS, teleop_timeout=0.1, teleop_require_enable=True)
    _drive(c, 0.0, 0.5)
    assert c.on_teleop(0.5, 0.2, 0.0, received=0.5) is None and not c.takeover(0.5)
    c.on_teleop_enable(True, 0.51)
    assert c.on_teleop(0.52, 0.2, 0.0, received=0.52).reason == "teleop"
    assert c.takeover(0.6) and not c.takeover(0.62)  # the enable is 0.11 s old: a deadman let go
    c.on_teleop_enable(False, 0.63)
    assert c.on_teleop(0.64, 0.2, 0.0, received=0.64) is None
    c.on_teleop_enable(True, 0.65)
    assert c.on_teleop(0.66, math.nan, 0.0, received=0.66) is None
    assert c.counters.rejected["teleop_not_finite"] == 1
    assert c.on_teleop(0.67, 0.2, 0.0, received=0.67).reason == "teleop"
    assert c.takeovers == 2
