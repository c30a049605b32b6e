"""The conditions a model is evaluated in: the nominal world, and changes it never saw in training.
Two suites (SUITES): "classic", the first table's (lighting, a winter palette, objects by the road,
sensor noise and bias, a slower camera, the held-out track), and "hard", made to tell architectures
apart (shadows, fog, a patterned ground, a tilted or rolled camera, motion blur, heavy pixel noise,
darkness with noise, slippery wheels, a heavier robot, late and weak motors, a biased IMU, dropped
frames, tight turns). Each condition has a group ("visual", "sensing", "dynamics", "track",
"speed") for the table to show the suite by group.

Data only, so the command line can list them without loading the simulator. A condition is applied
in one way everywhere (`liquid-control eval`, `table`, `sim_node`, and the Gazebo export where
Gazebo can reproduce it):

    track, sensors = condition.apply(Track.load(track_path(condition.track or track)), SensorConfig())
    env = TrackEnv(track, sensors=sensors, seed=seed, **condition.env_kwargs())
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

HELD_OUT_TRACK = "serpentine"
TIGHT_TRACK = "hairpin"  # 1.3 m radius turns; the training tracks' are 2 m and more
GROUPS = ("nominal", "visual", "sensing", "dynamics", "track", "speed")

# What the Gazebo export cannot carry (sim.gazebo.generated_files(condition=...) names these):
# gz-sim's DiffDrive sets wheel speeds at once, its camera has no exposure and never drops a frame,
# and the distractors are MuJoCo geoms only.
NOT_IN_GAZEBO = {
    "robot": ("motor_gain", "command_delay"),
    "sensors": ("camera_drop", "camera_jitter", "exposure", "exposure_samples"),
}


@dataclass(frozen=True)
class Condition:
    name: str
    description: str
    look: dict | None = None  # changes to the track's Look (sim.track.Look)
    sensors: dict | None = None  # changes to SensorConfig (sim.env.SensorConfig)
    track: str | None = None  # another track
    distractors: int = 0  # objects by the road (sim.world.distractors_along)
    group: str = "nominal"  # one of GROUPS
    robot: dict | None = None  # changes to RobotSpec (sim.world.RobotSpec): camera pose, friction,
    #                                   masses, motor gain, command delay
    settings: dict | None = None  # changes to the controller's Settings where it runs in-process
    #                                   (eval, table): the speed limit a policy may drive up to
    road_width: float | None = None  # another road width (m) on the track

    def apply(self, track, sensors):
        """(track, sensors) as this condition changes them: a Track (its look) and a SensorConfig.
        The other track, when the condition names one, is the caller's to load. track may be None
        (and comes back None) when only the sensors are wanted."""
        if self.look and track is not None:
            track = dataclasses.replace(track, look=dataclasses.replace(track.look, **self.look))
        if self.road_width is not None and track is not None:
            track = dataclasses.replace(track, road_width=self.road_width)
        if self.sensors:
            sensors = dataclasses.replace(sensors, **self.sensors)
        return track, sensors

    def robot_spec(self, robot=None):
        """The RobotSpec (default RobotSpec()) as this condition changes it."""
        from .world import RobotSpec

        robot = robot or RobotSpec()
        return dataclasses.replace(robot, **self.robot) if self.robot else robot

    def env_kwargs(self, robot=None) -> dict:
        """TrackEnv's other arguments under this condition: the robot and the distractors."""
        return {"robot": self.robot_spec(robot), "distractors": self.distractors}

    def not_in_gazebo(self) -> list[str]:
        """The changes of this condition that the Gazebo export cannot reproduce."""
        missing = [f"robot.{k}" for k in (self.robot or {}) if k in NOT_IN_GAZEBO["robot"]]
        missing += [f"sensors.{k}" for k in (self.sensors or {}) if k in NOT_IN_GAZEBO["sensors"]]
        missing += [f"settings.{k} (the controller node's parameter: set it there)" for k in (self.settings or {})]
        return missing + ([f"{self.distractors} distractors"] if self.distractors else [])


_DARK = {"light_diffuse": 0.28, "light_ambient": 0.1}
_WINTER = {"ground": (0.92, 0.93, 0.95), "road": (0.55, 0.55, 0.58), "edge": (0.75, 0.75, 0.75)}
_SHADOWS = {"shadow": 0.6}
_FOG = {"fog_start": 0.3, "fog_end": 3.0}
_FAST = {"max_linear_speed": 1.0}

CLASSIC = (
    Condition("nominal", "the training look and sensors"),
    Condition("dark", "lighting at 35%", look=_DARK, group="visual"),
    Condition("bright", "lighting at 160%", look={"light_diffuse": 1.0, "light_ambient": 0.6}, group="visual"),
    Condition(
        "winter",
        "snow-white ground, pale road, grey markings",
        look=_WINTER,
        group="visual",
    ),
    Condition("camera_noise", "pixel noise, std 0.08", sensors={"image_noise": 0.08}, group="sensing"),
    Condition(
        "imu_noise_bias",
        "gyro noise x6 and bias 0.05 rad/s, accelerometer noise x4 and bias",
        sensors={"gyro_noise": 0.03, "gyro_bias": 0.05, "accel_noise": 0.2, "accel_bias": 0.3},
        group="sensing",
    ),
    Condition("distractors", "40 coloured boxes and cylinders beside the road", distractors=40, group="visual"),
    Condition("camera_15hz", "camera at 15 Hz instead of 30", sensors={"camera_hz": 15.0}, group="sensing"),
    Condition("heldout_track", "the held-out track, never used for training", track=HELD_OUT_TRACK, group="track"),
)

