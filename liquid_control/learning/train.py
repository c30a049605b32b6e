"""Train a LiquidPolicy from bags by BPTT over windows of sensor events (each window starts from a
zero state, as the controller does after a reset; the first `warmup` steps are not scored).
Validation on whole held-back episodes, early stopping on it, a fixed seed; the result is a model
file with its provenance and a loss-curve PNG beside it."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..bags.info import pick_topics
from ..draw.plot import write_loss_png
from ..nets import LTC, AutoNCP, CfC
from ..nets.recurrent import Recurrent
from ..runtime.modelfile import OutputSpec, save_model
from ..runtime.policy import EncoderSpec, LiquidPolicy
from .dataset import Episode, episodes_from_bag

ARCHITECTURES: dict[str, Callable[[int, int], torch.nn.Module]] = {
    # The seeds' lane-keeping design: conv head + 19 liquid neurons in an NCP wiring.
    "ncp-cfc": lambda n_in, seed: CfC(n_in, AutoNCP(19, 2, seed=seed)),
    "ncp-ltc": lambda n_in, seed: LTC(n_in, AutoNCP(19, 2, seed=seed)),
    "cfc": lambda n_in, seed: CfC(n_in, 19, backbone_units=64, backbone_layers=1),
    # Baselines: the same conv head and IMU inputs, a 64-cell discrete core told the elapsed time.
    "lstm": lambda n_in, seed: Recurrent(n_in, 64, cell="lstm"),
    "gru": lambda n_in, seed: Recurrent(n_in, 64, cell="gru"),
}
OUTPUTS = OutputSpec(fields=("linear.x", "angular.z"), units=("m/s", "rad/s"),
                     limits=((0.0, 1.0), (-1.5, 1.5)), scale=(0.5, 1.5))


def _windows(episodes: list[Episode], count: int, window: int, rng: np.random.Generator):
    lengths = np.array([len(e) for e in episodes], dtype=float)
    picks = rng.choice(len(episodes), size=count, p=lengths / lengths.sum())
    for i in picks:
        start = int(rng.integers(0, max(len(episodes[i]) - window, 1)))
        yield episodes[i], start


def _batch(items, window: int):
    frames, index, imu, dt, target = [], [], [], [], []
    for episode, start in items:
        end = min(start + window, len(episode))
        idx = episode.frame_index[start:end]
        first, last = int(idx.min()), int(idx.max())
        frames.append(episode.frames[first:last + 1])
        index.append(idx - first)
        imu.append(episode.imu[start:end])
        dt.append(episode.dt[start:end])
        target.append(episode.target[start:end])
    n_frames = max(len(f) for f in frames)
    steps = min(len(d) for d in dt)
    pad = [np.concatenate([f, np.zeros((n_frames - len(f), *f.shape[1:]), np.float32)]) for f in frames]
    as_t = lambda xs: torch.from_numpy(np.stack([x[:steps] for x in xs]))  # noqa: E731
    return torch.from_numpy(np.stack(pad)), as_t(index).long(), as_t(imu), as_t(dt), as_t(target)


def _split(episodes: list[Episode], val_fraction: float, rng: np.random.Generator):
    """Whole episodes held back for validation (never windows of a training episode)."""
    if len(episodes) < 2:
        raise ValueError(f"need at least 2 episodes (one for validation), the bags hold {len(episodes)}")
    order = rng.permutation(len(episodes))
    n_val = max(1, int(round(val_fraction * len(episodes))))
    return [episodes[i] for i in order[n_val:]], [episodes[i] for i in order[:n_val]]


def _new_policy(arch: str, spec: EncoderSpec, train_eps: list[Episode], seed: int) -> LiquidPolicy:
    """The architecture's policy, its IMU normalisation measured on the training episodes."""
    imu_all = np.concatenate([e.imu for e in train_eps])
    return LiquidPolicy(spec, ARCHITECTURES[arch](spec.core_inputs, seed), outputs=2,
                        imu_mean=tuple(map(float, imu_all.mean(0))),
                        imu_std=tuple(map(float, imu_all.std(0) + 1e-3)))


