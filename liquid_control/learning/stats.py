"""Statistics of the evaluation table: intervals that say how sure a number is, and whether two
architectures can be told apart at all.

- A success rate is k of n episodes pooled over a row's seeds; its 95% interval is Wilson's score
  interval (scipy), which stays inside [0, 1] and is honest at 0/n and n/n.
- A mean |cross-track error| is over every episode of every seed; its 95% interval comes from a
  two-level (cluster) bootstrap: seeds resampled with replacement, then episodes within each
  drawn seed, so the spread between training seeds counts, not only the spread between episodes.
- What a change of recipe did to a row (`liquid-control compare`): its success rate averaged over
  conditions after, minus before, with a 95% interval from the same two-level bootstrap (seeds
  drawn once for every condition, since a seed is one model; then each drawn seed's episodes in
  each condition), before and after drawn independently.
- Two rows differ in a cell when Fisher's exact test on their success counts gives p < 0.05, or
  when the bootstrap interval of the difference of their mean |xte| excludes 0. Each cell is tested
  on its own (no correction for the many cells): a "differs" is a lead, a "not distinguishable" is
  the finding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000


def wilson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    from scipy.stats import binomtest

    if n == 0:
        return (0.0, 1.0)
    ci = binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def _cluster_means(groups: Sequence[Sequence[float]], rng: np.random.Generator, resamples: int) -> np.ndarray:
    """Bootstrap distribution of the pooled mean: seeds, then episodes within each seed."""
    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    out = np.empty(resamples)
    for r in range(resamples):
        picked = rng.integers(0, len(groups), size=len(groups))
        values = [groups[i][rng.integers(0, len(groups[i]), size=len(groups[i]))] for i in picked]
        out[r] = np.concatenate(values).mean()
    return out


def mean_interval(
    groups: Sequence[Sequence[float]], level: float = LEVEL, seed: int = 0, resamples: int = RESAMPLES
) -> tuple[float, float, float]:
    """(mean, low, high) of values grouped by seed."""
    pooled = np.concatenate([np.asarray(g, dtype=float) for g in groups])
    boot = _cluster_means(groups, np.random.default_rng(seed), resamples)
    a = (1 - level) / 2
    return float(pooled.mean()), float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))


def compare(
    success_a: tuple[int, int],
    success_b: tuple[int, int],
    xte_a: Sequence[Sequence[float]],
    xte_b: Sequence[Sequence[float]],
    level: float = LEVEL,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> dict:
    """Whether row b differs from row a in one cell: success (Fisher's exact test) and mean |xte|
    (bootstrap interval of mean b - mean a)."""
    from scipy.stats import fisher_exact

    (ka, na), (kb, nb) = success_a, success_b
    p = float(fisher_exact([[ka, na - ka], [kb, nb - kb]]).pvalue)
    rng = np.random.default_rng(seed)
    diff = _cluster_means(xte_b, rng, resamples) - _cluster_means(xte_a, rng, resamples)
    a = (1 - level) / 2
    low, high = float(np.quantile(diff, a)), float(np.quantile(diff, 1 - a))
    return {
        "success_p": p,
        "success_differs": p < 1 - level,
        "xte_diff_m": [low, high],
        "xte_differs": low > 0 or high < 0,
    }


def success_mean_draws(outcomes: np.ndarray, rng: np.random.Generator, resamples: int = RESAMPLES) -> np.ndarray:
    """Bootstrap draws of a row's success rate averaged over conditions. `outcomes`: 0/1 of shape
    (seeds, conditions, episodes), every seed driving the same episodes in each condition. Seeds
    are drawn with replacement once for all conditions (a seed is one model), then each drawn
    seed's episodes within each condition."""
    x = np.asarray(outcomes, dtype=float)
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"outcomes must be (seeds, conditions, episodes), not {x.shape}")
    seeds, conditions, episodes = x.shape
    s = rng.integers(0, seeds, size=(resamples, seeds, 1, 1))
    c = np.arange(conditions)[None, None, :, None]
    e = rng.integers(0, episodes, size=(resamples, seeds, conditions, episodes))
    return x[s, c, e].mean(axis=(1, 2, 3))


def interval(draws: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    a = (1 - level) / 2
    return float(np.quantile(draws, a)), float(np.quantile(draws, 1 - a))
