"""`liquid-control replay`: a bag's sensor messages (those the model reads: camera, and IMU and
odometry where it reads them, found as train finds them) through LiquidController, offline and as
fast as the CPU allows, to see what a model would have commanded. No ROS here.

The events take the node's path exactly (same conversion, same controller, same time rules), and
each command is stamped with the header stamp of the sensor message it answers, as the node
publishes it. A replay is deterministic: one torch thread, no wall-clock input, so two replays of a
bag write identical output bags. Out-of-order stamps are the controller's business (dropped,
held, or a reset) and are counted in the summary.

Views inside the network, on request: `video_path` an MP4 with one frame per camera frame (the
camera, the encoder's VisualBackProp saliency over it, the commands of the last seconds, replayed
and recorded); `activity_path` a CSV with every neuron's state and effective time constant and the
network's inputs after each step, and a PNG beside it plotting them per layer of the wiring.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import topics
from ..model.labels import COMMAND_TYPES, LabelMapping
from ..model.labels import STAMPED as STAMPED_COMMANDS
from ..model.modelfile import load_policy
from ..runtime.controller import SENSORS, LiquidController, Settings
from ..runtime.parameters import DEFAULTS, read_params, settings_fields
from .configs import ReplayConfig
from .info import sensor_topics
from .io import (
    TWIST_STAMPED,
    BagError,
    BagWriter,
    check_new_bag,
    read_events,
    summarize,
    twist_stamped_msg,
)
from .limits import LimitError, regular_file

COMMAND_TOPIC = topics.absolute(topics.CMD_VEL)
FIELDS = ("linear.x", "angular.z")
PLOT_POINTS = 1500


def node_settings(params_file: str | Path | None = None) -> tuple[Settings, dict]:
    """The controller node's Settings and all its parameters (the table's defaults, overridden by a
    ROS 2 parameters file as launch files pass it, if given)."""
    params = {**DEFAULTS, **(read_params(params_file) if params_file else {})}
    try:
        settings = Settings(**settings_fields(params))
        settings.check()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"parameters file {params_file}: {exc}") from None
    return settings, params


def _check_topic(path: Path, have: dict, topic: str, types: tuple[str, ...]) -> None:
    if topic not in have:
        raise BagError(f"bag {path}: no topic {topic} (it has {sorted(have)})")
    if have[topic].msgtype not in types:
        raise BagError(f"bag {path}: topic {topic} is {have[topic].msgtype}, expected {' or '.join(types)}")


def _stamp_text(sec: int, nanosec: int) -> str:
    return f"{sec}.{nanosec:09d}"


def _nearest(keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index into sorted `keys` of the element nearest each query (the earlier one on a tie)."""
    right = np.clip(np.searchsorted(keys, queries), 0, len(keys) - 1)
    left = np.clip(right - 1, 0, len(keys) - 1)
    return np.where(np.abs(keys[left] - queries) <= np.abs(keys[right] - queries), left, right)


def _proposal_topic(bag: Path, have: dict, named: str | None, compare_topic: str | None) -> str | None:
    """The controller node's recorded proposals: "none" none; default the bag's only TwistStamped
    topic named .../proposed_cmd_vel (never the compared one); else the topic named, checked."""
    if named == "none":
        return None
    if named:
        _check_topic(bag, have, named, (TWIST_STAMPED,))
        return named
    name = topics.PROPOSED.removeprefix("~/")
    fits = sorted(
        t for t, i in have.items() if i.msgtype == TWIST_STAMPED and t.rsplit("/", 1)[-1] == name and t != compare_topic
    )
    if len(fits) > 1:
        raise BagError(
            f"bag {bag}: {len(fits)} topics could be the proposals ({', '.join(fits)}): choose one with --proposal-topic"
        )
    return fits[0] if fits else None


