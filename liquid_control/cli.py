"""`liquid-control`: the command line of the package (info, demo)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from .paths import DEFAULT_MODEL


def _info(args: argparse.Namespace) -> int:
    from .modelfile import ModelFileError, load_model, parameter_counts

    try:
        model, config = load_model(args.model)
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = parameter_counts(model)
    core = getattr(model, "core", model)  # a LiquidPolicy wraps its liquid core
    wiring = core.wiring
    if wiring is not None and hasattr(wiring, "summary"):
        wiring_summary = wiring.summary()
    else:
        wiring_summary = {"type": "dense", "units": core.state_size}
    report = {
        "file": str(args.model),
        "config": json.loads(config.to_json()),
        "parameters": counts,
        "wiring": wiring_summary,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    net = config.network
    print(f"model      {args.model}")
    print(f"format     {config.format_version}")
    print(f"network    {net.cell.upper()} {'wired' if net.wiring else 'fully connected'}, "
          f"{net.input_size} inputs -> {core.out_features} outputs, state {core.state_size}")
    if config.encoder:
        print(f"policy     camera encoder {json.dumps(config.encoder, sort_keys=True)}")
        print(f"           parameters: camera encoder {counts['camera_encoder']}, liquid core "
              f"{counts['liquid_core']} ({counts['liquid_core_effective']} live), readout {counts['readout']}")
    if net.wiring:
        print(f"wiring     {json.dumps(net.wiring)}")
    if net.options:
        print(f"options    {json.dumps(net.options, sort_keys=True)}")
    print(f"parameters {counts['trainable']} trainable, {counts['effective']} on live synapses")
    if wiring_summary.get("neurons_per_layer"):
        layers = ", ".join(f"{k} {v}" for k, v in wiring_summary["neurons_per_layer"].items())
        print(f"neurons    {layers}")
        print(f"synapses   {wiring_summary['sensory_synapses']} sensory, {wiring_summary['synapses']} internal")
    s = config.sensors
    print(f"sensors    {', '.join(s.features)}")
    if s.image:
        print(f"image      {json.dumps(s.image)}")
    if s.imu_fields:
        print(f"imu        {', '.join(s.imu_fields)}")
    o = config.outputs
    for name, unit, (lo, hi) in zip(o.fields, o.units, o.limits, strict=True):
        print(f"output     {name} [{unit}] in [{lo}, {hi}]")
    if config.provenance:
        print(f"provenance {json.dumps(config.provenance, sort_keys=True)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from . import demo

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
    summary = collect(tracks, args.output, episodes=args.episodes, seconds=args.seconds, seed=args.seed,
                      speed=args.speed)
    print(json.dumps({"bag": args.output, **summary}))
    return 0


def _train(args: argparse.Namespace) -> int:
    from .learning.train import train

    result = train(args.bag, args.arch, args.output, seed=args.seed, iterations=args.iterations,
                   window=args.window, batch=args.batch)
    print(json.dumps(result))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .learning.evaluate import evaluate

    result = evaluate(args.model, args.track, args.condition, episodes=args.episodes, seconds=args.seconds,
                      seed=args.seed, plot=args.plot)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "per_episode"}))
    else:
        print(f"{result['model']} on {result['track']} ({result['condition']}), {result['episodes']} x "
              f"{result['seconds']:.0f} s: success {result['success_rate']:.0%}, mean |xte| "
              f"{result['mean_abs_xte_m']:.3f} m, max {result['max_abs_xte_m']:.3f} m, "
              f"speed {result['mean_speed_mps']:.2f} m/s")
    return 0


def _table(args: argparse.Namespace) -> int:
    from .learning.report import evaluation_table, markdown, write

    models = {}
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            print(f"error: --model takes NAME=FILE, got {item!r}", file=sys.stderr)
            return 2
        models[name] = path
    result = evaluation_table(models, args.condition, episodes=args.episodes, seconds=args.seconds,
                              seed=args.seed, jobs=args.jobs, log=lambda line: print(line, file=sys.stderr))
    write(result, args.json_path, args.markdown)
    print(markdown(result))
    return 0


def _drive(args: argparse.Namespace) -> int:
    from .rosdemo import drive

    result = drive(model=args.model, track=args.track, seconds=args.seconds, steering_bias=args.steering_bias,
                   adaptation=args.adaptation)
    if args.json:
        print(json.dumps(result))
    return 0 if result["ok"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liquid-control", description="Liquid neural network controllers for ROS 2 robots."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="print a model file's config, parameter counts and wiring")
    info.add_argument("model", help="path to a .safetensors model file")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=_info)
    demo = sub.add_parser(
        "demo", help="train a 19-neuron CfC on synthetic lane keeping and drive it closed loop"
    )
    demo.add_argument("--output", help="directory for the trained model file (default: a temp dir)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--iterations", type=int, default=150, help="training iterations")
    demo.add_argument("--json", action="store_true", help="also print the results as JSON")
    demo.set_defaults(func=_demo)

    drive = sub.add_parser(
        "drive", help="sim_node and controller_node as ROS processes over DDS: the shipped policy drives a track")
    drive.add_argument("--model", help="policy file (default: the shipped lane-keeping model)")
    drive.add_argument("--track", default="oval", help="a shipped track name or a track file")
    drive.add_argument("--seconds", type=float, default=30.0, help="sim seconds to drive")
    drive.add_argument("--steering-bias", type=float, default=0.0, help="rad/s the robot pulls to one side")
    drive.add_argument("--adaptation", action="store_true", help="adapt online from the simulator's teacher")
    drive.add_argument("--json", action="store_true", help="also print the summary as JSON")
    drive.set_defaults(func=_drive)

    collect = sub.add_parser("collect", help="record expert driving with perturbations in the simulator to a bag")
    collect.add_argument("--track", action="append", required=True,
                         help="a shipped track name or a track file (repeat for several)")
    collect.add_argument("--output", required=True, help="the bag directory to create")
    collect.add_argument("--episodes", type=int, default=10, help="episodes per track")
    collect.add_argument("--seconds", type=float, default=30.0, help="sim seconds per episode")
    collect.add_argument("--speed", type=float, default=0.5, help="expert speed, m/s")
    collect.add_argument("--seed", type=int, default=0)
    collect.set_defaults(func=_collect)

    from .learning.train import ARCHITECTURES

    train = sub.add_parser("train", help="train a policy from bags by BPTT and write a model file")
    train.add_argument("--bag", action="append", required=True, help="a bag from collect (repeat for several)")
    train.add_argument("--arch", choices=sorted(ARCHITECTURES), default="ncp-cfc")
    train.add_argument("--output", required=True, help="the .safetensors model file to write")
    train.add_argument("--iterations", type=int, default=600)
    train.add_argument("--window", type=int, default=300, help="sensor events per training window")
    train.add_argument("--batch", type=int, default=8)
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=_train)

    from .learning.conditions import CONDITIONS

    ev = sub.add_parser("eval", help="closed-loop episodes of a model in the simulator")
    ev.add_argument("--model", default=DEFAULT_MODEL, help="a policy model file (default: the shipped one)")
    ev.add_argument("--track", default="oval", help="a shipped track name or a track file")
    ev.add_argument("--condition", choices=sorted(CONDITIONS), default="nominal")
    ev.add_argument("--episodes", type=int, default=5)
    ev.add_argument("--seconds", type=float, default=30.0)
    ev.add_argument("--seed", type=int, default=100)
    ev.add_argument("--plot", help="write the trajectories to this PNG")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(func=_eval)

    table = sub.add_parser("table", help="evaluate several models in every condition: the model card's table")
    table.add_argument("--model", action="append", required=True, metavar="NAME=FILE",
                       help="a row: its name and policy file (repeat)")
    table.add_argument("--condition", action="append", choices=sorted(CONDITIONS),
                       help="a column (repeat; default: every condition)")
    table.add_argument("--episodes", type=int, default=6,
                       help="episodes per cell (split between the training tracks)")
    table.add_argument("--seconds", type=float, default=30.0)
    table.add_argument("--seed", type=int, default=100)
    table.add_argument("--jobs", type=int, default=1, help="cells evaluated at once (processes)")
    table.add_argument("--json", dest="json_path", help="write the full table as JSON to this file")
    table.add_argument("--markdown", help="write the markdown tables to this file")
    table.set_defaults(func=_table)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
