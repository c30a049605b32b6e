"""The robot's topic and frame names, defined once: the controller node, the simulator node, the bag tools,
the Gazebo bridge and the launch files all take them from here. Relative names (they land in the
node's namespace and remap as usual), except the clock, which is global in ROS."""

CAMERA = "camera/image_raw"
CAMERA_COMPRESSED = CAMERA + "/compressed"  # image_transport's compressed plugin (JPEG or PNG)
CAMERA_INFO = "camera/camera_info"
IMU = "imu/data"
CMD_VEL = "cmd_vel"
TEACHER = "teacher/cmd_vel"
TELEOP = "teleop/cmd_vel"  # a person's joystick: a takeover while its commands keep coming
TELEOP_ENABLE = "teleop/enable"  # its deadman button (std_msgs/Bool), where teleop.require_enable
ODOM = "odom"
E_STOP = "e_stop"
CLOCK = "/clock"
DIAGNOSTICS = "/diagnostics"
LIQUID_STATE = "~/liquid_state"
PROPOSED = "~/proposed_cmd_vel"  # the policy's command on every step, whoever drives
INTERVENTION = "~/intervention"  # std_msgs/Bool: true while a person commands (a takeover)
SALIENCY = "~/saliency"  # the camera frame with the encoder's VisualBackProp saliency over it

# Frames (REP 105 names; REP 103 axes: x forward, y left, z up).
BASE_FRAME = "base_link"
ODOM_FRAME = "odom"
CAMERA_FRAME = "camera_link"
IMU_FRAME = "imu_link"


def absolute(name: str, namespace: str = "/", node: str | None = None) -> str:
    """`name` as it appears in a bag or on the graph under `namespace`; a private name (~/...) of
    the node named `node`."""
    if name.startswith("/"):
        return name
    if name.startswith("~"):
        if node is None:
            raise ValueError(f"{name} is private to a node; name the node")
        name = f"{node}/{name[2:]}"
    ns = "/" + namespace.strip("/")
    return f"{ns.rstrip('/')}/{name}"