def _compare_topic(bag: Path, have: dict, compare_topic: str | None, labels: LabelMapping) -> str | None:
    """The recorded-command topic to compare with (None: none), checked: its commands are mapped
    to physical units by the labels mapping the model was trained with."""
    if compare_topic is None and COMMAND_TOPIC in have:
        compare_topic = COMMAND_TOPIC
    if compare_topic:
        _check_topic(bag, have, compare_topic, COMMAND_TYPES)
        try:
            labels.check(have[compare_topic].msgtype)
        except ValueError as exc:
            raise BagError(
                f"bag {bag}: {compare_topic} cannot be compared with the model's commands: {exc} "
                "(the model was trained on other labels)"
            ) from None
    return compare_topic


@dataclass
class _Run:
    """One pass of a bag's events through a controller: the commands written and what was seen."""

    controller: LiquidController
    out: BagWriter
    frame_id: str
    stamped_compare: bool
    labels: LabelMapping = field(default_factory=LabelMapping)  # the recorded commands to physical units
    rows: list = field(default_factory=list)  # (header sec, nanosec, bag time ns, reason, linear, angular)
    recorded: list = field(default_factory=list)  # (key s, key text, linear, angular)
    proposals: list = field(default_factory=list)  # the node's, recorded: as rows
    latencies: dict = field(default_factory=lambda: {kind: [] for kind in SENSORS})  # ns per controller call
    last: dict = field(default_factory=lambda: dict.fromkeys(SENSORS))
    fed: dict = field(default_factory=lambda: dict.fromkeys(SENSORS, 0))
    out_of_order: dict = field(default_factory=lambda: dict.fromkeys(SENSORS, 0))
    first_ns: int | None = None
    last_ns: int | None = None

    def feed(self, event) -> None:
        self.first_ns = event.log_time_ns if self.first_ns is None else self.first_ns
        self.last_ns = event.log_time_ns
        if event.kind == "proposal":  # the controller node's, live: SI units as it commands
            linear, angular = (float(v) for v in event.data)
            self.proposals.append((*event.header_stamp, event.log_time_ns, "proposal", linear, angular))
            return
        if event.kind == "command":
            key = event.stamp if self.stamped_compare else event.log_time_ns * 1e-9
            text = (
                _stamp_text(*event.header_stamp)
                if self.stamped_compare
                else _stamp_text(*divmod(event.log_time_ns, 1_000_000_000))
            )
            linear, angular = self.labels.physical(event.msgtype, event.data)
            self.recorded.append((key, text, float(linear), float(angular)))
            return
        if self.last[event.kind] is not None and event.stamp <= self.last[event.kind]:
            self.out_of_order[event.kind] += 1
        self.last[event.kind] = event.stamp
        self.fed[event.kind] += 1
        t0 = time.perf_counter_ns()
        command = self.controller.on_sensor(event.kind, event.stamp, event.data)
        self.latencies[event.kind].append(time.perf_counter_ns() - t0)
        if command is None:
            return
        sec, nanosec = event.header_stamp  # exact, as the node stamps it (no float round trip)
        msg = twist_stamped_msg((sec, nanosec), command.linear_x, command.angular_z, self.frame_id)
        self.out.write(COMMAND_TOPIC, msg, log_time_ns=event.log_time_ns)
        self.rows.append((sec, nanosec, event.log_time_ns, command.reason, command.linear_x, command.angular_z))


def neuron_layers(policy) -> list[str]:
    """The layer of each liquid neuron (state index) by the core's wiring: "motor", "command",
    "inter" for an NCP (nets/wirings.py); "hidden" for each unit of a core without a wiring."""
    wiring = getattr(policy.core, "wiring", None)
    if wiring is None:
        return ["hidden"] * policy.core.state_size
    return [wiring.get_type_of_neuron(i) for i in range(wiring.units)]


def _camera_fps(bag: Path, camera: str, frames: int = 31) -> float:
    """The camera's frame rate from the bag times of its first frames (30 when it has too few)."""
    from .io import read_serialized

    times = []
    for _, _, log_ns, _ in read_serialized(bag, [camera]):
        times.append(log_ns)
        if len(times) >= frames:
            break
    gaps = np.diff(np.array(times, dtype=np.int64)) * 1e-9
    gaps = gaps[gaps > 0]
    return float(np.clip(1.0 / np.median(gaps), 1.0, 240.0)) if gaps.size else 30.0


