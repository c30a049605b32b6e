"""Train a LiquidPolicy from bags by BPTT over windows of sensor events (each window starts from a
zero state, as the controller does after a reset; the first `warmup` steps are not scored).
Validation on whole held-back episodes, early stopping on it, a fixed seed; the result is a model
file with its provenance, and beside it the loss curve (`.loss.png`) and every logged value
(`.log.csv`).

Interruptible and resumable: a checkpoint (`.checkpoint.safetensors`: weights, best weights,
optimizer, schedule, every random generator, the loss log) is written at every validation and on
Ctrl-C or SIGTERM (at the end of the iteration running), and `resume=True` continues from it to the
same result as an uninterrupted run. The checkpoint is a safetensors file with JSON metadata (no
pickle), and it is removed when the run completes.

Distributed: started by torchrun (`torchrun --nproc_per_node=N -m liquid_control.learning.train
...`), each process trains on its own share of the training episodes with `batch / N` windows per
iteration, DistributedDataParallel averages the gradients (gloo: the sequence kernels run on the
CPU), every process validates the same way, and rank 0 writes the model, the log and checkpoints.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .. import progress
from ..bags.info import find_bags, pick_topics
from ..bags.io import BagError, bag_robot
from ..cliargs import provenance as cli_provenance
from ..cliargs import run_key
from ..draw.plot import write_loss_png
from ..model.labels import family
from ..model.modelfile import OutputSpec, load_policy, save_model
from ..model.policy import EncoderSpec, LiquidPolicy
from ..nets import LTC, AutoNCP, CfC, LiquidS4
from ..nets.feedforward.module import Feedforward
from ..nets.recurrent.module import Recurrent
from . import augment
from .augment import Augmenter, mirror_signs
from .configs import TrainConfig
from .dataset import Episode, episodes_from_bag

ARCHITECTURES: dict[str, Callable[[int, int], torch.nn.Module]] = {
    # The seeds' lane-keeping design: conv head + 19 liquid neurons in an NCP wiring.
    "ncp-cfc": lambda n_in, seed: CfC(n_in, AutoNCP(19, 2, seed=seed)),
    "ncp-ltc": lambda n_in, seed: LTC(n_in, AutoNCP(19, 2, seed=seed)),
    "cfc": lambda n_in, seed: CfC(n_in, 19, backbone_units=64, backbone_layers=1),
    # Baselines: the same conv head and IMU inputs, a 64-cell discrete core told the elapsed time.
    "lstm": lambda n_in, seed: Recurrent(n_in, 64, cell="lstm"),
    "gru": lambda n_in, seed: Recurrent(n_in, 64, cell="gru"),
    # Fair baselines: about the 19-neuron NCP CfC core's 1.7k parameters (LSTM 14 cells: 1,792;
    # GRU 16 cells: 1,632; the CfC core: 1,692), the same head and inputs.
    "lstm-small": lambda n_in, seed: Recurrent(n_in, 14, cell="lstm"),
    "gru-small": lambda n_in, seed: Recurrent(n_in, 16, cell="gru"),
    # Liquid-S4 (nets/liquid_s4/): 16 channels x 8 complex modes, 19 output features: 1,702
    # parameters, the NCP CfC core's size.
    "liquid-s4": lambda n_in, seed: LiquidS4(n_in, units=19, channels=16, modes=8),
    # The memoryless CNN policy the 19-neuron NCP is compared with (Lechner et al. 2020: a CNN of
    # ~100k parameters): a wider encoder (ENCODERS) and an MLP, 96,734 parameters in all against the
    # NCP policy's 21,728; dt is not an input.
    "cnn-mlp": lambda n_in, seed: Feedforward(n_in, units=64, hidden=(128, 64)),
}
# Architectures whose camera encoder is not the default EncoderSpec() (same 64x48 input and IMU).
ENCODERS: dict[str, EncoderSpec] = {"cnn-mlp": EncoderSpec(channels=(24, 36, 48), camera_features=24)}
OUTPUTS = OutputSpec(
    fields=("linear.x", "angular.z"), units=("m/s", "rad/s"), limits=((0.0, 1.0), (-1.5, 1.5)), scale=(0.5, 1.5)
)
LOG_FIELDS = ("iteration", "train_loss", "val_loss", "best_val_loss", "lr", "grad_norm", "windows", "seconds")


class Interrupted(Exception):
    """Training stopped on a signal; its checkpoint is written."""


def outputs_of(output: str | Path) -> dict[str, Path]:
    """The files a training run writes beside its model."""
    output = Path(output)
    return {
        "model": output,
        "loss_curve": output.with_suffix(".loss.png"),
        "log": output.with_suffix(".log.csv"),
        "checkpoint": output.with_suffix(".checkpoint.safetensors"),
    }


class _Processes:
    """This process's place in a torchrun job (rank 0 of 1 without one) and the few collectives
    training needs."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not torch.distributed.is_initialized():
            # The sequence kernels are CPU (numba) kernels, so gradients are averaged over gloo.
            torch.distributed.init_process_group(backend="gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean_and_any(self, value: float, flag: bool) -> tuple[float, bool]:
        if self.world == 1:
            return value, flag
        t = torch.tensor([value, float(flag)], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return float(t[0]) / self.world, bool(t[1] > 0)

    def from_main(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.broadcast(t, 0)
        return float(t[0])

    def gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


class _StopFlag:
    """Ctrl-C and SIGTERM ask the run to stop at the end of the iteration running (a second Ctrl-C
    stops at once)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _windows(episodes: list[Episode], count: int, window: int, rng: np.random.Generator):
    lengths = np.array([len(e) for e in episodes], dtype=float)
    picks = rng.choice(len(episodes), size=count, p=lengths / lengths.sum())
    for i in picks:
        start = int(rng.integers(0, max(len(episodes[i]) - window, 1)))
        yield episodes[i], start


def step_weights(episode: Episode, weight: float, lead: float, autonomous: float) -> np.ndarray:
    """Each step's loss weight in an episode of a bag with takeover marks: `weight` where a person
    commanded and in the `lead` seconds (of sensor time) before each takeover began, `autonomous`
    elsewhere."""
    person = episode.takeover.astype(bool)
    w = np.where(person, weight, autonomous).astype(np.float32)
    if lead > 0.0 and person.any():
        t = np.cumsum(episode.dt, dtype=np.float64)
        starts = np.flatnonzero(person & ~np.concatenate([[False], person[:-1]]))
        for k in starts:
            w[(t >= t[k] - lead) & (t < t[k])] = weight
    return w


def _batch(items, window: int):
    """Windows as tensors; frames read from the cache and given to the policy as they are there,
    uint8 (the encoder scales them to [0, 1], as it does when running). The last: each step's loss
    weight (None when no episode has weights)."""
    frames, index, imu, dt, target, weight = [], [], [], [], [], []
    for episode, start in items:
        end = min(start + window, len(episode))
        idx = episode.frame_index[start:end]
        first, last = int(idx.min()), int(idx.max())
        frames.append(episode.frames[first : last + 1])
        index.append(idx - first)
        imu.append(episode.fields[start:end])
        dt.append(episode.dt[start:end])
        target.append(episode.target[start:end])
        w = episode.weight
        weight.append(w[start:end] if w is not None else np.ones(end - start, np.float32))
    n_frames = max(len(f) for f in frames)
    steps = min(len(d) for d in dt)
    pixels = np.zeros((len(frames), n_frames, *frames[0].shape[1:]), np.uint8)
    for k, f in enumerate(frames):
        pixels[k, : len(f)] = f
    as_t = lambda xs: torch.from_numpy(np.stack([x[:steps] for x in xs]))  # noqa: E731
    weighted = any(episode.weight is not None for episode, _ in items)
    return (
        torch.from_numpy(pixels),
        as_t(index).long(),
        as_t(imu),
        as_t(dt),
        as_t(target),
        as_t(weight) if weighted else None,
    )


def _split(episodes: list[Episode], val_fraction: float, rng: np.random.Generator):
    """Whole episodes held back for validation (never windows of a training episode)."""
    if len(episodes) < 2:
        raise ValueError(f"need at least 2 episodes (one for validation), the bags hold {len(episodes)}")
    order = rng.permutation(len(episodes))
    n_val = max(1, int(round(val_fraction * len(episodes))))
    return [episodes[i] for i in order[n_val:]], [episodes[i] for i in order[:n_val]]


def _new_policy(arch: str, spec: EncoderSpec, train_eps: list[Episode], seed: int) -> LiquidPolicy:
    """The architecture's policy, the normalisation of its IMU and odometry fields measured on the
    training episodes."""
    imu_all = np.concatenate([e.fields for e in train_eps])
    return LiquidPolicy(
        spec,
        ARCHITECTURES[arch](spec.core_inputs, seed),
        outputs=2,
        imu_mean=tuple(map(float, imu_all.mean(0))),
        imu_std=tuple(map(float, imu_all.std(0) + 1e-3)),
    )


class _Run:
    """What one training run carries from iteration to iteration, all of it in the checkpoint."""

    def __init__(self) -> None:
        self.iteration = 0
        self.best = float("inf")
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stale = 0
        self.recent: list[float] = []
        self.norms: list[float] = []
        self.rows: list[dict] = []
        self.seconds = 0.0  # spent before this process (by the runs resumed from)

    def state(self) -> dict:
        return {
            "iteration": self.iteration,
            "best": self.best,
            "stale": self.stale,
            "recent": self.recent,
            "norms": self.norms,
            "rows": self.rows,
            "seconds": self.seconds,
        }


def _save_checkpoint(
    path: Path, run: _Run, key: dict, policy, optimizer, schedule, rngs: list[dict], seconds: float
) -> None:
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in policy.state_dict().items()}
    if run.best_state is not None:
        tensors.update({f"best.{k}": v.contiguous() for k, v in run.best_state.items()})
    opt = optimizer.state_dict()
    for i, slot in opt["state"].items():
        tensors.update({f"optim.{i}.{name}": v.contiguous() for name, v in slot.items()})
    tensors["torch_rng"] = torch.get_rng_state()
    meta = {
        "run": key,
        "state": {**run.state(), "seconds": seconds},
        "rngs": rngs,
        "param_groups": opt["param_groups"],
        "schedule": schedule.state_dict(),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"liquid_control.checkpoint": json.dumps(meta)})
    os.replace(tmp, path)


def _load_checkpoint(path: Path, key: dict, policy, optimizer, schedule, rank: int) -> tuple[_Run, dict]:
    if not path.is_file():
        raise ValueError(f"nothing to resume: no checkpoint {path} (run without --resume to start)")
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["liquid_control.checkpoint"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iteration
    except Exception as exc:  # noqa: BLE001 - a damaged file of any kind
        raise ValueError(f"checkpoint {path} is unreadable: {exc}") from None
    differ = sorted(k for k in set(key) | set(meta["run"]) if key.get(k) != meta["run"].get(k))
    if differ:
        raise ValueError(
            f"checkpoint {path} is of another run: it differs in "
            + ", ".join(f"{k} ({meta['run'].get(k)!r} there, {key.get(k)!r} here)" for k in differ)
        )
    policy.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    slots: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            slots.setdefault(int(i), {})[name] = v
    optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
    schedule.load_state_dict(meta["schedule"])
    torch.set_rng_state(tensors["torch_rng"])
    run = _Run()
    state = meta["state"]
    run.iteration, run.best, run.stale = state["iteration"], state["best"], state["stale"]
    run.recent, run.norms, run.rows, run.seconds = state["recent"], state["norms"], state["rows"], state["seconds"]
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    run.best_state = best or None
    return run, meta["rngs"][rank]


def _write_log(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _fit(
    policy: LiquidPolicy,
    train_eps: list[Episode],
    val_eps: list[Episode],
    rng: np.random.Generator,
    procs: _Processes,
    key: dict,
    files: dict[str, Path],
    *,
    seed: int,
    iterations: int,
    window: int,
    warmup: int,
    batch: int,
    lr: float,
    eval_every: int,
    patience: int,
    resume: bool,
    log,
    started: float,
    augment=None,
) -> _Run:
    """BPTT with Adam and a cosine schedule; validation every `eval_every` iterations, early stop
    after `patience` evaluations without improvement. Leaves the best weights in `policy` and
    returns the run (loss log, best validation loss, iterations)."""
    scale = torch.tensor(OUTPUTS.scale, dtype=torch.float32)
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iterations, eta_min=lr / 20)
    val_items = list(_windows(val_eps, 16, window, np.random.default_rng(seed + 1)))
    constrain = getattr(policy.core, "apply_weight_constraints", None)
    model = policy
    if procs.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(policy)
    run = _Run()
    if resume:
        run, rng_state = _load_checkpoint(files["checkpoint"], key, policy, optimizer, schedule, procs.rank)
        rng.bit_generator.state = rng_state
        log(f"  resumed at iteration {run.iteration} from {files['checkpoint']}")
    elif procs.main and files["checkpoint"].exists():
        log(f"  starting afresh: the earlier run's checkpoint {files['checkpoint']} will be replaced")

    def loss_on(net, items, augmented: bool = False) -> torch.Tensor:
        frames, index, imu, dt, target, weight = _batch(items, window)
        if augmented and augment:
            frames, imu, target = augment(frames, imu, target, rng)
        pred = net(frames, index, imu, dt)
        if weight is None:
            return torch.nn.functional.mse_loss(pred[:, warmup:], (target / scale)[:, warmup:])
        error = (pred[:, warmup:] - (target / scale)[:, warmup:]) ** 2
        w = weight[:, warmup:, None]
        return (error * w).sum() / (w.sum() * error.shape[-1]).clamp_min(1e-12)

    def checkpoint() -> None:
        rngs = procs.gather(rng.bit_generator.state)
        if procs.main:
            _save_checkpoint(
                files["checkpoint"], run, key, policy, optimizer, schedule, rngs, run.seconds + time.time() - started
            )

    share = batch // procs.world
    with (
        _StopFlag() as stop,
        progress.bar(total=iterations, initial=run.iteration, desc="training", unit="it", active=procs.main) as bar,
    ):
        while run.iteration < iterations:
            policy.train()
            loss = loss_on(model, list(_windows(train_eps, share, window, rng)), augmented=True)
            optimizer.zero_grad()
            loss.backward()
            norm = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0))
            optimizer.step()
            schedule.step()
            if constrain is not None:
                constrain()
            run.iteration += 1
            it = run.iteration
            value, stopping = procs.mean_and_any(loss.item(), stop.requested)
            run.recent.append(value)
            run.norms.append(norm)
            bar.update()
            if stopping:
                checkpoint()
                raise Interrupted(
                    f"interrupted at iteration {it}: checkpoint {files['checkpoint']}; "
                    "continue with the same command and --resume"
                )
            if it % eval_every and it != iterations:
                continue
            policy.eval()
            with torch.no_grad():
                val = float(
                    np.mean([loss_on(policy, val_items[k : k + 8]).item() for k in range(0, len(val_items), 8)])
                )
            val = procs.from_main(val)  # one decision for every process
            improved = val < run.best
            if improved:
                run.best, run.stale = val, 0
                run.best_state = {k: v.detach().clone() for k, v in policy.state_dict().items()}
            else:
                run.stale += 1
            run.rows.append(
                {
                    "iteration": it,
                    "train_loss": float(np.mean(run.recent)),
                    "val_loss": val,
                    "best_val_loss": run.best,
                    "lr": optimizer.param_groups[0]["lr"],
                    "grad_norm": float(np.mean(run.norms)),
                    "windows": it * batch,
                    "seconds": round(run.seconds + time.time() - started, 2),
                }
            )
            run.recent, run.norms = [], []
            bar.set_postfix(train=f"{run.rows[-1]['train_loss']:.4f}", val=f"{val:.4f}")
            if procs.main:
                _write_log(files["log"], run.rows)
                log(
                    f"  iteration {it:5d}  train {run.rows[-1]['train_loss']:.4f}  val {val:.4f}"
                    f"{'  *' if improved else ''}  ({run.seconds + time.time() - started:.0f} s)"
                )
            if run.stale >= patience:
                if procs.main:
                    log(f"  early stop: no validation improvement in {patience * eval_every} iterations")
                break
            checkpoint()
    policy.load_state_dict(run.best_state)
    return run


# What a model trained on odometry reads of it: the forward speed and the yaw rate (a base's lateral
# speed is zero but for slip, and a field that never varies only adds its noise).
ODOM_TRAINED = ("twist.linear.x", "twist.angular.z")


def _reads(spec: EncoderSpec, choices: dict, imu_fields: tuple[str, ...] = ()) -> EncoderSpec:
    """The spec reading the sensors the bags give: without an IMU topic no IMU fields (a
    camera-only model), else `imu_fields` (default the spec's); with an odometry topic ODOM_TRAINED.
    Every bag must give the same sensors."""
    kinds = {bag: tuple(choice.sensors) for bag, choice in choices.items()}
    if len(set(kinds.values())) > 1:
        said = "; ".join(f"{bag}: camera{''.join(' + ' + k for k in ks)}" for bag, ks in kinds.items())
        raise BagError(
            f"the bags give different sensors ({said}): one model reads the same sensors from every "
            "bag; name them (--imu-topic none leaves the IMU out of all)"
        )
    sensors = next(iter(kinds.values()), ())
    if imu_fields and "imu" not in sensors:
        raise BagError(f"--imu-field {' '.join(imu_fields)} was asked for, but the bags give no IMU topic")
    return replace(
        spec,
        imu_fields=(tuple(imu_fields) or spec.imu_fields) if "imu" in sensors else (),
        odom_fields=(spec.odom_fields or ODOM_TRAINED) if "odom" in sensors else (),
    )


def train(config: TrainConfig, spec: EncoderSpec | None = None, log=progress.write) -> dict | None:
    """Train as `config` says and write the model file (on rank 0 of a torchrun job); returns its
    report (None on the other ranks). `spec`: the camera encoder (default: the architecture's)."""
    arch, output, seed, iterations = config.arch, config.output, config.seed, config.iterations
    window, warmup, batch, lr = config.window, config.warmup, config.batch, config.lr
    eval_every, patience = config.eval_every, config.patience
    if not Path(output).parent.is_dir():  # found now, not after the frames are decoded
        raise ValueError(f"--output {output}: the folder {Path(output).parent} does not exist")
    bags = [b for item in config.bags for b in find_bags(item)]
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    for name, value, least in (
        ("iterations", iterations, 1),
        ("batch", batch, 1),
        ("eval_every", eval_every, 1),
        ("patience", patience, 1),
        ("window", window, warmup + 2),
    ):
        if value < least:
            raise ValueError(
                f"{name} must be at least {least}, not {value}"
                + (f" (the first warmup={warmup} steps are not scored)" if name == "window" else "")
            )
    for name, value in (
        ("--takeover-weight", config.takeover_weight),
        ("--takeover-lead", config.takeover_lead),
        ("--autonomous-weight", config.autonomous_weight),
    ):
        if not (math.isfinite(value) and 0.0 <= value <= 1000.0):
            raise ValueError(f"{name} must be in [0, 1000], not {value}")
    augmentations = augment.parse(config.augment)
    started = time.time()
    procs = _Processes()
    say = log if procs.main else (lambda *_: None)
    if batch % procs.world:
        raise ValueError(f"--batch {batch} does not split between {procs.world} processes")
    spec = spec or ENCODERS.get(arch) or EncoderSpec()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    choices = {
        bag: pick_topics(
            bag,
            config.camera_topic,
            config.imu_topic,
            config.label_topic,
            config.odom_topic,
            config.intervention_topic,
        )
        for bag in bags
    }
    spec = _reads(spec, choices, config.imu_fields)
    start = None
    if config.init:  # its architecture, encoder and inputs; the bags must give what it reads
        start, start_config = load_policy(config.init)
        arch = start_config.provenance.get("architecture", arch)
        config = replace(config, arch=arch)
        given = (bool(spec.imu_fields), bool(spec.odom_fields))
        if given != (bool(start.spec.imu_fields), bool(start.spec.odom_fields)):
            raise BagError(
                f"--init {config.init} reads {', '.join(start.spec.sensors)}; the bags give "
                f"{', '.join(['camera', *(k for k, g in zip(('imu', 'odom'), given, strict=True) if g)])}"
            )
        spec = start.spec
    labels = config.labels()
    label_types = {choice.label_type for choice in choices.values()}
    if len({family(t) for t in label_types}) > 1:
        raise BagError(
            f"the bags' label topics are of different kinds ({', '.join(sorted(label_types))}): one model "
            "learns one kind of command"
        )
    for label_type in label_types:
        labels.check(label_type)
    # The simulator's bags say which robot drove them: one model is one robot's.
    robots = {str(bag): bag_robot(bag) for bag in bags}
    named = sorted({r for r in robots.values() if r})
    if len(named) > 1:
        raise BagError(
            "the bags were driven by different robots ("
            + ", ".join(f"{b}: {r}" for b, r in robots.items() if r)
            + "): one model drives one robot"
        )
    episodes, topics_used, skipped = [], {}, {}
    for bag, choice in choices.items():
        topics_used[str(bag)] = {"camera": choice.camera, **choice.sensors, "label": choice.label}
        if choice.intervention:
            topics_used[str(bag)]["intervention"] = choice.intervention
        # Frames over the node's max_image_pixels are skipped and counted, as replay does.
        skipped[str(bag)] = {}
        found = episodes_from_bag(
            bag,
            spec.image_width,
            spec.image_height,
            spec.imu_fields,
            camera=choice.camera,
            imu=choice.imu,
            label=choice.label,
            cache_dir=config.cache_dir,
            log=say,
            skipped=skipped[str(bag)],
            odom_fields=spec.odom_fields,
            odom=choice.odom,
            labels=labels,
            intervention=choice.intervention,
        )
        if choice.intervention:
            person = sum(int(e.takeover.sum()) for e in found)
            steps = sum(map(len, found))
            say(
                f"bag {bag}: a person commanded {person} of its {steps} steps (takeovers on {choice.intervention}): "
                f"weight {config.takeover_weight:g} (and {config.takeover_lead:g} s before each), "
                f"{config.autonomous_weight:g} elsewhere"
            )
            for e in found:
                e.weight = step_weights(e, config.takeover_weight, config.takeover_lead, config.autonomous_weight)
            if not any(e.weight.any() for e in found):
                say(f"bag {bag}: every step weighs 0: it adds nothing (no takeover, and --autonomous-weight 0)")
        episodes += found
    train_eps, val_eps = _split(episodes, config.val_fraction, rng)
    policy = _new_policy(arch, spec, train_eps, seed) if start is None else start.train()
    augmenter = Augmenter(augmentations, mirror_signs(spec.imu_fields, spec.odom_fields))
    if augmenter:
        say(f"augmenting training windows: {', '.join(f'{k} p={p:g}' for k, p in augmentations.items())}")
    if procs.world > 1:
        if len(train_eps) < procs.world:
            raise ValueError(f"{len(train_eps)} training episodes cannot be shared between {procs.world} processes")
        train_eps = train_eps[procs.rank :: procs.world]
        rng = np.random.default_rng([seed, procs.rank, procs.world])
    n_params = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    say(
        f"training {arch}: {n_params} parameters; {len(episodes) - len(val_eps)} training episodes "
        f"({sum(map(len, episodes)) - sum(map(len, val_eps))} steps), {len(val_eps)} validation"
        + (f"; {procs.world} processes" if procs.world > 1 else "")
    )
    files = outputs_of(output)
    key = {
        **run_key(config),
        "bags": [str(b) for b in bags],
        "topics": topics_used,
        "spec": json.loads(json.dumps(asdict(spec))),
        "processes": procs.world,
    }
    run = _fit(
        policy,
        train_eps,
        val_eps,
        rng,
        procs,
        key,
        files,
        seed=seed,
        iterations=iterations,
        window=window,
        warmup=warmup,
        batch=batch,
        lr=lr,
        eval_every=eval_every,
        patience=patience,
        resume=config.resume,
        log=say,
        started=started,
        augment=augmenter,
    )
    if not procs.main:
        procs.barrier()
        return None
    provenance = {
        "trainer": "liquid-control train",
        **cli_provenance(config),
        "bags": [str(b) for b in bags],
        "topics": topics_used,
        "labels": labels.record(label_types),
        **({"robot": named[0]} if named else {}),
        "augmentation": augment.record(augmentations),
        "episodes": {"train": len(episodes) - len(val_eps), "val": len(val_eps)},
        "iterations": run.iteration,
        "best_val_loss": run.best,
        "processes": procs.world,
        "seconds": round(run.seconds + time.time() - started, 1),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    save_model(files["model"], policy.eval(), policy.sensor_spec(), OUTPUTS, provenance)
    rows = run.rows
    write_loss_png(
        files["loss_curve"],
        [r["iteration"] for r in rows],
        [r["train_loss"] for r in rows],
        [r["val_loss"] for r in rows],
        title=f"{arch} training, seed {seed}: {provenance['episodes']['train']} training, "
        f"{len(val_eps)} validation episodes",
        ylabel="loss: MSE of commands / output scale",
    )
    files["checkpoint"].unlink(missing_ok=True)
    procs.barrier()
    return {
        "model": str(files["model"]),
        "loss_curve": str(files["loss_curve"]),
        "log": str(files["log"]),
        **provenance,
        "skipped_messages": {b: n for b, n in skipped.items() if n},
    }


if __name__ == "__main__":  # torchrun -m liquid_control.learning.train: liquid-control train's options
    from .options import torchrun_main

    raise SystemExit(torchrun_main())
