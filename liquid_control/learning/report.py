"""The evaluation table: every model in every condition, closed loop through LiquidController.

Rows are models, columns are conditions. Conditions that change the world or the sensors run on
the training tracks (episodes split between them); `heldout_track` runs on the held-out track.
Cells run in worker processes (`jobs`), each cell deterministic under its seed, so the table does
not depend on how many run at once.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .. import progress
from ..runtime.modelfile import load_policy, parameter_counts
from ..sim.conditions import CONDITIONS
from .evaluate import evaluate

TRAINING_TRACKS = ("oval", "kidney")


def _cell(job: tuple) -> dict:
    name, model, condition, track, episodes, seconds, seed = job
    result = evaluate(model, track=track, condition=condition, episodes=episodes, seconds=seconds, seed=seed,
                      show_progress=False)  # the table's bar counts cells
    result["name"] = name
    return result


def evaluation_table(models: dict[str, str | Path], conditions: list[str] | None = None, episodes: int = 6,
                     seconds: float = 30.0, seed: int = 100, jobs: int = 1,
                     training_tracks: tuple[str, ...] = TRAINING_TRACKS, log=progress.write) -> dict:
    """Evaluate each model in each condition; returns {"rows": {name: {...}}, "conditions": [...]}."""
    conditions = list(conditions or CONDITIONS)
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown conditions {unknown}; choose from {sorted(CONDITIONS)}")
    if episodes < 1:
        raise ValueError("episodes must be at least 1")
    work = []
    for name, model in models.items():
        for condition in conditions:
            if CONDITIONS[condition].track:
                work.append((name, str(model), condition, "oval", episodes, seconds, seed))
                continue
            split = np.array_split(np.arange(episodes), len(training_tracks))
            for k, (track, part) in enumerate(zip(training_tracks, split, strict=True)):
                if len(part):
                    work.append((name, str(model), condition, track, len(part), seconds, seed + 1000 * k))
    rows: dict[str, dict] = {}
    for name, model in models.items():
        policy, config = load_policy(model)
        counts = parameter_counts(policy)
        rows[name] = {"model": str(model), "architecture": config.provenance.get("architecture", config.network.cell),
                      "parameters": counts, "cells": {}}
    pool = ProcessPoolExecutor(jobs) if jobs > 1 else None
    try:
        results = pool.map(_cell, work) if pool else map(_cell, work)
        for result in progress.bar(results, total=len(work), desc="table", unit="cell"):
            cells = rows[result["name"]]["cells"]
            cell = cells.setdefault(result["condition"], {"episodes": [], "tracks": []})
            cell["episodes"] += result["per_episode"]
            cell["tracks"].append(result["track"])
            log(f"{result['name']:>10}  {result['condition']:<15} {result['track']:<11} "
                f"success {result['success_rate']:.0%}  mean |xte| {result['mean_abs_xte_m']:.3f} m")
    finally:
        if pool:
            pool.shutdown()
    for row in rows.values():
        for cell in row["cells"].values():
            eps = cell.pop("episodes")
            cell.update(episodes=len(eps), success_rate=float(np.mean([e["success"] for e in eps])),
                        mean_abs_xte_m=float(np.mean([e["mean_abs_xte_m"] for e in eps])),
                        max_abs_xte_m=float(np.max([e["max_abs_xte_m"] for e in eps])),
                        mean_speed_mps=float(np.mean([e["mean_speed_mps"] for e in eps])))
        ood = [c for c in conditions if c != "nominal"]
        if ood:
            row["ood_mean_success"] = float(np.mean([row["cells"][c]["success_rate"] for c in ood]))
            row["ood_mean_abs_xte_m"] = float(np.mean([row["cells"][c]["mean_abs_xte_m"] for c in ood]))
    return {"conditions": conditions, "episodes": episodes, "seconds": seconds, "seed": seed,
            "training_tracks": list(training_tracks), "rows": rows}


def markdown(table: dict) -> str:
    """Two markdown tables: success rate, then mean |xte| in mm, with the core's size."""
    conds = table["conditions"]
    ood = [c for c in conds if c != "nominal"]
    head = "| model | core params | " + " | ".join(conds) + (" | OOD mean |" if ood else " |")
    rule = "|---|---:|" + "---:|" * (len(conds) + bool(ood))
    out = [f"Success rate (episodes per cell: {table['episodes']} x {table['seconds']:.0f} s)", "", head, rule]
    for name, row in table["rows"].items():
        cells = " | ".join(f"{row['cells'][c]['success_rate']:.0%}" for c in conds)
        tail = f" | {row['ood_mean_success']:.0%} |" if ood else " |"
        out.append(f"| {name} | {row['parameters']['liquid_core']:,} | {cells}{tail}")
    out += ["", "Mean |cross-track error|, mm", "", head, rule]
    for name, row in table["rows"].items():
        cells = " | ".join(f"{1000 * row['cells'][c]['mean_abs_xte_m']:.0f}" for c in conds)
        tail = f" | {1000 * row['ood_mean_abs_xte_m']:.0f} |" if ood else " |"
        out.append(f"| {name} | {row['parameters']['liquid_core']:,} | {cells}{tail}")
    return "\n".join(out) + "\n"


def write(table: dict, json_path: str | Path | None = None, markdown_path: str | Path | None = None) -> None:
    if json_path:
        Path(json_path).write_text(json.dumps(table, indent=1) + "\n")
    if markdown_path:
        Path(markdown_path).write_text(markdown(table))