def _fit(policy: LiquidPolicy, train_eps: list[Episode], val_eps: list[Episode], rng: np.random.Generator, *,
         seed: int, iterations: int, window: int, warmup: int, batch: int, lr: float, eval_every: int,
         patience: int, log, started: float) -> tuple[dict, float, int]:
    """BPTT with Adam and a cosine schedule; validation every `eval_every` iterations, early stop
    after `patience` evaluations without improvement. Leaves the best weights in `policy` and
    returns the loss curve, the best validation loss and the iterations run."""
    scale = torch.tensor(OUTPUTS.scale, dtype=torch.float32)
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iterations, eta_min=lr / 20)
    val_items = list(_windows(val_eps, 16, window, np.random.default_rng(seed + 1)))
    constrain = getattr(policy.core, "apply_weight_constraints", None)

    def loss_on(items) -> torch.Tensor:
        frames, index, imu, dt, target = _batch(items, window)
        pred = policy(frames, index, imu, dt)
        return torch.nn.functional.mse_loss(pred[:, warmup:], (target / scale)[:, warmup:])

    curve = {"iteration": [], "train": [], "val": []}
    best, best_state, stale, recent = float("inf"), None, 0, []
    for it in range(1, iterations + 1):
        policy.train()
        loss = loss_on(list(_windows(train_eps, batch, window, rng)))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if constrain is not None:
            constrain()
        recent.append(loss.item())
        if it % eval_every and it != iterations:
            continue
        policy.eval()
        with torch.no_grad():
            val = float(np.mean([loss_on(val_items[k:k + 8]).item() for k in range(0, len(val_items), 8)]))
        curve["iteration"].append(it)
        curve["train"].append(float(np.mean(recent)))
        curve["val"].append(val)
        recent = []
        improved = val < best
        if improved:
            best, stale = val, 0
            best_state = {k: v.detach().clone() for k, v in policy.state_dict().items()}
        else:
            stale += 1
        log(f"  iteration {it:5d}  train {curve['train'][-1]:.4f}  val {val:.4f}"
            f"{'  *' if improved else ''}  ({time.time() - started:.0f} s)")
        if stale >= patience:
            log(f"  early stop: no validation improvement in {patience * eval_every} iterations")
            break
    policy.load_state_dict(best_state)
    return curve, best, it


def train(bags: list[str | Path], arch: str, output: str | Path, seed: int = 0, iterations: int = 600,
          window: int = 300, warmup: int = 50, batch: int = 8, lr: float = 3e-3,
          val_fraction: float = 0.2, eval_every: int = 25, patience: int = 8,
          spec: EncoderSpec | None = None, log=print, camera: str | None = None, imu: str | None = None,
          label: str | None = None) -> dict:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    started = time.time()
    spec = spec or EncoderSpec()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    episodes, topics_used = [], {}
    for bag in bags:
        choice = pick_topics(bag, camera, imu, label)
        topics_used[str(bag)] = {"camera": choice.camera, "imu": choice.imu, "label": choice.label}
        episodes += episodes_from_bag(bag, spec.image_width, spec.image_height, spec.imu_fields,
                                      camera=choice.camera, imu=choice.imu, label=choice.label)
    train_eps, val_eps = _split(episodes, val_fraction, rng)
    policy = _new_policy(arch, spec, train_eps, seed)
    n_params = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    log(f"training {arch}: {n_params} parameters; {len(train_eps)} training episodes "
        f"({sum(map(len, train_eps))} steps), {len(val_eps)} validation")
    curve, best, it = _fit(policy, train_eps, val_eps, rng, seed=seed, iterations=iterations, window=window,
                           warmup=warmup, batch=batch, lr=lr, eval_every=eval_every, patience=patience,
                           log=log, started=started)
    provenance = {
        "trainer": "liquid-control train", "architecture": arch, "seed": seed, "bags": [str(b) for b in bags], "topics": topics_used,
        "episodes": {"train": len(train_eps), "val": len(val_eps)}, "iterations": it,
        "best_val_loss": best, "window": window, "warmup": warmup, "batch": batch, "lr": lr,
        "seconds": round(time.time() - started, 1), "torch": torch.__version__, "machine": platform.machine(),
    }
    output = Path(output)
    save_model(output, policy.eval(), policy.sensor_spec(), OUTPUTS, provenance)
    png = output.with_suffix(".loss.png")
    write_loss_png(png, curve["iteration"], curve["train"], curve["val"],
                   title=f"{arch} training, seed {seed}: {len(train_eps)} training, {len(val_eps)} validation episodes",
                   ylabel="loss: MSE of commands / output scale")
    return {"model": str(output), "loss_curve": str(png), **provenance}
