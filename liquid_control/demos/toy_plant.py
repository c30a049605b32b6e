"""A self-contained lane-keeping demo on synthetic sensor streams (no ROS, no simulator).

A unicycle drives along a road of slowly changing curvature. A "camera" at 30 Hz (with jitter)
sees the lateral offset, heading error and curvature ahead, with noise; an "IMU" at 200 Hz measures
the yaw rate with noise and bias. An expert (state feedback on the true state) drives with injected
disturbances; a 19-neuron CfC (AutoNCP) learns its steering from the noisy, irregularly timed
sensor events by BPTT, is saved to a model file, loaded back, and then drives the plant closed loop,
stepped on every sensor event with the real elapsed time, through the fused streaming kernel.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..model.modelfile import OutputSpec, SensorSpec, load_model, save_model
from ..nets import AutoNCP, CfC

SPEED = 0.5  # m/s
CAMERA_HZ, IMU_HZ = 30.0, 200.0
FEATURES = ("lane_offset_m", "lane_heading_rad", "lane_curvature_1pm", "imu_yaw_rate_radps")
MAX_YAW_RATE = 1.5  # rad/s


@dataclass
class Plant:
    """Unicycle in the road frame: offset e, heading error psi, road curvature kappa."""

    rng: np.random.Generator
    e: float = 0.0
    psi: float = 0.0
    t: float = 0.0
    gyro_bias: float = 0.0
    road_phase: float = 0.0  # where on the (30 s periodic) road the episode starts, in s

    def curvature(self, t: float) -> float:
        t = t + self.road_phase
        return 0.6 * math.sin(0.21 * t) + 0.3 * math.sin(0.53 * t + 1.0)

    def advance(self, t_end: float, yaw_rate: float, disturbance: float = 0.0) -> None:
        while self.t < t_end - 1e-12:
            h = min(0.001, t_end - self.t)
            kappa = self.curvature(self.t)
            self.e += h * SPEED * math.sin(self.psi)
            self.psi += h * (yaw_rate + disturbance - SPEED * kappa)
            self.t += h

    def camera(self) -> np.ndarray:
        noise = self.rng.normal(0.0, (0.01, 0.01, 0.02))
        return np.array([self.e, self.psi, self.curvature(self.t + 0.5)]) + noise

    def imu(self, yaw_rate: float) -> float:
        return yaw_rate + self.gyro_bias + self.rng.normal(0.0, 0.02)


def expert(plant: Plant) -> float:
    """State feedback on the true state, with curvature feed-forward."""
    cmd = SPEED * plant.curvature(plant.t) - 2.0 * plant.e - 2.5 * plant.psi
    return float(np.clip(cmd, -MAX_YAW_RATE, MAX_YAW_RATE))


def sensor_stamps(duration: float, rng: np.random.Generator) -> list[tuple[float, str]]:
    """Interleaved camera (30 Hz, +-3 ms jitter) and IMU (200 Hz) stamps, sorted, none equal."""
    cam = np.arange(0.0, duration, 1 / CAMERA_HZ)
    cam = cam + rng.uniform(0.0, 0.003, cam.size)
    imu = np.arange(0.0005, duration, 1 / IMU_HZ)
    events = [(float(t), "camera") for t in cam[cam < duration]] + [(float(t), "imu") for t in imu]
    return sorted(events)


def drive(
    plant: Plant, duration: float, policy, rng: np.random.Generator, disturb: bool, command_noise: float = 0.0
) -> dict:
    """Run the plant on sensor events; `policy(features, dt)` returns a yaw rate (None: expert).

    Returns the per-event features, dt, expert commands and the true offsets.
    """
    held = np.zeros(len(FEATURES))
    held[:3] = plant.camera()
    cmd = 0.0
    last = None
    log = {"x": [], "dt": [], "target": [], "offset": [], "cmd": []}
    kick_until, kick = -1.0, 0.0
    noise = 0.0
    for stamp, kind in sensor_stamps(duration, rng):
        d = 0.0
        if disturb:
            if stamp > kick_until and rng.random() < 0.004:
                kick_until, kick = stamp + rng.uniform(0.2, 0.8), rng.normal(0.0, 0.8)
            d = kick if stamp < kick_until else 0.0
        plant.advance(stamp, cmd, d)
        if kind == "camera":
            held[:3] = plant.camera()
        else:
            held[3] = plant.imu(cmd + d)  # a gyro measures the real yaw rate, disturbance included
        dt = 1 / IMU_HZ if last is None else stamp - last
        last = stamp
        target = expert(plant)
        if policy is None:
            # Noise on what the expert executes (DART): the data then shows how to recover.
            if kind == "camera":
                noise = rng.normal(0.0, command_noise)
            cmd = float(np.clip(target + noise, -MAX_YAW_RATE, MAX_YAW_RATE)) if command_noise else target
        else:
            cmd = float(np.clip(policy(held, dt), -MAX_YAW_RATE, MAX_YAW_RATE))
        log["x"].append(held.copy())
        log["dt"].append(dt)
        log["target"].append(target)
        log["offset"].append(plant.e)
        log["cmd"].append(cmd)
    return {k: np.asarray(v) for k, v in log.items()}


def make_dataset(episodes: int, duration: float, seed: int):
    rng = np.random.default_rng(seed)
    xs, dts, ys = [], [], []
    for _ in range(episodes):
        plant = Plant(
            rng,
            e=rng.normal(0, 0.2),
            psi=rng.normal(0, 0.2),
            gyro_bias=rng.normal(0, 0.03),
            road_phase=rng.uniform(0.0, 60.0),
        )
        log = drive(plant, duration, None, rng, disturb=True, command_noise=0.3)
        xs.append(log["x"])
        dts.append(log["dt"])
        ys.append(log["target"])
    n = min(len(x) for x in xs)
    return (np.stack([x[:n] for x in xs]), np.stack([d[:n] for d in dts]), np.stack([y[:n] for y in ys]))


def train(seed: int, iterations: int, log_every: int = 10) -> tuple[CfC, SensorSpec, dict]:
    torch.manual_seed(seed)
    x, dt, y = make_dataset(episodes=24, duration=6.0, seed=seed)
    mean, std = x.reshape(-1, x.shape[-1]).mean(0), x.reshape(-1, x.shape[-1]).std(0) + 1e-6
    sensors = SensorSpec(
        features=FEATURES, mean=tuple(map(float, mean)), std=tuple(map(float, std)), imu_fields=("angular_velocity.z",)
    )
    xt = torch.tensor((x - mean) / std, dtype=torch.float32)
    dtt = torch.tensor(dt, dtype=torch.float32)
    yt = torch.tensor(y / MAX_YAW_RATE, dtype=torch.float32)
    model = CfC(len(FEATURES), AutoNCP(19, 1, seed=seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iterations, eta_min=0.001)
    window, batch = 240, 12
    losses = []
    print(
        f"training a CfC on AutoNCP(19, 1): {sum(p.numel() for p in model.parameters() if p.requires_grad)}"
        f" parameters, {xt.shape[0]} episodes x {xt.shape[1]} sensor events"
    )
    started = time.perf_counter()
    for it in range(1, iterations + 1):
        idx = torch.randint(0, xt.shape[0], (batch,))
        start = int(torch.randint(0, xt.shape[1] - window, (1,)))
        pred, _ = model(xt[idx, start : start + window], timespans=dtt[idx, start : start + window])
        # Skip the first events of the window: the state has to warm up from zero.
        loss = torch.nn.functional.mse_loss(pred[:, 40:, 0], yt[idx, start + 40 : start + window])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if it % log_every == 0 or it == iterations:
            print(
                f"  iteration {it:4d}  loss {np.mean(losses[-log_every:]):.4f}  ({time.perf_counter() - started:.1f} s)"
            )
    provenance = {
        "trainer": "liquid_control.demos.toy_plant",
        "seed": seed,
        "iterations": iterations,
        "final_loss": float(np.mean(losses[-log_every:])),
        "data": "synthetic lane keeping",
    }
    return model.eval(), sensors, provenance


def run(output: Path, seed: int = 0, iterations: int = 150, duration: float = 20.0) -> dict:
    model, sensors, provenance = train(seed, iterations)
    outputs = OutputSpec(
        fields=("angular.z",), units=("rad/s",), limits=((-MAX_YAW_RATE, MAX_YAW_RATE),), scale=(MAX_YAW_RATE,)
    )
    path = output / "demo_cfc.safetensors"
    save_model(path, model, sensors, outputs, provenance)
    model, config = load_model(path)
    print(f"saved and reloaded {path} ({path.stat().st_size} bytes)")

    fused = model.fused()
    mean, std = np.array(config.sensors.mean), np.array(config.sensors.std)
    scale = config.outputs.scale[0]
    latencies: list[int] = []

    state = fused.initial_state()

    def liquid(held: np.ndarray, dt: float) -> float:
        t0 = time.perf_counter_ns()
        y, _ = fused.step((held - mean) / std, state, dt)
        latencies.append(time.perf_counter_ns() - t0)
        return float(y[0]) * scale

    results = {}
    print(f"\nclosed loop, {duration:.0f} s, unseen disturbances, gyro bias 0.03 rad/s:")
    print(f"  {'driver':<16}{'mean |offset| m':>16}{'max |offset| m':>16}{'on road':>9}")
    for name, policy in (("expert", None), ("liquid CfC", liquid), ("no steering", lambda h, dt: 0.0)):
        rng = np.random.default_rng(seed + 1000)
        plant = Plant(rng, e=0.15, psi=-0.1, gyro_bias=0.03)
        log = drive(plant, duration, policy, rng, disturb=True)
        offsets = np.abs(log["offset"])
        on_road = bool(offsets.max() < 0.5)
        results[name] = {
            "mean_abs_offset_m": float(offsets.mean()),
            "max_abs_offset_m": float(offsets.max()),
            "on_road": on_road,
        }
        print(f"  {name:<16}{offsets.mean():>16.3f}{offsets.max():>16.3f}{'yes' if on_road else 'no':>9}")
    lat = np.array(latencies) / 1000.0
    print(
        f"\nliquid step latency over {lat.size} sensor events: p50 {np.percentile(lat, 50):.1f} us, "
        f"p99 {np.percentile(lat, 99):.1f} us"
    )
    results["step_latency_us_p50"] = float(np.percentile(lat, 50))
    results["model"] = str(path)
    return results
