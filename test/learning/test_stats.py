"""The table's statistics against textbook values and against what they must do."""

import numpy as np
import pytest

pytest.importorskip("scipy")

from liquid_control.learning import stats  # noqa: E402


def test_wilson_interval_matches_the_textbook_values():
    # Wilson score interval, 95%: 6/6 -> [0.610, 1]; 0/10 -> [0, 0.278]; 5/10 -> [0.237, 0.763]
    # (Newcombe 1998, Brown-Cai-DasGupta 2001).
    assert stats.wilson(6, 6) == pytest.approx((0.6097, 1.0), abs=1e-3)
    assert stats.wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-3)
    assert stats.wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-3)


def test_the_cluster_bootstrap_counts_the_spread_between_seeds():
    rng = np.random.default_rng(0)
    episodes = [rng.normal(0.02, 0.002, 12) for _ in range(3)]
    tight = stats.mean_interval(episodes)
    # The same episodes with the seeds far apart: the mean barely moves, the interval must widen.
    shifted = [e + d for e, d in zip(episodes, (-0.01, 0.0, 0.01), strict=True)]
    wide = stats.mean_interval(shifted)
    assert tight[1] < tight[0] < tight[2] and wide[1] < wide[0] < wide[2]
    assert (wide[2] - wide[1]) > 3 * (tight[2] - tight[1])
    assert stats.mean_interval([[0.05] * 6] * 3) == pytest.approx((0.05, 0.05, 0.05))


def test_compare_tells_apart_what_differs_and_not_what_does_not():
    rng = np.random.default_rng(1)
    a = [rng.normal(0.02, 0.003, 10) for _ in range(3)]
    same = stats.compare((10, 30), (10, 30), a, a)
    assert not same["success_differs"] and not same["xte_differs"] and same["success_p"] == pytest.approx(1.0)
    worse = [x + 0.02 for x in a]
    far = stats.compare((30, 30), (5, 30), a, worse)
    assert far["success_differs"] and far["success_p"] < 1e-6
    assert far["xte_differs"] and far["xte_diff_m"][0] > 0.01  # b's error is ~20 mm more
    close = stats.compare((28, 30), (26, 30), a, [x + 0.0005 for x in a])
    assert not close["success_differs"] and not close["xte_differs"]