HARD = (
    # visual
    Condition(
        "shadows",
        "slanted shadow bands across the road every 2 m, 0.7 m long, 60% darker",
        look=_SHADOWS,
        group="visual",
    ),
    Condition(
        "foggy",
        "linear fog from 0.3 m, hiding everything from 3 m on; a fog-grey sky",
        look=_FOG,
        group="visual",
    ),
    Condition(
        "checker_ground",
        "a checkerboard of 0.5 m squares, grass and pale sand, beside the road",
        look={"checker": 0.5},
        group="visual",
    ),
    Condition(
        "camera_tilt",
        "camera pitched 5 degrees up (20 instead of 25 down)",
        robot={"camera_pitch_deg": 20.0},
        group="visual",
    ),
    Condition(
        "camera_roll", "camera rolled 5 degrees about its optical axis", robot={"camera_roll_deg": 5.0}, group="visual"
    ),
    Condition(
        "motion_blur",
        "shutter open the whole frame (1/30 s): the mean of 8 renders over it",
        sensors={"exposure": 1.0 / 30.0, "exposure_samples": 8},
        group="visual",
    ),
    Condition(
        "dark_noise",
        "lighting at 35% and pixel noise std 0.08 together",
        look=_DARK,
        sensors={"image_noise": 0.08},
        group="visual",
    ),
    # sensing
    Condition("heavy_noise", "pixel noise, std 0.3", sensors={"image_noise": 0.3}, group="sensing"),
    Condition(
        "imu_bias",
        "gyro bias 0.2 rad/s on z, accelerometer bias 0.5 m/s^2 on x and y",
        sensors={"gyro_bias": 0.2, "accel_bias": 0.5},
        group="sensing",
    ),
    Condition("frame_drop", "30% of camera frames lost at random", sensors={"camera_drop": 0.3}, group="sensing"),
    # dynamics
    Condition(
        "low_friction",
        "wheel and ground friction 0.1 instead of 1.5 and 1.0: the wheels slip",
        robot={"wheel_friction": 0.1, "ground_friction": 0.1},
        group="dynamics",
    ),
    Condition(
        "heavy",
        "every mass 1.5x (chassis 3 kg, wheels 0.15 kg, caster 0.075 kg)",
        robot={"mass": 3.0, "wheel_mass": 0.15, "caster_mass": 0.075},
        group="dynamics",
    ),
    Condition(
        "command_delay",
        "velocity commands reach the wheels 50 ms late",
        robot={"command_delay": 0.05},
        group="dynamics",
    ),
    Condition(
        "weak_motors", "the wheels turn at 80% of the commanded speed", robot={"motor_gain": 0.8}, group="dynamics"
    ),
    # speed: the policy sets its own speed; this track asks more of it than the training tracks do
    Condition("tight_turns", "the hairpin track: 1.3 m radius turns, for 1.0 m/s", track=TIGHT_TRACK, group="speed"),
    # The controller's speed limit raised from 0.5 to 1.0 m/s: a policy trained on the scheduled
    # expert (collect --max-speed 1.0) drives as fast as it learned; one trained at 0.5 m/s is
    # asked nothing new (it commands 0.5).
    Condition("fast", "speed limit 1.0 m/s (the node's default is 0.5)", settings=_FAST, group="speed"),
    Condition(
        "fast_tight_turns",
        "the hairpin track with the speed limit at 1.0 m/s",
        track=TIGHT_TRACK,
        settings=_FAST,
        group="speed",
    ),
    # Where speed and a visual shift meet (issue 27: the shipped policy kept the hairpin at 1.0 m/s
    # in the training look, and in winter at 0.5 m/s, but not both), and a narrower road.
    Condition(
        "fast_tight_winter",
        "the hairpin track at 1.0 m/s in the winter palette",
        track=TIGHT_TRACK,
        settings=_FAST,
        look=_WINTER,
        group="speed",
    ),
    Condition(
        "fast_tight_fog",
        "the hairpin track at 1.0 m/s in fog (from 0.3 m, opaque from 3 m)",
        track=TIGHT_TRACK,
        settings=_FAST,
        look=_FOG,
        group="speed",
    ),
    Condition(
        "fast_tight_shadows",
        "the hairpin track at 1.0 m/s under slanted shadow bands",
        track=TIGHT_TRACK,
        settings=_FAST,
        look=_SHADOWS,
        group="speed",
    ),
    Condition(
        "narrow_winter",
        "a 0.8 m road instead of 1.0 m, in the winter palette, at 0.5 m/s",
        road_width=0.8,
        look=_WINTER,
        group="track",
    ),
)

CONDITIONS = {c.name: c for c in (*CLASSIC, *HARD)}
# Each suite starts with nominal, the reference the table's out-of-distribution mean leaves out.
SUITES = {"classic": [c.name for c in CLASSIC], "hard": ["nominal", *(c.name for c in HARD)]}
