"""Recorded commands to physical labels (model/labels.py): the bicycle model of an Ackermann car,
normalised steering and throttle, and what must be declared for each."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from liquid_control.model.labels import (
    ACKERMANN,
    ACKERMANN_STAMPED,
    TWIST,
    TWIST_STAMPED,
    LabelMapping,
)

finite = st.floats(-5.0, 5.0, allow_nan=False)


@given(speed=finite, steering=st.floats(-1.2, 1.2), wheelbase=st.floats(0.1, 3.0))
def test_an_ackermann_command_drives_the_circle_of_its_steering_angle(speed, steering, wheelbase):
    """The bicycle model: a car at `speed` with its front wheels at `steering` drives a circle of
    radius wheelbase / tan(steering) about a point on its rear axle's line; its yaw rate is the
    speed over that radius, whichever way it drives."""
    linear, angular = LabelMapping(wheelbase=wheelbase).physical(ACKERMANN, [speed, steering])
    assert linear == speed
    if abs(steering) > 1e-6 and abs(speed) > 1e-6:
        radius = wheelbase / math.tan(steering)
        assert angular == pytest.approx(speed / radius, rel=1e-9)
        assert np.sign(angular) == np.sign(speed) * np.sign(steering)  # left steering turns left going forward
    else:
        assert abs(angular) <= abs(speed) * abs(math.tan(steering)) / wheelbase + 1e-12


def test_a_car_at_full_lock_turns_with_its_known_radius():
    # An F1TENTH car: 0.33 m wheelbase, 0.4189 rad (24 degrees) of lock: a 0.741 m turning radius.
    m = LabelMapping(wheelbase=0.33)
    linear, angular = m.physical(ACKERMANN_STAMPED, [2.0, 0.4189])
    assert linear == 2.0 and 2.0 / angular == pytest.approx(0.33 / math.tan(0.4189))
    assert 2.0 / angular == pytest.approx(0.741, abs=1e-3)


@given(throttle=st.floats(-1.5, 1.5), steering=st.floats(-1.5, 1.5))
def test_normalised_labels_scale_to_the_declared_top_speed_and_yaw_rate_within_their_range(throttle, steering):
    m = LabelMapping(kind="normalised", top_speed=2.5, max_yaw_rate=-1.8)  # positive steering turns right
    linear, angular = m.physical(TWIST, [throttle, steering])
    assert linear == pytest.approx(np.clip(throttle, -1, 1) * 2.5)
    assert angular == pytest.approx(-np.clip(steering, -1, 1) * 1.8)
    assert abs(linear) <= 2.5 and abs(angular) <= 1.8


def test_normalised_steering_of_a_car_is_its_steering_angle_through_the_bicycle_model():
    car = LabelMapping(kind="normalised", top_speed=3.0, full_lock=0.35, wheelbase=0.26)
    pairs = np.array([[0.5, 1.0], [0.5, -0.5], [-0.2, 0.3], [0.0, 1.0]])
    got = car.physical(TWIST_STAMPED, pairs)
    same = LabelMapping(wheelbase=0.26).physical(ACKERMANN, np.stack([pairs[:, 0] * 3.0, pairs[:, 1] * 0.35], -1))
    np.testing.assert_allclose(got, same, rtol=1e-12)
    assert got[3, 1] == 0.0  # standing still, a car does not turn whatever its wheels say


def test_physical_twist_labels_are_used_as_they_are():
    values = np.random.default_rng(0).normal(0, 2, (100, 2))
    np.testing.assert_array_equal(LabelMapping().physical(TWIST, values), values)


@pytest.mark.parametrize(
    "mapping, msgtype, message",
    [
        ({}, ACKERMANN, "need --wheelbase"),
        ({"kind": "normalised", "top_speed": 1.0, "max_yaw_rate": 1.0}, ACKERMANN_STAMPED, "are physical"),
        ({}, "sensor_msgs/msg/Joy", "is not a command type"),
    ],
)
def test_what_a_label_type_needs_is_said(mapping, msgtype, message):
    with pytest.raises(ValueError, match=message):
        LabelMapping(**mapping).check(msgtype)


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({"kind": "normalised", "max_yaw_rate": 1.0}, "--top-speed"),
        ({"kind": "normalised", "top_speed": 1.0}, "one of --full-lock"),
        ({"kind": "normalised", "top_speed": 1.0, "full_lock": 0.3, "max_yaw_rate": 1.0}, "one of --full-lock"),
        ({"kind": "normalised", "top_speed": 1.0, "full_lock": 0.3}, "--full-lock needs --wheelbase"),
        ({"full_lock": 2.0}, "within"),
        ({"wheelbase": -1.0}, "cannot be negative"),
        ({"top_speed": math.inf}, "finite"),
        ({"kind": "joystick"}, "choose from"),
    ],
)
def test_a_mapping_that_cannot_work_is_refused(mapping, message):
    with pytest.raises(ValueError, match=message):
        LabelMapping(**mapping)


def test_the_recorded_mapping_round_trips_and_old_files_read_as_twist():
    m = LabelMapping(kind="normalised", top_speed=2.0, full_lock=0.3, wheelbase=0.25)
    assert LabelMapping.recorded(m.record([TWIST])) == m
    assert LabelMapping.recorded(None) == LabelMapping() == LabelMapping.recorded({})
