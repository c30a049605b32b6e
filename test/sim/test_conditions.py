"""Evaluation conditions on real MuJoCo (offscreen EGL): the suites, the nominal world unchanged by
the hard suite's machinery, and each hard condition changing what it says it changes: the image
(shadows, fog, checker ground, camera tilt and roll, motion blur, pixel noise), the sensors (IMU
bias, dropped frames) and the robot's response to the same command (friction, mass, motor gain,
command delay). Bounds come from the conditions' definitions and from optics and mechanics, not from
this code's own output."""

import dataclasses
import math

import numpy as np
import pytest

from liquid_control.sim.conditions import CONDITIONS, GROUPS, SUITES, Condition
from liquid_control.sim.track import Look, Track, track_path

mujoco = pytest.importorskip("mujoco")

from liquid_control.sim.env import PurePursuit, SensorConfig, TrackEnv  # noqa: E402
from liquid_control.sim.world import RobotSpec, scene_xml  # noqa: E402

pytestmark = pytest.mark.sim

CLASSIC = [
    "nominal",
    "dark",
    "bright",
    "winter",
    "camera_noise",
    "imu_noise_bias",
    "distractors",
    "camera_15hz",
    "heldout_track",
]
LUMA = np.array([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def oval():
    return Track.load(track_path("oval"))


def make_env(name: str, sensors: SensorConfig | None = None, seed: int = 0, track: str = "oval") -> TrackEnv:
    """TrackEnv under a condition, built the way eval, table and sim_node build it."""
    c = CONDITIONS[name] if isinstance(name, str) else name
    world, sensors = c.apply(Track.load(track_path(c.track or track)), sensors or SensorConfig())
    return TrackEnv(world, sensors=sensors, seed=seed, **c.env_kwargs())


def camera_stream(env: TrackEnv, seconds: float, expert: PurePursuit | None = None) -> list:
    frames = []
    for ev in env.events(seconds):
        if ev.kind == "camera":
            frames.append((ev.stamp, ev.data))
        elif expert is not None:
            env.command(*expert(env))
    return frames


def luma(image: np.ndarray) -> np.ndarray:
    return image @ LUMA


# --- the suites ------------------------------------------------------------------------------------
def test_suites_keep_the_classic_table_and_list_every_condition_once():
    assert SUITES["classic"] == CLASSIC
    assert SUITES["hard"][0] == "nominal"
    listed = SUITES["classic"] + SUITES["hard"][1:]
    assert sorted(listed) == sorted(CONDITIONS) and len(set(listed)) == len(listed)
    assert list(CONDITIONS)[: len(CLASSIC)] == CLASSIC  # the old table's column order
    for name, c in CONDITIONS.items():
        assert c.name == name and c.group in GROUPS and c.description
        assert (c.group == "nominal") == (name == "nominal")
    for name in SUITES["hard"][1:]:
        c = CONDITIONS[name]
        assert c.look or c.sensors or c.robot or c.track or c.distractors or c.settings or c.road_width, name
    assert {CONDITIONS[n].group for n in SUITES["hard"]} == set(GROUPS)


def test_the_combined_conditions_are_their_parts_together():
    """Speed and a visual shift together on the hairpin track, and a narrow road in winter: each is
    made of the conditions it names, nothing else."""
    fast = CONDITIONS["fast_tight_turns"]
    for name, look in (("fast_tight_winter", "winter"), ("fast_tight_fog", "foggy"), ("fast_tight_shadows", "shadows")):
        c = CONDITIONS[name]
        assert (c.track, c.settings, c.look) == (fast.track, fast.settings, CONDITIONS[look].look), name
        assert not (c.sensors or c.robot or c.distractors or c.road_width), name
    narrow = CONDITIONS["narrow_winter"]
    assert narrow.look == CONDITIONS["winter"].look and narrow.road_width == 0.8
    assert not (narrow.settings or narrow.track or narrow.sensors or narrow.robot)


def test_a_narrow_road_is_narrower_in_the_picture_and_for_the_wheels(oval):
    """narrow_winter's 0.8 m road: at the same pose the camera sees less road, and a robot 0.33 m
    off the centreline has a wheel off it (its wheels reach 0.1 m to each side, the road's edge is
    at 0.4 m) while on the 1.0 m road it is on."""
    narrow = dataclasses.replace(CONDITIONS["narrow_winter"], look=None)  # the width alone
    world, _ = narrow.apply(oval, SensorConfig())
    assert world.road_width == 0.8 and oval.road_width == 1.0
    frames = {}
    for name, track in (("wide", oval), ("narrow", world)):
        env = TrackEnv(track, seed=1)
        env.reset(s=3.0, offset=0.33)
        frames[name] = luma(env.render())
        assert env.truth()["off_road"] == (name == "narrow"), name
        env.close()
    # The road is darker than the grass in the training look: more of the picture is road when wide.
    road = {name: float((f < 0.3).mean()) for name, f in frames.items()}
    assert road["narrow"] < road["wide"], road


def test_classic_conditions_change_what_the_first_table_says_they_change():
    """The first table (models/README.md) says: dark lighting at 35%, bright at 160%, a winter
    palette, camera noise of 0.08, IMU noise and bias, 40 distractors, the camera at 15 Hz and the
    held-out track. Each is measured on the rendered frames and sensor streams, against nominal at
    the same pose and seed; none changes the robot."""
    from liquid_control.learning.report import TRAINING_TRACKS

    frames, streams = {}, {}
    for name in CLASSIC:
        env = make_env(name, sensors=SensorConfig(imu_hz=100.0), seed=5)
        env.reset(s=3.0)
        frames[name] = env.render()
        streams[name] = [(ev.kind, ev.data) for ev in env.events(2.0)]
        env.close()
        assert CONDITIONS[name].robot_spec() == RobotSpec()
    lum = {name: float(luma(f).mean()) for name, f in frames.items()}
    assert lum["dark"] < 0.6 * lum["nominal"] < lum["nominal"] < lum["bright"]
    # Winter: a white and grey palette, brighter and less coloured than the green ground.
    saturation = {n: float((frames[n].max(-1) - frames[n].min(-1)).mean()) for n in ("nominal", "winter")}
    assert lum["winter"] > 1.5 * lum["nominal"] and saturation["winter"] < saturation["nominal"]
    # Camera noise: the residual's spread is the noise's (clipping at 0 and 1 only takes some away).
    noise = CONDITIONS["camera_noise"].sensors["image_noise"]
    assert 0.5 * noise < float((frames["camera_noise"] - frames["nominal"]).std()) <= noise
    for name in ("dark", "bright", "winter", "camera_noise", "imu_noise_bias", "camera_15hz"):
        assert CONDITIONS[name].distractors == 0
    # Distractors: objects in the picture that nominal does not have, the road unchanged.
    assert CONDITIONS["distractors"].distractors > 0 and not np.array_equal(frames["distractors"], frames["nominal"])
    # IMU noise and bias: the gyro's and accelerometer's readings move by their biases on average.
    imu = {n: np.array([d for k, d in streams[n] if k == "imu"]) for n in ("nominal", "imu_noise_bias")}
    bias = CONDITIONS["imu_noise_bias"].sensors
    shift = imu["imu_noise_bias"].mean(0) - imu["nominal"].mean(0)
    # within 5 standard errors of the difference of two means of noisy readings
    tolerance = 5 * (imu["imu_noise_bias"].std(0) + imu["nominal"].std(0)) / math.sqrt(len(imu["nominal"]))
    assert shift[2] == pytest.approx(bias["gyro_bias"], abs=tolerance[2])
    assert shift[3:5] == pytest.approx([bias["accel_bias"]] * 2, abs=max(tolerance[3:5]))
    assert imu["imu_noise_bias"][:, 2].std() > imu["nominal"][:, 2].std()
    # The camera at 15 Hz: half nominal's frames in the same 2 s.
    cameras = {n: sum(k == "camera" for k, _ in streams[n]) for n in ("nominal", "camera_15hz")}
    assert abs(cameras["camera_15hz"] - cameras["nominal"] / 2) <= 1
    # The held-out track is another track, not one the table's training drives use.
    assert CONDITIONS["heldout_track"].track not in TRAINING_TRACKS
    assert not np.array_equal(frames["heldout_track"], frames["nominal"])


def test_dark_noise_is_dark_and_camera_noise_together():
    both, dark, noise = CONDITIONS["dark_noise"], CONDITIONS["dark"], CONDITIONS["camera_noise"]
    assert both.look == dark.look and both.sensors == noise.sensors and not both.robot


# --- nominal is unchanged ----------------------------------------------------------------------------
def test_nominal_is_byte_identical_to_an_unmodified_world(oval):
    """The new fields at their defaults change nothing: nominal (through apply and env_kwargs), a
    plain TrackEnv, and a condition that names every new field at its default value give the same
    scene and the same camera and IMU streams, bit for bit, while the expert drives."""
    defaults = Condition(
        "defaults",
        "every new field at its default",
        look={"fog_start": 0.0, "fog_end": 0.0, "checker": 0.0, "shadow": 0.0},
        sensors={"exposure": 0.0},
        robot={"camera_roll_deg": 0.0, "motor_gain": 1.0, "command_delay": 0.0},
    )

    def stream(env):
        out = []
        for ev in env.events(0.6):
            out.append((ev.kind, ev.stamp, ev.data.copy()))
            if ev.kind == "imu":
                env.command(*PurePursuit(speed=1.0)(env))
        env.close()
        return out

    plain = stream(TrackEnv(oval, seed=9))
    for c in (CONDITIONS["nominal"], defaults):
        world, sensors = c.apply(oval, SensorConfig())
        assert scene_xml(world, c.robot_spec()) == scene_xml(oval)
        other = stream(TrackEnv(world, sensors=sensors, seed=9, **c.env_kwargs()))
        assert len(other) == len(plain)
        for (ka, ta, da), (kb, tb, db) in zip(plain, other, strict=True):
            assert ka == kb and ta == tb and da.dtype == db.dtype and da.tobytes() == db.tobytes()
    assert sum(k == "camera" for k, _, _ in plain) >= 17


# --- visual ----------------------------------------------------------------------------------------
def test_fog_lowers_contrast_far_away_and_greys_the_sky():
    look = CONDITIONS["foggy"].look
    clear, fog = make_env("nominal"), make_env("foggy")
    try:
        for env in (clear, fog):
            env.reset(s=3.0)
        a, b = luma(clear.render()), luma(fog.render())
    finally:
        clear.close()
        fog.close()
    # Camera 0.22 m up, 25 degrees down, 70 degrees vertical view over 64 rows: rows 48-63 see the
    # ground under 0.3 m ahead (before the fog starts), rows 12-27 see it from about 1 m to 4 m.
    near = lambda L: L[48:].std(axis=1).mean()  # noqa: E731
    far = lambda L: L[12:28].std(axis=1).mean()  # noqa: E731
    assert far(b) < 0.7 * far(a)
    assert near(b) == pytest.approx(near(a), rel=0.1)
    # The sky: black in the clear scene, the fog's colour in fog.
    assert a[:4].max() < 0.02
    fog_color = dataclasses.replace(Look(), **look).fog_color
    assert b[:4].mean() == pytest.approx(float(np.dot(fog_color, LUMA)), abs=0.03)


def _ground_edge(image: np.ndarray) -> tuple[float, float]:
    """The far edge of the ground against the black sky: its angle (degrees, counter-clockwise as
    displayed) and mean row, from the first non-black row of each column away from the borders."""
    L = luma(image)
    rows = np.array([np.argmax(L[:, x] > 0.05) for x in range(L.shape[1])], dtype=float)
    x = np.arange(len(rows))[10:-10]
    slope, _ = np.polyfit(x, rows[10:-10], 1)
    return math.degrees(math.atan(-slope)), float(rows[10:-10].mean())


def test_camera_roll_turns_the_image_and_tilt_moves_the_horizon():
    """A roll about the optical axis turns the whole image by the roll angle (the camera's left side
    up: the scene turns counter-clockwise); pitching up by 5 degrees moves a distant edge down by
    about f tan(5 deg) rows, f = 32 / tan(35 deg) = 45.7 px."""
    views = {}
    for name in ("nominal", "camera_roll", "camera_tilt"):
        env = make_env(name)
        env.reset(s=3.0)
        views[name] = _ground_edge(env.render())
        env.close()
    (angle0, row0), (angle_roll, _), (_, row_tilt) = views["nominal"], views["camera_roll"], views["camera_tilt"]
    roll = CONDITIONS["camera_roll"].robot["camera_roll_deg"]
    assert angle_roll - angle0 == pytest.approx(roll, abs=1.5)
    tilt = RobotSpec().camera_pitch_deg - CONDITIONS["camera_tilt"].robot["camera_pitch_deg"]
    f = 32 / math.tan(math.radians(RobotSpec().camera_fovy_deg / 2))
    assert row_tilt - row0 == pytest.approx(f * math.tan(math.radians(tilt)), abs=1.5)


def _high_frequency(image: np.ndarray) -> float:
    """Gradient energy of the lower half of the image: the ground within about 0.6 m, which sweeps
    the most rows per frame when the robot drives (at 1 m/s a 1/30 s exposure spans 3.3 cm of road,
    several rows at the bottom of the image)."""
    L = luma(image)[image.shape[0] // 2 :]
    return float(np.mean(np.diff(L, axis=0) ** 2) + np.mean(np.diff(L, axis=1) ** 2))


def test_motion_blur_smooths_frames_only_while_moving():
    """The same drive twice (physics does not depend on rendering): blurred frames hold less
    high-frequency energy than the sharp ones while the robot drives at 1 m/s, and the same energy
    while it stands still."""
    sharp, blurred = make_env("nominal", seed=3), make_env("motion_blur", seed=3)
    try:
        still_a, still_b = camera_stream(sharp, 0.5), camera_stream(blurred, 0.5)
        expert = PurePursuit(speed=1.0)
        moving_a, moving_b = camera_stream(sharp, 1.5, expert), camera_stream(blurred, 1.5, expert)
    finally:
        sharp.close()
        blurred.close()
    assert [t for t, _ in moving_a] == [t for t, _ in moving_b]
    assert sharp.truth()["speed"] > 0.9
    hf = lambda frames: np.mean([_high_frequency(im) for _, im in frames])  # noqa: E731
    assert hf(still_b[5:]) == pytest.approx(hf(still_a[5:]), rel=0.03)
    assert hf(moving_b[15:]) < 0.9 * hf(moving_a[15:])


def test_shadows_darken_bands_across_the_road(oval):
    look = CONDITIONS["shadows"].look
    shadowed = dataclasses.replace(oval, look=dataclasses.replace(oval.look, **look))
    ppm = 20.0
    plain_img, (xmin, _, _, ymax) = oval.texture(ppm)
    img, _ = shadowed.texture(ppm)

    def pixel(image, s, offset):
        x, y, _ = oval.pose_at(s, offset)
        return image[int((ymax - y) * ppm), int((x - xmin) * ppm)].astype(float)

    ratios = np.array(
        [
            pixel(img, s, 0.25).sum() / pixel(plain_img, s, 0.25).sum()
            for s in np.linspace(0, oval.length, 400, endpoint=False)
        ]
    )
    dark = ratios < 0.75
    spec = dataclasses.replace(oval.look, **look)
    assert dark.mean() == pytest.approx(spec.shadow_width / spec.shadow_spacing, abs=0.06)
    assert np.median(ratios[dark]) == pytest.approx(1 - spec.shadow, abs=0.03)
    assert np.allclose(ratios[~dark], 1.0)
    # And the camera sees them: the road ahead darkens and brightens as the robot drives.
    seen = {}
    for name in ("nominal", "shadows"):
        env = make_env(name, seed=1)
        seen[name] = np.array([luma(im)[48:, 30:66].mean() for _, im in camera_stream(env, 3.0, PurePursuit())])
        env.close()
    assert seen["shadows"].min() < 0.7 * seen["nominal"].min()
    assert seen["shadows"].max() == pytest.approx(seen["nominal"].max(), rel=0.1)


def test_checker_ground_patterns_the_ground_but_not_the_road(oval):
    look = CONDITIONS["checker_ground"].look
    spec = dataclasses.replace(oval.look, **look)
    checkered = dataclasses.replace(oval, look=spec)
    ppm = 20.0
    img, (xmin, _, _, ymax) = checkered.texture(ppm)
    plain, _ = oval.texture(ppm)
    u8 = lambda rgb: tuple(np.round(np.array(rgb) * 255).astype(np.uint8))  # noqa: E731
    beside, on_road = [], []
    for s in np.linspace(0, oval.length, 200, endpoint=False):
        for offset, out in ((1.2, beside), (0.25, on_road)):
            x, y, _ = oval.pose_at(s, offset)
            i, j = int((ymax - y) * ppm), int((x - xmin) * ppm)
            out.append((tuple(img[i, j]), tuple(plain[i, j])))
    colours = [c for c, _ in beside]
    assert set(colours) == {u8(spec.ground), u8(spec.checker_color)}
    assert 0.3 < colours.count(u8(spec.checker_color)) / len(colours) < 0.7
    assert all(a == b for a, b in on_road)


# --- sensing -----------------------------------------------------------------------------------------
def test_pixel_noise_is_heavier_and_dark_noise_is_dark_and_noisy():
    frames = {}
    for name in ("nominal", "heavy_noise", "camera_noise", "dark", "dark_noise"):
        env = make_env(name, seed=2)
        env.reset(s=3.0)
        frames[name] = env.render()
        env.close()
    residual = lambda name, clean: float((frames[name] - frames[clean]).std())  # noqa: E731
    std = CONDITIONS["heavy_noise"].sensors["image_noise"]
    # Clipping to [0, 1] takes some of it on dark pixels, never adds.
    assert 0.5 * std < residual("heavy_noise", "nominal") <= std
    assert residual("heavy_noise", "nominal") > 3 * residual("camera_noise", "nominal")
    assert luma(frames["dark"]).mean() < 0.6 * luma(frames["nominal"]).mean()
    assert 0.5 * 0.08 < residual("dark_noise", "dark") <= 0.08


def test_imu_bias_shifts_the_mean_reading():
    readings = {}
    for name in ("nominal", "imu_bias"):
        env = make_env(name)
        readings[name] = np.array([ev.data for ev in env.events(1.0) if ev.kind == "imu"][50:])
        env.close()
    bias = CONDITIONS["imu_bias"].sensors
    shift = readings["imu_bias"].mean(0) - readings["nominal"].mean(0)
    assert shift[2] == pytest.approx(bias["gyro_bias"], abs=0.005)
    assert shift[3:5] == pytest.approx([bias["accel_bias"]] * 2, abs=0.02)
    assert np.abs(shift[[0, 1, 5]]).max() < 0.02


def test_frame_drop_loses_frames_at_the_configured_rate():
    counts = {}
    for name in ("nominal", "frame_drop"):
        env = make_env(name, sensors=SensorConfig(imu_hz=10.0), seed=4)
        counts[name] = sum(ev.kind == "camera" for ev in env.events(10.0))
        env.close()
    p = CONDITIONS["frame_drop"].sensors["camera_drop"]
    assert counts["nominal"] in (300, 301)
    # 300 frames, each lost with probability p: 4 binomial standard deviations either side.
    assert abs(counts["frame_drop"] - 300 * (1 - p)) < 4 * math.sqrt(300 * p * (1 - p))


# --- dynamics ------------------------------------------------------------------------------------------
def yaw_step(name: str, linear: float = 0.5, angular: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Yaw rate (noise-free gyro at 1 kHz) for 1.5 s after the angular command steps from 0 to
    `angular`, the robot already driving straight at `linear` for 1 s; times from the step, in s.
    A step makes this robot's soft wheel contacts overshoot for tens of ms, sometimes hop; it has
    settled a second later."""
    env = make_env(name, sensors=SensorConfig(imu_hz=1000.0, camera_hz=1.0, gyro_noise=0.0, accel_noise=0.0))
    env.reset(s=3.0)
    env.command(linear, 0.0)
    list(env.events(1.0))
    start = env.time
    env.command(linear, angular)
    samples = np.array([(ev.stamp - start, ev.data[2]) for ev in env.events(1.5) if ev.kind == "imu"])
    env.close()
    return samples[:, 0], samples[:, 1]


def test_motor_gain_and_delay_change_the_yaw_step_response():
    t, nominal = yaw_step("nominal")
    _, weak = yaw_step("weak_motors")
    _, late = yaw_step("command_delay")
    steady = t > 1.0
    gain = CONDITIONS["weak_motors"].robot["motor_gain"]
    assert weak[steady].mean() / nominal[steady].mean() == pytest.approx(gain, abs=0.04)
    delay = CONDITIONS["command_delay"].robot["command_delay"]
    first = lambda w: t[np.argmax(w > 0.15)]  # noqa: E731  half the commanded 0.3 rad/s
    assert first(nominal) < 0.005
    assert first(late) == pytest.approx(delay + first(nominal), abs=0.003)
    assert np.abs(late[t < delay - 0.002]).max() < 0.02  # nothing before the command arrives
    assert late[steady].mean() == pytest.approx(nominal[steady].mean(), rel=0.05)


def test_a_heavier_robot_turns_slower_at_first_and_the_same_in_the_end():
    """The velocity servos give the same torque for the same speed error, so 1.5x the masses (and
    so the inertias) gives about 1/1.5 of the first millisecond's yaw acceleration; the steady turn
    is the servos' speed either way."""
    t, nominal = yaw_step("nominal")
    _, heavy = yaw_step("heavy")
    early = np.argmax(t >= 0.002)
    assert 0.5 < heavy[early] / nominal[early] < 0.85
    steady = t > 1.0
    assert heavy[steady].mean() == pytest.approx(nominal[steady].mean(), rel=0.05)


def test_low_friction_makes_the_wheels_slip():
    """Speed up at 4 m/s^2 from rest: the wheels grip at friction 1.5 (it takes 0.41), and slip at
    0.2, where the ground can give at most 0.2 g = 1.96 m/s^2: the robot falls behind its wheels."""
    slip = {}
    for name in ("nominal", "low_friction"):
        env = make_env(name, sensors=SensorConfig(imu_hz=1000.0, camera_hz=1.0))
        env.reset(s=3.0)
        list(env.events(0.3))
        start = env.time
        for ev in env.events(0.125):
            env.command(min(0.5, 4.0 * (ev.stamp - start)), 0.0)
        rim = float(np.mean(env.data.qvel[6:8])) * env.robot.wheel_radius
        slip[name] = env.truth()["speed"] / rim
        env.close()
    mu = CONDITIONS["low_friction"].robot["wheel_friction"]
    assert slip["nominal"] > 0.85
    assert slip["low_friction"] < (mu * 9.81 * 0.125 + 0.05) / 0.5


# --- speed: the tight track ----------------------------------------------------------------------------
def _turn_radius(track: Track, window: float = 0.5) -> float:
    """The tightest turn's radius (m): curvature averaged over `window` m of road."""
    k = track.curvature()
    n = max(1, int(round(window / (track.length / len(k)))))
    smooth = np.convolve(np.r_[k[-n:], k, k[:n]], np.ones(n) / n, "same")[n:-n]
    return float(1.0 / np.abs(smooth).max())


def test_tight_track_turns_tighter_than_the_training_tracks_both_ways():
    tight = Track.load(track_path(CONDITIONS["tight_turns"].track))
    spacing = tight.length / len(tight.samples)
    assert abs(abs(np.sum(tight.curvature() * spacing)) - 2 * math.pi) < 0.05  # a simple closed loop
    assert 1.1 < _turn_radius(tight) < 1.5  # its 1.3 m turns
    training = min(_turn_radius(Track.load(track_path(name))) for name in ("oval", "kidney"))
    assert _turn_radius(tight) < 0.7 * training
    assert tight.curvature().min() < -0.6 and tight.curvature().max() > 0.6  # right and left turns
    # The other parts of the road stay more than a road width clear of each other.
    p, s = tight.samples, tight.arclength
    along = np.abs(s[:, None] - s[None])
    apart = np.minimum(along, tight.length - along) > 4.0
    assert np.linalg.norm(p[:, None] - p[None], axis=-1)[apart].min() > 2 * tight.road_width


def test_eval_drives_the_conditions_robot_not_the_nominal_one():
    """`eval` and `table` take a condition's robot (here wheels at 80% of the command): the shipped
    policy's mean speed over the same episode drops to about 0.8 of nominal."""
    from liquid_control.learning.configs import EvalConfig
    from liquid_control.learning.evaluate import evaluate
    from liquid_control.paths import DEFAULT_MODEL

    runs = {
        c: evaluate(
            EvalConfig(DEFAULT_MODEL, track="oval", condition=c, episodes=1, seconds=6.0, seed=3), show_progress=False
        )
        for c in ("nominal", "weak_motors")
    }
    ratio = runs["weak_motors"]["mean_speed_mps"] / runs["nominal"]["mean_speed_mps"]
    assert 0.7 < ratio < 0.9, runs


def test_the_scheduled_expert_slows_for_the_curves_ahead_and_keeps_the_road():
    """collect --max-speed: the expert's speed follows the road ahead (the label a policy must learn
    its speed from): near 1.0 m/s where the road is straight, well below it before the hairpin."""
    track = Track.load(track_path("hairpin"))
    expert = PurePursuit(speed=0.5, max_speed=1.0)
    env = TrackEnv(track, seed=2)
    env.reset(s=0.0)
    speeds, off = [], False
    try:
        for event in env.events(30.0):
            if event.kind == "imu":
                linear, angular = expert(env)
                env.command(linear, angular)
                speeds.append(linear)
                off = off or env.truth()["off_road"]
    finally:
        env.close()
    speeds = np.array(speeds)
    assert not off
    assert speeds.max() == pytest.approx(1.0) and speeds.min() < 0.75  # sqrt(0.3 / 0.8) = 0.61 at the hairpin
    assert 0.1 < (speeds > 0.95).mean() < 0.9  # both regimes, for a good part of the lap each
    assert PurePursuit(speed=0.5).target_speed(track, 0.0) == 0.5  # without max_speed: constant
