"""What `liquid-control train`, `eval` and `table` take, one dataclass each: its fields are the
command's options (cliargs.add_options), the keywords of the function that runs it, the run key a
resumed or cached run must match and the provenance its result records. Torch-free: the command
line builds its parser without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..cliargs import TOPIC_HELP, LazyChoices, option
from ..model.specs import IMU_FIELDS
from ..paths import DEFAULT_MODEL
from ..sim.world import DEFAULT_ROBOT

ROBOTS = LazyChoices("liquid_control.sim.world", "ROBOTS")
ROBOT_HELP = "the robot that drives: %(choices)s (default %(default)s; car: Ackermann steering)"

ARCHITECTURES = LazyChoices("liquid_control.learning.train", "ARCHITECTURES")


@dataclass(frozen=True)
class TrainConfig:
    """`liquid-control train`: its options, what `learning.train.train` takes, the run key a resumed
    run must match (key) and what the model file records (provenance)."""

    bags: tuple[str, ...] = option(
        flag="--bag",
        metavar="BAG",
        help="a bag, or a folder of bags (repeat for several): from collect or from a robot",
    )
    output: str = option(help="the .safetensors model file to write")
    arch: str = option(
        "ncp-cfc",
        choices=ARCHITECTURES,
        metavar="ARCH",
        help="policy architecture: %(choices)s (default %(default)s)",
        key=True,
        provenance=True,
        record_as="architecture",
    )
    init: str | None = option(
        None,
        metavar="MODEL",
        help="start from this model's weights (its architecture, inputs and normalisation; it reads what the bags "
        "give) instead of a fresh network: fine-tune a policy on new data",
        key=True,
        provenance=True,
    )
    iterations: int = option(600, help="optimizer steps at most (default %(default)s)", key=True)
    window: int = option(300, help="sensor events per training window", key=True, provenance=True)
    batch: int = option(
        8, help="windows per iteration, over all processes (torchrun: split between them)", key=True, provenance=True
    )
    seed: int = option(0, key=True, provenance=True)
    lr: float = option(3e-3, help="Adam's learning rate (cosine schedule to lr/20)", key=True, provenance=True)
    warmup: int = option(50, help="first steps of a window not scored", key=True, provenance=True)
    val_fraction: float = option(
        0.2, help="share of the episodes held out for validation (default %(default)s)", key=True, provenance=True
    )
    eval_every: int = option(25, help="iterations between validations (and checkpoints)", key=True, provenance=True)
    patience: int = option(8, help="validations without improvement before stopping", key=True, provenance=True)
    cache_dir: str | None = option(
        None,
        metavar="DIR",
        help="where decoded frames are cached (default: $LIQUID_CONTROL_CACHE, else ~/.cache/liquid_control)",
    )
    resume: bool = option(
        False,
        help="continue from OUTPUT's checkpoint (written at every validation and on Ctrl-C); "
        "the result equals an uninterrupted run",
    )
    camera_topic: str | None = option(None, metavar="TOPIC", help=TOPIC_HELP["camera_topic"])
    imu_topic: str | None = option(None, metavar="TOPIC", help=TOPIC_HELP["imu_topic"])
    odom_topic: str | None = option(None, metavar="TOPIC", help=TOPIC_HELP["odom_topic"])
    imu_fields: tuple[str, ...] = option(
        (),
        flag="--imu-field",
        metavar="FIELD",
        choices=IMU_FIELDS,
        help="an IMU field the model reads (repeat for several; default: the architecture's, "
        "angular_velocity.z, linear_acceleration.x and .y): %(choices)s",
    )
    label_topic: str | None = option(None, metavar="TOPIC", help=TOPIC_HELP["label_topic"])
    intervention_topic: str | None = option(None, metavar="TOPIC", help=TOPIC_HELP["intervention_topic"])
    augment: tuple[str, ...] = option(
        (),
        flag="--augment",
        metavar="KIND=P",
        help="augment training windows: KIND with probability P (repeat; KIND alone: 0.5): brightness, contrast, "
        "colour, palette, noise, blur, shadow (bands), haze (fog), flip (the mirror image, its labels mirrored "
        "too); 'standard': the camera's kinds and the mirror at the documented probabilities",
        key=True,
    )
    # Takeovers (HG-DAgger): how much the steps a person commanded, and those just before, count.
    takeover_weight: float = option(
        1.0,
        metavar="W",
        help="loss weight of the steps a person commanded (a takeover, marked in the bag; default %(default)s)",
        key=True,
        provenance=True,
    )
    takeover_lead: float = option(
        0.0,
        metavar="S",
        help="the seconds before each takeover weighted as the takeover (where the labels are a teacher's "
        "for every step, as in the simulator; default %(default)s)",
        key=True,
        provenance=True,
    )
    autonomous_weight: float = option(
        1.0,
        metavar="W",
        help="loss weight of the other steps of a bag with takeover marks, where the policy drove (0: learn "
        "only from the person, as HG-DAgger does; default %(default)s)",
        key=True,
        provenance=True,
    )
    # What the labels mean (model/labels.py); recorded in the model file.
    normalised_labels: bool = option(
        False,
        help="the label Twist holds normalised throttle (linear.x) and steering (angular.z) in [-1, 1]: "
        "give --top-speed and --max-yaw-rate, or --full-lock with --wheelbase",
        key=True,
    )
    wheelbase: float = option(
        0.0,
        metavar="M",
        help="front to rear axle (m): AckermannDrive labels' yaw rate is speed * tan(steering_angle) / wheelbase",
        key=True,
    )
    top_speed: float = option(0.0, metavar="M_S", help="normalised labels: the speed (m/s) at throttle 1", key=True)
    full_lock: float = option(
        0.0,
        metavar="RAD",
        help="normalised labels of a car: the steering angle (rad) at steering 1; negative when positive steering "
        "turns right (DonkeyCar)",
        key=True,
    )
    max_yaw_rate: float = option(
        0.0,
        metavar="RAD_S",
        help="normalised labels: the yaw rate (rad/s) at steering 1, instead of --full-lock; negative when "
        "positive steering turns right",
        key=True,
    )

    def labels(self):
        """The LabelMapping these options declare (ValueError when they cannot work)."""
        from ..model.labels import LabelMapping

        return LabelMapping(
            kind="normalised" if self.normalised_labels else "twist",
            wheelbase=self.wheelbase,
            top_speed=self.top_speed,
            full_lock=self.full_lock,
            max_yaw_rate=self.max_yaw_rate,
        )


CONDITIONS = LazyChoices("liquid_control.sim.conditions", "CONDITIONS")
SUITES = LazyChoices("liquid_control.sim.conditions", "SUITES")


SPEED_LIMIT_HELP = (
    "the controller's max_linear_speed in every condition that sets none of its own (default: the node's, "
    "0.5 m/s); the expert is scheduled up to it"
)


@dataclass(frozen=True)
class EvalConfig:
    """`liquid-control eval`: closed-loop episodes of a model in the simulator (learning.evaluate).
    The key fields are what a kept cell of the evaluation table depends on besides the model file."""

    model: str = option(
        DEFAULT_MODEL,
        help="a policy model file (default: the shipped one); 'expert': the demonstrator, pure pursuit on ground truth",
    )
    track: str = option("oval", help="a shipped track name or a track file", key=True)
    condition: str = option(
        "nominal", choices=CONDITIONS, metavar="CONDITION", help="%(choices)s (default %(default)s)", key=True
    )
    episodes: int = option(5, key=True)
    seconds: float = option(30.0, key=True)
    seed: int = option(100, key=True)
    plot: str | None = option(None, help="write the trajectories to this PNG")
    robot: str = option(DEFAULT_ROBOT, choices=ROBOTS, metavar="ROBOT", help=ROBOT_HELP, key=True)
    max_linear_speed: float | None = option(None, metavar="M_S", help=SPEED_LIMIT_HELP, key=True)


@dataclass(frozen=True)
class TableConfig:
    """`liquid-control table`: several models in every condition, the model card's table
    (learning.report.evaluation_table)."""

    models: tuple[str, ...] = option(
        flag="--model",
        metavar="NAME=FILE",
        help="a row: its name and policy file (repeat; the same NAME again adds another training seed to that row); "
        "FILE 'expert': the demonstrator, pure pursuit on ground truth, to show where it cannot keep the road",
    )
    reference: str | None = option(
        None,
        metavar="NAME",
        help="the row the others are compared with (default: the first): each cell says whether it "
        "differs from the reference's at 95%%",
    )
    conditions: tuple[str, ...] = option(
        (),
        flag="--condition",
        choices=CONDITIONS,
        metavar="CONDITION",
        help="a column: %(choices)s (repeat; default: the classic suite)",
    )
    suites: tuple[str, ...] = option(
        (),
        flag="--suite",
        choices=SUITES,
        metavar="SUITE",
        help="every condition of a suite as columns: %(choices)s (repeat; with --condition: both)",
    )
    episodes: int = option(6, help="episodes per cell (split between the training tracks)", provenance=True)
    seconds: float = option(30.0, provenance=True)
    seed: int = option(100, provenance=True)
    robot: str = option(DEFAULT_ROBOT, choices=ROBOTS, metavar="ROBOT", help=ROBOT_HELP, provenance=True)
    max_linear_speed: float | None = option(None, metavar="M_S", help=SPEED_LIMIT_HELP, provenance=True)
    jobs: int = option(1, help="cells evaluated at once (processes)")
    cells: str | None = option(
        None,
        metavar="DIR",
        help="keep each finished cell's result in DIR and reuse those already there: an interrupted table "
        "resumes, a row added later runs only its own cells (keyed by the model file's contents, condition, "
        "track, episodes, seconds, seed)",
    )
    json_path: str | None = option(
        None, flag="--json", metavar="FILE", help="write the full table as JSON to this file"
    )
    markdown: str | None = option(None, help="write the markdown tables to this file")
    by_condition: bool = option(
        False, help="markdown with a row per condition and a column per model (for many conditions)"
    )

    def rows(self) -> dict[str, list[str]]:
        """{row name: its model files}, from NAME=FILE (the same NAME again: another training seed)."""
        rows: dict[str, list[str]] = {}
        for item in self.models:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--model takes NAME=FILE, got {item!r}")
            rows.setdefault(name, []).append(path)
        return rows

    def columns(self) -> list[str]:
        """The conditions, given ones first, then each suite's (each once); the classic suite when none."""
        from ..sim.conditions import SUITES as suites

        columns = list(self.conditions)
        for c in (c for suite in self.suites for c in suites[suite]):
            if c not in columns:  # each suite starts with nominal: one column of it
                columns.append(c)
        return columns or list(suites["classic"])


