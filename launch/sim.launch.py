"""The liquid controller driving the MuJoCo simulator: sim_node (camera, IMU, odometry, /clock and the
expert's teacher/cmd_vel) and controller_node on the simulator's clock, optionally recording a bag.

    ros2 launch liquid_control sim.launch.py
    ros2 launch liquid_control sim.launch.py track:=kidney adaptation:=true record:=true
    ros2 launch liquid_control sim.launch.py robot:=car model:=$PWD/car.safetensors
    ros2 launch liquid_control sim.launch.py --show-args
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from liquid_control import launching
from liquid_control.sim.world import DEFAULT_ROBOT, ROBOTS

PACKAGE = launching.PACKAGE


def generate_launch_description() -> LaunchDescription:
    model = LaunchConfiguration("model")
    track = LaunchConfiguration("track")
    robot = LaunchConfiguration("robot")
    params_file = LaunchConfiguration("params_file")
    namespace = LaunchConfiguration("namespace")
    real_time_factor = LaunchConfiguration("real_time_factor")
    adaptation = LaunchConfiguration("adaptation")

    return LaunchDescription(
        [
            launching.model_argument(),
            launching.managed_argument(),
            DeclareLaunchArgument(
                "track",
                default_value="oval",
                description="Track to drive: a shipped one (oval, kidney, serpentine, hairpin) or a track file (.yaml).",
            ),
            DeclareLaunchArgument(
                "robot",
                default_value=DEFAULT_ROBOT,
                choices=list(ROBOTS),
                description="The simulated robot: diff_drive (turns on the spot) or car (Ackermann steering: it "
                "drives the curvature angular.z / linear.x within its steering lock). Give a model trained on it.",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "controller.yaml"]),
                description="ROS parameters file for the controller (node liquid_controller). Key it "
                "/**/liquid_controller for it to apply under a namespace.",
            ),
            DeclareLaunchArgument(
                "namespace",
                default_value="",
                description="ROS namespace of every node and topic (e.g. robot1); empty for none. /clock stays global.",
            ),
            DeclareLaunchArgument(
                "real_time_factor",
                default_value="1.0",
                description="Simulated seconds per wall-clock second; 0 runs as fast as the CPU allows.",
            ),
            DeclareLaunchArgument(
                "adaptation",
                default_value="false",
                choices=["true", "false"],
                description="true: the controller adapts its readout online toward the simulator's expert "
                "(teacher/cmd_vel); sets adaptation.enabled.",
            ),
            *launching.record_arguments(),
            Node(
                package=PACKAGE,
                executable="sim_node",
                namespace=namespace,
                output="screen",
                parameters=[
                    {
                        "track": ParameterValue(track, value_type=str),
                        "robot": ParameterValue(robot, value_type=str),
                        "real_time_factor": ParameterValue(real_time_factor, value_type=float),
                    }
                ],
                # Without the simulator there is nothing to control: end the whole launch.
                on_exit=launching.shutdown_unless_ending("sim_node exited"),
            ),
            *launching.controller(
                namespace=namespace,
                parameters=[
                    params_file,
                    {
                        "use_sim_time": True,
                        "model_path": ParameterValue(model, value_type=str),
                        "adaptation.enabled": ParameterValue(adaptation, value_type=bool),
                    },
                ],
            ),
            # The robot's topics under `namespace`.
            launching.recorder("--namespace", namespace, condition=IfCondition(LaunchConfiguration("record"))),
        ]
    )
