"""Message conversion on real message classes: rclpy's (sensor_msgs) and rosbags' (from a bag)."""

import math

import numpy as np
import pytest

from liquid_control.runtime.sensing import (
    IMU_FIELDS,
    SensorError,
    image_to_array,
    imu_to_array,
    model_frame,
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
    Image, Header, Time = (
        store.types[n] for n in ("sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time")
    )
    step, data = _encode(encoding, padding, bigendian)
    msg = Image(
        header=Header(stamp=Time(sec=1, nanosec=5), frame_id="cam"),
        height=5,
        width=7,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=step,
        data=np.frombuffer(data, np.uint8),
    )
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
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"])
@pytest.mark.parametrize("padding", [0, 3])
def test_every_encoding_as_uint8_is_the_8_bit_rgb_values(make, encoding, padding):
    """dtype=np.uint8: the pixel values without a float conversion (mono16 scaled to 8 bits), as a
    read-only array (for 8-bit encodings a view of the message's bytes: writing to it would change
    the message); the float32 output is the same values / 255, C-ordered."""
    msg = make(encoding, padding)
    out = image_to_array(msg, dtype=np.uint8)
    expected = RGB[:, :, :1].repeat(3, axis=2) if encoding.startswith("mono") else RGB
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    if not encoding.endswith("16"):
        assert not out.flags.writeable
    as_float = image_to_array(msg)
    assert as_float.flags.c_contiguous  # a channel reorder that left planes apart cost later passes 2-3x
    if not encoding.endswith("16"):
        np.testing.assert_array_equal(as_float, out.astype(np.float32) * np.float32(1 / 255))
    # The model sees the same pixels from either output.
    np.testing.assert_array_equal(model_frame(out, 4, 3), model_frame(as_float, 4, 3))


def test_image_to_array_takes_only_uint8_or_float32():
    with pytest.raises(ValueError, match="dtype"):
        image_to_array(_rclpy_image("rgb8"), dtype=np.float64)


@pytest.mark.parametrize("make", [_rclpy_image, _rosbags_image])
def test_mono16_big_endian(make):
    np.testing.assert_allclose(image_to_array(make("mono16", 2, bigendian=True)), _expected("mono16"), atol=1e-6)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(encoding="yuv422"), "unsupported image encoding"),
        (dict(step=20), "shorter than a row"),
        (dict(height=6), "expected step"),
        (dict(width=0), "no pixels"),
    ],
)
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
    levels = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)  # uint8 is read as values / 255
    np.testing.assert_array_equal(resize(levels, 3, 2), resize(levels * np.float32(1 / 255), 3, 2))


@pytest.mark.slow
@pytest.mark.parametrize(
    "size", [(96, 64, 64, 48), (640, 480, 64, 48), (7, 5, 64, 48), (61, 47, 64, 48), (64, 48, 33, 20)]
)
def test_resize_equals_the_per_axis_resampling_matrices(size):
    """The gathered-taps resize is the product of the two per-axis maps, for down, up and mixed."""
    from liquid_control.runtime.sensing import resample_matrix

    w, h, width, height = size
    img = np.random.default_rng(1).random((h, w, 3), dtype=np.float32)
    expected = np.einsum(
        "ih,hwc,jw->ijc",
        resample_matrix(h, height).astype(np.float64),
        img.astype(np.float64),
        resample_matrix(w, width).astype(np.float64),
    )
    out = resize(img, width, height)
    assert out.shape == (height, width, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=2e-6)
    assert np.allclose(resize(img[:, ::-1], width, height), resize(np.ascontiguousarray(img[:, ::-1]), width, height))


# (input w, h) -> (output w, h): the package's own sizes (sim camera 96x64 and a 640x480 camera to
# the policy's 64x48), then other down, up and mixed (one axis up, the other down) cases, with
# non-integer factors.
RESIZE_CASES = {
    "down 640x480->64x48": (640, 480, 64, 48),
    "down 96x64->64x48": (96, 64, 64, 48),
    "down 64x48->33x20": (64, 48, 33, 20),
    "up 7x5->64x48": (7, 5, 64, 48),
    "up 61x47->64x48": (61, 47, 64, 48),
    "mixed 40x100->64x48": (40, 100, 64, 48),
    "mixed 100x30->64x48": (100, 30, 64, 48),
}