class _Views:
    """What a replay shows beside its commands, fed after each event: the video (saliency per camera
    frame) and the neuron activity (one row per step)."""

    def __init__(
        self,
        policy,
        settings: Settings,
        stamped_compare: bool,
        video_path: Path | None,
        activity_path: Path | None,
        fps: float,
        title: str,
    ) -> None:
        self.policy, self.stamped = policy, stamped_compare
        self.video = self.vbp = None
        if video_path is not None:
            from ..draw.video import WINDOW_S, ReplayVideo
            from ..runtime.saliency import VisualBackProp

            self.vbp = VisualBackProp(policy)
            self.window = WINDOW_S
            self.video = ReplayVideo(video_path, fps, (settings.max_linear_speed, settings.max_angular_speed), title)
            self._replayed, self._recorded = deque(), deque()
            self._seen = {"rows": 0, "recorded": 0}
        self.activity_path = activity_path
        self.steps: list = []  # (sec, nanosec, event kind, hidden, time constants, inputs)
        self.seconds = 0.0  # spent here: not the replay's own speed

    def after(self, event, run: _Run, stepped: bool) -> None:
        started = time.perf_counter()
        try:
            self._after(event, run, stepped)
        finally:
            self.seconds += time.perf_counter() - started

    def _after(self, event, run: _Run, stepped: bool) -> None:
        controller = run.controller
        if self.activity_path is not None and stepped:
            sec, nanosec = event.header_stamp
            self.steps.append(
                (
                    sec,
                    nanosec,
                    event.kind,
                    controller.hidden.copy(),
                    controller.time_constants.copy(),
                    controller.run.inputs.copy(),
                )
            )
        if self.video is not None and event.kind == "camera":
            self._frame(event, run)

    def _frame(self, event, run: _Run) -> None:
        # The command panels' time axis: header stamps, or bag times when the recorded commands are
        # plain Twists (as replay matches them).
        t = event.stamp if self.stamped else event.log_time_ns * 1e-9
        for row in run.rows[self._seen["rows"] :]:
            key = row[0] + row[1] * 1e-9 if self.stamped else row[2] * 1e-9
            self._replayed.append((key, row[4], row[5]))
        for key, _, linear, angular in run.recorded[self._seen["recorded"] :]:
            self._recorded.append((key, linear, angular))
        self._seen = {"rows": len(run.rows), "recorded": len(run.recorded)}
        for window in (self._replayed, self._recorded):
            while window and window[0][0] < t - self.window:
                window.popleft()
        from ..runtime.saliency import overlay

        frame = self.vbp.frame(event.data)
        picture = overlay(frame, self.vbp.from_frame(frame))
        camera = event.data if event.data.dtype == np.uint8 else np.clip(event.data, 0.0, 1.0)
        replayed = tuple(np.array(v) for v in zip(*self._replayed, strict=True)) if self._replayed else ((), (), ())
        recorded = tuple(np.array(v) for v in zip(*self._recorded, strict=True)) if self._recorded else None
        sec, nanosec = event.header_stamp
        self.video.add(camera, picture, t, replayed, recorded, label=f"stamp {_stamp_text(sec, nanosec)} s")

    def close(self, failed: bool) -> dict:
        out = {}
        if self.video is not None:
            out["video_frames"] = self.video.close()
            if failed:
                self.video.path.unlink(missing_ok=True)
        if self.activity_path is not None and not failed:
            out.update(_write_activity(self.activity_path, self.steps, self.policy))
        return out


def _check_files(model, params_file, *outputs) -> None:
    """Refuse (ValueError naming the file) a model or parameters file that is not a regular file (a
    FIFO would keep the replay waiting), and an output that is there and not a regular file."""
    for path in (model, params_file):
        if path is not None and os.path.exists(path):  # else: a package:// model, or a missing file it names
            try:
                regular_file(Path(path))
            except LimitError as exc:
                raise ValueError(str(exc)) from None
    for path in outputs:
        if path is not None and os.path.lexists(path):
            try:
                regular_file(Path(path))
            except LimitError as exc:
                raise ValueError(f"{exc} (an output is written only to a new or a regular file)") from None


