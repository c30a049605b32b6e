"""`liquid-control replay`: a bag's camera and IMU messages through LiquidController, offline and as
fast as the CPU allows, to see what a model would have commanded. No ROS here.

The events take the node's path exactly (same conversion, same controller, same time rules), and
each command is stamped with the header stamp of the sensor message it answers, as the node
publishes it. A replay is deterministic: one torch thread, no wall-clock input, so two replays of a
bag write identical output bags. Out-of-order stamps are the controller's business (dropped,
held, or a reset) and are counted in the summary.
"""

from __future__ import annotations

import csv
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import topics
from ..paths import DEFAULT_MODEL
from ..runtime.controller import LiquidController, Settings
from ..runtime.modelfile import load_policy
from ..runtime.parameters import DEFAULTS, read_params, settings_fields
from .io import (
    COMPRESSED_IMAGE,
    IMAGE,
    IMU,
    TWIST,
    TWIST_STAMPED,
    BagError,
    BagWriter,
    read_events,
    summarize,
    twist_stamped_msg,
)

CAMERA_TOPIC = topics.absolute(topics.CAMERA)
IMU_TOPIC = topics.absolute(topics.IMU)
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


def _compare_topic(bag: Path, have: dict, camera: str, imu: str, compare_topic: str | None) -> str | None:
    """Check the bag's sensor topics; the recorded-command topic to compare with (None: none)."""
    _check_topic(bag, have, camera, (IMAGE, COMPRESSED_IMAGE))
    _check_topic(bag, have, imu, (IMU,))
    if compare_topic is None and COMMAND_TOPIC in have:
        compare_topic = COMMAND_TOPIC
    if compare_topic:
        _check_topic(bag, have, compare_topic, (TWIST_STAMPED, TWIST))
    return compare_topic


@dataclass
class _Run:
    """One pass of a bag's events through a controller: the commands written and what was seen."""

    controller: LiquidController
    out: BagWriter
    frame_id: str
    stamped_compare: bool
    rows: list = field(default_factory=list)       # (header sec, nanosec, bag time ns, reason, linear, angular)
    recorded: list = field(default_factory=list)   # (key s, key text, linear, angular)
    latencies: dict = field(default_factory=lambda: {"camera": [], "imu": []})  # ns per controller call
    last: dict = field(default_factory=lambda: {"camera": None, "imu": None})
    fed: dict = field(default_factory=lambda: {"camera": 0, "imu": 0})
    out_of_order: dict = field(default_factory=lambda: {"camera": 0, "imu": 0})
    first_ns: int | None = None
    last_ns: int | None = None

    def feed(self, event) -> None:
        self.first_ns = event.log_time_ns if self.first_ns is None else self.first_ns
        self.last_ns = event.log_time_ns
        if event.kind == "command":
            key = event.stamp if self.stamped_compare else event.log_time_ns * 1e-9
            text = (_stamp_text(*event.header_stamp) if self.stamped_compare
                    else _stamp_text(*divmod(event.log_time_ns, 1_000_000_000)))
            self.recorded.append((key, text, float(event.data[0]), float(event.data[1])))
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


def replay(bag: str | Path, output: str | Path, model: str | Path = DEFAULT_MODEL,
           camera: str = CAMERA_TOPIC, imu: str = IMU_TOPIC, compare_topic: str | None = None,
           csv_path: str | Path | None = None, plot_path: str | Path | None = None,
           frame_id: str | None = None, params_file: str | Path | None = None) -> dict:
    """Replay `bag` through a controller running `model`; write the commands to bag `output` on
    /cmd_vel, a CSV and a PNG plot beside it (or at csv_path / plot_path). Returns the summary.

    `compare_topic`: recorded commands (TwistStamped matched by header stamp, Twist by bag time)
    to compare with; None means /cmd_vel if the bag has it. The controller's settings and the
    commands' frame_id are the node's, from `params_file` (default: the node's defaults);
    `frame_id` overrides. Raises BagError for a bag that cannot be replayed (nothing is left
    behind then), ValueError for a bad model or parameters file."""
    import torch

    bag, output = Path(bag), Path(output)
    csv_path = Path(csv_path) if csv_path else output.with_name(output.name + ".csv")
    plot_path = Path(plot_path) if plot_path else output.with_name(output.name + ".png")
    if output.exists():
        raise BagError(f"bag {output}: exists already (a bag is never overwritten)")
    have = summarize(bag).topics
    compare_topic = _compare_topic(bag, have, camera, imu, compare_topic)
    stamped_compare = bool(compare_topic) and have[compare_topic].msgtype == TWIST_STAMPED
    settings, params = node_settings(params_file)
    node_frame_id, max_pixels = str(params["frame_id"]), int(params["max_image_pixels"])
    policy, config = load_policy(model)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the node runs (num_threads: 1), and bitwise repeatable
    skipped: dict[str, int] = {}
    started = time.perf_counter()
    try:
        with BagWriter(output) as out:
            run = _Run(LiquidController(policy, config, settings), out, frame_id or node_frame_id, stamped_compare)
            # Frames converted as the node converts them: its size limit, compressed ones decoded
            # at the smallest scale that covers the model's input.
            events = read_events(bag, camera=camera, imu=imu, command=compare_topic, skipped=skipped,
                                 camera_size=(policy.spec.image_width, policy.spec.image_height),
                                 max_image_pixels=max_pixels)
            for event in events:
                run.feed(event)
    except BaseException:
        shutil.rmtree(output, ignore_errors=True)  # ours: it did not exist before this replay
        raise
    finally:
        torch.set_num_threads(threads)
    wall = time.perf_counter() - started

    compare = _compare(run.rows, run.recorded, stamped_compare, compare_topic)
    _write_csv(csv_path, run.rows, compare)
    plotted = _write_plot(plot_path, run.rows, compare)
    return {"bag": str(bag), "model": str(model), "output": str(output), "csv": str(csv_path),
            "plot": str(plot_path) if plotted else None, **_run_summary(run, wall),
            "skipped_messages": skipped, "compare": compare["summary"] if compare else None}


