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
    command's options; the process group is closed however training ends.

    A process of a job of several then leaves at once, its output flushed, without the interpreter's
    finalization: after training, gloo's threads outlive destroy_process_group (something in torch
    2.13 keeps the group alive; DistributedDataParallel does, and not only it), and the C++
    teardown at exit then aborted the process now and then ("terminate called without an active
    exception", SIGABRT): 3 of 44 two-process runs on this loaded machine, and once in CI, where
    torchrun reported the whole job failed after rank 0 had written the model. Nothing is left to
    finalize: every file is written and closed, the group is destroyed."""
    import os
    import traceback

    import torch.distributed

    parser = argparse.ArgumentParser(
        prog="python -m liquid_control.learning.train",
        description="train a policy from bags (the options of liquid-control train)",
    )
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    try:
        status = run_train(args)
    except BaseException:
        if not torch.distributed.is_initialized():
            raise
        traceback.print_exc()  # as Python would, then status 1
        status = 1
    if not torch.distributed.is_initialized():
        return status
    torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
