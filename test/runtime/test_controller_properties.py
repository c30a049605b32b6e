"""LiquidController under random abuse (hypothesis): any sequence of images, IMU samples, stamps,
receive times, teacher commands, e-stops and settings changes. It never raises on input it is given
as documented, never commands outside the speed limits or beyond the acceleration limits, and
only ever commands zero while it cannot trust its inputs."""

import math

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from liquid_control import nets  # noqa: E402
from liquid_control.model.policy import EncoderSpec, LiquidPolicy  # noqa: E402
from liquid_control.runtime.controller import LiquidController, Settings  # noqa: E402
from liquid_control.runtime.parameters import BY_SETTING  # noqa: E402
from liquid_control.runtime.sensing import IMU_FIELDS  # noqa: E402

SPEC = EncoderSpec(image_width=16, image_height=12, channels=(4,), camera_features=3)


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    p = LiquidPolicy(SPEC, nets.CfC(SPEC.core_inputs, nets.AutoNCP(8, 2, seed=0)), outputs=2).eval()
    with torch.no_grad():
        p.readout.bias[:] = torch.tensor([40.0, -40.0])  # far beyond any limit
    return p


def _setting_values():
    """Any value inside each tunable range (what the node and Settings.check let through)."""
    out = {}
    for field, p in BY_SETTING.items():
        if p.type is bool:
            out[field] = st.booleans()
        elif p.range is not None:
            out[field] = st.floats(*p.range)
    return st.fixed_dictionaries({}, optional=out)


# A stream in time with abuse mixed in: each event comes dt after the previous one (mostly at
# sensor rates, sometimes after a gap), and some are corrupted (stamps NaN, infinite, frozen or
# going back; NaN or infinite IMU values; NaN pixels; images of any size).
KINDS = ["imu"] * 6 + ["camera"] * 2 + ["teacher", "e_stop", "watchdog", "settings"]
CORRUPTION = ["none"] * 8 + ["nan_stamp", "inf_stamp", "frozen_stamp", "back_stamp", "bad_values"]
gaps = st.one_of(st.floats(0.0, 0.03), st.floats(0.0, 0.03), st.floats(0.0, 0.03), st.floats(0.3, 3.0))
values = st.floats(allow_nan=True, allow_infinity=True)
events = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        gaps,
        st.sampled_from(CORRUPTION),
        st.tuples(st.integers(1, 40), st.integers(1, 40)),
        st.lists(st.floats(-50.0, 50.0), min_size=len(IMU_FIELDS), max_size=len(IMU_FIELDS)),
        values,
        st.booleans(),
        _setting_values(),
    ),
    min_size=1,
    max_size=150,
)


def _image(h, w, kind, rng):
    if kind == "rand":
        return rng.random((h, w, 3)).astype(np.float32)
    if kind == "nan":
        img = rng.random((h, w, 3)).astype(np.float32)
        img[0, 0, 0] = np.nan
        return img
    return np.full((h, w, 3), 0.0 if kind == "zeros" else 1.0, dtype=np.float32)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(initial=_setting_values(), events=events)
def test_never_an_exception_never_a_command_beyond_the_limits(policy, initial, events):
    rng = np.random.default_rng(0)
    c = LiquidController(policy, None, Settings(**initial))
    t, last, policy_commands = 10.0, None, 0
    for kind, dt, corruption, (h, w), imu, value, flag, changes in events:
        t += dt
        stamp = {"nan_stamp": float("nan"), "inf_stamp": float("inf"), "frozen_stamp": 10.0, "back_stamp": t - 0.2}.get(
            corruption, t
        )
        command = None
        if kind == "camera":
            look = "nan" if corruption == "bad_values" else "rand"
            command = c.on_image(stamp, _image(h, w, look, rng), received=t)
        elif kind == "imu":
            sample = np.array(imu)
            if corruption == "bad_values":
                sample[int(abs(value) % len(sample)) if math.isfinite(value) else 0] = value
            command = c.on_imu(stamp, sample, received=t)
        elif kind == "teacher":
            c.on_teacher(value, -value)
        elif kind == "e_stop":
            command = c.set_e_stop(flag, t)
        elif kind == "watchdog":
            command = c.watchdog(t, stamp=t)
            assert command is None or (command.linear_x, command.angular_z) == (0.0, 0.0)
        else:
            c.update_settings(**changes)
        if command is None:
            continue
        s = c.settings
        assert math.isfinite(command.linear_x) and math.isfinite(command.angular_z)
        assert abs(command.linear_x) <= s.max_linear_speed + 1e-9
        assert abs(command.angular_z) <= s.max_angular_speed + 1e-9
        if command.reason != "policy":
            assert (command.linear_x, command.angular_z) == (0.0, 0.0)
        else:
            policy_commands += 1
            assert not c.e_stop
            if last is not None and last.stamp <= command.stamp:
                # From the previous command, at most the acceleration limit times the time between.
                elapsed = command.stamp - last.stamp
                assert abs(command.linear_x - last.linear_x) <= s.max_linear_accel * elapsed + 1e-9
                assert abs(command.angular_z - last.angular_z) <= s.max_angular_accel * elapsed + 1e-9
        last = command
    assert np.all(np.isfinite(c.state))