def _float32_tolerance(n: int, size: int, m: int, msize: int) -> float:
    """What float32 rounding alone can make two correct implementations disagree by, for images in
    [0, 1]. Each output value is a convex combination of the input (weights sum to 1, so every
    partial sum stays in [0, 1]) formed as a sum along one axis, then a sum along the other; a sum
    of k terms in float32 is off by at most (k - 1) unit roundoffs (2**-24) times the sum of the
    terms, plus one rounding per stored weight. Along an axis an output pixel reads at most
    ceil(n / size) + 1 input pixels when shrinking (area) and 2 when enlarging (bilinear). Both
    implementations can err, in opposite directions: twice the bound."""

    def taps(n_in: int, n_out: int) -> int:
        return -(-n_in // n_out) + 1 if n_out < n_in else 2

    u = 2.0**-24
    return 2 * (taps(n, size) + taps(m, msize) + 2) * u


@pytest.mark.parametrize("size", RESIZE_CASES.values(), ids=RESIZE_CASES.keys())
def test_resize_is_opencv_area_down_and_inter_linear_up(size):
    """resize's docstring: area averaging when shrinking, bilinear when enlarging, per axis;
    resample_matrix says its bilinear is OpenCV's INTER_LINEAR (pixel centres aligned, edges
    clamped). OpenCV is the reference for both: INTER_AREA is OpenCV's area average and
    INTER_LINEAR its bilinear. Each axis is done by its own cv2.resize call (a single call applies
    one interpolation to both axes, and INTER_AREA is not an area average on an enlarged axis),
    which is exact for both since they are separable. Inputs as the package passes them:
    float32 RGB in [0, 1] (image_to_array's output)."""
    cv2 = pytest.importorskip("cv2")
    w, h, width, height = size
    img = np.random.default_rng(2).random((h, w, 3), dtype=np.float32)
    out = resize(img, width, height)
    assert out.shape == (height, width, 3) and out.dtype == np.float32
    cols = cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA if width < w else cv2.INTER_LINEAR)
    expected = cv2.resize(cols, (width, height), interpolation=cv2.INTER_AREA if height < h else cv2.INTER_LINEAR)
    np.testing.assert_allclose(out, expected, rtol=0, atol=_float32_tolerance(w, width, h, height))
    if width >= w and height >= h:  # enlarging only: one INTER_LINEAR call, the module's claim verbatim
        one_call = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(out, one_call, rtol=0, atol=_float32_tolerance(w, width, h, height))
    if width <= w and height <= h:  # shrinking only: one INTER_AREA call
        one_call = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
        np.testing.assert_allclose(out, one_call, rtol=0, atol=_float32_tolerance(w, width, h, height))


def test_resize_shrinks_by_area_not_by_inter_linear_sampling():
    """Shrinking is an area average, as the docstring says, not OpenCV's INTER_LINEAR, which reads
    only the two input pixels nearest each output centre: a 1-pixel line every 10 columns of a
    640x480 frame shrunk to 64x48 is one tenth of every output pixel's area, while INTER_LINEAR
    samples columns 10 i + 4 and 10 i + 5 (centres at 10 i + 4.5) and never sees it."""
    cv2 = pytest.importorskip("cv2")
    lines = np.zeros((480, 640, 3), np.float32)
    lines[:, ::10] = 1.0
    np.testing.assert_allclose(resize(lines, 64, 48), 0.1, rtol=0, atol=_float32_tolerance(640, 64, 480, 48))
    assert not cv2.resize(lines, (64, 48), interpolation=cv2.INTER_LINEAR).any()  # so it is not the reference


