"""The evaluation table: every model in every condition, closed loop through LiquidController.

Rows are models, columns are conditions. Conditions that change the world or the sensors run on
the training tracks (episodes split between them); `heldout_track` runs on the held-out track.
Cells run in worker processes (`jobs`), each cell deterministic under its seed, so the table does
not depend on how many run at once. With `cells_dir`, each cell's result is kept there as JSON under
a key of everything it depends on (the model file's bytes, condition, track, episodes, seconds,
seed, the package version): a table of hours that is interrupted resumes where it stopped, and
rows added later evaluate only their own cells.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .. import progress
from ..cliargs import provenance, run_key
from ..model.modelfile import load_policy, parameter_counts
from ..paths import resolve_model_path
from ..sim.conditions import CONDITIONS
from . import stats
from .configs import EvalConfig, TableConfig
from .evaluate import EXPERT, evaluate

TRAINING_TRACKS = ("oval", "kidney")


def _cell_key(model: str) -> str:
    """What a kept cell of `model` depends on beyond its own arguments: the file's bytes (or the
    expert's name) and the package version (computed once per model, not per cell)."""
    from importlib.metadata import version

    key = hashlib.sha256(EXPERT.encode() if model == EXPERT else resolve_model_path(model).read_bytes())
    key.update(version("liquid_control").encode())
    return key.hexdigest()


def _cell_path(cells_dir: str, model_key: str, config: EvalConfig) -> Path:
    key = hashlib.sha256(json.dumps([model_key, run_key(config)], sort_keys=True).encode())
    return Path(cells_dir) / f"{config.condition}-{config.track}-{key.hexdigest()[:20]}.json"


def _cell(job: tuple) -> dict:
    name, index, config, cells_dir, model_key = job
    stored = _cell_path(cells_dir, model_key, config) if cells_dir else None
    if stored is not None and stored.exists():
        result = json.loads(stored.read_text())
        result["reused"] = True
    else:
        result = evaluate(config, show_progress=False)  # the table's bar counts cells
        if stored is not None:  # whole or not at all: written beside, then renamed
            partial = stored.with_name(f"{stored.name}.{os.getpid()}.partial")
            partial.write_text(json.dumps(result))
            partial.replace(stored)
    result.update(name=name, index=index, model=config.model)
    return result


