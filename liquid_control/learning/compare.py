"""`liquid-control compare BEFORE.json AFTER.json`: what a change of recipe did, row by row, from two
tables of the same episodes written by `liquid-control table --json` (the benchmark's question of
issue 27: do the liquid cores gain more or less from augmentation than LSTM and GRU?).

For each row in both tables (a row: an architecture, one model per training seed):
- each condition's successes before and after, Fisher's exact test on them, and the mean |xte|
  before and after with the bootstrap interval of its change (stats.compare, as `table` compares a
  row with its reference);
- its success rate averaged over the conditions compared, before and after, and the gain (after
  minus before) with a 95% interval from a two-level bootstrap (stats.success_mean_draws: seeds
  drawn once for all conditions, then episodes), before and after drawn independently. Where the
  after models are fine-tunes of the before models seed by seed, the pairing is not used: the
  interval is the wider, unpaired one.
- `groups` (name -> rows): each group's gain is the mean of its rows' gains, and each pair of
  groups gets the difference of their gains with its interval, from the same draws.

Both tables must describe the same episodes (episodes, seconds, seed, robot, speed limit), or the
difference would be the episodes'. Tables written before 2026-12-06 keep no episodes: `table`
with the same `--cells` folder writes them again from the stored cells without driving.
"""

from __future__ import annotations

import itertools

import numpy as np

from . import stats

SAME = ("episodes", "seconds", "seed", "robot", "max_linear_speed", "training_tracks")


def _outcomes(table: dict, which: str, row: str, conditions: list[str]) -> np.ndarray:
    """(seeds, conditions, episodes) of 0/1 from a row's per-episode results."""
    data = table["rows"][row]
    seeds = data.get("seeds", 1)
    out = []
    for seed in range(seeds):
        per_condition = []
        for c in conditions:
            cell = data["cells"][c]
            if "per_episode" not in cell:
                raise ValueError(
                    f"{which}: row {row!r} keeps no episodes (a table written before 2026-12-06): run the "
                    "same `liquid-control table` again with its --cells folder to write them from the stored cells"
                )
            per_condition.append([float(e["success"]) for e in cell["per_episode"] if e["seed_index"] == seed])
        out.append(per_condition)
    counts = {len(eps) for per_condition in out for eps in per_condition}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"{which}: row {row!r} does not have the same number of episodes for every seed and condition")
    return np.array(out)