def replay(config: ReplayConfig) -> dict:
    """Replay `config.bag` through a controller running `config.model`; write the commands to bag
    `config.output` on /cmd_vel, a CSV and a PNG plot beside it (or at `csv` / `plot`). Returns the
    summary. The fields below are `config`'s.

    `compare_topic`: recorded commands (TwistStamped matched by header stamp, Twist by bag time)
    to compare with; None means /cmd_vel if the bag has it. The controller's settings and the
    commands' frame_id are the node's, from `params` (default: the node's defaults);
    `frame_id` overrides. `video`: an MP4 of camera, saliency and commands (one frame per
    camera frame; needs imageio and imageio-ffmpeg); `activity`: a CSV of the neurons' states
    and time constants per step, and its plot beside it (the same name, .png). Raises BagError for a
    bag that cannot be replayed (nothing is left behind then), ValueError for a bad model or
    parameters file, or a missing video writer (before anything is written)."""
    import torch

    c = config
    bag, output, model = Path(c.bag), Path(c.output), c.model
    compare_topic, frame_id, params_file = c.compare_topic, c.frame_id, c.params
    csv_path, plot_path, video_path, activity_path = c.csv, c.plot, c.video, c.activity

    csv_path = Path(csv_path) if csv_path else output.with_name(output.name + ".csv")
    plot_path = Path(plot_path) if plot_path else output.with_name(output.name + ".png")
    check_new_bag(output)
    _check_files(model, params_file, csv_path, plot_path, video_path, activity_path)
    if video_path is not None:
        from ..draw.video import check_writer

        check_writer()  # before anything is written: it says what to install
    have = summarize(bag).topics
    settings, params = node_settings(params_file)
    node_frame_id, max_pixels = str(params["frame_id"]), int(params["max_image_pixels"])
    policy, model_config = load_policy(model)
    # The sensors the model reads, found as train finds them.
    read = sensor_topics(bag, policy.spec.sensors, c.camera_topic, c.imu_topic, c.odom_topic)
    camera = read["camera"]
    labels = LabelMapping.recorded(model_config.provenance.get("labels"))
    compare_topic = _compare_topic(bag, have, compare_topic, labels)
    stamped_compare = bool(compare_topic) and have[compare_topic].msgtype in STAMPED_COMMANDS
    proposal_topic = _proposal_topic(bag, have, c.proposal_topic, compare_topic)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the node runs (num_threads: 1), and bitwise repeatable
    skipped: dict[str, int] = {}
    views = None
    if video_path is not None or activity_path is not None:
        views = _Views(
            policy,
            settings,
            stamped_compare,
            Path(video_path) if video_path else None,
            Path(activity_path) if activity_path else None,
            _camera_fps(bag, camera) if video_path else 30.0,
            f"{bag.name} through {Path(str(model)).name}",
        )
    started = time.perf_counter()
    try:
        with BagWriter(output) as out:
            run = _Run(
                LiquidController(policy, model_config, settings),
                out,
                frame_id or node_frame_id,
                stamped_compare,
                labels,
            )
            # Frames converted as the node converts them: uint8, its size limit, compressed ones
            # decoded at the smallest scale that covers the model's input.
            events = read_events(
                bag,
                camera=camera,
                imu=read.get("imu"),
                odom=read.get("odom"),
                command=compare_topic,
                proposal=proposal_topic,
                skipped=skipped,
                camera_size=(policy.spec.image_width, policy.spec.image_height),
                max_image_pixels=max_pixels,
                image_dtype=np.uint8,
            )
            counters = run.controller.counters
            for event in events:
                steps = counters.steps
                run.feed(event)
                if views is not None:
                    views.after(event, run, counters.steps > steps)
    except BaseException:
        shutil.rmtree(output, ignore_errors=True)  # ours: it did not exist before this replay
        if views is not None:
            views.close(failed=True)
        raise
    finally:
        torch.set_num_threads(threads)
    # The replay's speed without the views' drawing and encoding (reported as views_s).
    wall = time.perf_counter() - started - (views.seconds if views is not None else 0.0)
    shown = {}
    if views is not None:
        started = time.perf_counter()
        shown = views.close(failed=False)
        shown["views_s"] = round(views.seconds + time.perf_counter() - started, 3)

    compare = _compare(run.rows, run.recorded, stamped_compare, compare_topic)
    proposals = _proposals(run, proposal_topic, stamped_compare, compare_topic)
    _write_csv(csv_path, run.rows, compare)
    plotted = _write_plot(plot_path, run.rows, compare)
    if video_path is not None:
        shown = {"video": str(video_path), **shown}
    return {
        "bag": str(bag),
        "model": str(model),
        "output": str(output),
        "csv": str(csv_path),
        "plot": str(plot_path) if plotted else None,
        **_run_summary(run, wall),
        "skipped_messages": skipped,
        "compare": compare["summary"] if compare else None,
        "proposals": proposals,
        **shown,
    }