def evaluation_table(
    config: TableConfig, training_tracks: tuple[str, ...] = TRAINING_TRACKS, log=progress.write
) -> dict:
    """Evaluate each row's models (one per training seed: every seed drives the same episodes) in
    each condition; returns {"rows": {name: {...}}, "conditions": [...], ...}, each cell with its
    95% intervals and, for rows other than `config.reference` (default: the first), whether it
    differs from the reference row (learning/stats.py). `config.cells`: where finished cells are kept
    and reused (see the module's docstring)."""
    rows_models = config.rows()
    conditions = config.columns()
    episodes, seconds, seed, jobs = config.episodes, config.seconds, config.seed, config.jobs
    reference, cells_dir = config.reference, config.cells
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown conditions {unknown}; choose from {sorted(CONDITIONS)}")
    if episodes < 1:
        raise ValueError("episodes must be at least 1")
    reference = reference or next(iter(rows_models))
    if reference not in rows_models:
        raise ValueError(f"reference row {reference!r} is not a row: {sorted(rows_models)}")
    if cells_dir is not None:
        Path(cells_dir).mkdir(parents=True, exist_ok=True)
        cells_dir = str(cells_dir)
    work, limit = [], config.max_linear_speed
    for name, files in rows_models.items():
        for index, model in enumerate(files):
            model_key = _cell_key(model) if cells_dir else None
            for condition in conditions:
                if CONDITIONS[condition].track:
                    cell = EvalConfig(
                        model, "oval", condition, episodes, seconds, seed, robot=config.robot, max_linear_speed=limit
                    )
                    work.append((name, index, cell, cells_dir, model_key))
                    continue
                split = np.array_split(np.arange(episodes), len(training_tracks))
                for k, (track, part) in enumerate(zip(training_tracks, split, strict=True)):
                    if len(part):
                        cell = EvalConfig(
                            model,
                            track,
                            condition,
                            len(part),
                            seconds,
                            seed + 1000 * k,
                            robot=config.robot,
                            max_linear_speed=limit,
                        )
                        work.append((name, index, cell, cells_dir, model_key))
    rows: dict[str, dict] = {}
    for name, files in rows_models.items():
        if files[0] == EXPERT:  # the demonstrator: no network
            architecture, parameters = "pure pursuit on ground truth", {"liquid_core": 0, "trainable": 0}
        else:
            policy, model_config = load_policy(files[0])
            architecture = model_config.provenance.get("architecture", model_config.network.cell)
            parameters = parameter_counts(policy)
        rows[name] = {
            "models": files,
            "seeds": len(files),
            "architecture": architecture,
            "parameters": parameters,
            "cells": {},
        }
        if len(files) == 1:
            rows[name]["model"] = files[0]
    # Spawned, not forked: this process has torch's threads by now (the rows' models are loaded), and
    # a child forked while one of them holds a lock waits on it for ever (seen: both workers of a
    # --jobs 2 table asleep on a futex from their first cell).
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) if jobs > 1 else None
    try:
        results = pool.map(_cell, work) if pool else map(_cell, work)
        for result in progress.bar(results, total=len(work), desc="table", unit="cell"):
            cells = rows[result["name"]]["cells"]
            cell = cells.setdefault(result["condition"], {"episodes": [], "tracks": []})
            cell["episodes"] += [
                {**e, "seed_index": result["index"], "track": result["track"]} for e in result["per_episode"]
            ]
            if result["index"] == 0:
                cell["tracks"].append(result["track"])
            log(
                f"{result['name']:>10}  {result['condition']:<15} {result['track']:<11} seed#{result['index']} "
                f"success {result['success_rate']:.0%}  mean |xte| {result['mean_abs_xte_m']:.3f} m"
                f"{'  (kept from an earlier run)' if result.get('reused') else ''}"
            )
    finally:
        if pool:
            pool.shutdown()
    for row in rows.values():
        for cell in row["cells"].values():
            _summarise(cell, row["seeds"])
        ood = [c for c in conditions if c != "nominal"]
        if ood:
            row["ood_mean_success"] = float(np.mean([row["cells"][c]["success_rate"] for c in ood]))
            row["ood_mean_abs_xte_m"] = float(np.mean([row["cells"][c]["mean_abs_xte_m"] for c in ood]))
    for name, row in rows.items():
        if name != reference:
            for c, cell in row["cells"].items():
                ref = rows[reference]["cells"][c]
                cell["vs_reference"] = stats.compare(
                    (ref["successes"], ref["episodes"]),
                    (cell["successes"], cell["episodes"]),
                    ref["_xte_by_seed"],
                    cell["_xte_by_seed"],
                )
    for row in rows.values():
        for cell in row["cells"].values():
            cell.pop("_xte_by_seed")
    return {
        "conditions": conditions,
        **provenance(config),
        "training_tracks": list(training_tracks),
        "reference": reference,
        "rows": rows,
    }


def _summarise(cell: dict, seeds: int) -> None:
    eps = cell.pop("episodes")
    by_seed = [[e["mean_abs_xte_m"] for e in eps if e["seed_index"] == i] for i in range(seeds)]
    k = int(sum(e["success"] for e in eps))
    mean, low, high = stats.mean_interval(by_seed)
    cell.update(
        episodes=len(eps),
        successes=k,
        success_rate=k / len(eps),
        success_ci=list(stats.wilson(k, len(eps))),
        mean_abs_xte_m=mean,
        mean_abs_xte_ci=[low, high],
        max_abs_xte_m=float(np.max([e["max_abs_xte_m"] for e in eps])),
        mean_speed_mps=float(np.mean([e["mean_speed_mps"] for e in eps])),
        success_rate_per_seed=[
            float(np.mean([e["success"] for e in eps if e["seed_index"] == i])) for i in range(seeds)
        ],
        _xte_by_seed=by_seed,
        per_episode=eps,  # what every figure above comes from (`liquid-control compare` reads it)
    )


