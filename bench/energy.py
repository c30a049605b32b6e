"""Work and energy per step of the shipped policy, beside the baselines the 19-neuron NCP is quoted
against: multiply-adds per camera frame and per IMU step, the CPU time of each (process time, one
thread, this machine), and the energy per step at a stated board power (default 5 W, a Raspberry
Pi-class board run flat out: an upper bound, since the step does not keep a core busy).

Baselines measured in the same run: torch.nn.LSTM cell of 64 units on the same 15 core inputs (a
step per IMU sample), and a feedforward CNN policy of about 100k parameters on the same 64x48 frame
(a forward pass per frame, commands straight from pixels).

    .venv/bin/python bench/energy.py [--watts 5] [--repeats 3000]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from torch import nn

from liquid_control.model.modelfile import load_policy, parameter_counts
from liquid_control.paths import DEFAULT_MODEL


def conv_macs(module: nn.Module, example: torch.Tensor) -> int:
    """Multiply-adds of every Conv2d and Linear in `module` on `example` (forward hooks)."""
    total = 0

    def hook(m, inputs, output):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
            total += output.numel() * k
        elif isinstance(m, nn.Linear):
            total += output.numel() // output.shape[-1] * m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        module(example)
    for h in handles:
        h.remove()
    return total


class CNNPolicy(nn.Module):
    """A feedforward CNN lane-keeping policy of ~100k parameters (frame in, commands out)."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, 24, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(24, 36, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(36, 48, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(48, 32, 3, stride=1, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 6 * 8, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(frame.permute(0, 3, 1, 2)))


def cpu_us(fn, repeats: int) -> float:
    """Median process CPU time per call, µs (what the step costs the board, not the wall clock)."""
    for _ in range(50):
        fn()
    batches = []
    per = max(repeats // 20, 1)
    for _ in range(20):
        t0 = time.process_time_ns()
        for _ in range(per):
            fn()
        batches.append((time.process_time_ns() - t0) / per / 1000.0)
    return float(np.median(batches))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watts", type=float, default=5.0, help="board power while computing, W")
    parser.add_argument("--repeats", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy, _ = load_policy(DEFAULT_MODEL)
    run = policy.streamer()
    spec = policy.spec
    frame = torch.rand(1, spec.image_height, spec.image_width, 3)
    counts = parameter_counts(policy)
    # Per IMU step: every live synapse weight of the core once, plus the readout.
    core_macs = counts["liquid_core_effective"] + policy.readout.weight.numel()
    encoder_macs = conv_macs(policy.camera, frame)
    state = run.initial_state()
    rgb = np.random.default_rng(0).random((spec.image_height, spec.image_width, 3)).astype(np.float32)

    lstm = nn.LSTMCell(spec.core_inputs, 64).eval()
    x = torch.rand(1, spec.core_inputs)
    hc = (torch.zeros(1, 64), torch.zeros(1, 64))
    lstm_macs = 4 * 64 * (spec.core_inputs + 64)
    cnn = CNNPolicy().eval()
    cnn_params = sum(p.numel() for p in cnn.parameters())
    cnn_macs = conv_macs(cnn, frame)

    with torch.inference_mode():
        rows = [
            (
                "liquid NCP policy",
                "camera frame (resize+encode)",
                encoder_macs,
                cpu_us(lambda: run.encode_image(rgb), args.repeats // 4),
            ),
            (
                "liquid NCP policy",
                "IMU step (core + readout)",
                core_macs,
                cpu_us(lambda: run.advance(state, 0.005), args.repeats),
            ),
            ("LSTMCell(15, 64)", "IMU step", lstm_macs, cpu_us(lambda: lstm(x, hc), args.repeats)),
            (
                f"CNN policy ({cnn_params / 1000:.0f}k params)",
                "camera frame",
                cnn_macs,
                cpu_us(lambda: cnn(frame), args.repeats // 4),
            ),
        ]
    load = os.getloadavg()[0]
    print(f"Work and energy per step, 1 thread, energy at {args.watts:g} W, load average {load:.1f}")
    print(f"{'model':<26}{'step':<30}{'MACs':>10}{'CPU us':>9}{'uJ':>9}")
    for model, step, macs, us in rows:
        print(f"{model:<26}{step:<30}{macs:>10,}{us:>9.1f}{us * args.watts:>9.1f}")
    ncp_frame, ncp_imu, lstm_imu, cnn_frame = (r[3] for r in rows)
    # 200 Hz IMU + 30 Hz camera: the board's compute per second of driving.
    ncp_s = 200 * ncp_imu + 30 * ncp_frame
    print(
        f"per second of driving (200 Hz IMU + 30 Hz camera): liquid {ncp_s / 1000:.1f} ms CPU = "
        f"{ncp_s * args.watts / 1000:.1f} mJ; LSTM core step is {lstm_imu / ncp_imu:.1f}x the liquid step's CPU "
        f"({lstm_macs / core_macs:.0f}x its MACs); the CNN policy's frame is {cnn_frame / ncp_frame:.1f}x the "
        f"liquid encoder's ({cnn_macs / encoder_macs:.1f}x its MACs)"
    )


if __name__ == "__main__":
    main()
