"""Closed-loop evaluation: a model drives TrackEnv through LiquidController (the same object the
node runs), in the nominal world and in conditions it never saw in training.

An episode succeeds when no wheel leaves the road for its whole duration. Reported: success rate,
mean and max |cross-track error|, mean speed, and a trajectory plot.

The model `expert` (EXPERT) is the demonstrator itself: pure pursuit on ground truth, at 0.5 m/s or
scheduled by the road up to the condition's speed limit when that is higher (as `collect --speed
0.5 --max-speed 1.0` drives). It sees no camera, so only a condition's dynamics, track and speed
touch it: where it leaves the road, no policy that imitates it can be asked to keep it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import progress
from ..draw.plot import write_trajectory_png
from ..model.modelfile import load_policy
from ..runtime.controller import Command, LiquidController, Settings
from ..runtime.parameters import check_settings
from ..sim.conditions import CONDITIONS
from ..sim.env import PurePursuit, SensorConfig, TrackEnv
from ..sim.track import Track, track_path
from ..sim.world import robot_spec
from .configs import EvalConfig

EXPERT = "expert"  # the model name of the demonstrator (pure pursuit on ground truth)
EXPERT_SPEED = 0.5  # m/s: the expert's speed, and its least where it is scheduled


def feed(controller: LiquidController, env: TrackEnv, event) -> Command | None:
    """One simulator sensor event to the controller, as a robot's topics would bring it: the
    camera and the IMU as they come, and with each IMU sample the wheel odometry
    (TrackEnv.odometry) when the model reads it. The command to apply, if any."""
    command = controller.on_sensor(event.kind, event.stamp, event.data)
    if event.kind == "imu" and "odom" in controller.sensors:
        command = controller.on_sensor("odom", event.stamp, env.odometry()) or command
    return command


def evaluate(config: EvalConfig, settings: Settings | None = None, show_progress: bool = True) -> dict:
    """`config.episodes` closed-loop episodes of `config.model` on its track and condition: each
    episode's success, |xte| and speed, and their summary (with `config.plot`, the trajectories)."""
    model, track, condition, seed = config.model, config.track, config.condition, config.seed
    episodes, seconds, plot = config.episodes, config.seconds, config.plot
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {sorted(CONDITIONS)}")
    c = CONDITIONS[condition]
    robot = config.robot
    run_settings = settings or Settings()
    if config.max_linear_speed is not None:
        check_settings({"max_linear_speed": config.max_linear_speed})
        run_settings = dataclasses.replace(run_settings, max_linear_speed=config.max_linear_speed)
    run_settings = dataclasses.replace(run_settings, **(c.settings or {}))  # a condition's own limit stands
    expert = None
    if model == EXPERT:
        limit = run_settings.max_linear_speed
        expert = PurePursuit(speed=min(EXPERT_SPEED, limit), max_speed=limit if limit > EXPERT_SPEED else None)
        policy = config = None
    else:
        policy, config = load_policy(model)
    trained_on = config.provenance.get("robot") if config is not None else None
    if trained_on and trained_on != robot:
        raise ValueError(
            f"{model} was trained on the {trained_on} robot; it cannot drive the {robot} (--robot {trained_on})"
        )
    world, sensors = c.apply(Track.load(track_path(c.track or track)), SensorConfig())
    rng = np.random.default_rng(seed)
    env = TrackEnv(world, sensors=sensors, seed=seed, **c.env_kwargs(robot_spec(robot)))
    results, paths = [], []
    try:
        for k in progress.bar(
            range(episodes), active=show_progress, desc=f"eval {world.name} {condition}", unit="episode"
        ):
            env.reset(s=float(rng.uniform(0, world.length)), offset=float(rng.normal(0, 0.1)), seed=seed + k)
            controller = LiquidController(policy, config, run_settings) if expert is None else None
            xte, speed, path, off = [], [], [], False
            for event in env.events(seconds):
                if expert is not None:  # at IMU rate, as collect drives it
                    command = None
                    if event.kind == "imu":
                        env.command(*expert(env))
                else:
                    command = feed(controller, env, event)
                if event.kind == "imu":  # the truth sampled at IMU rate
                    truth = env.truth()
                    xte.append(abs(truth["xte"]))
                    speed.append(truth["speed"])
                    path.append((truth["x"], truth["y"]))
                    off = off or truth["off_road"]
                if command is not None:
                    env.command(command.linear_x, command.angular_z)
            results.append(
                {
                    "success": not off,
                    "mean_abs_xte_m": float(np.mean(xte)),
                    "max_abs_xte_m": float(np.max(xte)),
                    "mean_speed_mps": float(np.mean(speed)),
                    "progress_m": float(env.truth()["progress"]),
                }
            )
            paths.append(np.array(path))
    finally:
        env.close()
    summary = {
        "model": str(model),
        "track": world.name,
        "condition": condition,
        "robot": robot,
        "episodes": episodes,
        "seconds": seconds,
        "max_linear_speed": run_settings.max_linear_speed,
        "success_rate": float(np.mean([r["success"] for r in results])),
        "mean_abs_xte_m": float(np.mean([r["mean_abs_xte_m"] for r in results])),
        "max_abs_xte_m": float(np.max([r["max_abs_xte_m"] for r in results])),
        "mean_speed_mps": float(np.mean([r["mean_speed_mps"] for r in results])),
        "per_episode": results,
    }
    if plot is not None:
        labels = [
            f"episode {k}: {'stayed on the road' if r['success'] else 'LEFT THE ROAD'}, mean |xte| "
            f"{r['mean_abs_xte_m']:.3f} m"
            for k, r in enumerate(results)
        ]
        write_trajectory_png(
            plot,
            world.samples,
            world.road_width,
            dict(zip(labels, paths, strict=True)),
            title=f"{Path(model).name} ({robot}) on {world.name} ({condition}), {seconds:g} s: "
            f"{sum(r['success'] for r in results)}/{episodes} on the road",
        )
        summary["plot"] = str(plot)
    return summary
