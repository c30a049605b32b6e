"""The liquid controller on a real robot: controller_node alone, its camera, IMU, command, teacher,
e-stop and teleop topics remapped to the robot's, restarted if it dies. Topic defaults are a TurtleBot 4's on
Jazzy (config/turtlebot4_topics.yaml); safety limits and TwistStamped commands are in
config/robot.yaml.

    ros2 launch liquid_control robot.launch.py
    ros2 launch liquid_control robot.launch.py namespace:=robot1 model:=/path/to/policy.safetensors
    ros2 launch liquid_control robot.launch.py camera_topic:=/camera/image_raw cmd_vel_topic:=/cmd_vel_nav
    ros2 launch liquid_control robot.launch.py --show-args
"""

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from liquid_control import launching, topics
from liquid_control.paths import share_path
from liquid_control.runtime.parameters import NODE_NAME

PACKAGE = launching.PACKAGE
RESPAWN_DELAY_S = 2.0  # launch takes a number here, not a substitution

# The controller's own topic (liquid_control.topics) -> the launch argument naming the robot's.
REMAPPED = {
    "camera_topic": (
        topics.CAMERA,
        "Camera the policy sees (sensor_msgs/Image), by its raw name: with "
        "camera_transport:=compressed the controller takes <camera_topic>/compressed.",
    ),
    "imu_topic": (topics.IMU, "IMU (sensor_msgs/Imu), subscribed when the model reads an IMU."),
    "odom_topic": (topics.ODOM, "Wheel odometry (nav_msgs/Odometry), subscribed when the model reads odometry."),
    "cmd_vel_topic": (
        topics.CMD_VEL,
        "Velocity commands to the base (TwistStamped with cmd_vel_stamped in params_file, else Twist).",
    ),
    "teacher_topic": (
        topics.TEACHER,
        "Teacher commands for online adaptation (TwistStamped with teacher_stamped in params_file, else Twist).",
    ),
    "e_stop_topic": (
        topics.E_STOP,
        "Emergency stop (std_msgs/Bool, reliable, transient local): true holds zero commands.",
    ),
    "teleop_topic": (
        topics.TELEOP,
        "A person's joystick (Twist; TwistStamped with teleop.stamped in params_file): while its commands "
        "keep coming the person drives, through the same limits, and the policy only proposes.",
    ),
    "teleop_enable_topic": (
        topics.TELEOP_ENABLE,
        "The joystick's deadman (std_msgs/Bool), needed for a takeover with teleop.require_enable.",
    ),
}


def recorder(context) -> list:
    """liquid-control record of the robot's topics as remapped (it takes absolute names, no ROS arguments)."""
    namespace = LaunchConfiguration("namespace").perform(context)
    names = [topics.absolute(LaunchConfiguration(arg).perform(context), namespace) for arg in REMAPPED]
    if LaunchConfiguration("camera_transport").perform(context) == "compressed":
        names[0] += "/compressed"  # the camera as it arrives: record keeps it byte for byte
    # The controller's own: the policy's proposals and the takeover marks (train weights takeovers).
    own = [topics.absolute(name, namespace, node=NODE_NAME) for name in (topics.PROPOSED, topics.INTERVENTION)]
    return [launching.recorder(*names, *own, topics.DIAGNOSTICS)]


def generate_launch_description() -> LaunchDescription:
    robot_topics = yaml.safe_load(share_path("config", "turtlebot4_topics.yaml").read_text())
    namespace = LaunchConfiguration("namespace")
    remappings = [(ours, LaunchConfiguration(arg)) for arg, (ours, _) in REMAPPED.items()]
    # image_transport names the compressed stream <raw topic>/compressed.
    remappings.append((topics.CAMERA_COMPRESSED, [LaunchConfiguration("camera_topic"), "/compressed"]))

    return LaunchDescription(
        [
            *(
                DeclareLaunchArgument(
                    arg,
                    default_value=robot_topics[arg],
                    description=f"{text} The controller's {ours} is remapped to it; a relative name resolves "
                    "in `namespace`. Default: config/turtlebot4_topics.yaml.",
                )
                for arg, (ours, text) in REMAPPED.items()
            ),
            launching.model_argument(),
            launching.managed_argument(),
            DeclareLaunchArgument(
                "camera_transport",
                default_value="raw",
                choices=["raw", "compressed"],
                description="raw: the camera as sensor_msgs/Image on camera_topic; compressed: "
                "sensor_msgs/CompressedImage (JPEG/PNG) on <camera_topic>/compressed, as "
                "image_transport publishes it.",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "robot.yaml"]),
                description="ROS parameters file for the controller: speed and acceleration limits, "
                "sensor_timeout, cmd_vel_stamped. Key it /**/liquid_controller for it to apply "
                "under a namespace, as config/robot.yaml does.",
            ),
            DeclareLaunchArgument(
                "namespace",
                default_value="",
                description="ROS namespace of the controller and of relative topic names (e.g. robot1); empty for none.",
            ),
            DeclareLaunchArgument(
                "respawn",
                default_value="true",
                choices=["true", "false"],
                description=f"true: restart the controller {RESPAWN_DELAY_S:g} s after it dies (it starts "
                "from a fresh liquid state and commands zero until sensors arrive).",
            ),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="false",
                choices=["true", "false"],
                description="true: the controller runs on /clock (a simulator, or a bag played with its clock).",
            ),
            *launching.record_arguments("the controller's topics, remapped as the controller's are,"),
            *launching.controller(
                namespace=namespace,
                parameters=[
                    LaunchConfiguration("params_file"),
                    {
                        "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
                        "model_path": ParameterValue(LaunchConfiguration("model"), value_type=str),
                        "camera_transport": ParameterValue(LaunchConfiguration("camera_transport"), value_type=str),
                    },
                ],
                remappings=remappings,
                respawn=LaunchConfiguration("respawn"),
                respawn_delay=RESPAWN_DELAY_S,
            ),
            OpaqueFunction(function=recorder, condition=IfCondition(LaunchConfiguration("record"))),
        ]
    )