def _proposals(run: _Run, topic: str | None, stamped_compare: bool, compare_topic: str | None) -> dict | None:
    """The node's recorded proposals against the driver's commands (shadow mode: how the policy
    would have driven beside the person) and against the replay's (how exactly the replay gives
    what ran live)."""
    if topic is None:
        return None
    out: dict = {"topic": topic, "count": len(run.proposals)}
    if not run.proposals:
        return out
    driver = _compare(run.proposals, run.recorded, stamped_compare, compare_topic)
    if driver and driver["summary"].get("matched"):
        out["vs_driver"] = driver["summary"]
    keyed = sorted(
        (sec + nanosec * 1e-9, _stamp_text(sec, nanosec), lin, ang) for sec, nanosec, _, _, lin, ang in run.proposals
    )
    replayed = _compare(run.rows, keyed, True, topic)
    if replayed and replayed["summary"].get("matched"):
        out["vs_replay"] = replayed["summary"]
    return out


def _run_summary(run: _Run, wall: float) -> dict:
    c = run.controller.counters
    latency = {"all": [ns for values in run.latencies.values() for ns in values], **run.latencies}
    reasons: dict[str, int] = {}
    for row in run.rows:
        reasons[row[3]] = reasons.get(row[3], 0) + 1
    sensor_events = sum(run.fed.values())
    bag_seconds = (run.last_ns - run.first_ns) * 1e-9 if run.first_ns is not None else 0.0
    return {
        "sensor_events": sensor_events,
        "camera_frames": run.fed["camera"],
        "imu_samples": run.fed["imu"],
        "odom_messages": run.fed["odom"],
        "steps": c.steps,
        "commands": len(run.rows),
        "command_reasons": reasons,
        "out_of_order": run.out_of_order,
        "controller": {
            "stale_dropped": c.stale_dropped,
            "late": c.late,
            "time_jumps": c.time_jumps,
            "gap_resets": c.gap_resets,
            "nan_resets": c.nan_resets,
            "rejected": dict(c.rejected),
        },
        "latency_us": {kind: _percentiles(values) for kind, values in latency.items()},
        "wall_s": round(wall, 3),
        "events_per_s": round(sensor_events / wall, 1) if wall > 0 else 0.0,
        "bag_seconds": round(bag_seconds, 3),
        "realtime_factor": round(bag_seconds / wall, 2) if wall > 0 else 0.0,
    }


def _percentiles(ns: list[int]) -> dict:
    """p50/p99/max of controller call times in microseconds (the first call included: it is real)."""
    us = np.array(ns or [0], dtype=np.float64) * 1e-3
    return {
        "p50": round(float(np.percentile(us, 50)), 1),
        "p99": round(float(np.percentile(us, 99)), 1),
        "max": round(float(us.max()), 1),
    }


