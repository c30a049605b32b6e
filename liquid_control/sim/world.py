"""The MuJoCo scene of a track: ground with the track's road texture, lighting and fog from the
track's look, and a robot (REP 103: base_link x forward, y left, z up) with a forward camera and an
IMU: a small differential-drive robot (RobotSpec) or a car with Ackermann steering (CarSpec). Built
as MJCF text plus an in-memory PNG texture, from the Track and the robot's spec alone."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..draw.png import png_bytes
from .track import Track

TEXTURE_FILE = "road.png"


@dataclass(frozen=True)
class RobotSpec:
    wheel_radius: float = 0.05  # m
    wheel_separation: float = 0.24  # m, between wheel centres
    chassis: tuple[float, float, float] = (0.28, 0.20, 0.08)  # m, full size
    mass: float = 2.0  # kg
    camera_height: float = 0.22  # m above ground
    camera_pitch_deg: float = 25.0  # down from horizontal
    camera_fovy_deg: float = 70.0
    image_width: int = 96
    image_height: int = 64
    wheel_kv: float = 2.0  # velocity servo gain (N m s / rad)
    wheel_width: float = 0.03  # m
    wheel_mass: float = 0.1  # kg each
    wheel_damping: float = 0.001  # N m s / rad
    wheel_friction: float = 1.5
    caster_mass: float = 0.05  # kg
    caster_inset: float = 0.03  # m from the chassis' rear face to the caster centre
    base_clearance: float = 0.01  # m from the wheel centres up to base_link
    ground_friction: float = 1.0
    camera_roll_deg: float = 0.0  # about the optical axis, right-handed about forward: + lifts the camera's left
    motor_gain: float = 1.0  # wheel speed the servos are given per wheel speed commanded
    command_delay: float = 0.0  # s from a velocity command to the wheel servos

    drive: ClassVar[str] = "diff"  # how a velocity command moves it: "diff" or "ackermann"

    @property
    def wheel_contacts(self) -> tuple[tuple[float, float], ...]:
        """Where its wheels touch the ground, (forward, left) in base_link (m): what leaving the
        road is judged by (Track.off_road)."""
        half = self.wheel_separation / 2
        return ((0.0, half), (0.0, -half))

    @property
    def max_curvature(self) -> float:
        """The tightest path it can drive (1/m): none for a robot that turns on the spot."""
        return math.inf


@dataclass(frozen=True)
class CarSpec(RobotSpec):
    """A car-like robot: front wheels steered about vertical kingpins with Ackermann geometry (each
    wheel at its own angle about one turning centre on the rear axle's line), rear wheels driven
    (each at its own speed on that circle, as an electronic differential). base_link is the rear
    axle's centre, the point the bicycle model and pure pursuit steer. wheel_separation is the
    track (between the wheel centres, left to right), as for RobotSpec; the wheelbase is from the
    rear axle to the front one. A twist command (linear.x, angular.z) steers it to the curvature
    angular.z / linear.x, as ros2_control's ackermann and bicycle steering controllers take it."""

    wheel_radius: float = 0.04  # m
    wheel_separation: float = 0.2  # m, the track
    wheelbase: float = 0.26  # m, rear axle to front axle
    max_steering: float = 0.45  # rad, the bicycle model's steering angle at full lock
    chassis: tuple[float, float, float] = (0.36, 0.16, 0.06)  # m, full size, centred between the axles
    mass: float = 1.8  # kg
    steering_kp: float = 10.0  # N m / rad, the steering servo's stiffness
    steering_damping: float = 0.05  # N m s / rad, at each kingpin
    steering_mass: float = 0.02  # kg, each kingpin's knuckle

    drive: ClassVar[str] = "ackermann"

    @property
    def wheel_contacts(self) -> tuple[tuple[float, float], ...]:
        half = self.wheel_separation / 2
        return ((0.0, half), (0.0, -half), (self.wheelbase, half), (self.wheelbase, -half))

    @property
    def max_curvature(self) -> float:
        return math.tan(self.max_steering) / self.wheelbase

    def steering(self, linear: float, angular: float) -> float:
        """The bicycle model's steering angle (rad, + left) for a twist: atan(wheelbase * angular /
        linear), within full lock. Standing still (linear 0), it cannot turn: straight ahead."""
        if linear == 0.0:
            return 0.0
        delta = math.atan(self.wheelbase * angular / linear)
        return max(-self.max_steering, min(self.max_steering, delta))

    def wheel_angles(self, delta: float) -> tuple[float, float]:
        """Ackermann geometry: (left, right) front wheel angles for the bicycle angle delta, both
        wheels turning about one centre on the rear axle's line."""
        kappa, half = math.tan(delta) / self.wheelbase, self.wheel_separation / 2
        return (
            math.atan(self.wheelbase * kappa / (1.0 - kappa * half)),
            math.atan(self.wheelbase * kappa / (1.0 + kappa * half)),
        )


# The robots the simulator knows, by the name collect, eval, table, sim_node and the launch files
# take (robot:=car).
ROBOTS: dict[str, RobotSpec] = {"diff_drive": RobotSpec(), "car": CarSpec()}
DEFAULT_ROBOT = "diff_drive"


def robot_spec(name: str) -> RobotSpec:
    """The robot called `name` (ValueError naming the others when there is none)."""
    if name not in ROBOTS:
        raise ValueError(f"unknown robot {name!r}; choose from {', '.join(ROBOTS)}")
    return ROBOTS[name]


@dataclass(frozen=True)
class Distractor:
    """A static object by the road (the "distractors" condition): visible, never collides."""

    x: float
    y: float
    shape: str  # "box" or "cylinder"
    size: float  # m, half width (box) or radius (cylinder)
    height: float  # m
    rgba: tuple[float, float, float, float]


def distractors_along(track: Track, count: int, seed: int = 0) -> list[Distractor]:
    """`count` brightly coloured boxes and cylinders beside the road, at random places along it,
    0.15-0.6 m clear of the road edge on either side (deterministic under `seed`)."""
    rng = np.random.default_rng(seed)
    objects = []
    for _ in range(count):
        side = rng.choice((-1.0, 1.0))
        size = float(rng.uniform(0.05, 0.12))
        clearance = track.road_width / 2 + size + float(rng.uniform(0.15, 0.6))
        x, y, _ = track.pose_at(float(rng.uniform(0, track.length)), side * clearance)
        objects.append(
            Distractor(
                float(x),
                float(y),
                str(rng.choice(("box", "cylinder"))),
                size,
                float(rng.uniform(0.1, 0.4)),
                (*map(float, rng.uniform(0.0, 1.0, 3)), 1.0),
            )
        )
    return objects


def _distractor_geoms(objects: list[Distractor]) -> str:
    lines = []
    for k, o in enumerate(objects):
        size = f"{o.size} {o.size} {o.height / 2}" if o.shape == "box" else f"{o.size} {o.height / 2}"
        lines.append(
            f'    <geom name="distractor_{k}" type="{o.shape}" size="{size}" '
            f'pos="{o.x:.4f} {o.y:.4f} {o.height / 2:.4f}" contype="0" conaffinity="0" '
            f'rgba="{" ".join(f"{c:.3f}" for c in o.rgba)}"/>'
        )
    return "\n".join(lines)


def camera_xyaxes(pitch_deg: float, roll_deg: float = 0.0) -> str:
    """MJCF xyaxes of the front camera in base_link: pitched down by pitch_deg, then rolled by
    roll_deg about its optical axis (the camera's rotation Ry(pitch) Rx(roll) in SDF's convention,
    a camera looking along its +x). MuJoCo cameras look along their -z with y up: x = -y_cam, y = z_cam."""
    pitch = np.radians(pitch_deg)
    if roll_deg == 0.0:
        return f"0 -1 0 {np.sin(pitch):.6f} 0 {np.cos(pitch):.6f}"
    roll = np.radians(roll_deg)
    sp, cp, sr, cr = np.sin(pitch), np.cos(pitch), np.sin(roll), np.cos(roll)
    x_axis = (-sp * sr, -cr, -cp * sr)
    y_axis = (sp * cr, -sr, cp * cr)
    return " ".join(f"{v:.6f}" for v in (*x_axis, *y_axis))


def _fog_elements(look) -> tuple[str, str]:
    """The fog's colour (<visual>) and a sky of that colour (<asset>: MuJoCo fogs geometry, not the
    background), or nothing without fog. Its distances are TrackEnv's to set: MuJoCo gives them in
    units of the model's extent, known once the model is compiled."""
    if not look.fog_end:
        return "", ""
    rgb = " ".join(f"{c:.3f}" for c in look.fog_color)
    return (
        f'\n    <rgba fog="{rgb} 1" haze="{rgb} 1"/>',
        f'\n    <texture name="fog_sky" type="skybox" builtin="flat" rgb1="{rgb}" rgb2="{rgb}" width="16" height="16"/>',
    )


def _wheel_geom(r: RobotSpec) -> str:
    return (
        f'<geom type="cylinder" size="{r.wheel_radius} {r.wheel_width / 2}" euler="1.5708 0 0" mass="{r.wheel_mass}"\n'
        f'              friction="{r.wheel_friction} 0.005 0.0001" rgba="0.1 0.1 0.1 1"/>'
    )


def _diff_body(r: RobotSpec) -> tuple[str, str, str]:
    """base_link of the differential-drive robot (chassis, caster, camera, IMU, two driven wheels),
    no contact exclusions, and its wheels' velocity servos (actuators 0 and 1: left, right)."""
    lx, ly, lz = r.chassis
    cam_axes = camera_xyaxes(r.camera_pitch_deg, r.camera_roll_deg)
    wheel_z = r.wheel_radius
    chassis_z = wheel_z + r.base_clearance
    return (
        f"""    <body name="base_link" pos="0 0 {chassis_z:.4f}">
      <freejoint name="base"/>
      <geom name="chassis" type="box" size="{lx / 2} {ly / 2} {lz / 2}" pos="0 0 {lz / 2:.4f}"
            mass="{r.mass}" rgba="0.2 0.3 0.8 1"/>
      <geom name="caster" type="sphere" size="{chassis_z / 2:.4f}" pos="{-lx / 2 + r.caster_inset:.4f} 0 {-chassis_z / 2:.4f}"
            mass="{r.caster_mass}" friction="0 0 0" rgba="0.3 0.3 0.3 1"/>
      <site name="imu" pos="0 0 {lz / 2:.4f}"/>
      <camera name="front" pos="{lx / 2:.4f} 0 {r.camera_height - chassis_z:.4f}" xyaxes="{cam_axes}"
              fovy="{r.camera_fovy_deg}"/>
      <body name="left_wheel" pos="0 {r.wheel_separation / 2} {wheel_z - chassis_z:.4f}">
        <joint name="left_wheel" type="hinge" axis="0 1 0" damping="{r.wheel_damping}"/>
        {_wheel_geom(r)}
      </body>
      <body name="right_wheel" pos="0 {-r.wheel_separation / 2} {wheel_z - chassis_z:.4f}">
        <joint name="right_wheel" type="hinge" axis="0 1 0" damping="{r.wheel_damping}"/>
        {_wheel_geom(r)}
      </body>
    </body>""",
        "",
        f"""    <velocity name="left_wheel" joint="left_wheel" kv="{r.wheel_kv}" ctrlrange="-40 40"/>
    <velocity name="right_wheel" joint="right_wheel" kv="{r.wheel_kv}" ctrlrange="-40 40"/>""",
    )


def _car_body(r: CarSpec) -> tuple[str, str, str]:
    """base_link of the car (its origin at the rear axle's centre): chassis between the axles, the
    camera at its front, the IMU, two driven rear wheels, and two front wheels on kingpins; the
    front wheels' contacts with the chassis excluded; its actuators: the rear wheels' velocity servos (0 and 1: left, right) and the kingpins' position
    servos (2 and 3: left, right)."""
    lx, ly, lz = r.chassis
    cam_axes = camera_xyaxes(r.camera_pitch_deg, r.camera_roll_deg)
    wheel_z = r.wheel_radius
    chassis_z = wheel_z + r.base_clearance
    mid, half, lock = r.wheelbase / 2, r.wheel_separation / 2, r.max_steering
    k = r.steering_mass
    knuckle = f'<inertial pos="0 0 0" mass="{k}" diaginertia="{k * 1e-3:.6g} {k * 1e-3:.6g} {k * 1e-3:.6g}"/>'
    wheels = []
    for side, y in (("left", half), ("right", -half)):
        wheels.append(f"""      <body name="rear_{side}_wheel" pos="0 {y} {wheel_z - chassis_z:.4f}">
        <joint name="rear_{side}_wheel" type="hinge" axis="0 1 0" damping="{r.wheel_damping}"/>
        {_wheel_geom(r)}
      </body>
      <body name="front_{side}_steer" pos="{r.wheelbase} {y} {wheel_z - chassis_z:.4f}">
        <joint name="front_{side}_steer" type="hinge" axis="0 0 1" range="{-lock * 1.5:.4f} {lock * 1.5:.4f}"
               damping="{r.steering_damping}"/>
        {knuckle}
        <body name="front_{side}_wheel">
          <joint name="front_{side}_wheel" type="hinge" axis="0 1 0" damping="{r.wheel_damping}"/>
          {_wheel_geom(r)}
        </body>
      </body>""")
    body = f"""    <body name="base_link" pos="0 0 {chassis_z:.4f}">
      <freejoint name="base"/>
      <geom name="chassis" type="box" size="{lx / 2} {ly / 2} {lz / 2}" pos="{mid:.4f} 0 {lz / 2:.4f}"
            mass="{r.mass}" rgba="0.8 0.3 0.2 1"/>
      <site name="imu" pos="{mid:.4f} 0 {lz / 2:.4f}"/>
      <camera name="front" pos="{mid + lx / 2:.4f} 0 {r.camera_height - chassis_z:.4f}" xyaxes="{cam_axes}"
              fovy="{r.camera_fovy_deg}"/>
{chr(10).join(wheels)}
    </body>"""
    # The steered wheels swing past the chassis' sides: no contact between them (as none between
    # any body and its parent, MuJoCo's default).
    contacts = "".join(f'\n    <exclude body1="base_link" body2="front_{side}_wheel"/>' for side in ("left", "right"))
    actuators = "\n".join(
        [
            f'    <velocity name="rear_{side}_wheel" joint="rear_{side}_wheel" kv="{r.wheel_kv}" ctrlrange="-60 60"/>'
            for side in ("left", "right")
        ]
        + [
            f'    <position name="front_{side}_steer" joint="front_{side}_steer" kp="{r.steering_kp}" '
            f'ctrlrange="{-lock * 1.5:.4f} {lock * 1.5:.4f}"/>'
            for side in ("left", "right")
        ]
    )
    return body, f"  <contact>{contacts}\n  </contact>\n", actuators


def scene_xml(
    track: Track,
    robot: RobotSpec | None = None,
    pixels_per_m: float = 40.0,
    timestep: float = 0.001,
    distractors: list[Distractor] = (),
) -> tuple[str, dict[str, bytes]]:
    """MJCF text and its assets for `track` with `robot` (default RobotSpec(); a CarSpec for the car)
    on it, and any distractor objects."""
    robot = robot or RobotSpec()
    texture, (xmin, ymin, xmax, ymax) = track.texture(pixels_per_m)
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    hx, hy = (xmax - xmin) / 2, (ymax - ymin) / 2
    look = track.look
    r = robot
    fog_colour, fog_sky = _fog_elements(look)
    body, contacts, actuators = _car_body(r) if r.drive == "ackermann" else _diff_body(r)
    xml = f"""
<mujoco model="liquid_control_{track.name}">
  <compiler angle="radian"/>
  <option timestep="{timestep}" integrator="implicitfast"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="{look.light_ambient} {look.light_ambient} {look.light_ambient}"
               diffuse="{look.light_diffuse} {look.light_diffuse} {look.light_diffuse}" specular="0 0 0"/>
    <global offwidth="{max(r.image_width, 640)}" offheight="{max(r.image_height, 480)}"/>{fog_colour}
  </visual>
  <asset>
    <texture name="road" type="2d" file="{TEXTURE_FILE}"/>{fog_sky}
    <material name="road" texture="road" texrepeat="1 1" texuniform="false" specular="0" shininess="0"/>
  </asset>
  <worldbody>
    <geom name="ground" type="plane" pos="{cx:.4f} {cy:.4f} 0" size="{hx:.4f} {hy:.4f} 0.1"
          material="road" friction="{r.ground_friction} 0.005 0.0001"/>
{_distractor_geoms(list(distractors))}
{body}
  </worldbody>
{contacts}  <actuator>
{actuators}
  </actuator>
  <sensor>
    <accelerometer name="accel" site="imu"/>
    <gyro name="gyro" site="imu"/>
    <framequat name="orientation" objtype="site" objname="imu"/>
  </sensor>
</mujoco>
"""
    return xml, {TEXTURE_FILE: png_bytes(texture)}
