"""One BPTT training step (forward + backward) of the liquid cores on a training batch: our fused
sequence kernel, our reference Python loop, ncps 1.0.1 and torch.nn.LSTM, all measured side by side
in this run, at one thread (and two with --threads 1 2), beside Liquid-S4 (nets/liquid_s4/, sized as
the CfC: 16 channels x 8 complex modes, 19 output features, 1702 parameters against the CfC's 1692).
Prints a table; `--json` adds one JSON line.

    .venv/bin/python bench/train_step.py [--batch 8] [--steps 300] [--rounds 3] [--threads 1 2] [--json]

Ours (and Liquid-S4) run `state_sequence` (what LiquidPolicy trains through) on float32 inputs (B, T, 15) with
per-sample irregular time spans (B, T); ncps 1.0.1 cannot take per-sample spans at batch > 1, so it
runs its module forward with its default span 1.0 (the same work). The loss is the mean square of
the outputs. Each round
times every row in turn (rounds interleave, so a load spike hits all rows alike); p50 and p90 are
over the samples of all rounds. The load average is printed: other processes share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from liquid_control import nets
from liquid_control.nets import sequence
from liquid_control.nets.liquid_s4.module import LiquidS4

INPUTS = 15


def timed(fn, samples: list[tuple[float, float]], repeats: int) -> None:
    """(wall ms, process CPU ms) per call."""
    for _ in range(repeats):
        c0, t0 = time.process_time_ns(), time.perf_counter_ns()
        fn()
        samples.append(((time.perf_counter_ns() - t0) / 1e6, (time.process_time_ns() - c0) / 1e6))


def step_fn(module, forward):
    def run():
        module.zero_grad(set_to_none=True)
        forward().square().mean().backward()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        import ncps.torch as ncps_torch
        import ncps.wirings as ncps_wirings
    except ImportError:  # the bench still runs without the reference, with fewer rows
        ncps_torch = ncps_wirings = None

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.steps, INPUTS, generator=gen)
    ts = torch.rand(args.batch, args.steps, generator=gen) * 0.04 + 0.002
    torch.manual_seed(0)
    rows: dict[tuple[int, str, str], tuple] = {}  # (threads, cell, implementation) -> (fn, repeats)
    for threads in args.threads:
        for cell in ("CfC", "LTC"):
            ours = getattr(nets, cell)(INPUTS, nets.AutoNCP(19, 2, seed=22222))
            rows[threads, cell, "liquid_control fused"] = (
                step_fn(ours, lambda m=ours: m.state_sequence(x, ts, fused=True)),
                20,
            )
            rows[threads, cell, "liquid_control reference loop"] = (
                step_fn(ours, lambda m=ours: m.state_sequence(x, ts, fused=False)),
                3,
            )
            if ncps_torch is not None:
                ref = getattr(ncps_torch, cell)(INPUTS, ncps_wirings.AutoNCP(19, 2, seed=22222))
                rows[threads, cell, "ncps 1.0.1"] = (step_fn(ref, lambda m=ref: m(x)[0]), 3)
        s4 = LiquidS4(INPUTS, units=19, channels=16, modes=8)
        rows[threads, "Liquid-S4", "liquid_control fused"] = (
            step_fn(s4, lambda m=s4: m.state_sequence(x, ts, fused=True)),
            20,
        )
        rows[threads, "Liquid-S4", "liquid_control reference loop"] = (
            step_fn(s4, lambda m=s4: m.state_sequence(x, ts, fused=False)),
            3,
        )
        lstm = torch.nn.LSTM(INPUTS, 64, batch_first=True)
        rows[threads, "LSTM", "torch.nn.LSTM(15, 64)"] = (step_fn(lstm, lambda m=lstm: m(x)[0]), 40)

    load_before = os.getloadavg()
    samples: dict[tuple, list[tuple[float, float]]] = {key: [] for key in rows}
    for threads in args.threads:
        torch.set_num_threads(threads)
        os.environ[sequence.THREADS_ENV] = str(threads)  # the kernel's threads (chunks of the batch)
        for key, (fn, _) in rows.items():
            if key[0] == threads:
                fn()  # warm-up: compiles (or loads from numba's cache) and allocates
        for _ in range(args.rounds):
            for key, (fn, repeats) in rows.items():
                if key[0] == threads:
                    timed(fn, samples[key], repeats)
    load_after = os.getloadavg()

    stats = {}
    for key, s in samples.items():
        wall, cpu = np.array(s).T
        stats[key] = {
            "p50_ms": float(np.percentile(wall, 50)),
            "p90_ms": float(np.percentile(wall, 90)),
            "cpu_p50_ms": float(np.percentile(cpu, 50)),
            "n": len(s),
        }
    print(
        f"Training step (forward + backward), AutoNCP(19, 2), {INPUTS} inputs, batch {args.batch} x "
        f"{args.steps} steps, float32 ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}); load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(
        f"{'threads':>7}  {'cell':<10}{'implementation':<31}{'p50 ms':>9}{'p90 ms':>9}{'cpu p50':>9}{'n':>5}"
        f"{'vs ncps':>9}{'vs LSTM':>9}"
    )
    for (threads, cell, name), st in stats.items():
        base = stats.get((threads, cell, "ncps 1.0.1"))
        lstm_p50 = stats[threads, "LSTM", "torch.nn.LSTM(15, 64)"]["p50_ms"]
        vs_ncps = f"{base['p50_ms'] / st['p50_ms']:.1f}x" if base else "-"
        vs_lstm = f"{st['p50_ms'] / lstm_p50:.2f}"
        print(
            f"{threads:>7}  {cell:<10}{name:<31}{st['p50_ms']:>9.2f}{st['p90_ms']:>9.2f}{st['cpu_p50_ms']:>9.2f}"
            f"{st['n']:>5}{vs_ncps:>9}{vs_lstm:>9}"
        )
    print(
        "(wall-clock p50 / p90; cpu p50: the process's CPU time per step, all its threads, less "
        "sensitive to other jobs at 1 thread. vs ncps: times faster than ncps 1.0.1 at p50, >1 is "
        "faster; vs LSTM: this row's p50 over the LSTM's at the same threads, <=3 is the target)"
    )
    if args.json:
        print(json.dumps([{"threads": t, "cell": c, "implementation": n, **s} for (t, c, n), s in stats.items()]))


if __name__ == "__main__":
    main()
