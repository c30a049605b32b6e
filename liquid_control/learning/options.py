"""The options of `liquid-control train`, parsed the same way by the command and by
`python -m liquid_control.learning.train` (how torchrun starts each process). Torch-free: the
command line builds its parser without importing torch."""

from __future__ import annotations

import argparse
import json
import sys

from ..cliargs import LazyChoices, add_topic_arguments

ARCHITECTURES = LazyChoices("liquid_control.learning.train", "ARCHITECTURES")


def add_train_arguments(train: argparse.ArgumentParser) -> None:
    train.add_argument(
        "--bag",
        action="append",
        required=True,
        help="a bag, or a folder of bags (repeat for several): from collect or from a robot",
    )
    train.add_argument(
        "--arch",
        choices=ARCHITECTURES,
        default="ncp-cfc",
        metavar="ARCH",
        help="policy architecture: %(choices)s (default %(default)s)",
    )
    train.add_argument("--output", required=True, help="the .safetensors model file to write")
    train.add_argument("--iterations", type=int, default=600)
    train.add_argument("--window", type=int, default=300, help="sensor events per training window")
    train.add_argument(
        "--batch", type=int, default=8, help="windows per iteration, over all processes (torchrun: split between them)"
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate (cosine schedule to lr/20)")
    train.add_argument("--warmup", type=int, default=50, help="first steps of a window not scored")
    train.add_argument("--eval-every", type=int, default=25, help="iterations between validations (and checkpoints)")
    train.add_argument("--patience", type=int, default=8, help="validations without improvement before stopping")
    train.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where decoded frames are cached (default: $LIQUID_CONTROL_CACHE, else ~/.cache/liquid_control)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT's checkpoint (written at every validation and on Ctrl-C); "
        "the result equals an uninterrupted run",
    )
    add_topic_arguments(train)


def run_train(args: argparse.Namespace) -> int:
    from ..bags.info import find_bags
    from ..bags.io import BagError
    from .train import Interrupted, train

    try:
        bags = [b for item in args.bag for b in find_bags(item)]
        result = train(
            bags,
            args.arch,
            args.output,
            seed=args.seed,
            iterations=args.iterations,
            window=args.window,
            batch=args.batch,
            lr=args.lr,
            warmup=args.warmup,
            eval_every=args.eval_every,
            patience=args.patience,
            camera=args.camera_topic,
            imu=args.imu_topic,
            label=args.label_topic,
            cache_dir=args.cache_dir,
            resume=args.resume,
        )
    except (BagError, OSError, ValueError) as exc:  # CacheError is a ValueError
        # One line naming the file and the problem, whatever the message held.
        text = f"{exc.filename}: {exc.strerror or exc}" if isinstance(exc, OSError) and exc.filename else str(exc)
        print("error: " + " ".join((text or type(exc).__name__).split()), file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"{exc}", file=sys.stderr)
        return 130
    if result is not None:  # None: a torchrun process other than rank 0
        print(json.dumps(result))
    return 0


def torchrun_main(argv: list[str] | None = None) -> int:
    """`python -m liquid_control.learning.train` (how torchrun starts each process): the train
    command's options; the process group is closed however training ends."""
    import torch.distributed

    parser = argparse.ArgumentParser(
        prog="python -m liquid_control.learning.train",
        description="train a policy from bags (the options of liquid-control train)",
    )
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_train(args)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
