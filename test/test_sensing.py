"""Message conversion on real message classes: rclpy's (sensor_msgs) and rosbags' (from a bag)."""

import math

import numpy as np
import pytest

from liquid_control.sensing import (
    IMU_FIELDS,
    SensorError,
    image_to_array,
    imu_to_array,
    resize,
    stamp_to_seconds,
)

msgs = pytest.importorskip("sensor_msgs.msg")
from rosbags.typesys import Stores, get_typestore  # noqa: E402

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def _encode(encoding, padding=0, bigendian=False):
    if encoding == "rgb8":
        pix = RGB
    elif encoding == "bgr8":
        pix = RGB[:, :, ::-1]
    elif encoding == "rgba8":
        pix = np.concatenate([RGB, np.full((5, 7, 1), 9, np.uint8)], axis=2)
    elif encoding == "bgra8":
        pix = np.concatenate([RGB[:, :, ::-1], np.full((5, 7, 1), 9, np.uint8)], axis=2)
    elif encoding == "mono8":
        pix = RGB[:, :, :1]
    else:  # mono16
        pix = (RGB[:, :, :1].astype(np.uint16) * 257).astype(">u2" if bigendian else "<u2")
    rows = pix.reshape(5, -1).view(np.uint8)
    rows = np.concatenate([rows, np.full((5, padding), 0xAB, np.uint8)], axis=1)
    return rows.shape[1], rows.tobytes()


def _expected(encoding):
    base = RGB[:, :, :1].repeat(3, axis=2) if encoding.startswith("mono") else RGB
    return base.astype(np.float32) / 255.0


def _rclpy_image(encoding, padding=0, bigendian=False):
    step, data = _encode(encoding, padding, bigendian)
    return msgs.Image(height=5, width=7, encoding=encoding, step=step, data=data, is_bigendian=bigendian)


def _rosbags_image(encoding, padding=0, bigendian=False):
    store = get_typestore(Stores.ROS2_JAZZY)
    Image, Header, Time = (store.types[n] for n in ("sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time"))
    step, data = _encode(encoding, padding, bigendian)
    msg = Image(header=Header(stamp=Time(sec=1, nanosec=5), frame_id="cam"), height=5, width=7,
                encoding=encoding, is_bigendian=int(bigendian), step=step,
                data=np.frombuffer(data, np.uint8))
    # Through CDR and back, exactly as read from a bag.
    return store.deserialize_cdr(store.serialize_cdr(msg, "sensor_msgs/msg/Image"), "sensor_msgs/msg/Image")


@pytest.mark.parametrize("make", [_rclpy_image, _rosbags_image])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"])
@pytest.mark.parametrize("padding", [0, 3])
def test_every_encoding_with_and_without_row_padding(make, encoding, padding):
    out = image_to_array(make(encoding, padding))
    assert out.shape == (5, 7, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, _expected(encoding), atol=1e-6)


@pytest.mark.parametrize("make", [_rclpy_image, _rosbags_image])
def test_mono16_big_endian(make):
    np.testing.assert_allclose(image_to_array(make("mono16", 2, bigendian=True)), _expected("mono16"), atol=1e-6)


@pytest.mark.parametrize("change,match", [
    (dict(encoding="yuv422"), "unsupported image encoding"),
    (dict(step=20), "shorter than a row"),
    (dict(height=6), "expected step"),
    (dict(width=0), "no pixels"),
])
def test_bad_images_are_rejected_with_the_reason(change, match):
    msg = _rclpy_image("rgb8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(SensorError, match=match):
        image_to_array(msg)


def test_resize_area_average_and_upscale():
    img = np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)
    half = resize(img, 3, 2)
    np.testing.assert_allclose(half[0, 0], img[:2, :2].mean(axis=(0, 1)))
    np.testing.assert_allclose(half[1, 2], img[2:, 4:].mean(axis=(0, 1)))
    # Non-integer factors keep the mean of a constant image and of a ramp.
    odd = resize(img, 4, 3)
    assert odd.shape == (3, 4, 3)
    np.testing.assert_allclose(odd.mean(axis=(0, 1)), img.mean(axis=(0, 1)), rtol=1e-5)
    up = resize(np.ones((2, 2, 3), np.float32), 5, 4)
    assert up.shape == (4, 5, 3) and np.allclose(up, 1.0)
    assert resize(img, 6, 4) is img