@dataclass(frozen=True)
class DaggerConfig:
    """`liquid-control dagger`: rounds of the policy driving with the expert beside it, aggregating
    and retraining (learning.dagger)."""

    output: str = option(help="the folder of the run: every round's bag, model and evaluation, and dagger.json")
    bags: tuple[str, ...] = option(
        flag="--bag",
        metavar="BAG",
        help="the data the starting model was trained on (repeat): every round trains on it and on the rounds' bags",
    )
    model: str = option(DEFAULT_MODEL, help="the starting policy (default: the shipped one)")
    mode: str = option(
        "beta",
        choices=("beta", "takeover"),
        help="beta: DAgger, the expert labels every state and drives a share beta of it; takeover: HG-DAgger, "
        "the expert takes over past --threshold and the retraining learns from its takeovers (default %(default)s)",
    )
    rounds: int = option(3, help="rounds in all (run again with more to go on; default %(default)s)")
    tracks: tuple[str, ...] = option(
        ("oval", "kidney"),
        flag="--track",
        metavar="TRACK",
        help="tracks of the rollouts (repeat; default oval, kidney)",
    )
    episodes: int = option(4, help="rollout episodes per track and round (default %(default)s)")
    seconds: float = option(30.0, help="seconds per episode (default %(default)s)")
    beta: float = option(0.5, help="beta mode: the share the expert drives in round 1 (default %(default)s)")
    beta_decay: float = option(0.5, help="beta mode: beta times this every round (default %(default)s)")
    threshold: float = option(
        0.15, metavar="M", help="takeover mode: |cross-track error| (m) past which the expert takes over"
    )
    kick_rate: float = option(
        0.15,
        metavar="PER_S",
        help="steering kicks per second on the policy's commands (collect's: 1 rad/s for 0.3 s), to make mistakes "
        "to recover from (0: none; default %(default)s)",
    )
    speed: float = option(0.5, help="the expert's speed (m/s; with --max-speed the least; default %(default)s)")
    max_speed: float | None = option(
        1.0, metavar="M_S", help="the expert's speed scheduled up to this, and the rollouts' speed limit (default 1.0)"
    )
    rollout_conditions: tuple[str, ...] = option(
        (),
        flag="--rollout-condition",
        choices=CONDITIONS,
        metavar="CONDITION",
        help="conditions drawn per rollout episode (repeat; default nominal): %(choices)s",
    )
    iterations: int = option(
        300, help="training iterations per round, fine-tuning the last model (default %(default)s)"
    )
    lr: float = option(1e-3, help="the learning rate of each round's fine-tuning (default %(default)s)")
    augment: tuple[str, ...] = option(
        (), flag="--augment", metavar="KIND=P", help="augmentation of each round's training, as train's --augment"
    )
    eval_conditions: tuple[str, ...] = option(
        ("fast_tight_turns", "fast_tight_winter"),
        flag="--eval-condition",
        choices=CONDITIONS,
        metavar="CONDITION",
        help="held-out conditions each round's model is evaluated in (repeat)",
    )
    eval_track: str = option("serpentine", help="the track of the evaluation, where a condition names none")
    eval_episodes: int = option(4, help="episodes per evaluation condition (default %(default)s)")
    seed: int = option(0)
    robot: str = option(DEFAULT_ROBOT, choices=ROBOTS, metavar="ROBOT", help=ROBOT_HELP)
    cache_dir: str | None = option(None, metavar="DIR", help="the frame cache, as train's --cache-dir")