def compare_tables(
    before: dict,
    after: dict,
    rows: list[str] | None = None,
    conditions: list[str] | None = None,
    groups: dict[str, list[str]] | None = None,
    seed: int = 0,
    resamples: int = stats.RESAMPLES,
) -> dict:
    """The comparison (see the module's docstring) as a dict; ValueError for tables that cannot be
    compared, naming why."""
    differs = [k for k in SAME if before.get(k) != after.get(k)]
    if differs:
        raise ValueError(
            "the tables drove different episodes: "
            + ", ".join(f"{k} {before.get(k)!r} before, {after.get(k)!r} after" for k in differs)
        )
    common = [r for r in before["rows"] if r in after["rows"]]
    rows = list(rows) if rows else common
    missing = [r for r in rows if r not in common]
    if missing or not rows:
        raise ValueError(f"rows not in both tables: {missing or 'none in common'} (both have: {common})")
    shared = [c for c in before["conditions"] if c in after["conditions"]]
    conditions = list(conditions) if conditions else [c for c in shared if c != "nominal"] or shared
    missing = [c for c in conditions if c not in shared]
    if missing:
        raise ValueError(f"conditions not in both tables: {missing} (both have: {shared})")
    groups = dict(groups or {})
    for name, members in groups.items():
        unknown = [r for r in members if r not in rows]
        if unknown or not members:
            raise ValueError(f"group {name!r}: rows {unknown or members} are not among the rows compared {rows}")
    rng = np.random.default_rng(seed)
    result_rows, draws = {}, {}
    for row in rows:
        b, a = _outcomes(before, "before", row, conditions), _outcomes(after, "after", row, conditions)
        draws[row] = stats.success_mean_draws(a, rng, resamples) - stats.success_mean_draws(b, rng, resamples)
        cells = {}
        for c in conditions:
            cb, ca = before["rows"][row]["cells"][c], after["rows"][row]["cells"][c]
            by_seed = [
                [[e["mean_abs_xte_m"] for e in cell["per_episode"] if e["seed_index"] == s] for s in range(n)]
                for cell, n in ((cb, before["rows"][row].get("seeds", 1)), (ca, after["rows"][row].get("seeds", 1)))
            ]
            vs = stats.compare(
                (cb["successes"], cb["episodes"]), (ca["successes"], ca["episodes"]), *by_seed, seed=seed
            )
            cells[c] = {
                "before": [cb["successes"], cb["episodes"]],
                "after": [ca["successes"], ca["episodes"]],
                "success_p": vs["success_p"],
                "success_differs": vs["success_differs"],
                "mean_abs_xte_m": [cb["mean_abs_xte_m"], ca["mean_abs_xte_m"]],
                "xte_change_m": vs["xte_diff_m"],
                "xte_differs": vs["xte_differs"],
            }
        success_before, success_after = float(b.mean()), float(a.mean())
        result_rows[row] = {
            "seeds": [b.shape[0], a.shape[0]],
            "mean_success": [success_before, success_after],
            "gain": success_after - success_before,
            "gain_ci": list(stats.interval(draws[row])),
            "cells": cells,
        }
    result_groups, group_draws = {}, {}
    for name, members in groups.items():
        group_draws[name] = np.mean([draws[r] for r in members], axis=0)
        result_groups[name] = {
            "rows": members,
            "gain": float(np.mean([result_rows[r]["gain"] for r in members])),
            "gain_ci": list(stats.interval(group_draws[name])),
        }
    differences = {}
    for first, second in itertools.combinations(groups, 2):
        d = group_draws[first] - group_draws[second]
        low, high = stats.interval(d)
        differences[f"{first} - {second}"] = {
            "difference": result_groups[first]["gain"] - result_groups[second]["gain"],
            "ci": [low, high],
            "differs": low > 0 or high < 0,
        }
    return {
        "conditions": conditions,
        **{k: before.get(k) for k in SAME},
        "resamples": resamples,
        "rows": result_rows,
        "groups": result_groups,
        "group_differences": differences,
    }


def markdown(result: dict) -> str:
    """The row summary, the groups, then a row per condition and a column per row: successes
    before -> after, † where Fisher's exact test says they differ (p < 0.05)."""
    rows, conds = result["rows"], result["conditions"]
    n = len(conds)
    out = [
        f"Success rate over {n} condition{'s' * (n != 1)} ({', '.join(conds)}), before -> after; gain with its "
        "95% interval (bootstrap over seeds, then episodes; before and after drawn independently)",
        "",
        "| row | seeds | before | after | gain |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        (sb, sa), (low, high) = row["mean_success"], row["gain_ci"]
        out.append(
            f"| {name} | {row['seeds'][0]} -> {row['seeds'][1]} | {sb:.0%} | {sa:.0%} | "
            f"{100 * row['gain']:+.0f} pts [{100 * low:+.0f}, {100 * high:+.0f}] |"
        )
    if result["groups"]:
        out += ["", "| group | rows | mean gain |", "|---|---|---:|"]
        for name, group in result["groups"].items():
            low, high = group["gain_ci"]
            out.append(
                f"| {name} | {', '.join(group['rows'])} | {100 * group['gain']:+.0f} pts [{100 * low:+.0f}, {100 * high:+.0f}] |"
            )
        for name, d in result["group_differences"].items():
            low, high = d["ci"]
            verdict = "differs" if d["differs"] else "not distinguishable"
            out.append(f"\n{name}: {100 * d['difference']:+.0f} pts [{100 * low:+.0f}, {100 * high:+.0f}] ({verdict})")
    out += [
        "",
        "Successes per condition, before -> after; † differs (Fisher's exact test, p < 0.05)",
        "",
        "| condition | " + " | ".join(rows) + " |",
        "|---|" + "---:|" * len(rows),
    ]
    for c in conds:
        cells = [rows[name]["cells"][c] for name in rows]
        out.append(
            f"| {c} | "
            + " | ".join(
                f"{x['before'][0]}/{x['before'][1]} -> {x['after'][0]}/{x['after'][1]}{'†' * x['success_differs']}"
                for x in cells
            )
            + " |"
        )
    return "\n".join(out) + "\n"
