"""`liquid-control`: the command line of the package (info, demo)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
