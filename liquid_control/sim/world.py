"""The MuJoCo scene of a track: ground with the track's road texture, lighting and fog from the
track's look, and a small differential-drive robot (REP 103: base_link x forward, y left, z up) with
a forward camera and an IMU. Built as MJCF text plus an in-memory PNG texture, from the Track alone."""

from __future__ import annotations

from dataclasses import dataclass

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


def scene_xml(
    track: Track,
    robot: RobotSpec | None = None,
    pixels_per_m: float = 40.0,
    timestep: float = 0.001,
    distractors: list[Distractor] = (),
) -> tuple[str, dict[str, bytes]]:
    """MJCF text and its assets for `track` with `robot` (default RobotSpec()) on it, and any
    distractor objects."""
    robot = robot or RobotSpec()
    texture, (xmin, ymin, xmax, ymax) = track.texture(pixels_per_m)
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    hx, hy = (xmax - xmin) / 2, (ymax - ymin) / 2
    look = track.look
    r = robot
    lx, ly, lz = r.chassis
    cam_axes = camera_xyaxes(r.camera_pitch_deg, r.camera_roll_deg)
    fog_colour, fog_sky = _fog_elements(look)
    wheel_z = r.wheel_radius
    chassis_z = wheel_z + r.base_clearance
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
    <body name="base_link" pos="0 0 {chassis_z:.4f}">
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
        <geom type="cylinder" size="{r.wheel_radius} {r.wheel_width / 2}" euler="1.5708 0 0" mass="{r.wheel_mass}"
              friction="{r.wheel_friction} 0.005 0.0001" rgba="0.1 0.1 0.1 1"/>
      </body>
      <body name="right_wheel" pos="0 {-r.wheel_separation / 2} {wheel_z - chassis_z:.4f}">
        <joint name="right_wheel" type="hinge" axis="0 1 0" damping="{r.wheel_damping}"/>
        <geom type="cylinder" size="{r.wheel_radius} {r.wheel_width / 2}" euler="1.5708 0 0" mass="{r.wheel_mass}"
              friction="{r.wheel_friction} 0.005 0.0001" rgba="0.1 0.1 0.1 1"/>
      </body>
    </body>
  </worldbody>
  <actuator>
    <velocity name="left_wheel" joint="left_wheel" kv="{r.wheel_kv}" ctrlrange="-40 40"/>
    <velocity name="right_wheel" joint="right_wheel" kv="{r.wheel_kv}" ctrlrange="-40 40"/>
  </actuator>
  <sensor>
    <accelerometer name="accel" site="imu"/>
    <gyro name="gyro" site="imu"/>
    <framequat name="orientation" objtype="site" objname="imu"/>
  </sensor>
</mujoco>
"""
    return xml, {TEXTURE_FILE: png_bytes(texture)}
