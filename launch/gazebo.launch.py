"""The liquid controller driving a robot in Gazebo (gz-sim Harmonic, ROS 2 Jazzy, ros_gz): the track's
world, the robot spawned at the track's start, the ROS <-> Gazebo bridge (config/gazebo_bridge.yaml)
and controller_node on Gazebo's clock. Needs ros_gz_sim and ros_gz_bridge (a ROS 2 Jazzy install
with Gazebo Harmonic); there is no expert, so no online adaptation, here.

    ros2 launch liquid_control gazebo.launch.py
    ros2 launch liquid_control gazebo.launch.py track:=kidney gui:=true
    ros2 launch liquid_control gazebo.launch.py robot:=car model:=$PWD/car.safetensors
    ros2 launch liquid_control gazebo.launch.py --show-args
"""

from launch import LaunchDescription
from launch.actions import (
    AppendEnvironmentVariable,
    DeclareLaunchArgument,
    IncludeLaunchDescription,
    OpaqueFunction,
)
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import IfElseSubstitution, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from liquid_control import launching
from liquid_control.sim.world import DEFAULT_ROBOT, ROBOTS

PACKAGE = launching.PACKAGE


def spawn_robot(context) -> list:
    """ros_gz_sim's create of the chosen robot at the start pose of the chosen track (known only once
    `robot` and `track` are)."""
    from liquid_control.sim import gazebo
    from liquid_control.sim.world import robot_spec

    robot = LaunchConfiguration("robot").perform(context)
    x, y, z, yaw = gazebo.spawn_pose(LaunchConfiguration("track").perform(context), robot_spec(robot))
    robot_sdf = PathJoinSubstitution(
        [FindPackageShare(PACKAGE), "models", "gazebo", gazebo.ROBOT_DIRS[robot], "model.sdf"]
    )
    return [
        Node(
            package="ros_gz_sim",
            executable="create",
            output="screen",
            arguments=[
                "-name",
                gazebo.ROBOT_NAME,
                "-file",
                robot_sdf,
                "-x",
                f"{x:.4f}",
                "-y",
                f"{y:.4f}",
                "-z",
                f"{z:.4f}",
                "-Y",
                f"{yaw:.4f}",
            ],
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    namespace = LaunchConfiguration("namespace")
    world = [PathJoinSubstitution([share, "models", "gazebo", "worlds", LaunchConfiguration("track")]), ".sdf"]
    # -r: run at once; -s: server only (no window); -v2: errors and warnings.
    gz_options = IfElseSubstitution(LaunchConfiguration("gui"), if_value="-r -v2 ", else_value="-r -s -v2 ")

    return LaunchDescription(
        [
            # Gazebo is optional for the package (a robot does not need it): say what to install.
            launching.require_packages(
                "gazebo.launch.py",
                ("ros_gz_sim", "ros_gz_bridge"),
                "sudo apt-get install -y ros-jazzy-ros-gz-sim ros-jazzy-ros-gz-bridge",
            ),
            DeclareLaunchArgument(
                "track",
                default_value="oval",
                description="Shipped track whose Gazebo world to load and whose start to spawn the robot at "
                "(oval, kidney, serpentine, hairpin: models/gazebo/worlds/<track>.sdf).",
            ),
            DeclareLaunchArgument(
                "robot",
                default_value=DEFAULT_ROBOT,
                choices=list(ROBOTS),
                description="The robot to spawn: diff_drive (gz-sim DiffDrive) or car (gz-sim AckermannSteering: "
                "it steers to the curvature angular.z / linear.x). Give a model trained on it.",
            ),
            launching.model_argument(),
            launching.managed_argument(),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([share, "config", "controller.yaml"]),
                description="ROS parameters file for the controller (node liquid_controller). Key it "
                "/**/liquid_controller for it to apply under a namespace.",
            ),
            DeclareLaunchArgument(
                "namespace",
                default_value="",
                description="ROS namespace of the bridge's ROS topics and the controller (e.g. robot1); "
                "empty for none. /clock stays global.",
            ),
            DeclareLaunchArgument(
                "gui",
                default_value="false",
                choices=["true", "false"],
                description="true: open the Gazebo window; false: run the server only (headless).",
            ),
            *launching.record_arguments(),
            # Our worlds and robot refer to each other as model:// resources: make them findable first.
            AppendEnvironmentVariable("GZ_SIM_RESOURCE_PATH", PathJoinSubstitution([share, "models", "gazebo"])),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(
                    PathJoinSubstitution([FindPackageShare("ros_gz_sim"), "launch", "gz_sim.launch.py"])
                ),
                launch_arguments={"gz_args": [gz_options, *world], "on_exit_shutdown": "true"}.items(),
            ),
            OpaqueFunction(function=spawn_robot),
            Node(
                package="ros_gz_bridge",
                executable="parameter_bridge",
                namespace=namespace,
                output="screen",
                parameters=[
                    {
                        "config_file": PathJoinSubstitution([share, "config", "gazebo_bridge.yaml"]),
                        "use_sim_time": True,
                    }
                ],
            ),
            *launching.controller(
                namespace=namespace,
                parameters=[
                    LaunchConfiguration("params_file"),
                    {
                        "use_sim_time": True,
                        # DiffDrive and AckermannSteering take gz.msgs.Twist, bridged from geometry_msgs/Twist.
                        "cmd_vel_stamped": False,
                        "model_path": ParameterValue(LaunchConfiguration("model"), value_type=str),
                    },
                ],
            ),
            # The robot's topics under `namespace`.
            launching.recorder("--namespace", namespace, condition=IfCondition(LaunchConfiguration("record"))),
        ]
    )