@pytest.mark.parametrize("size", [(96, 64, 64, 48), (640, 480, 64, 48), (7, 5, 64, 48), (61, 47, 64, 48), (64, 48, 33, 20)])
def test_resize_equals_the_per_axis_resampling_matrices(size):
    """The gathered-taps resize is the product of the two per-axis maps, for down, up and mixed."""
    from liquid_control.sensing import resample_matrix

    w, h, width, height = size
    img = np.random.default_rng(1).random((h, w, 3), dtype=np.float32)
    expected = np.einsum("ih,hwc,jw->ijc", resample_matrix(h, height).astype(np.float64), img.astype(np.float64),
                         resample_matrix(w, width).astype(np.float64))
    out = resize(img, width, height)
    assert out.shape == (height, width, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=2e-6)
    assert np.allclose(resize(img[:, ::-1], width, height), resize(np.ascontiguousarray(img[:, ::-1]), width, height))


def _imu(orientation_valid=True, **overrides):
    m = msgs.Imu()
    m.angular_velocity.x, m.angular_velocity.y, m.angular_velocity.z = 0.1, -0.2, 0.3
    m.linear_acceleration.x, m.linear_acceleration.y, m.linear_acceleration.z = 0.0, 0.5, 9.81
    # yaw of 90 degrees
    m.orientation.w, m.orientation.z = math.cos(math.pi / 4), math.sin(math.pi / 4)
    if not orientation_valid:
        m.orientation_covariance[0] = -1.0
    for key, value in overrides.items():
        obj, field = key.split("__")
        setattr(getattr(m, obj), field, value)
    return m


def test_imu_fields_and_orientation_from_the_quaternion():
    values = imu_to_array(_imu())
    assert len(values) == len(IMU_FIELDS)
    np.testing.assert_allclose(values[:6], [0.1, -0.2, 0.3, 0.0, 0.5, 9.81])
    np.testing.assert_allclose(values[6:], [0.0, 0.0, math.pi / 2], atol=1e-9)


def test_imu_without_orientation_marks_it_missing_not_zero():
    values = imu_to_array(_imu(orientation_valid=False))
    assert np.isnan(values[6:]).all() and np.isfinite(values[:6]).all()


@pytest.mark.parametrize("field", ["angular_velocity__z", "linear_acceleration__x", "orientation__x"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_imu_nan_or_inf_is_rejected(field, bad):
    with pytest.raises(SensorError, match="NaN or Inf"):
        imu_to_array(_imu(**{field: bad}))


def test_imu_non_unit_quaternion_is_rejected():
    with pytest.raises(SensorError, match="unit quaternion"):
        imu_to_array(_imu(orientation__w=3.0))


def test_stamp_to_seconds():
    stamp = msgs.Image().header.stamp
    stamp.sec, stamp.nanosec = 12, 500_000_000
    assert stamp_to_seconds(stamp) == 12.5


@pytest.mark.parametrize("seconds", [0.0, 12.5, 1_764_000_000.123456789, 3.9999999999])
def test_seconds_to_stamp_round_trips(seconds):
    from liquid_control.sensing import seconds_to_stamp

    sec, nanosec = seconds_to_stamp(seconds)
    assert 0 <= nanosec <= 999_999_999
    stamp = msgs.Image().header.stamp
    stamp.sec, stamp.nanosec = sec, nanosec
    assert stamp_to_seconds(stamp) == pytest.approx(seconds, abs=1e-6)
