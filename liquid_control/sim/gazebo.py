"""The Gazebo (gz-sim Harmonic) side of the simulator, generated from the same definitions as the MuJoCo
scene (Track, RobotSpec, SensorConfig, liquid_control.topics): the robot model, one world per track,
and the ros_gz_bridge configuration. Nothing here is written by hand; regenerate the shipped files with

    python -m liquid_control.sim.gazebo --output .

Layout under models/gazebo/ (the directory launch files put on GZ_SIM_RESOURCE_PATH, so that every
directory in it with a model.config is a `model://NAME`):

    liquid_robot/{model.config, model.sdf}        the differential-drive robot (robot:=diff_drive), and
    liquid_car/{model.config, model.sdf}          the car (robot:=car), spawned by the launch file
                                                  (`create -file`) under one model name, liquid_robot
    liquid_track_<track>/{model.config, model.sdf, materials/textures/road.png}
    worlds/<track>.sdf                            includes model://liquid_track_<track>

plus config/gazebo_bridge.yaml. Frames follow REP 103 (base_link: x forward, y left, z up), as in
liquid_control.sim.world, whose MuJoCo geometry this mirrors.

An evaluation condition (liquid_control.sim.conditions) exports as the same layout in a directory of
its own (`--condition NAME --output DIR`; the committed copies are the nominal world): its robot
changes (camera pitch and roll, friction, masses), its look (lighting, colours, shadows and ground
patterns, which are in the road texture, and fog, as SDF's <scene><fog>), its sensor noise and biases
and its track. What Gazebo cannot do (command delay, motor gain, motion blur, dropped frames, the
distractors) Condition.not_in_gazebo() names, and the command line prints.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from .. import topics
from ..draw.png import png_bytes
from ..paths import share_path
from .track import Track, track_path
from .world import ROBOTS, RobotSpec

if TYPE_CHECKING:  # .env imports MuJoCo, which a launch file calling spawn_pose() need not have
    from .conditions import Condition
    from .env import SensorConfig

SDF_VERSION = "1.9"  # the newest the SDFormat 12 checker reads; gz-sim Harmonic reads it too
ROBOT_NAME = "liquid_robot"
PIXELS_PER_M = 40.0  # road texture resolution, as the MuJoCo scene's
TEXTURE_PATH = "materials/textures/road.png"  # inside a track's model directory
# The robot's geometry, masses and friction are RobotSpec's, the same numbers world.scene_xml uses.
GRAVITY = 9.81  # m/s^2, MuJoCo's default

# Frame ids in the messages, the same names sim_node stamps (the sensors are named after theirs).
BASE_FRAME, ODOM_FRAME, CAMERA_FRAME, IMU_FRAME = (
    topics.BASE_FRAME,
    topics.ODOM_FRAME,
    topics.CAMERA_FRAME,
    topics.IMU_FRAME,
)

# Systems a world needs, or sensors stay silent and spawning fails (filename, name, configuration).
WORLD_SYSTEMS = (
    ("gz-sim-physics-system", "gz::sim::systems::Physics", ""),
    ("gz-sim-user-commands-system", "gz::sim::systems::UserCommands", ""),
    ("gz-sim-scene-broadcaster-system", "gz::sim::systems::SceneBroadcaster", ""),
    ("gz-sim-sensors-system", "gz::sim::systems::Sensors", "<render_engine>ogre2</render_engine>"),
    ("gz-sim-imu-system", "gz::sim::systems::Imu", ""),
)
DIFF_DRIVE = ("gz-sim-diff-drive-system", "gz::sim::systems::DiffDrive")
ACKERMANN_STEERING = ("gz-sim-ackermann-steering-system", "gz::sim::systems::AckermannSteering")
# Each robot's model directory under models/gazebo (sim.world.ROBOTS' names); every one is spawned as
# the model ROBOT_NAME, so the gz topics and the bridge are the same for all.
ROBOT_DIRS = {"diff_drive": ROBOT_NAME, "car": "liquid_car"}


# --- topics ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BridgedTopic:
    """One ros_gz_bridge entry: a ROS topic (relative, so it lands in the bridge's namespace, except
    the clock), the gz topic it is bridged to, the ROS and gz message types, and the direction."""

    ros_topic: str
    gz_topic: str
    ros_type: str
    gz_type: str
    direction: str  # "GZ_TO_ROS" or "ROS_TO_GZ"

    def bridge_entry(self) -> dict[str, str]:
        return {
            "ros_topic_name": self.ros_topic,
            "gz_topic_name": self.gz_topic,
            "ros_type_name": self.ros_type,
            "gz_type_name": self.gz_type,
            "direction": self.direction,
        }


def _robot_gz_topic(ros_topic: str) -> str:
    # gz-sim's habit for per-model topics (/model/<name>/cmd_vel, /model/<name>/odometry).
    return f"/model/{ROBOT_NAME}/{ros_topic}"


# The one table: the robot SDF publishes and subscribes on these gz topics, and the bridge YAML
# connects them to these ROS topics. gz-sim publishes the world clock on /clock itself.
BRIDGE = (
    BridgedTopic(topics.CLOCK, "/clock", "rosgraph_msgs/msg/Clock", "gz.msgs.Clock", "GZ_TO_ROS"),
    BridgedTopic(topics.CAMERA, _robot_gz_topic(topics.CAMERA), "sensor_msgs/msg/Image", "gz.msgs.Image", "GZ_TO_ROS"),
    BridgedTopic(
        topics.CAMERA_INFO,
        _robot_gz_topic(topics.CAMERA_INFO),
        "sensor_msgs/msg/CameraInfo",
        "gz.msgs.CameraInfo",
        "GZ_TO_ROS",
    ),
    BridgedTopic(topics.IMU, _robot_gz_topic(topics.IMU), "sensor_msgs/msg/Imu", "gz.msgs.IMU", "GZ_TO_ROS"),
    BridgedTopic(topics.ODOM, _robot_gz_topic(topics.ODOM), "nav_msgs/msg/Odometry", "gz.msgs.Odometry", "GZ_TO_ROS"),
    BridgedTopic(
        topics.CMD_VEL, _robot_gz_topic(topics.CMD_VEL), "geometry_msgs/msg/Twist", "gz.msgs.Twist", "ROS_TO_GZ"
    ),
)


def gz_topic(ros_topic: str) -> str:
    """The gz topic bridged to `ros_topic` (a name from liquid_control.topics)."""
    for entry in BRIDGE:
        if entry.ros_topic == ros_topic:
            return entry.gz_topic
    raise KeyError(f"{ros_topic!r} is not bridged; bridged ROS topics: {[e.ros_topic for e in BRIDGE]}")


def bridge_yaml() -> str:
    """config/gazebo_bridge.yaml: ros_gz_bridge's parameter_bridge `config_file`."""
    header = (
        "# ros_gz_bridge topics for the Gazebo simulation (parameter_bridge config_file).\n"
        "# Generated from liquid_control.sim.gazebo.BRIDGE: do not edit; regenerate with\n"
        "#   python -m liquid_control.sim.gazebo --output .\n"
    )
    return header + yaml.safe_dump([e.bridge_entry() for e in BRIDGE], sort_keys=False, default_flow_style=False)