def _run_summary(run: _Run, wall: float) -> dict:
    c = run.controller.counters
    latency = {"all": run.latencies["camera"] + run.latencies["imu"], **run.latencies}
    reasons: dict[str, int] = {}
    for row in run.rows:
        reasons[row[3]] = reasons.get(row[3], 0) + 1
    sensor_events = run.fed["camera"] + run.fed["imu"]
    bag_seconds = (run.last_ns - run.first_ns) * 1e-9 if run.first_ns is not None else 0.0
    return {
        "sensor_events": sensor_events, "camera_frames": run.fed["camera"], "imu_samples": run.fed["imu"],
        "steps": c.steps, "commands": len(run.rows), "command_reasons": reasons,
        "out_of_order": run.out_of_order,
        "controller": {"stale_dropped": c.stale_dropped, "late": c.late, "time_jumps": c.time_jumps,
                       "gap_resets": c.gap_resets, "nan_resets": c.nan_resets, "rejected": dict(c.rejected)},
        "latency_us": {kind: _percentiles(values) for kind, values in latency.items()},
        "wall_s": round(wall, 3),
        "events_per_s": round(sensor_events / wall, 1) if wall > 0 else 0.0,
        "bag_seconds": round(bag_seconds, 3),
        "realtime_factor": round(bag_seconds / wall, 2) if wall > 0 else 0.0,
    }


def _percentiles(ns: list[int]) -> dict:
    """p50/p99/max of controller call times in microseconds (the first call included: it is real)."""
    us = np.array(ns or [0], dtype=np.float64) * 1e-3
    return {"p50": round(float(np.percentile(us, 50)), 1), "p99": round(float(np.percentile(us, 99)), 1),
            "max": round(float(us.max()), 1)}


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
    summary = {"topic": topic, "matched_by": "header stamp" if stamped else "bag time", "matched": len(rows),
               "recorded": len(recorded), "median_time_gap_s": round(float(np.median(np.abs(keys[match] - queries))), 6)}
    for k, name in enumerate(FIELDS):
        summary[name] = {"mean_abs_error": round(float(np.mean(np.abs(error[:, k]))), 6),
                         "rms_error": round(float(np.sqrt(np.mean(error[:, k] ** 2))), 6)}
    return {"summary": summary, "match": [recorded[i] for i in match]}


def _write_csv(path: Path, rows, compare) -> None:
    matched = compare["match"] if compare else None
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stamp", "reason", "linear_x", "angular_z", "recorded_time", "recorded_linear_x",
                         "recorded_angular_z"])
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


def format_summary(s: dict) -> str:
    lat = s["latency_us"]
    lines = [
        f"replayed {s['bag']} through {s['model']}",
        f"  {s['sensor_events']} sensor events ({s['camera_frames']} camera, {s['imu_samples']} IMU), "
        f"{s['steps']} steps, {s['commands']} commands -> {s['output']}",
        f"  step latency p50 {lat['all']['p50']:.0f} us, p99 {lat['all']['p99']:.0f} us (camera p50 "
        f"{lat['camera']['p50']:.0f} us, IMU p50 {lat['imu']['p50']:.0f} us); "
        f"{s['events_per_s']:.0f} events/s, {s['realtime_factor']:.1f}x real time",
    ]
    ooo, c = s["out_of_order"], s["controller"]
    if any(ooo.values()) or c["time_jumps"] or c["gap_resets"] or c["late"]:
        lines.append(f"  out-of-order stamps: camera {ooo['camera']}, IMU {ooo['imu']}; controller dropped "
                     f"{c['stale_dropped']}, held {c['late']} late, {c['time_jumps']} time jumps, "
                     f"{c['gap_resets']} gap resets")
    if s["skipped_messages"]:
        lines.append(f"  skipped messages: {s['skipped_messages']}")
    cmp = s["compare"]
    if cmp and cmp.get("matched"):
        lines.append(f"  vs {cmp['topic']} ({cmp['recorded']} recorded, matched by {cmp['matched_by']}):")
        for name in FIELDS:
            lines.append(f"    {name:<9} mean abs error {cmp[name]['mean_abs_error']:.4f}, "
                         f"RMS {cmp[name]['rms_error']:.4f}")
    elif cmp:
        lines.append(f"  vs {cmp['topic']}: no recorded commands to compare with")
    else:
        lines.append("  no recorded commands to compare with (no /cmd_vel; see --compare-topic)")
    lines.append(f"  CSV {s['csv']}" + (f", plot {s['plot']}" if s["plot"] else ""))
    return "\n".join(lines)
