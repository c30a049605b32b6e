"""What `liquid-control replay` takes, as one dataclass: its fields are the command's options
(cliargs.add_options) and what `bags.replay.replay` reads. Torch-free: the command line builds its
parser without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..cliargs import option
from ..paths import DEFAULT_MODEL


@dataclass(frozen=True)
class ReplayConfig:
    """A bag's sensors through a model, offline (the ones the model reads: camera, and IMU and
    odometry where it reads them; each topic named, or the bag's only one, as train finds them):
    commands to a bag, a CSV and a plot, compared with the recorded ones."""

    bag: str = option(positional=True, help="a rosbag2 bag directory (or a .mcap / .db3 file)")
    output: str = option(help="the bag directory to create (commands on /cmd_vel)")
    model: str = option(DEFAULT_MODEL, help="a policy model file (default: the shipped one)")
    camera_topic: str | None = option(
        None, metavar="TOPIC", help="sensor_msgs/Image or CompressedImage topic (default: the bag's only one)"
    )
    imu_topic: str | None = option(
        None, metavar="TOPIC", help="sensor_msgs/Imu topic, if the model reads an IMU (default: the bag's only one)"
    )
    odom_topic: str | None = option(
        None,
        metavar="TOPIC",
        help="nav_msgs/Odometry topic, if the model reads odometry (default: the bag's only one)",
    )
    compare_topic: str | None = option(
        None,
        metavar="TOPIC",
        help="recorded commands to compare with, TwistStamped or Twist (default: /cmd_vel when the bag has it)",
    )
    proposal_topic: str | None = option(
        None,
        metavar="TOPIC",
        help="the controller node's recorded proposals (~/proposed_cmd_vel, TwistStamped; shadow mode records "
        "them beside the driver's commands), compared with the driver's and with the replay's (default: the "
        "bag's only .../proposed_cmd_vel topic, if any; 'none': not read)",
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


@dataclass(frozen=True)
class TubConfig:
    """`liquid-control import-tub`: a DonkeyCar tub to a bag (bags.tub.import_tub), the car's
    declared top speed and steering (positive magnitudes)."""

    tub: str = option(positional=True, help="a DonkeyCar tub folder (manifest.json, catalogs, images/)")
    output: str = option(help="the bag directory to create")
    top_speed: float = option(help="the car's speed (m/s) at full throttle (user/throttle 1)", metavar="M_S")
    max_yaw_rate: float = option(0.0, metavar="RAD_S", help="the yaw rate (rad/s) at full steering (user/angle 1)")
    full_lock: float = option(
        0.0,
        metavar="RAD",
        help="instead of --max-yaw-rate: the steering angle (rad) at full steering, with --wheelbase",
    )
    wheelbase: float = option(0.0, metavar="M", help="front to rear axle (m), for --full-lock")
    all_modes: bool = option(False, help="also the records an autopilot drove (user/mode local, local_angle)")

    def labels(self):
        from ..model.labels import LabelMapping

        return LabelMapping(
            kind="normalised",
            wheelbase=self.wheelbase,
            top_speed=self.top_speed,
            full_lock=self.full_lock,
            max_yaw_rate=self.max_yaw_rate,
        )
