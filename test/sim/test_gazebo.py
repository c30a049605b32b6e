"""The Gazebo files: the committed copies are exactly what liquid_control.sim.gazebo generates from the
track, robot and sensor definitions; read as Gazebo reads them (the real SDFormat parser's own output,
`ign sdf -p`), their links, joints, plugins, sensors and topics are the ones RobotSpec, SensorConfig,
the bridge YAML and liquid_control.topics name; they mirror the compiled MuJoCo scene; and the parser's
validation (`ign sdf -k`) accepts every one of them. Without `ign` the parser tests skip."""

import math
import os
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from liquid_control import topics
from liquid_control.sim import gazebo
from liquid_control.sim.env import SensorConfig
from liquid_control.sim.track import Track
from liquid_control.sim.world import RobotSpec

pytestmark = pytest.mark.sim

ROOT = Path(__file__).resolve().parents[2]
GAZEBO_DIR = ROOT / "models" / "gazebo"  # what launch files put on GZ_SIM_RESOURCE_PATH
BRIDGE_FILE = ROOT / "config" / "gazebo_bridge.yaml"
TRACK_FILES = sorted((ROOT / "config" / "tracks").glob("*.yaml"))
REGENERATE = "python -m liquid_control.sim.gazebo --output ."

# The type pairs of /work/shared/GAZEBO.md's table, and the bridge's directions.
TYPE_PAIRS = {
    ("rosgraph_msgs/msg/Clock", "gz.msgs.Clock"),
    ("sensor_msgs/msg/Image", "gz.msgs.Image"),
    ("sensor_msgs/msg/CameraInfo", "gz.msgs.CameraInfo"),
    ("sensor_msgs/msg/Imu", "gz.msgs.IMU"),
    ("geometry_msgs/msg/Twist", "gz.msgs.Twist"),
    ("geometry_msgs/msg/TwistStamped", "gz.msgs.Twist"),
    ("nav_msgs/msg/Odometry", "gz.msgs.Odometry"),
}
BRIDGE_KEYS = {"ros_topic_name", "gz_topic_name", "ros_type_name", "gz_type_name", "direction"}


@pytest.fixture(scope="module")
def generated() -> dict[str, bytes]:
    return gazebo.generated_files([str(p) for p in TRACK_FILES])


@pytest.fixture(scope="module")
def bridge() -> list[dict]:
    return yaml.safe_load(BRIDGE_FILE.read_text())


def bridged(entries: list[dict], ros_topic: str) -> dict:
    (entry,) = [e for e in entries if e["ros_topic_name"] == ros_topic]
    return entry


def png_pixels(data: bytes) -> np.ndarray:
    """(h, w, 3) uint8 from an 8-bit RGB PNG with unfiltered rows (what liquid_control.draw.png writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, depth, colour, _, _, interlace = header
    assert (depth, colour, interlace) == (8, 2, 0)
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert not rows[:, 0].any(), "filtered rows: not a file liquid_control.draw.png wrote"
    return rows[:, 1:].reshape(h, w, 3)


def sdf_root(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "sdf" and root.get("version") == gazebo.SDF_VERSION
    return root


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split()]


def resolve_model_uri(uri: str) -> Path:
    """model://NAME/rest as gz resolves it with GZ_SIM_RESOURCE_PATH = models/gazebo."""
    assert uri.startswith("model://"), uri
    return GAZEBO_DIR / uri[len("model://") :]


# --- the real SDFormat parser (`ign sdf`, SDFormat 12) --------------------------------------------
SDF_FILES = sorted(GAZEBO_DIR.rglob("*.sdf"))
ROBOT_SDF = "liquid_robot/model.sdf"  # keys of `parsed`: paths relative to GAZEBO_DIR


def world_key(track: Track) -> str:
    return f"worlds/{track.name}.sdf"


