"""`liquid-control`: the command line of the package (info, demo, drive, collect, train, eval, table,
record, play, replay, recover, export). Each command imports what it needs when it runs, so `--help` needs neither
torch nor rclpy."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from .cliargs import add_options, add_topic_arguments, from_args
from .learning.configs import ROBOT_HELP, ROBOTS
from .sim.world import DEFAULT_ROBOT


def _user_errors() -> tuple[type[BaseException], ...]:
    """What the package raises for bad input (each names the file or value and the problem),
    imported only once a command has failed: --help needs none of these modules."""
    from .bags.io import BagError
    from .bags.limits import LimitError
    from .learning.cache import CacheError
    from .model.specs import ModelFileError
    from .sim.track import TrackError

    return BagError, LimitError, CacheError, ModelFileError, TrackError


def _bag_error(exc: BaseException) -> int:
    """A command's failure on bad input: one line on stderr, `error: ` and what the exception
    says (a BagError names the bag; an OSError its file), exit status 2."""
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror or exc}"
    else:
        text = str(exc) or type(exc).__name__
    print("error: " + " ".join(text.split()), file=sys.stderr)  # one line, whatever the message held
    return 2


def _bag_info(args: argparse.Namespace) -> int:
    from .bags.info import bag_info, format_bag_info
    from .bags.io import BagError

    try:
        info = bag_info(
            args.model,
            args.camera_topic,
            args.imu_topic,
            args.label_topic,
            odom=args.odom_topic,
            intervention=args.intervention_topic,
        )
    except (BagError, OSError) as exc:
        return _bag_error(exc)
    print(json.dumps(info, indent=2) if args.json else format_bag_info(info))
    return 0


def _info(args: argparse.Namespace) -> int:
    from .bags.info import is_bag

    if is_bag(Path(args.model)):
        return _bag_info(args)
    from .model.info import format_model_info, model_info
    from .model.modelfile import ModelFileError

    try:  # a file, or package://<package>/<file> as the node takes it
        report = model_info(args.model, args.graph)
    except (FileNotFoundError, ModelFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_model_info(report))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demos import toy_plant as demo

    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        results = demo.run(out, seed=args.seed, iterations=args.iterations)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            results = demo.run(Path(tmp), seed=args.seed, iterations=args.iterations)
    if args.json:
        print(json.dumps(results))
    return 0


def _collect(args: argparse.Namespace) -> int:
    from .learning.collect import collect
    from .sim.track import Track, track_path

    tracks = [Track.load(track_path(t)) for t in args.track]
    summary = collect(
        tracks,
        args.output,
        episodes=args.episodes,
        seconds=args.seconds,
        seed=args.seed,
        speed=args.speed,
        max_speed=args.max_speed,
        robot=args.robot,
    )
    print(json.dumps({"bag": args.output, **summary}))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .learning.configs import EvalConfig
    from .learning.evaluate import evaluate

    try:
        result = evaluate(from_args(EvalConfig, args))
    except ValueError as exc:  # a model for another robot, or one that reads what the simulator lacks
        return _bag_error(exc)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "per_episode"}))
    else:
        print(
            f"{result['model']} on {result['track']} ({result['condition']}), {result['episodes']} x "
            f"{result['seconds']:.0f} s: success {result['success_rate']:.0%}, mean |xte| "
            f"{result['mean_abs_xte_m']:.3f} m, max {result['max_abs_xte_m']:.3f} m, "
            f"speed {result['mean_speed_mps']:.2f} m/s"
        )
    return 0


def _table(args: argparse.Namespace) -> int:
    from .learning.configs import TableConfig
    from .learning.report import evaluation_table, markdown, write

    config = from_args(TableConfig, args)
    try:
        result = evaluation_table(config, log=lambda line: print(line, file=sys.stderr))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write(result, config.json_path, config.markdown, config.by_condition)
    print(markdown(result, config.by_condition))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .learning.compare import compare_tables, markdown

    groups = {}
    for spec in args.group:
        name, sep, members = spec.partition("=")
        if not sep or not name or not members:
            print(f"error: --group {spec!r}: expected NAME=ROW,ROW,...", file=sys.stderr)
            return 2
        groups[name] = [m for m in members.split(",") if m]
    tables = []
    for path in (args.before, args.after):
        try:
            tables.append(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as exc:
            print(f"error: {path}: not a table's JSON ({exc})", file=sys.stderr)
            return 2
        if not isinstance(tables[-1], dict) or "rows" not in tables[-1] or "conditions" not in tables[-1]:
            print(f"error: {path}: not a table's JSON (liquid-control table --json)", file=sys.stderr)
            return 2
    try:
        result = compare_tables(*tables, rows=args.row, conditions=args.condition, groups=groups)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = markdown(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text)
    print(text, end="")
    return 0


def _drive(args: argparse.Namespace) -> int:
    from .demos.ros_drive import drive

    result = drive(
        model=args.model,
        track=args.track,
        seconds=args.seconds,
        steering_bias=args.steering_bias,
        plot=args.plot,
        bag=args.bag,
        adaptation=args.adaptation,
    )
    if args.json:
        print(json.dumps(result))
    return 0 if result["ok"] else 1


def _bag_command(args: argparse.Namespace, run, summary_text) -> int:
    """Run a bag command: its summary on stdout (JSON with --json), or exit 2 with the reason in one
    line on bad input (an unreadable bag, a file that cannot be opened or written, a bad value)."""
    from .bags.io import BagError

    try:
        summary = run()
    except (BagError, OSError, ValueError) as exc:  # ModelFileError is a ValueError
        return _bag_error(exc)
    print(json.dumps(summary) if args.json else summary_text(summary))
    return 0


def _record(args: argparse.Namespace) -> int:
    from .bags.record import format_record_summary, record
    from .bags.ros import default_topics

    return _bag_command(
        args,
        lambda: record(args.output, args.topics or default_topics(args.namespace), duration=args.duration),
        format_record_summary,
    )


def _play(args: argparse.Namespace) -> int:
    from .bags.play import format_play_summary, parse_remaps, play

    return _bag_command(
        args,
        lambda: play(
            args.bag,
            rate=args.rate,
            loop=args.loop,
            remap=parse_remaps(args.remap),
            clock_hz=args.clock,
            topics=args.topics,
            start_offset=args.start_offset,
            delay=args.delay,
            wait_for_subscribers=args.wait_for_subscribers,
        ),
        format_play_summary,
    )


def _replay(args: argparse.Namespace) -> int:
    from .bags.configs import ReplayConfig
    from .bags.replay import format_summary, replay

    return _bag_command(args, lambda: replay(from_args(ReplayConfig, args)), format_summary)


def _import_tub(args: argparse.Namespace) -> int:
    from .bags.configs import TubConfig
    from .bags.tub import format_import_summary, import_tub

    def run():
        config = from_args(TubConfig, args)
        return import_tub(config.tub, config.output, config.labels(), all_modes=config.all_modes)

    return _bag_command(args, run, format_import_summary)


def _recover(args: argparse.Namespace) -> int:
    from .bags.recover import format_recover_summary, recover

    return _bag_command(args, lambda: recover(args.bag, args.output), format_recover_summary)


def _export(args: argparse.Namespace) -> int:
    from .model.export import export_onnx
    from .model.specs import ModelFileError

    try:
        summary = export_onnx(args.model, args.onnx)
    except (ModelFileError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        json.dumps(summary)
        if args.json
        else f"wrote {summary['onnx']} ({summary['bytes']} bytes, opset {summary['opset']}): inputs "
        + ", ".join(f"{k} {v}" for k, v in summary["inputs"].items())
        + "; outputs "
        + ", ".join(f"{k} {v}" for k, v in summary["outputs"].items())
    )
    return 0


def _average(args: argparse.Namespace) -> int:
    from .model.average import average_models
    from .model.specs import ModelFileError

    try:
        summary = average_models(args.model, args.output)
    except (ModelFileError, FileExistsError, FileNotFoundError, ValueError) as exc:
        return _bag_error(exc)
    print(
        json.dumps(summary)
        if args.json
        else f"wrote {summary['model']}: the mean of {len(summary['averaged'])} models' weights "
        f"({summary['tensors']} tensors; they differed by up to {summary['largest_difference']:.4g})"
    )
    return 0


def _add_info(sub) -> None:
    info = sub.add_parser(
        "info",
        help="a model file's config, parameter counts and wiring; or a bag's topics, "
        "rates, stamp gaps and which topics training would use",
    )
    info.add_argument(
        "model", metavar="MODEL_OR_BAG", help="a .safetensors model file, or a bag (directory, .mcap or .db3)"
    )
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument(
        "--graph",
        metavar="PNG",
        help="draw the wiring to this PNG: neurons by layer, synapses by polarity, with their counts",
    )
    add_topic_arguments(info, "for a bag: ")
    info.set_defaults(func=_info)


def _add_demo(sub) -> None:
    demo = sub.add_parser("demo", help="train a 19-neuron CfC on synthetic lane keeping and drive it closed loop")
    demo.add_argument("--output", help="directory for the trained model file (default: a temp dir)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--iterations", type=int, default=150, help="training iterations")
    demo.add_argument("--json", action="store_true", help="also print the results as JSON")
    demo.set_defaults(func=_demo)


def _add_drive(sub) -> None:
    drive = sub.add_parser(
        "drive", help="sim_node and controller_node as ROS processes over DDS: the shipped policy drives a track"
    )
    drive.add_argument("--model", help="policy file (default: the shipped lane-keeping model)")
    drive.add_argument("--track", default="oval", help="a shipped track name or a track file")
    drive.add_argument("--seconds", type=float, default=30.0, help="sim seconds to drive")
    drive.add_argument("--steering-bias", type=float, default=0.0, help="rad/s the robot pulls to one side")
    drive.add_argument("--adaptation", action="store_true", help="adapt online from the simulator's teacher")
    drive.add_argument("--plot", metavar="PNG", help="write the robot's trajectory over the track to this PNG")
    drive.add_argument("--bag", metavar="DIR", help="record the robot's topics to this new bag (liquid-control record)")
    drive.add_argument("--json", action="store_true", help="also print the summary as JSON")
    drive.set_defaults(func=_drive)


def _add_collect(sub) -> None:
    collect = sub.add_parser("collect", help="record expert driving with perturbations in the simulator to a bag")
    collect.add_argument(
        "--track", action="append", required=True, help="a shipped track name or a track file (repeat for several)"
    )
    collect.add_argument("--output", required=True, help="the bag directory to create")
    collect.add_argument("--episodes", type=int, default=10, help="episodes per track")
    collect.add_argument("--seconds", type=float, default=30.0, help="sim seconds per episode")
    collect.add_argument("--speed", type=float, default=0.5, help="expert speed, m/s (with --max-speed: the least)")
    collect.add_argument(
        "--max-speed",
        type=float,
        help="schedule the expert's speed by the road ahead, from "
        "--speed up to this (m/s): it slows for the curves it sees coming",
    )
    collect.add_argument("--seed", type=int, default=0)
    collect.add_argument(
        "--robot",
        default=DEFAULT_ROBOT,
        choices=ROBOTS,
        metavar="ROBOT",
        help=ROBOT_HELP,
    )
    collect.set_defaults(func=_collect)


def _add_train(sub) -> None:
    from .learning.options import add_train_arguments, run_train

    train = sub.add_parser("train", help="train a policy from bags by BPTT and write a model file")
    add_train_arguments(train)
    train.set_defaults(func=run_train)


def _dagger(args: argparse.Namespace) -> int:
    from .learning.configs import DaggerConfig
    from .learning.dagger import dagger, format_state
    from .learning.train import Interrupted

    config = from_args(DaggerConfig, args)
    try:
        state = dagger(config)
    except ValueError as exc:  # options, a model, a bag or a run folder that cannot be used: one line
        return _bag_error(exc)
    except (Interrupted, KeyboardInterrupt):  # what was finished is kept in the output folder
        print(f"interrupted: the same command goes on where {config.output} stopped", file=sys.stderr)
        return 130
    print(json.dumps(state) if args.json else format_state(state))
    return 0


def _add_dagger(sub) -> None:
    from .learning.configs import DaggerConfig

    dg = sub.add_parser(
        "dagger",
        help="rounds of the policy driving beside the expert in the simulator, the data aggregated and the "
        "policy retrained (DAgger, or HG-DAgger's takeovers); resumable",
    )
    add_options(dg, DaggerConfig)
    dg.add_argument("--json", action="store_true", help="print the run's state as one JSON object")
    dg.set_defaults(func=_dagger)


def _add_eval(sub) -> None:
    from .learning.configs import EvalConfig

    ev = sub.add_parser("eval", help="closed-loop episodes of a model in the simulator")
    add_options(ev, EvalConfig)
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(func=_eval)


def _add_table(sub) -> None:
    from .learning.configs import TableConfig

    table = sub.add_parser("table", help="evaluate several models in every condition: the model card's table")
    add_options(table, TableConfig)
    table.set_defaults(func=_table)


def _add_compare(sub) -> None:
    cmp = sub.add_parser(
        "compare",
        help="what a change of recipe did: two tables of the same episodes compared row by row",
    )
    cmp.add_argument("before", help="a table's JSON (liquid-control table --json), before the change")
    cmp.add_argument("after", help="a table's JSON of the same episodes, after it")
    cmp.add_argument(
        "--row", action="append", metavar="NAME", help="a row to compare (repeat; default: every row in both)"
    )
    cmp.add_argument(
        "--condition",
        action="append",
        metavar="CONDITION",
        help="a condition the success rate is averaged over (repeat; default: every one in both but nominal)",
    )
    cmp.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="NAME=ROW,ROW",
        help="rows whose gains are averaged; each pair of groups is compared (repeat)",
    )
    cmp.add_argument("--json", metavar="FILE", help="write the comparison as JSON to this file")
    cmp.add_argument("--markdown", metavar="FILE", help="write the markdown to this file")
    cmp.set_defaults(func=_compare)


def _add_record(sub) -> None:
    rec = sub.add_parser("record", help="record live topics to a rosbag2 bag (MCAP), messages as received")
    rec.add_argument(
        "topics",
        nargs="*",
        metavar="TOPIC",
        help="absolute topic names (default: the robot's topics, /clock and /diagnostics)",
    )
    rec.add_argument("-o", "--output", required=True, help="the bag directory to create")
    rec.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help="stop after this many seconds from the start (default: at Ctrl-C / SIGTERM)",
    )
    rec.add_argument("--namespace", default="/", metavar="NS", help="the robot's namespace, for the default topics")
    rec.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    rec.set_defaults(func=_record)


def _add_play(sub) -> None:
    pl = sub.add_parser("play", help="publish a bag's messages with their recorded timing")
    pl.add_argument("bag", help="a rosbag2 bag directory (or a .mcap / .db3 file)")
    pl.add_argument("--rate", type=float, default=1.0, help="speed factor (2 = twice as fast)")
    pl.add_argument("--loop", action="store_true", help="play again from the start at the end, until Ctrl-C")
    pl.add_argument(
        "--remap", action="append", default=[], metavar="OLD:=NEW", help="publish topic OLD as NEW (repeat for several)"
    )
    pl.add_argument(
        "--clock",
        type=float,
        nargs="?",
        const=40.0,
        default=0.0,
        metavar="HZ",
        help="publish /clock from the bag's time at HZ (default 40 Hz when given without a value)",
    )
    pl.add_argument("--topics", nargs="+", metavar="TOPIC", help="play only these topics")
    pl.add_argument("--start-offset", type=float, default=0.0, metavar="S", help="start this many seconds into the bag")
    pl.add_argument(
        "--delay", type=float, default=0.0, metavar="S", help="wait this many seconds after creating the publishers"
    )
    pl.add_argument(
        "--wait-for-subscribers",
        action="store_true",
        help="start once every played topic has a subscriber (at most 30 s)",
    )
    pl.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    pl.set_defaults(func=_play)


def _add_replay(sub) -> None:
    from .bags.configs import ReplayConfig

    rp = sub.add_parser(
        "replay",
        help="offline: a bag's camera and IMU through a model; commands to a bag, "
        "CSV and plot, compared with the recorded ones",
    )
    add_options(rp, ReplayConfig)
    rp.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    rp.set_defaults(func=_replay)


def _add_import_tub(sub) -> None:
    from .bags.configs import TubConfig

    it = sub.add_parser(
        "import-tub",
        help="a DonkeyCar tub (its camera frames and the driver's steering and throttle) as a bag "
        "that info, train and replay take",
    )
    add_options(it, TubConfig)
    it.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    it.set_defaults(func=_import_tub)


def _add_recover(sub) -> None:
    rc = sub.add_parser(
        "recover",
        help="rebuild a readable bag from an MCAP bag that was never closed (a killed "
        "recorder): every complete message, into a new bag",
    )
    rc.add_argument("bag", help="the bag directory (with or without metadata.yaml) or its .mcap file; only read")
    rc.add_argument("-o", "--output", help="the bag directory to create (default: BAG.recovered beside BAG)")
    rc.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    rc.set_defaults(func=_recover)


def _add_export(sub) -> None:
    ex = sub.add_parser(
        "export",
        help="a policy's streaming step as one ONNX graph (for ONNX Runtime, TensorRT; controller_node backend:=onnx)",
    )
    ex.add_argument("model", help="a policy model file (.safetensors, or package://...)")
    ex.add_argument("--onnx", required=True, metavar="OUT", help="the .onnx file to write (never over a file)")
    ex.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    ex.set_defaults(func=_export)


def _add_average(sub) -> None:
    av = sub.add_parser(
        "average",
        help="average the weights of fine-tunes of one model into one model file (a model soup)",
    )
    av.add_argument("model", nargs="+", help="two model files or more: fine-tunes of one model (.safetensors)")
    av.add_argument("--output", required=True, help="the .safetensors model file to write")
    av.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    av.set_defaults(func=_average)


COMMANDS = (
    _add_info,
    _add_demo,
    _add_drive,
    _add_collect,
    _add_train,
    _add_average,
    _add_eval,
    _add_dagger,
    _add_table,
    _add_compare,
    _add_record,
    _add_play,
    _add_replay,
    _add_import_tub,
    _add_recover,
    _add_export,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liquid-control", description="Liquid neural network controllers for ROS 2 robots."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command. Bad input that a command did not report itself (a model, bag, track or cache
    that cannot be used, a file that cannot be opened) is one line and exit status 2, never a
    traceback; a traceback means a defect."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:
        if isinstance(exc, OSError) and exc.filename is not None or isinstance(exc, _user_errors()):
            return _bag_error(exc)
        raise


if __name__ == "__main__":
    sys.exit(main())
