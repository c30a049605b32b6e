"""Expert demonstrations as rosbags: pure pursuit drives TrackEnv with injected perturbations (so
the data shows recoveries), and every camera frame, IMU sample, applied command (/cmd_vel) and
odometry goes into a rosbag2 bag with the topics a real robot has.

Perturbations: the executed command carries noise the expert does not know about (DART), and
now and then a steering kick throws the robot off the line; episodes start off-centre. The
expert's own (clean) command goes on /teacher/cmd_vel, stamped with the sensor event it answers:
that is the label the policy learns, and the topic the controller node adapts from. Episodes are separated in time by a gap larger
than any max_dt, so a reader sees where each begins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import progress, topics
from ..bags.io import ROBOT_KEY, BagWriter, image_msg, imu_msg, odometry_msg, twist_stamped_msg
from ..sim.env import PurePursuit, SensorConfig, TrackEnv
from ..sim.track import Track
from ..sim.world import DEFAULT_ROBOT, robot_spec
from ..topics import absolute

# The robot's topics; the expert's own command goes where the controller node takes a teacher.
TOPICS = {
    "camera": absolute(topics.CAMERA),
    "imu": absolute(topics.IMU),
    "applied": absolute(topics.CMD_VEL),
    "teacher": absolute(topics.TEACHER),
    "odom": absolute(topics.ODOM),
}
_BAR = "{l_bar}{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}, {rate_fmt}]"
EPISODE_GAP = 1000.0  # s between episodes in the bag's sensor time


@dataclass(frozen=True)
class Perturbation:
    command_noise: float = 0.25  # rad/s std on the executed angular command, held per camera frame
    kick_rate: float = 0.15  # kicks per second
    kick_angular: float = 1.0  # rad/s, the size of a kick (random sign)
    kick_duration: float = 0.3  # s
    start_offset: float = 0.25  # m, std of the starting lateral offset
    start_heading: float = 0.2  # rad, std of the starting heading error


def collect(
    tracks: list[Track],
    output: str | Path,
    episodes: int,
    seconds: float,
    seed: int = 0,
    speed: float = 0.5,
    max_speed: float | None = None,
    perturbation: Perturbation | None = None,
    sensors: SensorConfig | None = None,
    robot: str = DEFAULT_ROBOT,
) -> dict:
    """Record `episodes` episodes per track into the bag `output`, driven by `robot` (a name in
    sim.world.ROBOTS); returns a summary."""
    spec = robot_spec(robot)
    p = perturbation or Perturbation()
    rng = np.random.default_rng(seed)
    expert = PurePursuit(speed=speed, max_speed=max_speed)  # max_speed: slows for the curves ahead
    summary = {"robot": robot, "episodes": 0, "camera": 0, "imu": 0, "off_road_events": 0, "seconds": 0.0}
    with (
        BagWriter(output, {ROBOT_KEY: robot}) as bag,
        progress.bar(
            total=len(tracks) * episodes * seconds, desc=f"collect {Path(output).name}", unit="sim s", bar_format=_BAR
        ) as bar,
    ):
        for track in tracks:
            env = TrackEnv(track, robot=spec, sensors=sensors, seed=int(rng.integers(1 << 31)))
            try:
                for _ in range(episodes):
                    env.reset(
                        s=float(rng.uniform(0, track.length)),
                        offset=float(rng.normal(0, p.start_offset)),
                        heading_error=float(rng.normal(0, p.start_heading)),
                        seed=int(rng.integers(1 << 31)),
                    )
                    base = summary["episodes"] * EPISODE_GAP
                    _episode(env, expert, p, rng, bag, base, seconds, summary, bar)
                    summary["episodes"] += 1
                    summary["seconds"] += seconds
            finally:
                env.close()
    return summary


def _episode(
    env: TrackEnv,
    expert: PurePursuit,
    p: Perturbation,
    rng,
    bag: BagWriter,
    base: float,
    seconds: float,
    summary: dict,
    bar,
) -> None:
    noise, kick, kick_until, shown = 0.0, 0.0, -1.0, 0.0
    for event in env.events(seconds):
        stamp = base + event.stamp
        if event.kind == "camera":
            bar.update(event.stamp - shown)
            shown = event.stamp
            bag.write(TOPICS["camera"], image_msg(stamp, event.data), stamp)
            summary["camera"] += 1
            noise = float(rng.normal(0.0, p.command_noise))
            continue
        bag.write(TOPICS["imu"], imu_msg(stamp, event.data), stamp)
        summary["imu"] += 1
        linear, angular = expert(env)
        if event.stamp > kick_until and rng.random() < p.kick_rate / env.sensors.imu_hz:
            kick_until = event.stamp + p.kick_duration
            kick = float(rng.choice([-1.0, 1.0]) * p.kick_angular)
        applied = angular + noise + (kick if event.stamp < kick_until else 0.0)
        env.command(linear, applied)
        bag.write(TOPICS["teacher"], twist_stamped_msg(stamp, linear, angular), stamp)
        bag.write(TOPICS["applied"], twist_stamped_msg(stamp, linear, applied), stamp)
        truth, odom = env.truth(), env.odometry()
        bag.write(TOPICS["odom"], odometry_msg(stamp, truth["x"], truth["y"], truth["yaw"], odom[0], odom[2]), stamp)
        summary["off_road_events"] += int(truth["off_road"])
