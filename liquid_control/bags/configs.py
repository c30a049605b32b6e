"""What `liquid-control replay` takes, as one dataclass: its fields are the command's options
(cliargs.add_options) and what `bags.replay.replay` reads. Torch-free: the command line builds its
parser without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from .. import topics
from ..cliargs import option
from ..paths import DEFAULT_MODEL


@dataclass(frozen=True)
class ReplayConfig:
    """A bag's camera and IMU through a model, offline: commands to a bag, a CSV and a plot,
    compared with the recorded ones."""

    bag: str = option(positional=True, help="a rosbag2 bag directory (or a .mcap / .db3 file)")
    output: str = option(help="the bag directory to create (commands on /cmd_vel)")
    model: str = option(DEFAULT_MODEL, help="a policy model file (default: the shipped one)")
    camera_topic: str = option(
        topics.absolute(topics.CAMERA),
        metavar="TOPIC",
        help="sensor_msgs/Image or CompressedImage topic (default %(default)s)",
    )
    imu_topic: str = option(
        topics.absolute(topics.IMU), metavar="TOPIC", help="sensor_msgs/Imu topic (default %(default)s)"
    )
    compare_topic: str | None = option(
        None,
        metavar="TOPIC",
        help="recorded commands to compare with, TwistStamped or Twist (default: /cmd_vel when the bag has it)",
    )
    csv: str | None = option(None, help="CSV of the commands (default: OUTPUT.csv)")
    plot: str | None = option(None, help="PNG plot of replayed vs recorded commands (default: OUTPUT.png)")
    params: str | None = option(
        None,
        metavar="FILE",
        help="the controller node's parameters file (speed and acceleration limits, max_dt, tau_scale, frame_id; "
        "default: its config/controller.yaml)",
    )
    frame_id: str | None = option(None, help="header.frame_id of the commands (default: frame_id of the parameters)")
    video: str | None = option(
        None,
        metavar="MP4",
        help="a video, one frame per camera frame: the camera, where the encoder looks (VisualBackProp saliency) "
        "and the commands of the last seconds, replayed and recorded (needs pip install 'liquid_control[video]')",
    )
    activity: str | None = option(
        None,
        metavar="CSV",
        help="each neuron's state and time constant (s) and the network's inputs after every step, and a plot of "
        "them per layer beside it (CSV with .png)",
    )
