"""`liquid-control dagger`: a policy that learns from the states its own mistakes lead to, in the
simulator. Rounds of: the current policy drives (through LiquidController, as on a robot) while
the expert watches; what it saw goes into a bag; the policy is trained again on every bag so far
(fine-tuned from the last round's, `train --init`); it is evaluated on held-out conditions.

Two ways for the expert to take part, each a published algorithm:
- `beta` (DAgger, Ross et al. 2011): the expert labels every state the rollout visits
  (/teacher/cmd_vel), and drives a share `beta` of it (who drives is drawn per second of each
  episode; `beta` shrinks by `beta_decay` every round), so early rounds stay near the road.
- `takeover` (HG-DAgger, Kelly et al. 2019): the expert plays the person of a robot's takeovers.
  It takes over when |cross-track error| passes `threshold` and hands back once it is under half
  of that; its commands go to the controller's teleop input (`on_teleop`, the node's very path),
  the bag holds what a robot's would: the applied commands on /cmd_vel, the takeover marks on
  /liquid_controller/intervention and the proposals on /liquid_controller/proposed_cmd_vel. The
  retraining learns from the takeovers alone (`--autonomous-weight 0`), as train does on a
  robot's bags.

Now and then (`kick_rate` per second) a steering kick, collect's, is added to the policy's
commands: its own mistakes, for the expert to take over from or label.

Resumable: everything lives in the output folder (round bags, models, evaluations, `dagger.json`);
run the same command again (with more `--rounds` to go on) and finished work is kept: a round's bag
is complete or absent (written beside, then renamed), training resumes from its checkpoint, an
evaluation is kept once written.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from .. import progress, topics
from ..bags.io import ROBOT_KEY, BagWriter, bool_msg, image_msg, imu_msg, odometry_msg, twist_stamped_msg
from ..model.modelfile import load_policy
from ..runtime.controller import LiquidController, Settings
from ..runtime.parameters import NODE_NAME
from ..sim.conditions import CONDITIONS
from ..sim.env import PurePursuit, SensorConfig, TrackEnv
from ..sim.track import Track, track_path
from ..sim.world import robot_spec
from .collect import EPISODE_GAP, TOPICS, Perturbation
from .configs import DaggerConfig, EvalConfig, TrainConfig
from .evaluate import feed
from .train import outputs_of, train

MARKS = topics.absolute(topics.INTERVENTION, node=NODE_NAME)
PROPOSED = topics.absolute(topics.PROPOSED, node=NODE_NAME)
STATE = "dagger.json"
KICK = Perturbation()  # the size and length of a steering kick, as collect's
TELEOP_TIMEOUT_S = 0.05  # the expert commands at IMU rate (every 5 ms): a takeover ends when it stops


def _check(c: DaggerConfig) -> None:
    if c.mode not in ("beta", "takeover"):
        raise ValueError(f"--mode must be beta or takeover, not {c.mode!r}")
    for name, value, lo, hi in (
        ("--beta", c.beta, 0.0, 1.0),
        ("--beta-decay", c.beta_decay, 0.0, 1.0),
        ("--threshold", c.threshold, 0.01, 5.0),
        ("--seconds", c.seconds, 1.0, 3600.0),
        ("--speed", c.speed, 0.05, 5.0),
        ("--kick-rate", c.kick_rate, 0.0, 10.0),
    ):
        if not (math.isfinite(value) and lo <= value <= hi):
            raise ValueError(f"{name} must be in [{lo:g}, {hi:g}], not {value}")
    for name, value in (("--rounds", c.rounds), ("--episodes", c.episodes), ("--iterations", c.iterations)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, not {value}")
    for condition in (*c.rollout_conditions, *c.eval_conditions):
        if condition not in CONDITIONS:
            raise ValueError(f"unknown condition {condition!r}; choose from {sorted(CONDITIONS)}")
    if not c.tracks:
        raise ValueError("give at least one --track to drive in the rollouts")


def _key(c: DaggerConfig) -> dict:
    """What the rounds already done depend on: a run with another key is refused, not mixed."""
    fields = ("model", "bags", "tracks", "mode", "beta", "beta_decay", "threshold", "episodes", "seconds", "kick_rate")
    key = {f: getattr(c, f) for f in fields}
    key.update(
        speed=c.speed,
        max_speed=c.max_speed,
        seed=c.seed,
        rollout_conditions=list(c.rollout_conditions),
        robot=c.robot,
    )
    return json.loads(json.dumps(key))


def dagger(config: DaggerConfig, log=progress.write) -> dict:
    """Run (or go on with) the rounds `config` asks for; returns the state: each round's bag,
    model, rollout summary and evaluation."""
    c = config
    _check(c)
    out = Path(c.output)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE
    state = json.loads(state_path.read_text()) if state_path.exists() else {"key": _key(c), "rounds": []}
    if state["key"] != _key(c):
        changed = sorted(k for k in _key(c) if state["key"].get(k) != _key(c)[k])
        raise ValueError(
            f"{out} holds rounds of another run (it differs in {', '.join(changed)}): give another --output, "
            "or the same options to go on with it"
        )
    model = state["rounds"][-1]["model"] if state["rounds"] else c.model
    for k in range(len(state["rounds"]), c.rounds):
        folder = out / f"round{k + 1}"
        folder.mkdir(exist_ok=True)
        beta = c.beta * c.beta_decay**k if c.mode == "beta" else 0.0
        bag = folder / "rollouts"
        if not bag.exists():
            log(f"round {k + 1}: {c.mode} rollouts of {model}" + (f", beta {beta:.3f}" if c.mode == "beta" else ""))
            partial = folder / "rollouts.partial"
            shutil.rmtree(partial, ignore_errors=True)
            summary = rollouts(c, model, partial, beta, seed=c.seed + 7919 * (k + 1))
            (folder / "rollouts.json").write_text(json.dumps(summary, indent=1) + "\n")
            partial.rename(bag)
        summary = json.loads((folder / "rollouts.json").read_text())
        log(
            f"round {k + 1}: the policy drove {summary['policy_share']:.0%} of {summary['seconds']:.0f} s, "
            f"left the road in {summary['episodes_off_road']} of {summary['episodes']} episodes"
            + (f"; {summary['takeovers']} takeovers" if c.mode == "takeover" else "")
        )
        trained = folder / "model.safetensors"
        if not trained.exists():
            bags = (*c.bags, *(str(out / f"round{j + 1}" / "rollouts") for j in range(k + 1)))
            train_config = TrainConfig(
                bags=bags,
                output=str(trained),
                init=str(model),
                iterations=c.iterations,
                lr=c.lr,
                seed=c.seed + k,
                augment=c.augment,
                # beta: the teacher labels every step, the marks mean nothing to it; takeover: learn
                # from the expert's takeovers alone, as from a person's on a robot.
                intervention_topic="none" if c.mode == "beta" else None,
                autonomous_weight=1.0 if c.mode == "beta" else 0.0,
                resume=outputs_of(trained)["checkpoint"].exists(),
                cache_dir=c.cache_dir,
            )
            train(train_config, log=log)
        evaluation = _evaluate(c, trained, folder, log)
        state["rounds"].append(
            {
                "round": k + 1,
                "beta": beta,
                "bag": str(bag),
                "model": str(trained),
                "rollouts": summary,
                "evaluation": evaluation,
            }
        )
        model = str(trained)
        state_path.write_text(json.dumps(state, indent=1) + "\n")
    return state


def _evaluate(c: DaggerConfig, model: Path, folder: Path, log) -> dict:
    """The round's model on each held-out condition (kept in the round's folder once done)."""
    from .evaluate import evaluate

    results = {}
    for condition in c.eval_conditions:
        kept = folder / f"eval-{condition}.json"
        if kept.exists():
            results[condition] = json.loads(kept.read_text())
            continue
        cell = evaluate(
            EvalConfig(
                str(model), c.eval_track, condition, c.eval_episodes, c.seconds, seed=c.seed + 100, robot=c.robot
            ),
            show_progress=True,
        )
        result = {k: cell[k] for k in ("track", "success_rate", "mean_abs_xte_m", "mean_speed_mps", "episodes")}
        kept.write_text(json.dumps(result) + "\n")
        results[condition] = result
        log(
            f"  {model.parent.name} on {result['track']} ({condition}): {result['success_rate']:.0%} on the road, "
            f"mean |xte| {result['mean_abs_xte_m']:.3f} m"
        )
    return results


def rollouts(c: DaggerConfig, model: str, output: Path, beta: float, seed: int) -> dict:
    """`c.episodes` episodes per track of `model` driving with the expert beside it, into the bag
    `output`; returns what happened."""
    policy, model_config = load_policy(model)
    trained_on = model_config.provenance.get("robot")
    if trained_on and trained_on != c.robot:
        raise ValueError(f"{model} was trained on the {trained_on} robot; it cannot drive the {c.robot} (--robot)")
    if "odom" in policy.spec.sensors:
        raise ValueError(f"{model} reads wheel odometry, which the simulator's rollouts do not give yet")
    rng = np.random.default_rng(seed)
    expert = PurePursuit(speed=c.speed, max_speed=c.max_speed)
    limit = max(c.speed, c.max_speed or 0.0)
    settings = Settings(max_linear_speed=limit, teleop_timeout=TELEOP_TIMEOUT_S)
    spec = robot_spec(c.robot)
    conditions = list(c.rollout_conditions) or ["nominal"]
    summary = {"episodes": 0, "episodes_off_road": 0, "seconds": 0.0, "policy_share": 0.0, "takeovers": 0}
    policy_steps = imu_steps = 0
    total = len(c.tracks) * c.episodes * c.seconds
    with (
        BagWriter(output, {ROBOT_KEY: c.robot}) as bag,
        progress.bar(total=total, desc=f"rollouts {output.parent.name}", unit="sim s") as bar,
    ):
        for track_name in c.tracks:
            for _ in range(c.episodes):
                condition = CONDITIONS[conditions[int(rng.integers(len(conditions)))]]
                world, sensors = condition.apply(Track.load(track_path(track_name)), SensorConfig())
                env = TrackEnv(world, sensors=sensors, seed=int(rng.integers(1 << 31)), **condition.env_kwargs(spec))
                try:
                    env.reset(
                        s=float(rng.uniform(0, world.length)),
                        offset=float(rng.normal(0, 0.15)),
                        heading_error=float(rng.normal(0, 0.1)),
                        seed=int(rng.integers(1 << 31)),
                    )
                    controller = LiquidController(policy, model_config, settings)
                    base = summary["episodes"] * EPISODE_GAP
                    counts = _episode(c, env, controller, expert, beta, rng, bag, base, bar)
                finally:
                    env.close()
                summary["episodes"] += 1
                summary["seconds"] += c.seconds
                summary["episodes_off_road"] += int(counts["off_road"])
                summary["takeovers"] += counts["takeovers"]
                policy_steps += counts["policy_steps"]
                imu_steps += counts["imu_steps"]
    summary["policy_share"] = policy_steps / max(imu_steps, 1)
    return summary


def _episode(
    c: DaggerConfig, env: TrackEnv, controller: LiquidController, expert, beta: float, rng, bag, base: float, bar
) -> dict:
    takeover_mode = c.mode == "takeover"
    counts = {"off_road": False, "takeovers": 0, "policy_steps": 0, "imu_steps": 0}
    expert_drives, decided_until, shown = False, -1.0, 0.0
    kick, kick_until = 0.0, -1.0  # a steering kick on the policy's commands (collect's, DART-style)
    for event in env.events(c.seconds):
        stamp = base + event.stamp
        if event.kind == "camera":
            bar.update(event.stamp - shown)
            shown = event.stamp
            bag.write(TOPICS["camera"], image_msg(stamp, event.data), stamp)
        else:
            bag.write(TOPICS["imu"], imu_msg(stamp, event.data), stamp)
        command = feed(controller, env, event)
        if command is not None and takeover_mode:
            bag.write(PROPOSED, twist_stamped_msg(stamp, command.linear_x, command.angular_z), stamp)
        if event.kind == "camera":
            if command is not None and not command.proposal and not expert_drives:
                env.command(command.linear_x, command.angular_z)
                bag.write(TOPICS["applied"], twist_stamped_msg(stamp, command.linear_x, command.angular_z), stamp)
            continue
        truth = env.truth()
        counts["off_road"] = counts["off_road"] or truth["off_road"]
        counts["imu_steps"] += 1
        linear, angular = expert(env)
        if takeover_mode:  # the expert as a person: takes over past the threshold, back under half of it
            xte = abs(truth["xte"])
            if not expert_drives and xte > c.threshold:
                expert_drives = True
                counts["takeovers"] += 1
            elif expert_drives and xte < c.threshold / 2:
                expert_drives = False
        else:  # beta: the expert labels every state and drives a share beta of the seconds
            bag.write(TOPICS["teacher"], twist_stamped_msg(stamp, linear, angular), stamp)
            if event.stamp >= decided_until:
                expert_drives, decided_until = bool(rng.random() < beta), event.stamp + 1.0
        if event.stamp > kick_until and rng.random() < c.kick_rate / env.sensors.imu_hz:
            kick_until = event.stamp + KICK.kick_duration
            kick = float(rng.choice([-1.0, 1.0]) * KICK.kick_angular)
        if expert_drives:
            applied = controller.on_teleop(event.stamp, linear, angular)
            applied = (applied.linear_x, applied.angular_z) if applied is not None else None
        else:
            applied = command if command is not None and not command.proposal else None
            if applied is not None:  # the policy's command, kicked now and then: its mistakes, to recover from
                applied = (applied.linear_x, applied.angular_z + (kick if event.stamp < kick_until else 0.0))
            counts["policy_steps"] += 1
        if applied is not None:
            env.command(*applied)
            bag.write(TOPICS["applied"], twist_stamped_msg(stamp, *applied), stamp)
        if takeover_mode:
            bag.write(MARKS, bool_msg(expert_drives), stamp)
        odom = env.odometry()
        bag.write(TOPICS["odom"], odometry_msg(stamp, truth["x"], truth["y"], truth["yaw"], odom[0], odom[2]), stamp)
    return counts


def format_state(state: dict) -> str:
    lines = []
    for r in state["rounds"]:
        s = r["rollouts"]
        evaluation = ", ".join(
            f"{cond} {e['success_rate']:.0%} ({1000 * e['mean_abs_xte_m']:.0f} mm)"
            for cond, e in r["evaluation"].items()
        )
        takeovers = f", {s['takeovers']} takeovers" if s.get("takeovers") else ""
        lines.append(
            f"round {r['round']}: policy drove {s['policy_share']:.0%}, off the road in {s['episodes_off_road']}/"
            f"{s['episodes']} rollouts{takeovers}; {Path(r['model']).name}: {evaluation or 'not evaluated'}"
        )
    return "\n".join(lines)
