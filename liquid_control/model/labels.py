"""What a bag's recorded commands mean, and how they become the physical (linear.x m/s, angular.z
rad/s) labels a model learns and commands. No ROS, no torch here.

A robot's commands come in three kinds:
- "twist": geometry_msgs/Twist or TwistStamped in SI units (REP 103: linear.x forward, angular.z
  counter-clockwise, so positive turns left). Used as they are.
- "ackermann": ackermann_msgs/AckermannDrive or AckermannDriveStamped (F1TENTH, VESC stacks):
  `speed` (m/s) and `steering_angle` (rad, positive left). A car-like robot follows the bicycle
  model: yaw rate = speed * tan(steering_angle) / wheelbase, so the wheelbase must be declared.
- "normalised": a joystick's or an RC transmitter's steering and throttle in [-1, 1], recorded in
  a Twist's angular.z (steering) and linear.x (throttle), as hobby cars re-packed into bags carry
  them. speed = throttle * top_speed; yaw rate = steering * max_yaw_rate, or, for a car, the
  bicycle model with steering angle = steering * full_lock. A negative max_yaw_rate or full_lock
  declares a source whose positive steering turns right (DonkeyCar's angle, for one).

The model always works in physical units; the mapping it was trained with is recorded in its file
(provenance "labels"), so that replay can compare a model with the same kind of recorded commands.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

TWIST = "geometry_msgs/msg/Twist"
TWIST_STAMPED = "geometry_msgs/msg/TwistStamped"
ACKERMANN = "ackermann_msgs/msg/AckermannDrive"
ACKERMANN_STAMPED = "ackermann_msgs/msg/AckermannDriveStamped"
COMMAND_TYPES = (TWIST_STAMPED, TWIST, ACKERMANN_STAMPED, ACKERMANN)
STAMPED = (TWIST_STAMPED, ACKERMANN_STAMPED)  # matched to the sensors by header stamp, else by bag time
KINDS = ("twist", "normalised")  # what a Twist label holds; an Ackermann label is always "ackermann"


def family(msgtype: str) -> str:
    """ "ackermann" or "twist": what a command type holds (stamped or not alike)."""
    return "ackermann" if msgtype in (ACKERMANN, ACKERMANN_STAMPED) else "twist"


def command_values(msg, msgtype: str) -> np.ndarray:
    """The two numbers a command message carries, before any mapping: (linear.x, angular.z) of a
    Twist (of a TwistStamped's twist); (speed, steering_angle) of an AckermannDrive (of a
    stamped one's drive)."""
    if msgtype in (ACKERMANN, ACKERMANN_STAMPED):
        drive = msg.drive if msgtype == ACKERMANN_STAMPED else msg
        return np.array([drive.speed, drive.steering_angle], dtype=np.float64)
    twist = msg.twist if msgtype == TWIST_STAMPED else msg
    return np.array([twist.linear.x, twist.angular.z], dtype=np.float64)


@dataclass(frozen=True)
class LabelMapping:
    """How the recorded commands become (linear.x, angular.z): `kind` of a Twist label ("twist" or
    "normalised"), and the robot's declared geometry and limits (0: not declared)."""

    kind: str = "twist"
    wheelbase: float = 0.0  # m, front to rear axle: the bicycle model of an Ackermann car
    top_speed: float = 0.0  # m/s at throttle 1 (normalised labels)
    full_lock: float = 0.0  # rad of steering angle at steering 1 (normalised labels of a car)
    max_yaw_rate: float = 0.0  # rad/s at steering 1 (normalised labels, instead of full_lock)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"label kind {self.kind!r}: choose from {', '.join(KINDS)}")
        for name in ("wheelbase", "top_speed", "full_lock", "max_yaw_rate"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, not {value}")
        if self.wheelbase < 0 or self.top_speed < 0:
            raise ValueError("wheelbase and top_speed cannot be negative")
        if abs(self.full_lock) >= math.pi / 2:
            raise ValueError(f"full_lock {self.full_lock} rad: a steering angle is within +-pi/2")
        if self.kind == "normalised":
            if self.top_speed <= 0:
                raise ValueError("normalised labels need --top-speed (m/s at throttle 1)")
            if (self.full_lock != 0) == (self.max_yaw_rate != 0):
                raise ValueError(
                    "normalised labels need one of --full-lock (rad of steering at steering 1, with "
                    "--wheelbase) or --max-yaw-rate (rad/s at steering 1)"
                )
            if self.full_lock and self.wheelbase <= 0:
                raise ValueError("--full-lock needs --wheelbase (m, front to rear axle) for the bicycle model")

    def check(self, msgtype: str) -> None:
        """ValueError when commands of `msgtype` cannot be mapped with what is declared."""
        if msgtype in (ACKERMANN, ACKERMANN_STAMPED):
            if self.kind == "normalised":
                raise ValueError(f"{msgtype} labels are physical; --normalised-labels is for a Twist's")
            if self.wheelbase <= 0:
                raise ValueError(
                    f"{msgtype} labels (speed, steering angle) need --wheelbase (m, front to rear "
                    "axle): the yaw rate is speed * tan(steering_angle) / wheelbase"
                )
        elif msgtype not in (TWIST, TWIST_STAMPED):
            raise ValueError(f"{msgtype} is not a command type ({', '.join(COMMAND_TYPES)})")

    def physical(self, msgtype: str, values: np.ndarray) -> np.ndarray:
        """(linear.x m/s, angular.z rad/s) of command_values() of messages of `msgtype`: one pair
        (2,) or many (n, 2)."""
        v = np.asarray(values, dtype=np.float64)
        a, b = v[..., 0], v[..., 1]
        if msgtype in (ACKERMANN, ACKERMANN_STAMPED):
            speed, yaw_rate = a, a * np.tan(b) / self.wheelbase
        elif self.kind == "normalised":
            speed = np.clip(a, -1.0, 1.0) * self.top_speed
            steering = np.clip(b, -1.0, 1.0)
            if self.max_yaw_rate:
                yaw_rate = steering * self.max_yaw_rate
            else:
                yaw_rate = speed * np.tan(steering * self.full_lock) / self.wheelbase
        else:
            speed, yaw_rate = a, b
        return np.stack([speed, yaw_rate], axis=-1)

    def record(self, msgtypes=()) -> dict:
        """What a model file keeps of it (provenance "labels"): the label types and the mapping."""
        return {"types": sorted(msgtypes), **asdict(self)}

    @classmethod
    def recorded(cls, record: dict | None) -> LabelMapping:
        """The mapping a model file recorded (twist, when it recorded none: files from before)."""
        if not record:
            return cls()
        return cls(
            **{k: record[k] for k in ("kind", "wheelbase", "top_speed", "full_lock", "max_yaw_rate") if k in record}
        )