# --- formatting -----------------------------------------------------------------------------------
def _num(value: float) -> str:
    """A number as SDF text: short, and never "-0"."""
    text = f"{float(value):.6g}"
    return "0" if float(text) == 0.0 else text


def _vec(*values: float) -> str:
    return " ".join(_num(v) for v in values)


def _rgba(rgb: Iterable[float], alpha: float = 1.0) -> str:
    return _vec(*rgb, alpha)


def _inertia(mass: float, com: Iterable[float], tensor: np.ndarray) -> str:
    i = tensor
    return f"""<inertial>
        <pose>{_vec(*com, 0, 0, 0)}</pose>
        <mass>{_num(mass)}</mass>
        <inertia>
          <ixx>{_num(i[0, 0])}</ixx><ixy>{_num(i[0, 1])}</ixy><ixz>{_num(i[0, 2])}</ixz>
          <iyy>{_num(i[1, 1])}</iyy><iyz>{_num(i[1, 2])}</iyz><izz>{_num(i[2, 2])}</izz>
        </inertia>
      </inertial>"""


def _box_inertia(mass: float, size: Iterable[float]) -> np.ndarray:
    x, y, z = size
    return mass / 12.0 * np.diag([y * y + z * z, x * x + z * z, x * x + y * y])


def _moved(mass: float, tensor: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Parallel axis theorem: a body's inertia about a point `offset` away from its centre of mass."""
    d = np.asarray(offset, dtype=np.float64)
    return tensor + mass * (np.dot(d, d) * np.eye(3) - np.outer(d, d))


# --- robot ----------------------------------------------------------------------------------------
def base_height(robot: RobotSpec | None = None) -> float:
    """Height of base_link's origin above the ground with the wheels on it (MuJoCo's chassis_z)."""
    robot = robot or RobotSpec()
    return robot.wheel_radius + robot.base_clearance


def chassis_x(robot: RobotSpec) -> float:
    """Where the chassis' centre is ahead of base_link: 0 for the differential drive, half the
    wheelbase for the car (whose base_link is its rear axle)."""
    return robot.wheelbase / 2 if robot.drive == "ackermann" else 0.0


def base_inertial(robot: RobotSpec | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Mass, centre of mass and inertia about it (base_link axes) of the geoms of MuJoCo's base_link
    body: the chassis (a solid box) and, on the differential drive, the caster (a sphere)."""
    r = robot or RobotSpec()
    lx, ly, lz = r.chassis
    h = base_height(r)
    parts = [(r.mass, np.array([chassis_x(r), 0.0, lz / 2]), _box_inertia(r.mass, r.chassis))]
    if r.drive == "diff":  # (mass, centre, inertia about the centre)
        parts.append(
            (
                r.caster_mass,
                np.array([-lx / 2 + r.caster_inset, 0.0, -h / 2]),
                0.4 * r.caster_mass * (h / 2) ** 2 * np.eye(3),
            )
        )
    mass = sum(m for m, _, _ in parts)
    com = sum(m * c for m, c, _ in parts) / mass
    tensor = sum(_moved(m, i, c - com) for m, c, i in parts)
    return mass, com, tensor


def _wheel(side: str, y: float, r: RobotSpec, x: float = 0.0, parent: str = BASE_FRAME) -> str:
    """The link `{side}_wheel` at (x, y) of base_link, rolling about +y on `{side}_wheel_joint`
    from `parent`."""
    z = r.wheel_radius - base_height(r)
    # Wheel links keep base_link's axes (the joint turns about +y, so a positive speed drives both
    # wheels forward, as DiffDrive expects); only the cylinder is turned onto its side.
    cylinder = f"""<pose>0 0 0 {_num(math.pi / 2)} 0 0</pose>
        <geometry><cylinder><radius>{_num(r.wheel_radius)}</radius><length>{_num(r.wheel_width)}</length></cylinder></geometry>"""
    axial = 0.5 * r.wheel_mass * r.wheel_radius**2
    radial = r.wheel_mass * (3 * r.wheel_radius**2 + r.wheel_width**2) / 12
    return f"""
    <link name="{side}_wheel">
      <pose relative_to="{BASE_FRAME}">{_vec(x, y, z, 0, 0, 0)}</pose>
      {_inertia(r.wheel_mass, (0, 0, 0), np.diag([radial, axial, radial]))}
      <collision name="collision">
        {cylinder}
        <surface><friction><ode><mu>{_num(r.wheel_friction)}</mu><mu2>{_num(r.wheel_friction)}</mu2></ode></friction></surface>
      </collision>
      <visual name="visual">
        {cylinder}
        <material><ambient>0.1 0.1 0.1 1</ambient><diffuse>0.1 0.1 0.1 1</diffuse></material>
      </visual>
    </link>
    <joint name="{side}_wheel_joint" type="revolute">
      <parent>{parent}</parent>
      <child>{side}_wheel</child>
      <axis>
        <xyz>0 1 0</xyz>
        <dynamics><damping>{_num(r.wheel_damping)}</damping></dynamics>
      </axis>
    </joint>"""


def _noise(stddev: float, bias: float = 0.0) -> str:
    """An IMU axis' noise (the camera's <noise> is another element: type is a child there)."""
    return (
        f'<noise type="gaussian"><mean>0</mean><stddev>{_num(stddev)}</stddev>'
        f"<bias_mean>{_num(bias)}</bias_mean></noise>"
    )


def horizontal_fov(robot: RobotSpec | None = None) -> float:
    """Gazebo's camera takes the horizontal field of view (rad); RobotSpec gives the vertical one."""
    r = robot or RobotSpec()
    return 2.0 * math.atan(math.tan(math.radians(r.camera_fovy_deg) / 2) * r.image_width / r.image_height)


def robot_sdf(robot: RobotSpec | None = None, sensors: SensorConfig | None = None) -> str:
    """The robot as an SDF model, MuJoCo's scene of it (world.scene_xml): base_link with the chassis,
    a forward camera and an IMU at the rates and noise of SensorConfig, on the gz topics of BRIDGE.
    The differential drive (RobotSpec): a frictionless caster and two wheels on revolute joints
    driven by gz-sim's DiffDrive. The car (CarSpec): base_link at the rear axle, two driven rear
    wheels and two front wheels on kingpin joints, steered by gz-sim's AckermannSteering, which
    takes the same Twist and steers to its curvature. Not reproduced: camera jitter, drops and
    exposure, and the MuJoCo actuators' servo gains and delay (the gz systems set wheel speeds and
    steering angles by their own controllers). gz-sensors gives a nonzero IMU bias_mean a random
    sign at start-up."""
    from .env import SensorConfig

    r, s = robot or RobotSpec(), sensors or SensorConfig()
    lx, ly, lz = r.chassis
    h = base_height(r)
    mid = chassis_x(r)
    mass, com, tensor = base_inertial(r)
    # SensorConfig's biases: gyro on z, accelerometer on x and y.
    gyro_axes = "".join(
        f"\n            <{a}>{_noise(s.gyro_noise, s.gyro_bias if a == 'z' else 0.0)}</{a}>" for a in "xyz"
    )
    accel_axes = "".join(
        f"\n            <{a}>{_noise(s.accel_noise, s.accel_bias if a != 'z' else 0.0)}</{a}>" for a in "xyz"
    )
    car = r.drive == "ackermann"
    colour = "0.8 0.3 0.2 1" if car else "0.2 0.3 0.8 1"
    frame_note = "the rear axle's centre: the point the bicycle model steers" if car else "between the driven wheels"
    return f"""<?xml version="1.0"?>
<!-- Generated by liquid_control.sim.gazebo from {type(r).__name__} and SensorConfig: do not edit. -->
<sdf version="{SDF_VERSION}">
  <model name="{ROBOT_NAME}">
    <!-- The model frame is base_link (REP 103: x forward, y left, z up; {frame_note}), {_num(h)} m
         above the ground when the wheels touch it: spawn it at that height. -->
    <link name="{BASE_FRAME}">
      {_inertia(mass, com, tensor)}
      <collision name="chassis_collision">
        <pose>{_vec(mid, 0, lz / 2, 0, 0, 0)}</pose>
        <geometry><box><size>{_vec(lx, ly, lz)}</size></box></geometry>
      </collision>
      <visual name="chassis_visual">
        <pose>{_vec(mid, 0, lz / 2, 0, 0, 0)}</pose>
        <geometry><box><size>{_vec(lx, ly, lz)}</size></box></geometry>
        <material><ambient>{colour}</ambient><diffuse>{colour}</diffuse></material>
      </visual>{"" if car else _caster(r)}
      <!-- gz-sensors stamps a sensor's messages with its name (its gz_frame_id element is not
           in the SDF spec, and Harmonic's parser warns about it), so sensors are named by frame. -->
      <sensor name="{CAMERA_FRAME}" type="camera">
        <!-- Looks along its +x, pitched down by camera_pitch_deg. -->
        <pose>{_vec(mid + lx / 2, 0, r.camera_height - h, math.radians(r.camera_roll_deg), math.radians(r.camera_pitch_deg), 0)}</pose>
        <always_on>1</always_on>
        <update_rate>{_num(s.camera_hz)}</update_rate>
        <topic>{gz_topic(topics.CAMERA)}</topic>
        <camera>
          <camera_info_topic>{gz_topic(topics.CAMERA_INFO)}</camera_info_topic>
          <horizontal_fov>{_num(horizontal_fov(r))}</horizontal_fov>
          <image>
            <width>{r.image_width}</width>
            <height>{r.image_height}</height>
            <format>R8G8B8</format>
          </image>
          <clip><near>0.01</near><far>100</far></clip>
          <noise><type>gaussian</type><mean>0</mean><stddev>{_num(s.image_noise)}</stddev></noise>
        </camera>
      </sensor>
      <sensor name="{IMU_FRAME}" type="imu">
        <pose>{_vec(mid, 0, lz / 2, 0, 0, 0)}</pose>
        <always_on>1</always_on>
        <update_rate>{_num(s.imu_hz)}</update_rate>
        <topic>{gz_topic(topics.IMU)}</topic>
        <imu>
          <angular_velocity>{gyro_axes}
          </angular_velocity>
          <linear_acceleration>{accel_axes}
          </linear_acceleration>
        </imu>
      </sensor>
    </link>
{_car_running_gear(r, s) if car else _diff_running_gear(r, s)}
  </model>
</sdf>
"""


def _caster(r: RobotSpec) -> str:
    """The differential drive's frictionless caster under the chassis' rear."""
    h = base_height(r)
    pose = _vec(-r.chassis[0] / 2 + r.caster_inset, 0, -h / 2, 0, 0, 0)
    sphere = f"<geometry><sphere><radius>{_num(h / 2)}</radius></sphere></geometry>"
    return f"""
      <collision name="caster_collision">
        <pose>{pose}</pose>
        {sphere}
        <surface><friction><ode><mu>0</mu><mu2>0</mu2></ode></friction></surface>
      </collision>
      <visual name="caster_visual">
        <pose>{pose}</pose>
        {sphere}
        <material><ambient>0.3 0.3 0.3 1</ambient><diffuse>0.3 0.3 0.3 1</diffuse></material>
      </visual>"""


def _odometry(s: SensorConfig) -> str:
    return f"""<odom_topic>{gz_topic(topics.ODOM)}</odom_topic>
      <!-- With every IMU sample, as sim_node publishes odometry. -->
      <odom_publish_frequency>{_num(s.imu_hz)}</odom_publish_frequency>
      <frame_id>{ODOM_FRAME}</frame_id>
      <child_frame_id>{BASE_FRAME}</child_frame_id>"""


def _diff_running_gear(r: RobotSpec, s: SensorConfig) -> str:
    return f"""{_wheel("left", r.wheel_separation / 2, r)}
{_wheel("right", -r.wheel_separation / 2, r)}

    <plugin filename="{DIFF_DRIVE[0]}" name="{DIFF_DRIVE[1]}">
      <left_joint>left_wheel_joint</left_joint>
      <right_joint>right_wheel_joint</right_joint>
      <wheel_separation>{_num(r.wheel_separation)}</wheel_separation>
      <wheel_radius>{_num(r.wheel_radius)}</wheel_radius>
      <topic>{gz_topic(topics.CMD_VEL)}</topic>
      {_odometry(s)}
    </plugin>"""


def _car_running_gear(r, s: SensorConfig) -> str:
    """The car's rear wheels (driven), kingpins and front wheels, and AckermannSteering: the same
    geometry as MuJoCo's (world.CarSpec), the kingpins at the front wheels' centres."""
    z = r.wheel_radius - base_height(r)
    k = r.steering_mass
    parts = []
    for side, y in (("left", r.wheel_separation / 2), ("right", -r.wheel_separation / 2)):
        parts.append(_wheel(f"rear_{side}", y, r))
        parts.append(f"""
    <link name="front_{side}_steer">
      <pose relative_to="{BASE_FRAME}">{_vec(r.wheelbase, y, z, 0, 0, 0)}</pose>
      {_inertia(k, (0, 0, 0), k * 1e-3 * np.eye(3))}
    </link>
    <joint name="front_{side}_steer_joint" type="revolute">
      <parent>{BASE_FRAME}</parent>
      <child>front_{side}_steer</child>
      <axis>
        <xyz>0 0 1</xyz>
        <limit><lower>{_num(-1.5 * r.max_steering)}</lower><upper>{_num(1.5 * r.max_steering)}</upper></limit>
        <dynamics><damping>{_num(r.steering_damping)}</damping></dynamics>
      </axis>
    </joint>""")
        parts.append(_wheel(f"front_{side}", y, r, x=r.wheelbase, parent=f"front_{side}_steer"))
    return (
        "".join(parts)
        + f"""

    <plugin filename="{ACKERMANN_STEERING[0]}" name="{ACKERMANN_STEERING[1]}">
      <left_joint>rear_left_wheel_joint</left_joint>
      <right_joint>rear_right_wheel_joint</right_joint>
      <left_steering_joint>front_left_steer_joint</left_steering_joint>
      <right_steering_joint>front_right_steer_joint</right_steering_joint>
      <!-- The kingpins are at the front wheels' centres: kingpin width is the track. -->
      <kingpin_width>{_num(r.wheel_separation)}</kingpin_width>
      <wheel_separation>{_num(r.wheel_separation)}</wheel_separation>
      <wheel_base>{_num(r.wheelbase)}</wheel_base>
      <wheel_radius>{_num(r.wheel_radius)}</wheel_radius>
      <steering_limit>{_num(r.max_steering)}</steering_limit>
      <topic>{gz_topic(topics.CMD_VEL)}</topic>
      {_odometry(s)}
    </plugin>"""
    )


def _model_config(name: str, description: str) -> str:
    return f"""<?xml version="1.0"?>
<!-- Generated by liquid_control.sim.gazebo: do not edit. -->
<model>
  <name>{name}</name>
  <version>1.0</version>
  <sdf version="{SDF_VERSION}">model.sdf</sdf>
  <description>{description}</description>
</model>
"""


# --- tracks ---------------------------------------------------------------------------------------
def track_model_name(track: Track) -> str:
    """The model:// name of a track's ground (a directory under models/gazebo/)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", track.name):
        raise ValueError(f"track name {track.name!r} cannot name a Gazebo model: use letters, digits, _ and -")
    return f"liquid_track_{track.name}"


def road_texture(
    track: Track, pixels_per_m: float = PIXELS_PER_M
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The road image and the ground rectangle (xmin, ymin, xmax, ymax) its pixels cover exactly
    (Track.texture rounds the pixel count up, so this is up to a pixel beyond Track.bounds)."""
    image, (xmin, _, _, ymax) = track.texture(pixels_per_m)
    h, w, _ = image.shape
    return image, (xmin, ymax - h / pixels_per_m, xmin + w / pixels_per_m, ymax)


def track_sdf(track: Track, pixels_per_m: float = PIXELS_PER_M, robot: RobotSpec | None = None) -> str:
    """A track's ground as a static model: a plane textured with the road image, sized and placed so
    that each pixel lies where Track.texture drew it. gz's unit plane maps texture u along +x and
    row 0 (v = 0) to +y, the image convention of Track.texture (row 0 is ymax). Its friction is the
    RobotSpec's ground_friction (default RobotSpec())."""
    ground_friction = (robot or RobotSpec()).ground_friction
    _, (xmin, ymin, xmax, ymax) = road_texture(track, pixels_per_m)
    name = track_model_name(track)
    plane = f"<geometry><plane><normal>0 0 1</normal><size>{_vec(xmax - xmin, ymax - ymin)}</size></plane></geometry>"
    return f"""<?xml version="1.0"?>
<!-- Generated by liquid_control.sim.gazebo from track {track.name!r}: do not edit. -->
<sdf version="{SDF_VERSION}">
  <model name="{name}">
    <static>true</static>
    <link name="ground">
      <pose>{_vec((xmin + xmax) / 2, (ymin + ymax) / 2, 0, 0, 0, 0)}</pose>
      <collision name="collision">
        {plane}
        <surface><friction><ode><mu>{_num(ground_friction)}</mu><mu2>{_num(ground_friction)}</mu2></ode></friction></surface>
      </collision>
      <visual name="road">
        {plane}
        <material>
          <ambient>1 1 1 1</ambient>
          <diffuse>1 1 1 1</diffuse>
          <specular>0 0 0 1</specular>
          <pbr>
            <metal>
              <albedo_map>model://{name}/{TEXTURE_PATH}</albedo_map>
              <metalness>0</metalness>
              <roughness>1</roughness>
            </metal>
          </pbr>
        </material>
      </visual>
    </link>
  </model>
</sdf>
"""


def _fog(look) -> str:
    # SDF's linear fog has MuJoCo's meaning: distances from the camera where it starts and where it
    # hides everything. The parser accepts it; whether gz-sim's ogre2 scene draws it is not checked here.
    if not look.fog_end:
        return ""
    return f"""
      <fog>
        <color>{_rgba(look.fog_color)}</color>
        <type>linear</type>
        <start>{_num(look.fog_start)}</start>
        <end>{_num(look.fog_end)}</end>
      </fog>"""


def world_sdf(track: Track, timestep: float = 0.001) -> str:
    """The world of a track: physics at the MuJoCo timestep, the systems sensors and spawning need,
    the track's lighting (ambient, and a straight-down light for MuJoCo's headlight), its fog (with
    a fog-coloured background, as MuJoCo's fog-coloured sky) and its ground. The robot is not in it:
    launch files spawn it at spawn_pose(track)."""
    look = track.look
    systems = "\n".join(
        f'    <plugin filename="{filename}" name="{name}">{config}</plugin>' for filename, name, config in WORLD_SYSTEMS
    )
    ambient, diffuse = (look.light_ambient,) * 3, (look.light_diffuse,) * 3
    background = _rgba(look.fog_color) if look.fog_end else "0 0 0 1"  # in fog, the fog's colour
    return f"""<?xml version="1.0"?>
<!-- Generated by liquid_control.sim.gazebo from track {track.name!r}: do not edit.
     Needs GZ_SIM_RESOURCE_PATH to hold share/liquid_control/models/gazebo (model://{track_model_name(track)}). -->
<sdf version="{SDF_VERSION}">
  <world name="{track.name}">
    <physics name="mujoco_step" type="ignored">
      <max_step_size>{_num(timestep)}</max_step_size>
      <real_time_factor>1</real_time_factor>
    </physics>
    <gravity>{_vec(0, 0, -GRAVITY)}</gravity>
{systems}
    <scene>
      <ambient>{_rgba(ambient)}</ambient>
      <!-- Black beyond the ground, like the MuJoCo scene (no skybox). -->
      <background>{background}</background>
      <shadows>false</shadows>
      <grid>false</grid>{_fog(look)}
    </scene>
    <light type="directional" name="headlight">
      <cast_shadows>false</cast_shadows>
      <pose>0 0 10 0 0 0</pose>
      <diffuse>{_rgba(diffuse)}</diffuse>
      <specular>0 0 0 1</specular>
      <direction>0 0 -1</direction>
    </light>
    <include>
      <uri>model://{track_model_name(track)}</uri>
    </include>
  </world>
</sdf>
"""


def spawn_pose(track: Track | str | Path, robot: RobotSpec | None = None) -> tuple[float, float, float, float]:
    """Where launch files spawn the robot (`create -x -y -z -Y`): the track's start, pose_at(0), on
    the centreline facing the driving direction, base_link at base_height() so the wheels touch the
    ground; the pose TrackEnv.reset() starts from. `track` is a Track, a shipped track's name, or a
    track file."""
    if not isinstance(track, Track):
        track = Track.load(track_path(str(track)))
    x, y, yaw = track.pose_at(0.0)
    return x, y, base_height(robot), yaw


# --- export ---------------------------------------------------------------------------------------
def shipped_tracks() -> list[str]:
    """Names of the track files in config/tracks."""
    return sorted(p.stem for p in share_path("config", "tracks").glob("*.yaml"))


def generated_files(
    tracks: Iterable[Track | str] | None = None, condition: Condition | None = None
) -> dict[str, bytes]:
    """Every generated file, by path relative to the package root (models/gazebo/..., config/...),
    for the nominal world or under `condition` (its robot, sensors and look; its track instead of
    `tracks` when it names one). What the condition changes that Gazebo cannot reproduce is
    condition.not_in_gazebo()."""
    from .env import SensorConfig

    if condition is not None and condition.track:
        tracks = [condition.track]
    loaded = [
        item if isinstance(item, Track) else Track.load(track_path(item))
        for item in (shipped_tracks() if tracks is None else tracks)
    ]
    robots, sensors = dict(ROBOTS), SensorConfig()
    if condition is not None:
        robots = {name: condition.robot_spec(spec) for name, spec in robots.items()}
        _, sensors = condition.apply(None, sensors)
        loaded = [condition.apply(track, sensors)[0] for track in loaded]
    robot = robots["diff_drive"]  # the ground's friction is the same for both
    root = "models/gazebo"
    files = {"config/gazebo_bridge.yaml": bridge_yaml()}
    for name, spec in robots.items():
        what = "car with Ackermann steering" if spec.drive == "ackermann" else "differential-drive robot"
        files[f"{root}/{ROBOT_DIRS[name]}/model.sdf"] = robot_sdf(spec, sensors)
        files[f"{root}/{ROBOT_DIRS[name]}/model.config"] = _model_config(
            ROBOT_DIRS[name], f"liquid_control's {what} with a forward camera and an IMU."
        )
    for track in loaded:
        name = track_model_name(track)
        image, _ = road_texture(track)
        files[f"{root}/{name}/model.sdf"] = track_sdf(track, robot=robot)
        files[f"{root}/{name}/model.config"] = _model_config(name, f"The ground and road of track {track.name!r}.")
        files[f"{root}/{name}/{TEXTURE_PATH}"] = png_bytes(image)
        files[f"{root}/worlds/{track.name}.sdf"] = world_sdf(track)
    return {path: data.encode() if isinstance(data, str) else data for path, data in sorted(files.items())}


def export(
    directory: str | Path, tracks: Iterable[Track | str] | None = None, condition: Condition | None = None
) -> list[Path]:
    """Write every generated file under `directory` (the package root for the shipped copies; a
    directory of its own for a condition's)."""
    directory = Path(directory)
    written = []
    for relative, data in generated_files(tracks, condition).items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m liquid_control.sim.gazebo",
        description="Write the Gazebo robot, track worlds and ros_gz_bridge YAML under OUTPUT "
        "(models/gazebo/..., config/gazebo_bridge.yaml).",
    )
    parser.add_argument(
        "--output", required=True, help="directory to write into; the package root for the shipped copies"
    )
    parser.add_argument(
        "--track", action="append", help="track name or file (repeatable); default: every shipped track"
    )
    parser.add_argument(
        "--condition",
        help="an evaluation condition to export instead of the nominal world "
        "(liquid-control eval --condition); write it to a directory of its own",
    )
    args = parser.parse_args(argv)
    condition = None
    if args.condition:
        from .conditions import CONDITIONS

        if args.condition not in CONDITIONS:
            parser.error(f"unknown condition {args.condition!r}; choose from {', '.join(CONDITIONS)}")
        condition = CONDITIONS[args.condition]
    for path in export(args.output, args.track, condition):
        print(path)
    if condition is not None and condition.not_in_gazebo():
        print(f"not reproduced in Gazebo: {', '.join(condition.not_in_gazebo())}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
