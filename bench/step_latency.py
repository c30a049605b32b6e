"""Streaming step latency, one thread, batch 1: our fused step against ncps and torch's LSTMCell,
all measured side by side in this run. Prints a table; `--json` adds one JSON line.

    .venv/bin/python bench/step_latency.py [--steps 5000] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from liquid_control import nets

INPUTS = 32


def measure(fn, steps: int, warmup: int = 300) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = np.empty(steps)
    for i in range(steps):
        t0 = time.perf_counter_ns()
        fn()
        samples[i] = time.perf_counter_ns() - t0
    samples /= 1000.0
    return {
        "p50_us": float(np.percentile(samples, 50)),
        "p90_us": float(np.percentile(samples, 90)),
        "p99_us": float(np.percentile(samples, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x_np = rng.normal(size=INPUTS)
    x_t = torch.tensor(x_np, dtype=torch.float32)[None]
    dt = 1.0 / 200.0
    ts_t = torch.full((1, 1), dt)
    rows: list[tuple[str, str, dict[str, float]]] = []

    try:
        import ncps.torch as ncps_torch
        import ncps.wirings as ncps_wirings
    except ImportError:  # the bench still runs without the reference, with fewer rows
        ncps_torch = ncps_wirings = None

    for cell in ("CfC", "LTC"):
        ours = getattr(nets, cell)(INPUTS, nets.AutoNCP(19, 2, seed=22222)).eval()
        fused = ours.fused()
        s1, s2 = fused.initial_state(), ours.initial_state()
        rows.append(
            (cell, "liquid_control fused kernel", measure(lambda f=fused, s=s1: f.step(x_np, s, dt), args.steps))
        )
        rows.append((cell, "liquid_control module.step", measure(lambda m=ours, s=s2: m.step(x_np, s, dt), args.steps)))
        if ncps_torch is not None:
            ref = getattr(ncps_torch, cell)(INPUTS, ncps_wirings.AutoNCP(19, 2, seed=22222)).eval()
            h = torch.zeros(1, 19)
            with torch.no_grad():
                # One step through ncps's sequence module, as a controller would call it.
                rows.append(
                    (
                        cell,
                        "ncps 1.0.1 module",
                        measure(lambda m=ref, h=h: m(x_t[:, None], h, timespans=ts_t), max(args.steps // 5, 500)),
                    )
                )
    lstm = torch.nn.LSTMCell(INPUTS, 64).eval()
    hc = (torch.zeros(1, 64), torch.zeros(1, 64))
    with torch.no_grad():
        rows.append(("LSTM", "torch.nn.LSTMCell(32, 64)", measure(lambda: lstm(x_t, hc), max(args.steps // 5, 500))))

    base = {cell: stats["p50_us"] for cell, name, stats in rows if name.startswith("ncps")}
    lstm_p50 = rows[-1][2]["p50_us"]
    print(
        f"Step latency, AutoNCP(19, 2), {INPUTS} inputs, batch 1, 1 thread "
        f"({platform.processor() or platform.machine()}, torch {torch.__version__})"
    )
    print(f"{'cell':<6}{'implementation':<32}{'p50 us':>9}{'p99 us':>9}{'vs ncps':>10}{'vs LSTMCell':>13}")
    for cell, name, stats in rows:
        vs_ncps = f"{base[cell] / stats['p50_us']:.1f}x" if cell in base else "-"
        vs_lstm = f"{lstm_p50 / stats['p50_us']:.1f}x"
        print(f"{cell:<6}{name:<32}{stats['p50_us']:>9.1f}{stats['p99_us']:>9.1f}{vs_ncps:>10}{vs_lstm:>13}")
    print("(vs columns: how many times faster than that baseline at p50; >1 is faster)")
    if args.json:
        print(json.dumps([{"cell": c, "implementation": n, **s} for c, n, s in rows]))


if __name__ == "__main__":
    main()
