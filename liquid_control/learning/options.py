"""The options of `liquid-control train`, parsed the same way by the command and by
`python -m liquid_control.learning.train` (how torchrun starts each process). Torch-free: the
command line builds its parser without importing torch."""

from __future__ import annotations

import argparse
import json
import sys

from ..cliargs import add_options, from_args
from .configs import TrainConfig


def add_train_arguments(train: argparse.ArgumentParser) -> None:
    add_options(train, TrainConfig)


def run_train(args: argparse.Namespace) -> int:
    from ..bags.io import BagError
    from .train import Interrupted, train

    try:
        result = train(from_args(TrainConfig, args))
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
