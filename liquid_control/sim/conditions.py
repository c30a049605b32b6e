"""The conditions a model is evaluated in: the nominal world, and changes it never saw in training
(lighting, a winter palette, objects by the road, sensor noise and bias, a slower camera, the
held-out track). Data only, so the command line can list them without loading the simulator."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

HELD_OUT_TRACK = "serpentine"


@dataclass(frozen=True)
class Condition:
    name: str
    description: str
    look: dict | None = None          # changes to the track's Look
    sensors: dict | None = None       # changes to SensorConfig
    track: str | None = None          # another track
    distractors: int = 0              # objects by the road (sim.world.distractors_along)

    def apply(self, track, sensors):
        """(track, sensors) as this condition changes them: a Track (its look) and a SensorConfig.
        The other track, when the condition names one, is the caller's to load."""
        if self.look:
            track = dataclasses.replace(track, look=dataclasses.replace(track.look, **self.look))
        if self.sensors:
            sensors = dataclasses.replace(sensors, **self.sensors)
        return track, sensors


CONDITIONS = {c.name: c for c in (
    Condition("nominal", "the training look and sensors"),
    Condition("dark", "lighting at 35%", look={"light_diffuse": 0.28, "light_ambient": 0.1}),
    Condition("bright", "lighting at 160%", look={"light_diffuse": 1.0, "light_ambient": 0.6}),
    Condition("winter", "snow-white ground, pale road, grey markings",
              look={"ground": (0.92, 0.93, 0.95), "road": (0.55, 0.55, 0.58), "edge": (0.75, 0.75, 0.75)}),
    Condition("camera_noise", "pixel noise, std 0.08", sensors={"image_noise": 0.08}),
    Condition("imu_noise_bias", "gyro noise x6 and bias 0.05 rad/s, accelerometer noise x4 and bias",
              sensors={"gyro_noise": 0.03, "gyro_bias": 0.05, "accel_noise": 0.2, "accel_bias": 0.3}),
    Condition("distractors", "40 coloured boxes and cylinders beside the road", distractors=40),
    Condition("camera_15hz", "camera at 15 Hz instead of 30", sensors={"camera_hz": 15.0}),
    Condition("heldout_track", "the held-out track, never used for training", track=HELD_OUT_TRACK),
)}