def _compare(rows, recorded, stamped: bool, topic: str | None) -> dict | None:
    """For each replayed command, the recorded one nearest in time, and the errors per field."""
    if not topic or not rows or not recorded:
        if topic:
            return {"summary": {"topic": topic, "matched": 0}, "match": None}
        return None
    recorded = sorted(recorded, key=lambda r: r[0])
    keys = np.array([r[0] for r in recorded])
    if stamped:
        queries = np.array([sec + nanosec * 1e-9 for sec, nanosec, *_ in rows])
    else:
        queries = np.array([row[2] * 1e-9 for row in rows])
    match = _nearest(keys, queries)
    replayed = np.array([[row[4], row[5]] for row in rows])
    theirs = np.array([[recorded[i][2], recorded[i][3]] for i in match])
    error = replayed - theirs
    summary = {
        "topic": topic,
        "matched_by": "header stamp" if stamped else "bag time",
        "matched": len(rows),
        "recorded": len(recorded),
        "median_time_gap_s": round(float(np.median(np.abs(keys[match] - queries))), 6),
    }
    for k, name in enumerate(FIELDS):
        summary[name] = {
            "mean_abs_error": round(float(np.mean(np.abs(error[:, k]))), 6),
            "rms_error": round(float(np.sqrt(np.mean(error[:, k] ** 2))), 6),
        }
    return {"summary": summary, "match": [recorded[i] for i in match]}


def _write_csv(path: Path, rows, compare) -> None:
    matched = compare["match"] if compare else None
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["stamp", "reason", "linear_x", "angular_z", "recorded_time", "recorded_linear_x", "recorded_angular_z"]
        )
        for k, (sec, nanosec, _, reason, linear, angular) in enumerate(rows):
            theirs = ["", "", ""] if matched is None else [matched[k][1], repr(matched[k][2]), repr(matched[k][3])]
            writer.writerow([_stamp_text(sec, nanosec), reason, repr(linear), repr(angular), *theirs])


def _write_plot(path: Path, rows, compare) -> bool:
    if len(rows) < 2:
        return False
    from ..draw.plot import write_commands_png

    every = -(-len(rows) // PLOT_POINTS)  # more points than pixels across: thin long replays
    rows = rows[::every]
    matched = compare["match"][::every] if compare and compare["match"] else None
    t0 = rows[0][0] + rows[0][1] * 1e-9
    t = [sec + nanosec * 1e-9 - t0 for sec, nanosec, *_ in rows]
    replayed = {"linear.x": [r[4] for r in rows], "angular.z": [r[5] for r in rows]}
    recorded = {"linear.x": [m[2] for m in matched], "angular.z": [m[3] for m in matched]} if matched else None
    title = "replayed commands" + (f" against the recorded {compare['summary']['topic']}" if matched else "")
    write_commands_png(path, t, replayed, recorded, title=title)
    return True


def _write_activity(path: Path, steps: list, policy) -> dict:
    """The activity CSV (a row per step: stamp, the event that stepped, then each neuron's state,
    each neuron's time constant in s, and each input, columns named by layer and index) and its
    plot beside it. Returns their paths for the summary."""
    layers = neuron_layers(policy)
    inputs = list(policy.sensor_spec().features)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "stamp",
                "event",
                *(f"state.{layer}.{i}" for i, layer in enumerate(layers)),
                *(f"tau_s.{layer}.{i}" for i, layer in enumerate(layers)),
                *(f"input.{name}" for name in inputs),
            ]
        )
        for sec, nanosec, kind, hidden, tau, values in steps:
            writer.writerow(
                [
                    _stamp_text(sec, nanosec),
                    kind,
                    *(f"{v:.9g}" for v in hidden),
                    *(f"{v:.9g}" for v in tau),
                    *(f"{v:.9g}" for v in values),
                ]
            )
    plot = path.with_suffix(".png")
    plotted = _write_activity_plot(plot, steps, layers, inputs)
    return {"activity": str(path), "activity_steps": len(steps), "activity_plot": str(plot) if plotted else None}


