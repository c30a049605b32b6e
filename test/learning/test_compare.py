"""`liquid-control compare`: two real tables (models driven in MuJoCo by `table`) compared row by
row, and the bootstrap of a row's gain checked against data whose gain is known."""

import copy
import json
import os

import numpy as np
import pytest

pytest.importorskip("scipy")

from support import make_model, run_cli  # noqa: E402

from liquid_control.learning import stats  # noqa: E402
from liquid_control.learning.compare import compare_tables  # noqa: E402
from liquid_control.paths import DEFAULT_MODEL  # noqa: E402

EPISODES, SECONDS = 4, 6.0


def _table(tmp_path, name, rows):
    from liquid_control.learning.configs import TableConfig
    from liquid_control.learning.report import evaluation_table

    os.environ.setdefault("MUJOCO_GL", "egl")
    config = TableConfig(
        models=tuple(f"{row}={model}" for row, model in rows),
        conditions=("nominal", "dark"),
        episodes=EPISODES,
        seconds=SECONDS,
        jobs=1,
        cells=str(tmp_path / "cells"),
    )
    table = evaluation_table(config, log=lambda line: None)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(table))
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """Before: `fixed` is a policy that turns hard for ever (two seeds: off the road in every
    episode), `same` the shipped one; after: both rows the shipped policy (on the road in each)."""
    tmp = tmp_path_factory.mktemp("compare")
    circles = [make_model(tmp / f"circles_{s}.safetensors", seed=s, bias=(1.0, 1.0)) for s in (0, 1)]
    before = _table(tmp, "before", [("fixed", circles[0]), ("fixed", circles[1]), ("same", DEFAULT_MODEL)])
    after = _table(tmp, "after", [("fixed", DEFAULT_MODEL), ("fixed", DEFAULT_MODEL), ("same", DEFAULT_MODEL)])
    return tmp, json.loads(before.read_text()), json.loads(after.read_text())


def test_a_fixed_row_gains_what_its_episodes_say_and_a_row_left_alone_gains_nothing(tables):
    _, before, after = tables
    result = compare_tables(
        before, after, conditions=["nominal", "dark"], groups={"fixed": ["fixed"], "alone": ["same"]}
    )
    # Computed here from the episodes themselves, the way the table's JSON keeps them.
    for name in ("fixed", "same"):
        b = [e["success"] for c in ("nominal", "dark") for e in before["rows"][name]["cells"][c]["per_episode"]]
        a = [e["success"] for c in ("nominal", "dark") for e in after["rows"][name]["cells"][c]["per_episode"]]
        assert len(a) == len(b) == before["rows"][name]["seeds"] * EPISODES * 2
        row = result["rows"][name]
        assert row["mean_success"] == pytest.approx([np.mean(b), np.mean(a)])
        assert row["gain"] == pytest.approx(np.mean(a) - np.mean(b))
        assert row["gain_ci"][0] <= row["gain"] <= row["gain_ci"][1]
    # The circling policy leaves the road in every episode, the shipped one keeps it in every one.
    fixed = result["rows"]["fixed"]
    assert fixed["mean_success"] == [0.0, 1.0] and fixed["gain_ci"] == [1.0, 1.0]
    assert all(cell["before"] == [0, 8] and cell["after"] == [8, 8] for cell in fixed["cells"].values())
    assert all(cell["success_differs"] for cell in fixed["cells"].values())  # 0/8 vs 8/8: p = 0.00016
    same = result["rows"]["same"]
    assert same["gain"] == 0.0 and same["gain_ci"] == [0.0, 0.0]
    # The same episodes driven by the same file: the cross-track error cannot be told apart.
    assert not any(cell["xte_differs"] for cell in same["cells"].values())
    difference = result["group_differences"]["fixed - alone"]
    assert difference["difference"] == 1.0 and difference["ci"] == [1.0, 1.0] and difference["differs"]