def ign_sdf(flag: str, path: Path, cwd: Path) -> subprocess.CompletedProcess:
    """`ign sdf FLAG path` with our models findable as gz finds them (SDF_PATH, which gz-sim fills
    from GZ_SIM_RESOURCE_PATH), run away from models/gazebo so nothing resolves by accident."""
    env = dict(os.environ, SDF_PATH=str(GAZEBO_DIR))
    return subprocess.run(
        ["ign", "sdf", flag, str(path)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def ign_problems(output: str) -> list[str]:
    """The lines of ign's output that report a problem; not the harmless missing-backtrace notice."""
    return [
        line
        for line in output.splitlines()
        if "libignition-tools-backward" not in line and ("Error" in line or "Unable to convert" in line)
    ]


def ign_check(path: Path, cwd: Path) -> tuple[bool, str]:
    """`ign sdf -k`: the parser's validation, frame graphs included."""
    result = ign_sdf("-k", path, cwd)
    output = result.stdout + result.stderr
    ok = (
        result.returncode == 0
        and any(line.strip() == "Valid." for line in output.splitlines())
        and not ign_problems(output)
    )
    return ok, output


def ign_print(path: Path, cwd: Path) -> ET.Element:
    """`ign sdf -p`: the file as the parser understood it, which is what gz-sim loads: converted to
    its SDF version, <include>s resolved to the included model, required elements given their
    defaults. Elements the spec does not know are copied through under their own (wrong) name, so a
    misspelt element is absent here under the right one. Numbers come back with 6 significant digits."""
    result = ign_sdf("-p", path, cwd)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and not ign_problems(output), f"ign sdf -p {path}:\n{output}"
    root = ET.fromstring(result.stdout)
    assert root.tag == "sdf" and root.get("version") == gazebo.SDF_VERSION, result.stdout[:200]
    return root


@pytest.fixture(scope="module")
def ign():
    if shutil.which("ign") is None:
        pytest.skip("`ign` is not installed (apt-get install -y libsdformat12-12 libsdformat-dev ignition-tools)")
    probe = subprocess.run(["ign", "sdf", "--help"], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, f"`ign sdf` is missing (install libsdformat-dev): {probe.stdout}{probe.stderr}"


@pytest.fixture(scope="module")
def parsed(ign, tmp_path_factory) -> dict[str, ET.Element]:
    """The parser's view of every committed SDF file, by path relative to models/gazebo."""
    cwd = tmp_path_factory.mktemp("ign")
    return {str(p.relative_to(GAZEBO_DIR)): ign_print(p, cwd) for p in SDF_FILES}


# SDF text carries 6 significant digits (the generator writes %.6g and the parser prints no more),
# so a number read back is within 5e-6 of the true value, relatively; twice that allows a rounding
# on each side of a comparison.
SDF_REL = 1e-5


# --- (a) the committed files are the generated ones -----------------------------------------------
def test_committed_files_equal_freshly_generated(generated):
    committed = {str(p.relative_to(ROOT)) for p in GAZEBO_DIR.rglob("*") if p.is_file()} | {"config/gazebo_bridge.yaml"}
    assert committed == set(generated), f"models/gazebo is stale: regenerate with `{REGENERATE}`"
    for relative, data in generated.items():
        on_disk = (ROOT / relative).read_bytes()
        if relative.endswith(".png"):  # compare pixels: zlib builds may compress differently
            assert np.array_equal(png_pixels(on_disk), png_pixels(data)), f"{relative}: regenerate with `{REGENERATE}`"
        else:
            assert on_disk.decode() == data.decode(), f"{relative}: regenerate with `{REGENERATE}`"


def test_every_track_file_has_a_world_and_a_ground_model():
    for path in TRACK_FILES:
        track = Track.load(path)
        assert (GAZEBO_DIR / "worlds" / f"{track.name}.sdf").is_file()
        assert (GAZEBO_DIR / gazebo.track_model_name(track) / "model.sdf").is_file()


def test_command_line_writes_the_files(tmp_path, generated):
    assert gazebo.main(["--output", str(tmp_path), "--track", str(TRACK_FILES[0])]) == 0
    name = Track.load(TRACK_FILES[0]).name
    for relative in (
        "models/gazebo/liquid_robot/model.sdf",
        f"models/gazebo/worlds/{name}.sdf",
        "config/gazebo_bridge.yaml",
    ):
        assert (tmp_path / relative).read_bytes() == generated[relative]


# --- (b) what Gazebo reads (the parser's view) says what RobotSpec, SensorConfig, the bridge YAML --
# --- and liquid_control.topics say -----------------------------------------------------------------
def test_parsed_robot_drives_with_diff_drive_on_the_bridged_topics(parsed, bridge):
    robot = RobotSpec()
    model = parsed[ROBOT_SDF].find("model")
    assert model.get("name") == gazebo.ROBOT_NAME
    links = {link.get("name"): link for link in model.findall("link")}
    assert set(links) == {"base_link", "left_wheel", "right_wheel"}
    # RobotSpec's masses: chassis and caster make base_link.
    assert float(links["base_link"].findtext("inertial/mass")) == pytest.approx(
        robot.mass + robot.caster_mass, rel=SDF_REL
    )
    joints = {joint.get("name"): joint for joint in model.findall("joint")}
    assert set(joints) == {"left_wheel_joint", "right_wheel_joint"}
    for side in ("left", "right"):
        wheel, joint = links[f"{side}_wheel"], joints[f"{side}_wheel_joint"]
        assert joint.get("type") == "revolute"
        assert (joint.findtext("parent"), joint.findtext("child")) == ("base_link", f"{side}_wheel")
        assert floats(joint.findtext("axis/xyz")) == [0, 1, 0]  # +y: positive speed rolls forward
        assert joint.find("axis/xyz").get("expressed_in") in (None, "__model__", "base_link")
        pose = wheel.find("pose")
        assert pose.get("relative_to") == "base_link"
        assert floats(pose.text)[1] == pytest.approx(
            robot.wheel_separation / 2 * (1 if side == "left" else -1), rel=SDF_REL
        )
        assert floats(pose.text)[3:] == [0, 0, 0]  # wheel frames keep base_link's axes: +y is the axle
        assert float(wheel.findtext("inertial/mass")) == pytest.approx(robot.wheel_mass, rel=SDF_REL)
        for part in ("collision", "visual"):
            cylinder = wheel.find(f"{part}/geometry/cylinder")
            assert float(cylinder.findtext("radius")) == pytest.approx(robot.wheel_radius, rel=SDF_REL)
            assert float(cylinder.findtext("length")) == pytest.approx(robot.wheel_width, rel=SDF_REL)
            roll, pitch, yaw = floats(wheel.findtext(f"{part}/pose"))[3:]  # the cylinder on its side
            assert abs(roll) == pytest.approx(math.pi / 2, rel=SDF_REL) and (pitch, yaw) == (0, 0)

    (drive,) = model.findall("plugin")
    assert (
        (drive.get("filename"), drive.get("name"))
        == gazebo.DIFF_DRIVE
        == ("gz-sim-diff-drive-system", "gz::sim::systems::DiffDrive")
    )
    assert drive.findtext("left_joint") == "left_wheel_joint" and drive.findtext("right_joint") == "right_wheel_joint"
    assert float(drive.findtext("wheel_separation")) == pytest.approx(robot.wheel_separation, rel=SDF_REL)
    assert float(drive.findtext("wheel_radius")) == pytest.approx(robot.wheel_radius, rel=SDF_REL)
    cmd = bridged(bridge, topics.CMD_VEL)
    assert drive.findtext("topic") == cmd["gz_topic_name"]
    assert (cmd["direction"], cmd["ros_type_name"], cmd["gz_type_name"]) == (
        "ROS_TO_GZ",
        "geometry_msgs/msg/Twist",
        "gz.msgs.Twist",
    )
    odom = bridged(bridge, topics.ODOM)
    assert drive.findtext("odom_topic") == odom["gz_topic_name"]
    assert (odom["direction"], odom["gz_type_name"]) == ("GZ_TO_ROS", "gz.msgs.Odometry")
    assert float(drive.findtext("odom_publish_frequency")) == SensorConfig().imu_hz
    assert (drive.findtext("frame_id"), drive.findtext("child_frame_id")) == ("odom", "base_link")


def test_parsed_robot_sensors_publish_at_the_configured_rates_on_the_bridged_topics(parsed, bridge):
    robot, sensors = RobotSpec(), SensorConfig()
    model = parsed[ROBOT_SDF].find("model")
    assert [s.get("name") for s in model.iter("sensor")] == ["camera_link", "imu_link"]  # both on base_link
    base = model.find("link[@name='base_link']")
    by_type = {s.get("type"): s for s in base.findall("sensor")}
    assert set(by_type) == {"camera", "imu"}

    camera = by_type["camera"]
    assert camera.get("name") == "camera_link"  # gz-sensors' frame_id, as sim_node's
    assert camera.findtext("always_on") in ("1", "true")
    assert float(camera.findtext("update_rate")) == sensors.camera_hz
    image = bridged(bridge, topics.CAMERA)
    assert image["ros_topic_name"] == topics.CAMERA
    assert camera.findtext("topic") == image["gz_topic_name"]
    assert (image["direction"], image["ros_type_name"], image["gz_type_name"]) == (
        "GZ_TO_ROS",
        "sensor_msgs/msg/Image",
        "gz.msgs.Image",
    )
    info = bridged(bridge, topics.CAMERA_INFO)
    assert camera.findtext("camera/camera_info_topic") == info["gz_topic_name"]
    assert (info["direction"], info["ros_type_name"], info["gz_type_name"]) == (
        "GZ_TO_ROS",
        "sensor_msgs/msg/CameraInfo",
        "gz.msgs.CameraInfo",
    )
    # The image sim_node renders (RobotSpec), so the controller sees the same frame size either way.
    assert int(camera.findtext("camera/image/width")) == robot.image_width == 96
    assert int(camera.findtext("camera/image/height")) == robot.image_height == 64
    assert camera.findtext("camera/image/format") == "R8G8B8"  # rgb8, an encoding sensing reads
    hfov = float(camera.findtext("camera/horizontal_fov"))
    vfov = 2 * math.atan(math.tan(hfov / 2) * robot.image_height / robot.image_width)
    assert math.degrees(vfov) == pytest.approx(robot.camera_fovy_deg, abs=1e-3)
    _, _, _, roll, pitch, yaw = floats(camera.findtext("pose"))
    assert (roll, yaw) == (0, 0) and math.degrees(pitch) == pytest.approx(robot.camera_pitch_deg, abs=1e-4)

    imu = by_type["imu"]
    assert imu.get("name") == "imu_link"
    assert imu.findtext("always_on") in ("1", "true")
    assert float(imu.findtext("update_rate")) == sensors.imu_hz
    entry = bridged(bridge, topics.IMU)
    assert imu.findtext("topic") == entry["gz_topic_name"]
    assert (entry["direction"], entry["ros_type_name"], entry["gz_type_name"]) == (
        "GZ_TO_ROS",
        "sensor_msgs/msg/Imu",
        "gz.msgs.IMU",
    )
    for group, stddev in (("angular_velocity", sensors.gyro_noise), ("linear_acceleration", sensors.accel_noise)):
        for axis in "xyz":
            noise = imu.find(f"imu/{group}/{axis}/noise")
            assert noise.get("type") == "gaussian"
            assert float(noise.findtext("stddev")) == pytest.approx(stddev, rel=SDF_REL)


def test_every_gz_topic_in_the_parsed_robot_is_bridged_and_back(parsed, bridge):
    model = parsed[ROBOT_SDF].find("model")
    in_sdf = {e.text for e in model.iter() if e.tag in ("topic", "odom_topic", "camera_info_topic")}
    robot_topics = {e["gz_topic_name"] for e in bridge if e["ros_topic_name"] != topics.CLOCK}
    assert in_sdf == robot_topics
    assert robot_topics == {
        f"/model/{gazebo.ROBOT_NAME}/{name}"
        for name in (topics.CAMERA, topics.CAMERA_INFO, topics.IMU, topics.ODOM, topics.CMD_VEL)
    }


@pytest.mark.parametrize("track_file", TRACK_FILES, ids=lambda p: p.stem)
def test_parsed_world_has_the_systems_light_and_ground_and_no_robot(parsed, track_file):
    track = Track.load(track_file)
    world = parsed[world_key(track)].find("world")
    assert world.get("name") == track.name
    plugins = {(p.get("filename"), p.get("name")): p for p in world.findall("plugin")}
    assert set(plugins) == {
        ("gz-sim-physics-system", "gz::sim::systems::Physics"),
        ("gz-sim-user-commands-system", "gz::sim::systems::UserCommands"),
        ("gz-sim-scene-broadcaster-system", "gz::sim::systems::SceneBroadcaster"),
        ("gz-sim-sensors-system", "gz::sim::systems::Sensors"),
        ("gz-sim-imu-system", "gz::sim::systems::Imu"),
    }
    assert plugins[("gz-sim-sensors-system", "gz::sim::systems::Sensors")].findtext("render_engine") == "ogre2"
    # At least 5 physics steps per IMU sample.
    assert float(world.findtext("physics/max_step_size")) <= 1.0 / SensorConfig().imu_hz / 5
    assert floats(world.findtext("scene/ambient"))[:3] == pytest.approx([track.look.light_ambient] * 3, rel=SDF_REL)
    (light,) = world.findall("light")
    assert floats(light.findtext("diffuse"))[:3] == pytest.approx([track.look.light_diffuse] * 3, rel=SDF_REL)
    # The parser resolved the include (through SDF_PATH, as gz-sim through GZ_SIM_RESOURCE_PATH) to
    # the track's ground, and that is the only model: the launch file spawns the robot.
    assert world.findall("include") == []
    (ground,) = world.findall("model")
    assert ground.get("name") == gazebo.track_model_name(track)
    assert ground.findtext("static") == "true"
    texture = ground.findtext("link/visual/material/pbr/metal/albedo_map")
    assert resolve_model_uri(texture).is_file(), texture
    friction = ground.find("link/collision/surface/friction/ode")
    assert float(friction.findtext("mu")) == pytest.approx(RobotSpec().ground_friction, rel=SDF_REL)


# --- (c) the ground and the spawn pose against the track, the robot against MuJoCo ---------------
@pytest.mark.parametrize("track_file", TRACK_FILES, ids=lambda p: p.stem)
def test_road_texture_lies_where_the_track_is(track_file):
    """The ground plane and its texture put the road on the track's centreline, read the way gz does:
    its unit plane maps texture u along +x and v = 0 (image row 0) to +y."""
    track = Track.load(track_file)
    model = sdf_root(GAZEBO_DIR / gazebo.track_model_name(track) / "model.sdf").find("model")
    assert model.findtext("static") == "true"
    link = model.find("link")
    cx, cy = floats(link.findtext("pose"))[:2]
    visual = link.find("visual")
    assert floats(visual.findtext("geometry/plane/normal")) == [0, 0, 1]
    sx, sy = floats(visual.findtext("geometry/plane/size"))
    image = png_pixels(resolve_model_uri(visual.findtext("material/pbr/metal/albedo_map")).read_bytes())
    h, w, _ = image.shape
    assert w / sx == pytest.approx(gazebo.PIXELS_PER_M, rel=1e-5) and h / sy == pytest.approx(
        gazebo.PIXELS_PER_M, rel=1e-5
    )

    def colour_at(x: float, y: float) -> np.ndarray:
        u, v = (x - (cx - sx / 2)) / sx, ((cy + sy / 2) - y) / sy
        return image[int(v * h), int(u * w)].astype(float) / 255

    road, ground = np.array(track.look.road), np.array(track.look.ground)
    for s in np.linspace(0, track.length, 24, endpoint=False):
        on_road = colour_at(*track.pose_at(s, track.road_width / 4)[:2])
        assert np.allclose(on_road, road, atol=0.01), f"s={s:.2f}: {on_road} is not the road colour"
        off_road = colour_at(*track.pose_at(s, track.road_width * 1.2)[:2])
        assert np.allclose(off_road, ground, atol=0.01), f"s={s:.2f}: {off_road} is not the ground colour"


@pytest.mark.parametrize("track_file", TRACK_FILES, ids=lambda p: p.stem)
def test_spawn_pose_is_the_track_start_with_the_wheels_on_the_ground(track_file):
    track = Track.load(track_file)
    x, y, z, yaw = gazebo.spawn_pose(track)
    assert (x, y, yaw) == track.pose_at(0.0)
    assert gazebo.spawn_pose(str(track_file)) == (x, y, z, yaw)
    model = sdf_root(GAZEBO_DIR / "liquid_robot" / "model.sdf").find("model")
    wheel = model.find("link[@name='left_wheel']")
    wheel_z = floats(wheel.findtext("pose"))[2]
    assert z + wheel_z - float(wheel.findtext("collision/geometry/cylinder/radius")) == pytest.approx(0, abs=1e-9)
    caster = model.find("link[@name='base_link']/collision[@name='caster_collision']")
    assert z + floats(caster.findtext("pose"))[2] - float(caster.findtext("geometry/sphere/radius")) == pytest.approx(
        0, abs=1e-9
    )


def test_spawn_pose_takes_a_shipped_track_name():
    assert gazebo.spawn_pose("oval") == gazebo.spawn_pose(Track.load(ROOT / "config" / "tracks" / "oval.yaml"))


@pytest.mark.parametrize("view", ["committed", "parsed"])
def test_robot_mirrors_the_mujoco_scene(view, request):
    """Masses, inertia, wheel and sensor placement, camera view, physics step and gravity agree with
    world.scene_xml's compiled model: in the committed files, and as the SDFormat parser reads them."""
    mujoco = pytest.importorskip("mujoco")
    from liquid_control.sim.world import scene_xml

    if view == "parsed":
        views = request.getfixturevalue("parsed")
        robot_root, world_root = views[ROBOT_SDF], views[world_key(Track.load(TRACK_FILES[0]))]
    else:
        robot_root = sdf_root(GAZEBO_DIR / ROBOT_SDF)
        world_root = sdf_root(GAZEBO_DIR / world_key(Track.load(TRACK_FILES[0])))
    robot = RobotSpec()
    xml, assets = scene_xml(Track.load(TRACK_FILES[0]), robot, pixels_per_m=2.0)
    mj = mujoco.MjModel.from_xml_string(xml, assets)
    model = robot_root.find("model")
    base = model.find("link[@name='base_link']")

    body = mj.body("base_link")
    assert gazebo.spawn_pose(TRACK_FILES[0])[2] == pytest.approx(body.pos[2])
    assert float(base.findtext("inertial/mass")) == pytest.approx(body.mass[0], rel=SDF_REL)
    assert floats(base.findtext("inertial/pose"))[:3] == pytest.approx(body.ipos, abs=1e-6)
    i = {k: float(base.findtext(f"inertial/inertia/{k}")) for k in ("ixx", "ixy", "ixz", "iyy", "iyz", "izz")}
    tensor = np.array([[i["ixx"], i["ixy"], i["ixz"]], [i["ixy"], i["iyy"], i["iyz"]], [i["ixz"], i["iyz"], i["izz"]]])
    assert np.sort(np.linalg.eigvalsh(tensor)) == pytest.approx(np.sort(body.inertia), rel=1e-4)
    for side in ("left", "right"):
        wheel, mj_wheel = model.find(f"link[@name='{side}_wheel']"), mj.body(f"{side}_wheel")
        assert floats(wheel.findtext("pose"))[:3] == pytest.approx(mj_wheel.pos, abs=1e-6)
        assert float(wheel.findtext("inertial/mass")) == pytest.approx(mj_wheel.mass[0], rel=SDF_REL)
        assert np.sort(
            floats(" ".join(wheel.findtext(f"inertial/inertia/{k}") for k in ("ixx", "iyy", "izz")))
        ) == pytest.approx(np.sort(mj_wheel.inertia), rel=1e-4)
        assert [float(wheel.findtext(f"inertial/inertia/{k}")) for k in ("ixy", "ixz", "iyz")] == [0, 0, 0]

    camera, mj_camera = base.find("sensor[@type='camera']"), mj.camera("front")
    x, y, z, _, pitch, _ = floats(camera.findtext("pose"))
    assert [x, y, z] == pytest.approx(mj_camera.pos, abs=1e-6)
    gz_view = np.array([math.cos(pitch), 0.0, -math.sin(pitch)])  # gz cameras look along +x
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, mj_camera.quat)
    mj_view = mat.reshape(3, 3) @ np.array([0.0, 0.0, -1.0])  # MuJoCo cameras look along -z
    assert gz_view == pytest.approx(mj_view, abs=1e-4)
    assert floats(base.find("sensor[@type='imu']").findtext("pose"))[:3] == pytest.approx(mj.site("imu").pos, abs=1e-6)

    world = world_root.find("world")
    assert float(world.findtext("physics/max_step_size")) == pytest.approx(mj.opt.timestep, rel=SDF_REL)
    assert floats(world.findtext("gravity")) == pytest.approx(mj.opt.gravity, rel=SDF_REL)


# --- (d) the real SDFormat parser accepts the files -----------------------------------------------
@pytest.mark.parametrize("path", SDF_FILES, ids=lambda p: str(p.relative_to(GAZEBO_DIR)))
def test_sdformat_parser_accepts(ign, path, tmp_path):
    ok, output = ign_check(path, tmp_path)
    assert ok, f"ign sdf -k {path}:\n{output}"


def test_sdformat_check_catches_what_it_must(ign, tmp_path):
    """The check fails on a version the parser cannot convert, a model:// it cannot find, and names
    SDFormat forbids, so a pass above means something."""
    robot = (GAZEBO_DIR / ROBOT_SDF).read_text()
    world = (GAZEBO_DIR / world_key(Track.load(TRACK_FILES[0]))).read_text()
    broken = {
        "version.sdf": robot.replace(f'version="{gazebo.SDF_VERSION}"', 'version="1.11"'),
        "include.sdf": world.replace("model://liquid_track_", "model://no_such_track_"),
        "names.sdf": robot.replace('name="caster_visual"', 'name="chassis_visual"'),
    }
    for name, text in broken.items():
        assert text != (world if name == "include.sdf" else robot)
        path = tmp_path / name
        path.write_text(text)
        ok, output = ign_check(path, tmp_path)
        assert not ok, f"{name} passed the check:\n{output}"
    # The parser's view fails loudly on the unresolvable include, too.
    with pytest.raises(AssertionError, match="ign sdf -p"):
        ign_print(tmp_path / "include.sdf", tmp_path)


def test_parser_view_shows_what_the_raw_file_hides(ign, tmp_path):
    """Why (b) reads the parser's output, not the file: a misspelt element is not an error to the
    parser, which copies it through under its wrong name, so a plain XML lookup of the file would
    find it where Gazebo will not; and an older SDF version is converted, so (b) checks the
    elements gz-sim gets."""
    robot = (GAZEBO_DIR / ROBOT_SDF).read_text()
    misspelt = tmp_path / "misspelt.sdf"
    misspelt.write_text(robot.replace("<update_rate>30</update_rate>", "<update_rte>30</update_rte>"))
    camera = ign_print(misspelt, tmp_path).find("model/link/sensor[@type='camera']")
    assert camera.findtext("update_rate") is None and camera.findtext("update_rte") == "30"

    # The same robot declared as SDF 1.6 comes back as SDFormat 1.9 with the same sensors.
    old = tmp_path / "old.sdf"
    old.write_text(robot.replace(f'version="{gazebo.SDF_VERSION}"', 'version="1.6"'))
    converted = ign_print(old, tmp_path).find("model/link/sensor[@type='camera']")
    assert float(converted.findtext("update_rate")) == SensorConfig().camera_hz


# --- (e) the bridge YAML --------------------------------------------------------------------------
def test_bridge_yaml_entries(bridge):
    assert isinstance(bridge, list) and len(bridge) == len(gazebo.BRIDGE)
    for entry in bridge:
        assert set(entry) == BRIDGE_KEYS, entry
        assert (entry["ros_type_name"], entry["gz_type_name"]) in TYPE_PAIRS, entry
        assert entry["direction"] in ("GZ_TO_ROS", "ROS_TO_GZ", "BIDIRECTIONAL")
        assert entry["gz_topic_name"].startswith("/")
    assert {e["ros_topic_name"] for e in bridge} == {
        topics.CLOCK,
        topics.CAMERA,
        topics.CAMERA_INFO,
        topics.IMU,
        topics.ODOM,
        topics.CMD_VEL,
    }
    # Relative ROS names (they take the bridge's namespace), except the global clock.
    assert [e["ros_topic_name"] for e in bridge if e["ros_topic_name"].startswith("/")] == [topics.CLOCK]
    assert bridged(bridge, topics.CLOCK) == {
        "ros_topic_name": "/clock",
        "gz_topic_name": "/clock",
        "ros_type_name": "rosgraph_msgs/msg/Clock",
        "gz_type_name": "gz.msgs.Clock",
        "direction": "GZ_TO_ROS",
    }
    assert bridge == yaml.safe_load(gazebo.bridge_yaml())


def test_gz_topic_lookup():
    assert gazebo.gz_topic(topics.CMD_VEL) == f"/model/{gazebo.ROBOT_NAME}/cmd_vel"
    with pytest.raises(KeyError, match="not bridged"):
        gazebo.gz_topic(topics.TEACHER)


def test_spawn_pose_needs_no_mujoco_nor_rclpy():
    """Launch files call spawn_pose() on machines with ROS and Gazebo but perhaps without MuJoCo."""
    code = (
        "import sys; from liquid_control.sim import gazebo; gazebo.spawn_pose('oval'); "
        "assert not {'mujoco', 'rclpy'} & set(sys.modules), sorted({'mujoco', 'rclpy'} & set(sys.modules))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


# --- (f) evaluation conditions: the same layout under a condition, what Gazebo can carry ----------
def _rotation(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """SDF's pose rotation: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr, cp, sp, cy, sy = (
        math.cos(roll),
        math.sin(roll),
        math.cos(pitch),
        math.sin(pitch),
        math.cos(yaw),
        math.sin(yaw),
    )
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _condition_files(name: str) -> dict[str, ET.Element]:
    from liquid_control.sim.conditions import CONDITIONS

    files = gazebo.generated_files([str(TRACK_FILES[0])], CONDITIONS[name])
    return {k: ET.fromstring(v) for k, v in files.items() if k.endswith(".sdf")}


def test_nominal_condition_exports_the_committed_files():
    from liquid_control.sim.conditions import CONDITIONS

    assert gazebo.generated_files([str(TRACK_FILES[0])], CONDITIONS["nominal"]) == gazebo.generated_files(
        [str(TRACK_FILES[0])]
    )


def test_a_rolled_camera_exports_as_the_mujoco_camera():
    """The rolled, pitched camera of camera_roll and camera_tilt points the same way and keeps the same
    up in the Gazebo robot (a camera looking along +x, z up) as in the compiled MuJoCo scene (along
    -z, y up)."""
    mujoco = pytest.importorskip("mujoco")
    from liquid_control.sim.conditions import CONDITIONS
    from liquid_control.sim.world import scene_xml

    for name in ("camera_roll", "camera_tilt"):
        robot = CONDITIONS[name].robot_spec()
        camera = _condition_files(name)[f"models/gazebo/{ROBOT_SDF}"].find("model/link/sensor[@type='camera']")
        roll, pitch, yaw = floats(camera.findtext("pose"))[3:]
        assert (math.degrees(roll), math.degrees(pitch), yaw) == pytest.approx(
            (robot.camera_roll_deg, robot.camera_pitch_deg, 0), abs=1e-4
        )
        xml, assets = scene_xml(Track.load(TRACK_FILES[0]), robot, pixels_per_m=2.0)
        mat = np.zeros(9)
        mujoco.mju_quat2Mat(mat, mujoco.MjModel.from_xml_string(xml, assets).camera("front").quat)
        mj = mat.reshape(3, 3)
        gz = _rotation(roll, pitch, yaw)
        assert gz[:, 0] == pytest.approx(-mj[:, 2], abs=1e-4)  # view direction
        assert gz[:, 2] == pytest.approx(mj[:, 1], abs=1e-4)  # image up
        assert gz[:, 1] == pytest.approx(-mj[:, 0], abs=1e-4)  # image left


def test_conditions_export_friction_mass_lighting_fog_texture_and_track():
    from liquid_control.sim.conditions import CONDITIONS

    track = Track.load(TRACK_FILES[0])
    ground_sdf = f"models/gazebo/{gazebo.track_model_name(track)}/model.sdf"
    world_sdf = f"models/gazebo/{world_key(track)}"

    slippery = _condition_files("low_friction")
    spec = CONDITIONS["low_friction"].robot
    for side in ("left", "right"):
        mu = slippery[f"models/gazebo/{ROBOT_SDF}"].find(
            f"model/link[@name='{side}_wheel']/collision/surface/friction/ode"
        )
        assert float(mu.findtext("mu")) == float(mu.findtext("mu2")) == spec["wheel_friction"]
    ground = slippery[ground_sdf].find("model/link/collision/surface/friction/ode")
    assert float(ground.findtext("mu")) == spec["ground_friction"]

    heavy = _condition_files("heavy")[f"models/gazebo/{ROBOT_SDF}"].find("model")
    spec = CONDITIONS["heavy"].robot
    assert float(heavy.findtext("link[@name='base_link']/inertial/mass")) == pytest.approx(
        spec["mass"] + spec["caster_mass"], rel=SDF_REL
    )
    assert float(heavy.findtext("link[@name='left_wheel']/inertial/mass")) == spec["wheel_mass"]

    dark = _condition_files("dark")[world_sdf].find("world")
    assert floats(dark.findtext("light/diffuse"))[:3] == [CONDITIONS["dark"].look["light_diffuse"]] * 3
    assert dark.find("scene/fog") is None

    fog = _condition_files("foggy")[world_sdf].find("world/scene")
    look = CONDITIONS["foggy"].look
    assert fog.findtext("fog/type") == "linear"
    assert (float(fog.findtext("fog/start")), float(fog.findtext("fog/end"))) == (look["fog_start"], look["fog_end"])
    assert floats(fog.findtext("background")) == floats(fog.findtext("fog/color"))

    nominal = gazebo.generated_files([str(TRACK_FILES[0])])
    for name in ("shadows", "checker_ground"):  # painted into the road texture
        files = gazebo.generated_files([str(TRACK_FILES[0])], CONDITIONS[name])
        texture = f"models/gazebo/{gazebo.track_model_name(track)}/{gazebo.TEXTURE_PATH}"
        assert not np.array_equal(png_pixels(files[texture]), png_pixels(nominal[texture]))

    tight = gazebo.generated_files(None, CONDITIONS["tight_turns"])
    assert [k for k in tight if k.startswith("models/gazebo/worlds/")] == ["models/gazebo/worlds/hairpin.sdf"]


def test_conditions_name_what_gazebo_cannot_reproduce():
    from liquid_control.sim.conditions import CONDITIONS, SUITES

    missing = {name: CONDITIONS[name].not_in_gazebo() for name in SUITES["hard"]}
    assert missing["command_delay"] == ["robot.command_delay"] and missing["weak_motors"] == ["robot.motor_gain"]
    assert set(missing["motion_blur"]) == {"sensors.exposure", "sensors.exposure_samples"}
    assert missing["frame_drop"] == ["sensors.camera_drop"]
    for name in (
        "nominal",
        "shadows",
        "foggy",
        "checker_ground",
        "camera_tilt",
        "camera_roll",
        "dark_noise",
        "heavy_noise",
        "imu_bias",
        "low_friction",
        "heavy",
        "tight_turns",
    ):
        assert missing[name] == [], name


def test_command_line_exports_a_condition_and_says_what_it_leaves_out(tmp_path, capsys):
    assert gazebo.main(["--output", str(tmp_path), "--track", str(TRACK_FILES[0]), "--condition", "command_delay"]) == 0
    assert "not reproduced in Gazebo: robot.command_delay" in capsys.readouterr().err
    assert (tmp_path / "models/gazebo/liquid_robot/model.sdf").is_file()
    with pytest.raises(SystemExit):
        gazebo.main(["--output", str(tmp_path), "--condition", "no_such_condition"])


@pytest.mark.parametrize("name", ["foggy", "camera_roll", "low_friction", "shadows"])
def test_sdformat_parser_accepts_a_condition_export(ign, name, tmp_path):
    """`ign sdf -k` accepts a condition's robot and world (include resolved from its own directory),
    and `ign sdf -p` keeps what the condition changed."""
    from liquid_control.sim.conditions import CONDITIONS

    out = tmp_path / "export"
    gazebo.export(out, [str(TRACK_FILES[0])], CONDITIONS[name])
    models = out / "models" / "gazebo"
    track = Track.load(TRACK_FILES[0])
    env = dict(os.environ, SDF_PATH=str(models))
    views = {}
    for relative in (ROBOT_SDF, world_key(track)):
        check = subprocess.run(
            ["ign", "sdf", "-k", str(models / relative)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = check.stdout + check.stderr
        assert check.returncode == 0 and "Valid." in output and not ign_problems(output), output
        printed = subprocess.run(
            ["ign", "sdf", "-p", str(models / relative)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert printed.returncode == 0, printed.stderr
        views[relative] = ET.fromstring(printed.stdout)
    if name == "foggy":
        assert float(views[world_key(track)].findtext("world/scene/fog/end")) == CONDITIONS[name].look["fog_end"]
    if name == "camera_roll":
        pose = floats(views[ROBOT_SDF].findtext("model/link/sensor[@type='camera']/pose"))
        assert math.degrees(pose[3]) == pytest.approx(CONDITIONS[name].robot["camera_roll_deg"], abs=1e-3)
    if name == "low_friction":
        ground = views[world_key(track)].find("world/model/link/collision/surface/friction/ode")
        assert float(ground.findtext("mu")) == CONDITIONS[name].robot["ground_friction"]


# --- the car -------------------------------------------------------------------------------------
CAR_SDF = "liquid_car/model.sdf"


@pytest.mark.parametrize("view", ["committed", "parsed"])
def test_car_mirrors_the_mujoco_car_and_steers_with_ackermann_steering(view, request, bridge):
    """The car's SDF: the links, joints and masses of world.scene_xml's compiled car, its camera and
    IMU where MuJoCo has them, and gz-sim's AckermannSteering given CarSpec's wheelbase, track,
    wheel radius and steering lock, on the bridged cmd_vel and odometry topics (the same as the
    differential drive's: both are spawned as the model liquid_robot)."""
    mujoco = pytest.importorskip("mujoco")
    from liquid_control.sim.world import ROBOTS, scene_xml

    car = ROBOTS["car"]
    root = request.getfixturevalue("parsed")[CAR_SDF] if view == "parsed" else sdf_root(GAZEBO_DIR / CAR_SDF)
    model = root.find("model")
    assert model.get("name") == gazebo.ROBOT_NAME
    xml, assets = scene_xml(Track.load(TRACK_FILES[0]), car, pixels_per_m=2.0)
    mj = mujoco.MjModel.from_xml_string(xml, assets)
    links = {link.get("name"): link for link in model.findall("link")}
    joints = {joint.get("name"): joint for joint in model.findall("joint")}
    assert set(links) == {"base_link"} | {
        f"{part}_{side}_{kind}"
        for side in ("left", "right")
        for part, kind in (("rear", "wheel"), ("front", "steer"), ("front", "wheel"))
    }
    base = links["base_link"]
    assert float(base.findtext("inertial/mass")) == pytest.approx(mj.body("base_link").mass[0], rel=SDF_REL)
    assert floats(base.findtext("inertial/pose"))[:3] == pytest.approx(mj.body("base_link").ipos, abs=1e-6)
    assert gazebo.spawn_pose(TRACK_FILES[0], car)[2] == pytest.approx(mj.body("base_link").pos[2])
    for side in ("left", "right"):
        rear, knuckle = mj.body(f"rear_{side}_wheel"), mj.body(f"front_{side}_steer")
        assert floats(links[f"rear_{side}_wheel"].findtext("pose"))[:3] == pytest.approx(rear.pos, abs=1e-6)
        assert floats(links[f"front_{side}_steer"].findtext("pose"))[:3] == pytest.approx(knuckle.pos, abs=1e-6)
        assert floats(links[f"front_{side}_wheel"].findtext("pose"))[:3] == pytest.approx(knuckle.pos, abs=1e-6)
        assert float(links[f"rear_{side}_wheel"].findtext("inertial/mass")) == pytest.approx(rear.mass[0], rel=SDF_REL)
        steer = joints[f"front_{side}_steer_joint"]
        assert floats(steer.findtext("axis/xyz")) == [0, 0, 1]
        assert (steer.findtext("parent"), steer.findtext("child")) == ("base_link", f"front_{side}_steer")
        wheel = joints[f"front_{side}_wheel_joint"]
        assert (wheel.findtext("parent"), floats(wheel.findtext("axis/xyz"))) == (f"front_{side}_steer", [0, 1, 0])
        assert joints[f"rear_{side}_wheel_joint"].findtext("parent") == "base_link"
    camera = base.find("sensor[@type='camera']")
    assert floats(camera.findtext("pose"))[:3] == pytest.approx(mj.camera("front").pos, abs=1e-6)
    assert floats(base.find("sensor[@type='imu']").findtext("pose"))[:3] == pytest.approx(mj.site("imu").pos, abs=1e-6)

    (steering,) = model.findall("plugin")
    assert (steering.get("filename"), steering.get("name")) == gazebo.ACKERMANN_STEERING
    number = {
        k: float(steering.findtext(k))
        for k in ("wheel_base", "wheel_separation", "kingpin_width", "wheel_radius", "steering_limit")
    }
    assert number == pytest.approx(
        {
            "wheel_base": car.wheelbase,
            "wheel_separation": car.wheel_separation,
            "kingpin_width": car.wheel_separation,
            "wheel_radius": car.wheel_radius,
            "steering_limit": car.max_steering,
        },
        rel=SDF_REL,
    )
    assert (steering.findtext("left_joint"), steering.findtext("right_joint")) == (
        "rear_left_wheel_joint",
        "rear_right_wheel_joint",
    )
    assert (steering.findtext("left_steering_joint"), steering.findtext("right_steering_joint")) == (
        "front_left_steer_joint",
        "front_right_steer_joint",
    )
    assert steering.findtext("topic") == bridged(bridge, topics.CMD_VEL)["gz_topic_name"]
    assert steering.findtext("odom_topic") == bridged(bridge, topics.ODOM)["gz_topic_name"]