def _write_activity_plot(path: Path, steps: list, layers: list[str], inputs: list[str]) -> bool:
    if len(steps) < 2:
        return False
    from ..draw.plot import write_activity_png

    total = len(steps)
    steps = steps[:: -(-total // PLOT_POINTS)]
    t0 = steps[0][0] + steps[0][1] * 1e-9
    t = [sec + nanosec * 1e-9 - t0 for sec, nanosec, *_ in steps]
    hidden = np.array([s[3] for s in steps])
    tau = np.array([s[4] for s in steps])
    panels = {"sensory": (inputs, np.array([s[5] for s in steps]), None)}
    for name in dict.fromkeys(layers):
        ids = [i for i, layer in enumerate(layers) if layer == name]
        panels[name] = ([f"neuron {i}" for i in ids], hidden[:, ids], tau[:, ids])
    write_activity_png(
        path,
        t,
        panels,
        title=f"the liquid network's inputs and neurons per layer ({total} steps"
        + (f", {len(t)} drawn)" if len(t) < total else ")"),
    )
    return True


def format_summary(s: dict) -> str:
    lat = s["latency_us"]
    lines = [
        f"replayed {s['bag']} through {s['model']}",
        f"  {s['sensor_events']} sensor events ({s['camera_frames']} camera, {s['imu_samples']} IMU"
        + (f", {s['odom_messages']} odometry" if s["odom_messages"] else "")
        + f"), {s['steps']} steps, {s['commands']} commands -> {s['output']}",
        f"  step latency p50 {lat['all']['p50']:.0f} us, p99 {lat['all']['p99']:.0f} us (camera p50 "
        f"{lat['camera']['p50']:.0f} us"
        + "".join(
            f", {name} p50 {lat[kind]['p50']:.0f} us"
            for kind, name in (("imu", "IMU"), ("odom", "odometry"))
            if s[{"imu": "imu_samples", "odom": "odom_messages"}[kind]]
        )
        + f"); {s['events_per_s']:.0f} events/s, {s['realtime_factor']:.1f}x real time",
    ]
    ooo, c = s["out_of_order"], s["controller"]
    if any(ooo.values()) or c["time_jumps"] or c["gap_resets"] or c["late"]:
        lines.append(
            f"  out-of-order stamps: camera {ooo['camera']}, IMU {ooo['imu']}, odometry {ooo['odom']}; controller dropped "
            f"{c['stale_dropped']}, held {c['late']} late, {c['time_jumps']} time jumps, "
            f"{c['gap_resets']} gap resets"
        )
    if s["skipped_messages"]:
        lines.append(f"  skipped messages: {s['skipped_messages']}")
    cmp = s["compare"]
    if cmp and cmp.get("matched"):
        lines.append(f"  vs {cmp['topic']} ({cmp['recorded']} recorded, matched by {cmp['matched_by']}):")
        for name in FIELDS:
            lines.append(
                f"    {name:<9} mean abs error {cmp[name]['mean_abs_error']:.4f}, RMS {cmp[name]['rms_error']:.4f}"
            )
    elif cmp:
        lines.append(f"  vs {cmp['topic']}: no recorded commands to compare with")
    else:
        lines.append("  no recorded commands to compare with (no /cmd_vel; see --compare-topic)")
    proposals = s.get("proposals")
    if proposals:
        lines.append(f"  the node's proposals on {proposals['topic']}: {proposals['count']}")
        for key, what in (("vs_driver", "vs the driver's"), ("vs_replay", "vs this replay's")):
            if key in proposals:
                p = proposals[key]
                lines.append(
                    f"    {what} {p['topic'] if key == 'vs_driver' else 'commands'}: "
                    + ", ".join(f"{name} mean abs error {p[name]['mean_abs_error']:.4f}" for name in FIELDS)
                )
    lines.append(f"  CSV {s['csv']}" + (f", plot {s['plot']}" if s["plot"] else ""))
    if s.get("video"):
        lines.append(f"  video {s['video']} ({s['video_frames']} frames, one per camera frame)")
    if s.get("activity"):
        lines.append(
            f"  neuron activity {s['activity']} ({s['activity_steps']} steps)"
            + (f", plot {s['activity_plot']}" if s["activity_plot"] else "")
        )
    if "views_s" in s:
        lines.append(f"  the views took {s['views_s']:.1f} s more (not in the speed above)")
    return "\n".join(lines)