def test_compare_on_the_command_line_writes_markdown_and_json(tables):
    tmp, _, _ = tables
    out_json, out_md = tmp / "cmp.json", tmp / "cmp.md"
    result = run_cli(
        "compare",
        tmp / "before.json",
        tmp / "after.json",
        "--group",
        "a=fixed",
        "--group",
        "b=same",
        "--json",
        out_json,
        "--markdown",
        out_md,
    )
    assert result.returncode == 0, result.stderr
    written = json.loads(out_json.read_text())
    assert written["conditions"] == ["dark"]  # the default: every condition in both but nominal
    assert written["rows"]["fixed"]["cells"]["dark"]["before"] == [0, 8]
    assert "| fixed | 2 -> 2 | 0% | 100% | +100 pts [+100, +100] |" in result.stdout
    assert "| dark | 0/8 -> 8/8† | 4/4 -> 4/4 |" in result.stdout
    assert "a - b: +100 pts [+100, +100] (differs)" in result.stdout
    assert out_md.read_text() == result.stdout


def test_tables_that_cannot_be_compared_are_refused_with_the_reason(tables):
    tmp, before, after = tables
    other = copy.deepcopy(after)
    other["seconds"] = 30.0
    with pytest.raises(ValueError, match="different episodes: seconds 6.0 before, 30.0 after"):
        compare_tables(before, other)
    old = copy.deepcopy(after)
    del old["rows"]["same"]["cells"]["dark"]["per_episode"]
    with pytest.raises(ValueError, match="keeps no episodes"):
        compare_tables(before, old)
    with pytest.raises(ValueError, match="rows not in both tables: \\['gru'\\]"):
        compare_tables(before, after, rows=["gru"])
    with pytest.raises(ValueError, match="conditions not in both tables: \\['winter'\\]"):
        compare_tables(before, after, conditions=["winter"])
    with pytest.raises(ValueError, match="group 'g'"):
        compare_tables(before, after, groups={"g": ["fixed", "lstm"]})
    (tmp / "not_a_table.json").write_text('{"rows": 3}')
    (tmp / "not_json.json").write_text("{")
    for args in (
        [str(tmp / "before.json"), str(tmp / "not_a_table.json")],
        [str(tmp / "not_json.json"), str(tmp / "after.json")],
        [str(tmp / "before.json"), str(tmp / "after.json"), "--group", "no-equals"],
        [str(tmp / "before.json"), str(tmp / "after.json"), "--row", "gru"],
        [str(tmp / "before.json"), str(tmp / "missing.json")],
    ):
        bad = run_cli("compare", *args)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.strip(), (args, bad.stderr)


@pytest.mark.parametrize("seed_spread, at_least", [(0.0, 0.9), (0.1, 0.8)])
def test_the_gain_interval_covers_a_known_gain_in_most_datasets(seed_spread, at_least):
    """3 seeds x 10 conditions x 2 episodes, each episode on the road with probability 0.7 before
    and 0.85 after (each seed's own rate spread around them by `seed_spread`): the interval must
    hold the true gain, 0.15, in most of 200 such datasets. It is a percentile bootstrap over 3
    seeds, so somewhat under 95% is expected where seeds differ; far under would be a broken draw."""
    rng = np.random.default_rng(7)
    held, widths = 0, []
    for _ in range(200):
        rates = np.clip(np.array([0.7, 0.85])[:, None] + rng.normal(0.0, seed_spread, (2, 3)), 0.0, 1.0)
        before, after = ((rng.random((3, 10, 2)) < r[:, None, None]).astype(float) for r in rates)
        draws = stats.success_mean_draws(after, rng, 1000) - stats.success_mean_draws(before, rng, 1000)
        low, high = stats.interval(draws)
        held += low <= 0.15 <= high
        widths.append(high - low)
    print(f"seed spread {seed_spread}: held {held / 200:.1%}, median width {np.median(widths):.3f}")
    assert at_least <= held / 200 <= 0.99, held
    if seed_spread == 0.0:
        # Binomial arithmetic: sd of a mean of 60 episodes is ~0.059 before and ~0.046 after, so
        # the difference's 95% interval is about 2 x 1.96 x 0.075 = 0.29 wide.
        assert 0.22 < np.median(widths) < 0.36, np.median(widths)


def test_success_draws_of_a_row_that_never_fails_and_of_a_shape_that_is_not_one():
    rng = np.random.default_rng(0)
    assert set(stats.success_mean_draws(np.ones((3, 4, 2)), rng, 50)) == {1.0}
    with pytest.raises(ValueError, match="seeds, conditions, episodes"):
        stats.success_mean_draws(np.ones((3, 4)), rng, 10)
