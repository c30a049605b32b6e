"""Tracks as data: the shipped track files, their geometry, their texture, and bad files."""

import math

import numpy as np
import pytest

from liquid_control.sim.track import Track, TrackError, track_path

pytestmark = pytest.mark.sim

SHIPPED = ["oval", "kidney", "serpentine"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_tracks_are_simple_closed_loops(name):
    track = Track.load(track_path(name))
    assert 25.0 < track.length < 60.0
    # A simple closed curve turns exactly once.
    spacing = track.length / len(track.samples)
    assert abs(abs(np.sum(track.curvature() * spacing)) - 2 * math.pi) < 0.05
    assert np.all(np.abs(track.curvature()) < 1.0 / (track.road_width / 2))  # inner edge never folds


@pytest.mark.parametrize("name", SHIPPED)
def test_project_and_pose_at_are_inverse(name):
    track = Track.load(track_path(name))
    for s in np.linspace(0, track.length, 13, endpoint=False):
        for offset in (-0.4, 0.0, 0.25):
            x, y, yaw = track.pose_at(s, offset)
            p = track.project(x, y)
            assert p["xte"] == pytest.approx(offset, abs=2e-3)  # positive = left of driving direction
            assert min(abs(p["s"] - s), track.length - abs(p["s"] - s)) < 0.02
            assert abs(math.remainder(p["heading"] - yaw, 2 * math.pi)) < 0.05


def test_progress_grows_along_the_loop_and_wraps():
    track = Track.load(track_path("oval"))
    along = np.linspace(0, track.length * 1.5, 40)
    s = np.array([track.project(*track.pose_at(x)[:2])["s"] for x in along])
    assert np.all((s >= 0) & (s < track.length))
    # Moving forward always adds progress, modulo one lap.
    np.testing.assert_allclose(np.mod(np.diff(s), track.length), np.diff(along), atol=0.02)


def test_oval_curvature_sign_follows_the_turn_direction():
    track = Track.load(track_path("oval"))  # counter-clockwise: always turning left
    assert np.all(track.curvature() > 0)
    assert track.project(*track.pose_at(0.0)[:2])["curvature"] > 0


def test_texture_draws_road_markings_and_ground():
    track = Track.load(track_path("oval"))
    ppm = 20.0
    img, (xmin, ymin, xmax, ymax) = track.texture(ppm)

    def pixel(x, y):
        return img[int((ymax - y) * ppm), int((x - xmin) * ppm)]

    look = track.look
    as_u8 = lambda rgb: np.round(np.array(rgb) * 255).astype(np.uint8)  # noqa: E731
    x, y, _ = track.pose_at(5.0, offset=0.25)
    np.testing.assert_array_equal(pixel(x, y), as_u8(look.road))
    x, y, _ = track.pose_at(5.0, offset=track.road_width / 2 - 0.02)
    np.testing.assert_array_equal(pixel(x, y), as_u8(look.edge))
    x, y, _ = track.pose_at(5.0, offset=1.2)
    np.testing.assert_array_equal(pixel(x, y), as_u8(look.ground))
    # The dashed centre line: some centreline pixels are marking, some are road.
    colours = {tuple(pixel(*track.pose_at(s)[:2])) for s in np.linspace(0, 4, 40)}
    assert tuple(as_u8(look.center)) in colours and tuple(as_u8(look.road)) in colours


def test_any_track_file_by_path(tmp_path):
    path = tmp_path / "square.yaml"
    path.write_text("road_width: 0.8\ncenterline: [[0, 0], [6, 0], [6, 6], [0, 6]]\n")
    track = Track.load(track_path(str(path)))
    assert track.name == "square" and track.road_width == 0.8


@pytest.mark.parametrize(
    "text,match",
    [
        (None, "no such file"),
        ("centerline: [[0, 0], [1", "not valid YAML"),
        ("road_width: 1.0\ncenterline: [[0, 0], [1, 0], [1, 1]]\n", "at least 4 points"),
        ("road_width: 50\ncenterline: [[0, 0], [9, 0], [9, 9], [0, 9]]\n", "road_width must be in"),
        ("road_width: 1.0\ncenterline: [[0, 0], [9, 0], [9, 9], [0, 9]]\nlanes: 2\n", "unknown keys"),
        ("road_width: 1.0\ncenterline: [[0, 0], [9, 0], [9, 9], [0, 9]]\nlook: {road: [2, 0, 0]}\n", "look.road"),
        ("road_width: 1.0\ncenterline: [[0, 0], [9, 0], [0.4, 0.3], [9, 9], [0, 9]]\n", "overlaps itself"),
    ],
)
def test_bad_track_files_name_the_file_and_the_problem(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(TrackError, match=match) as info:
        Track.load(path)
    assert "bad.yaml" in str(info.value)