def markdown(table: dict, by_condition: bool = False) -> str:
    """Two markdown tables: success rate with its Wilson 95% interval, then mean |xte| in mm with
    its bootstrap 95% interval; the core's and the whole policy's size; a dagger marks a cell that
    differs from the reference row (p < 0.05), every other cell of another row is not
    distinguishable from it. One row per model, or with `by_condition` one row per condition and
    a column per model (for a table of many conditions)."""
    conds = table["conditions"]
    ood = [c for c in conds if c != "nominal"]
    reference = table.get("reference")
    rows = table["rows"]

    def mark(row_name: str, cell: dict, key: str) -> str:
        vs = cell.get("vs_reference")
        return "†" if row_name != reference and vs and vs[key] else ""

    def success(name: str, c: str) -> str:
        cell = rows[name]["cells"][c]
        return (
            f"{cell['success_rate']:.0%} [{cell['success_ci'][0]:.0%}-{cell['success_ci'][1]:.0%}]"
            f"{mark(name, cell, 'success_differs')}"
        )

    def xte(name: str, c: str) -> str:
        cell = rows[name]["cells"][c]
        return (
            f"{1000 * cell['mean_abs_xte_m']:.0f} [{1000 * cell['mean_abs_xte_ci'][0]:.0f}-"
            f"{1000 * cell['mean_abs_xte_ci'][1]:.0f}]{mark(name, cell, 'xte_differs')}"
        )

    ood_success = lambda name: f"{rows[name]['ood_mean_success']:.0%}"  # noqa: E731
    ood_xte = lambda name: f"{1000 * rows[name]['ood_mean_abs_xte_m']:.0f}"  # noqa: E731

    def block(cell, ood_cell) -> list[str]:
        if by_condition:
            lines = ["| condition | " + " | ".join(rows) + " |", "|---|" + "---:|" * len(rows)]
            lines.append("| seeds | " + " | ".join(str(r.get("seeds", 1)) for r in rows.values()) + " |")
            lines.append(
                "| core params | " + " | ".join(f"{r['parameters']['liquid_core']:,}" for r in rows.values()) + " |"
            )
            lines.append(
                "| all params | " + " | ".join(f"{r['parameters']['trainable']:,}" for r in rows.values()) + " |"
            )
            lines += [f"| {c} | " + " | ".join(cell(name, c) for name in rows) + " |" for c in conds]
            if ood:
                lines.append("| OOD mean | " + " | ".join(ood_cell(name) for name in rows) + " |")
            return lines
        lines = [
            "| model | seeds | core params | all params | " + " | ".join(conds) + (" | OOD mean |" if ood else " |"),
            "|---|---:|---:|---:|" + "---:|" * (len(conds) + bool(ood)),
        ]
        for name, row in rows.items():
            p = row["parameters"]
            lines.append(
                f"| {name} | {row.get('seeds', 1)} | {p['liquid_core']:,} | {p['trainable']:,} | "
                + " | ".join(cell(name, c) for c in conds)
                + (f" | {ood_cell(name)} |" if ood else " |")
            )
        return lines

    n = table["episodes"]
    out = [
        f"Success rate, Wilson 95% interval (episodes per cell: {n} x {table['seconds']:.0f} s per seed); "
        f"† differs from {reference} (Fisher's exact test, p < 0.05)",
        "",
        *block(success, ood_success),
    ]
    out += [
        "",
        f"Mean |cross-track error|, mm, 95% interval (bootstrap over seeds, then episodes); † differs from {reference}",
        "",
        *block(xte, ood_xte),
    ]
    return "\n".join(out) + "\n"


def write(
    table: dict,
    json_path: str | Path | None = None,
    markdown_path: str | Path | None = None,
    by_condition: bool = False,
) -> None:
    if json_path:
        Path(json_path).write_text(json.dumps(table, indent=1) + "\n")
    if markdown_path:
        Path(markdown_path).write_text(markdown(table, by_condition))
