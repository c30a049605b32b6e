"""Launch arguments and actions that sim.launch.py, gazebo.launch.py and robot.launch.py share, so
each is written once. Imports `launch` and `launch_ros` (a ROS install): only launch files import
this module."""

from __future__ import annotations

import time

from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, Shutdown
from launch.conditions import IfCondition, UnlessCondition
from launch.launch_context import LaunchContext
from launch.substitution import Substitution
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import ExecutableInPackage

from .paths import DEFAULT_MODEL

PACKAGE = "liquid_control"


def model_argument() -> DeclareLaunchArgument:
    return DeclareLaunchArgument(
        "model",
        default_value=DEFAULT_MODEL,
        description="Policy model file (.safetensors): a path or package://<package>/<file>. "
        "Passed to the controller as model_path; it wins over a model_path in params_file.",
    )


def shutdown_unless_ending(reason: str) -> OpaqueFunction:
    """Shutdown(reason) as a process's on_exit, unless the launch is already ending: a second
    shutdown makes launch_ros's ROS adapter (which a LifecycleNode starts) raise "Cannot shutdown a
    ROS adapter that is not running", and launch exit 1 after a clean Ctrl-C with managed:=true."""
    return OpaqueFunction(function=lambda context: [] if context.is_shutdown else [Shutdown(reason=reason)])


def require_packages(what: str, packages: tuple[str, ...], install: str) -> OpaqueFunction:
    """A first action that ends the launch with one line naming what is missing and the command that
    installs it, before anything starts (instead of launch_ros's lookup error half way through)."""

    def check(context) -> list:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        missing = []
        for package in packages:
            try:
                get_package_share_directory(package)
            except PackageNotFoundError:
                missing.append(package)
        if missing:
            raise RuntimeError(f"{what} needs {', '.join(missing)}, not installed: {install}")
        return []

    return OpaqueFunction(function=check)


def managed_argument() -> DeclareLaunchArgument:
    return DeclareLaunchArgument(
        "managed",
        default_value="false",
        choices=["true", "false"],
        description="true: controller_node as a lifecycle node that waits unconfigured for a lifecycle "
        "manager (Nav2's lifecycle_manager node_names, or ros2 lifecycle set <ns>/liquid_controller "
        "configure, then activate); false: it configures and activates itself at start.",
    )


def controller(**node) -> list[Node]:
    """controller_node with these Node arguments (namespace, parameters, remappings, ...): a plain
    node, or with managed:=true a launch_ros LifecycleNode started with --managed."""
    managed = LaunchConfiguration("managed")
    common = dict(package=PACKAGE, executable="controller_node", name="liquid_controller", output="screen", **node)
    return [
        Node(condition=UnlessCondition(managed), **common),
        LifecycleNode(arguments=["--managed"], condition=IfCondition(managed), **common),
    ]


class LaunchTimeBag(Substitution):
    """liquid_control_YYYYmmdd-HHMMSS at the moment the launch runs (DeclareLaunchArgument performs
    its default then), not when the file was loaded; `--show-args` shows this description."""

    def describe(self) -> str:
        return "liquid_control_<date>-<time the launch starts>"

    def perform(self, context: LaunchContext) -> str:
        return f"liquid_control_{time.strftime('%Y%m%d-%H%M%S')}"


def record_arguments(what: str = "the run") -> list[DeclareLaunchArgument]:
    """`record` (true/false) and `bag` (the directory it creates), for recorder()."""
    return [
        DeclareLaunchArgument(
            "record",
            default_value="false",
            choices=["true", "false"],
            description=f"true: also record {what} to the bag directory `bag` with liquid-control record.",
        ),
        DeclareLaunchArgument(
            "bag",
            default_value=[LaunchTimeBag()],
            description="Bag directory that record:=true creates (it must not exist); default: a new "
            "timestamped directory in the current directory.",
        ),
    ]


def recorder(*arguments, condition=None) -> ExecuteProcess:
    """liquid-control record into `bag`, with these arguments (topics, or --namespace). It takes
    no ROS arguments, so it is a plain process, not a Node."""
    return ExecuteProcess(
        cmd=[
            ExecutableInPackage("liquid-control", PACKAGE),
            "record",
            "--output",
            LaunchConfiguration("bag"),
            *arguments,
        ],
        name="record",
        output="screen",
        condition=condition,
    )