@pytest.mark.parametrize("size", RESIZE_CASES.values(), ids=RESIZE_CASES.keys())
def test_model_frame_is_the_float_resize_rounded_to_8_bits(size):
    """model_frame resizes 8-bit frames with resize's per-axis maps (OpenCV's INTER_AREA when
    shrinking, INTER_LINEAR when enlarging: checked above) and rounds once at the end: within half a
    level (plus float32 rounding) of resize on the float frame and of OpenCV's float resize, and
    rounded, not truncated (truncating would be about half a level low on average; rounding is off
    by a few hundredths, from exact halves rounding up)."""
    cv2 = pytest.importorskip("cv2")
    w, h, width, height = size
    u8 = np.random.default_rng(5).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = model_frame(u8, width, height)
    assert out.shape == (height, width, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    tolerance = 0.5 + 255 * _float32_tolerance(w, width, h, height)
    exact = resize(u8.astype(np.float32) / 255, width, height).astype(np.float64) * 255
    assert np.abs(out - exact).max() <= tolerance
    cols = cv2.resize(
        u8.astype(np.float32), (width, h), interpolation=cv2.INTER_AREA if width < w else cv2.INTER_LINEAR
    )
    opencv = cv2.resize(cols, (width, height), interpolation=cv2.INTER_AREA if height < h else cv2.INTER_LINEAR)
    assert np.abs(out - opencv).max() <= tolerance
    assert abs(float(np.mean(out - exact))) < 0.15


def test_model_frame_reads_every_layout_and_dtype_of_a_frame_alike():
    """The same picture as a C array, views with the channels reversed, an alpha channel, rows
    flipped twice, Fortran or planar order, a mono broadcast, and as float or 16-bit copies: one
    model frame, and always a new array (never a view of the input)."""
    u8 = np.random.default_rng(6).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    alpha = np.concatenate([u8, np.full((37, 53, 1), 200, np.uint8)], axis=2)
    layouts = {
        "bgr view": np.ascontiguousarray(u8[:, :, ::-1])[:, :, ::-1],
        "rgba view": alpha[:, :, :3],
        "bgra view": np.ascontiguousarray(alpha[:, :, [2, 1, 0, 3]])[:, :, 2::-1],
        "rows flipped twice": np.ascontiguousarray(u8[::-1])[::-1],
        "fortran": np.asfortranarray(u8),
        "planar": np.ascontiguousarray(u8.transpose(2, 0, 1)).transpose(1, 2, 0),
        "float32": u8.astype(np.float32) / 255,
        "float64": u8 / 255.0,
        "uint16": u8.astype(np.uint16) * 257,
    }
    for width, height in ((64, 48), (20, 15), (53, 37)):
        reference = model_frame(u8, width, height)
        assert not np.shares_memory(reference, u8)
        for name, image in layouts.items():
            np.testing.assert_array_equal(model_frame(image, width, height), reference, err_msg=name)
    mono = u8[:, :, :1]
    np.testing.assert_array_equal(
        model_frame(np.broadcast_to(mono, (37, 53, 3)), 64, 48), model_frame(np.repeat(mono, 3, axis=2), 64, 48)
    )


def test_model_frame_scales_float_and_16_bit_frames_to_8_bits():
    floats = np.array([[[0.0, 0.5, 1.0], [-0.3, 1.7, np.nan]]], np.float32)
    np.testing.assert_array_equal(model_frame(floats, 2, 1), [[[0, 128, 255], [0, 255, 0]]])
    words = np.array([[[0, 257 * 128, 65535], [128, 129, 32767]]], np.uint16)  # round(v / 257)
    np.testing.assert_array_equal(model_frame(words, 2, 1), [[[0, 128, 255], [0, 1, 127]]])
    for bad, width, match in (
        (np.zeros((4, 4), np.uint8), 2, "RGB frame"),
        (np.zeros((4, 4, 3), np.int32), 2, "int32"),
        (np.zeros((0, 4, 3), np.uint8), 2, "no pixels"),
        (np.zeros((4, 4, 3), np.uint8), 0, "no pixels"),
    ):
        with pytest.raises(ValueError, match=match):
            model_frame(bad, width, 2)


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
    from liquid_control.runtime.sensing import seconds_to_stamp

    sec, nanosec = seconds_to_stamp(seconds)
    assert 0 <= nanosec <= 999_999_999
    stamp = msgs.Image().header.stamp
    stamp.sec, stamp.nanosec = sec, nanosec
    assert stamp_to_seconds(stamp) == pytest.approx(seconds, abs=1e-6)


# --- compressed images (image_transport's compressed plugin) ---------------------------------------
def _compressed(rgb, kind):
    import types

    cv2 = pytest.importorskip("cv2")
    ok, data = cv2.imencode(kind, np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    return types.SimpleNamespace(format=f"rgb8; {kind[1:]} compressed bgr8", data=data.tobytes())


def test_png_decodes_to_what_the_raw_image_gives():
    import types

    from liquid_control.runtime.sensing import compressed_size, compressed_to_array

    rgb = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    msg = _compressed(rgb, ".png")
    assert compressed_size(msg) == ("png", 53, 37)
    raw = types.SimpleNamespace(encoding="rgb8", height=37, width=53, step=53 * 3, is_bigendian=0, data=rgb.tobytes())
    np.testing.assert_array_equal(compressed_to_array(msg), image_to_array(raw))
    np.testing.assert_array_equal(compressed_to_array(msg, dtype=np.uint8), rgb)


def test_jpeg_decodes_at_the_smallest_dct_scale_that_covers_the_model_input():
    from liquid_control.runtime.sensing import compressed_to_array

    y, x = np.mgrid[0:480, 0:640]
    smooth = np.stack([x / 640 * 255, y / 480 * 255, (x + y) / 1120 * 255], -1).astype(np.uint8)
    msg = _compressed(smooth, ".jpg")
    full = compressed_to_array(msg)
    assert full.shape == (480, 640, 3)
    assert np.abs(full - smooth / 255.0).max() < 0.05  # JPEG of a smooth image: close to the original
    scaled = compressed_to_array(msg, 64, 48)
    assert scaled.shape == (60, 80, 3)  # 1/8 scale: the smallest that still covers 64x48
    # The model sees nearly the same input either way (DCT scaling is an area filter of its own).
    assert np.abs(resize(scaled, 64, 48) - resize(full, 64, 48)).mean() < 0.01
    levels = compressed_to_array(msg, 64, 48, dtype=np.uint8)  # the decoded values, no float pass
    assert levels.dtype == np.uint8 and levels.shape == (60, 80, 3)
    np.testing.assert_array_equal(levels, np.rint(scaled * 255))
    np.testing.assert_array_equal(model_frame(levels, 64, 48), model_frame(scaled, 64, 48))


@pytest.mark.parametrize("damage", ["truncated", "garbage_after_header", "not_an_image", "empty"])
def test_corrupt_compressed_images_are_sensor_errors(damage):
    import types

    from liquid_control.runtime.sensing import compressed_to_array

    rgb = np.random.default_rng(4).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    good = _compressed(rgb, ".jpg").data
    data = {
        "truncated": good[: len(good) // 2],
        "garbage_after_header": good[:200] + bytes(500),
        "not_an_image": b"hello world" * 10,
        "empty": b"",
    }[damage]
    with pytest.raises(SensorError):
        compressed_to_array(types.SimpleNamespace(format="jpeg", data=data))


def test_the_size_limit_is_checked_on_the_header_before_decoding():
    import types

    from liquid_control.runtime.sensing import compressed_to_array

    # A PNG header claiming 100000 x 100000 pixels, and nothing behind it to decode.
    header = b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + (100000).to_bytes(4, "big") * 2
    with pytest.raises(SensorError, match="over max_image_pixels"):
        compressed_to_array(types.SimpleNamespace(format="png", data=header + bytes(20)), max_pixels=2_000_000)
