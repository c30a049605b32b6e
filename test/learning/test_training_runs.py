"""Training at scale, on real parts: the on-disk frame cache (reused, invalidated, equal to decoding
the bag directly), a run interrupted by real signals and resumed to the same model as an
uninterrupted one, the log CSV and progress bars, and torchrun with two processes."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.sim

pytest.importorskip("mujoco")

from safetensors.numpy import load_file  # noqa: E402

from liquid_control.bags.io import read_events  # noqa: E402
from liquid_control.learning import cache  # noqa: E402
from liquid_control.learning.collect import collect  # noqa: E402
from liquid_control.learning.configs import EvalConfig  # noqa: E402
from liquid_control.learning.dataset import episodes_from_bag  # noqa: E402
from liquid_control.learning.evaluate import evaluate  # noqa: E402
from liquid_control.model.modelfile import load_model  # noqa: E402
from liquid_control.runtime.sensing import model_frame  # noqa: E402
from liquid_control.sim.track import Track, track_path  # noqa: E402

FIELDS = ("angular_velocity.z", "linear_acceleration.x", "linear_acceleration.y")
RUN = ["--iterations", "16", "--window", "60", "--warmup", "10", "--batch", "4", "--eval-every", "4"]


def _collect(path, episodes, seed):
    collect([Track.load(track_path("oval"))], path, episodes=episodes, seconds=4.0, seed=seed)
    return path


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    return _collect(tmp_path_factory.mktemp("data") / "bag", 4, 1)


def _entries(root):
    return sorted(p for p in root.iterdir() if p.is_dir())


def test_frames_are_cached_once_as_uint8_and_equal_decoding_the_bag(bag, tmp_path):
    root = tmp_path / "cache"
    first = episodes_from_bag(bag, 64, 48, FIELDS, cache_dir=root)
    (entry,) = _entries(root)
    frames_file = entry / cache.FRAMES
    written = frames_file.stat().st_mtime_ns
    again = episodes_from_bag(bag, 64, 48, FIELDS, cache_dir=root)
    assert _entries(root) == [entry] and frames_file.stat().st_mtime_ns == written  # reused, not rebuilt
    for a, b in zip(first, again, strict=True):
        assert isinstance(b.frames, np.memmap) and b.frames.dtype == np.uint8  # read from disk, not held
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.target, b.target)
    # The cache holds every frame of the bag, as decoding it directly gives them.
    direct = np.stack([model_frame(e.data, 64, 48) for e in read_events(bag, command=None) if e.kind == "camera"])
    stored = cache.Entry(entry, json.loads((entry / cache.META).read_text()))
    assert np.array_equal(stored.frames(), direct)
    # Another input size is another entry; the old one is stale and removed.
    small = episodes_from_bag(bag, 32, 24, FIELDS, cache_dir=root)
    assert small[0].frames.shape[1:] == (24, 32, 3)
    assert len(_entries(root)) == 1 and _entries(root) != [entry]


def test_a_bag_recorded_again_under_the_same_name_is_read_again(tmp_path):
    root, path = tmp_path / "cache", tmp_path / "run"
    _collect(path, 2, 5)
    assert len(episodes_from_bag(path, 32, 24, FIELDS, cache_dir=root)) == 2
    shutil.rmtree(path)
    _collect(path, 3, 6)
    assert len(episodes_from_bag(path, 32, 24, FIELDS, cache_dir=root)) == 3
    assert len(_entries(root)) == 1


def _train(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "liquid_control.cli", "train", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _start(*args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "liquid_control.cli", "train", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(path, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.02)


def _log(model):
    with open(model.with_suffix(".log.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def reference(bag, tmp_path_factory):
    """One uninterrupted single-process run."""
    model = tmp_path_factory.mktemp("ref") / "ref.safetensors"
    result = _train("--bag", bag, "--output", model, *RUN)
    assert result.returncode == 0, result.stderr
    return model


def _same_run(model, reference):
    a, b = load_file(str(model)), load_file(str(reference))
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(_log(model)) == strip(_log(reference))


def test_training_logs_every_value_to_csv_and_the_model_records_the_best(reference):
    rows = _log(reference)
    assert [int(r["iteration"]) for r in rows] == [4, 8, 12, 16]
    assert set(rows[0]) == {
        "iteration",
        "train_loss",
        "val_loss",
        "best_val_loss",
        "lr",
        "grad_norm",
        "windows",
        "seconds",
    }
    _, config = load_model(reference)
    assert config.provenance["best_val_loss"] == pytest.approx(min(float(r["val_loss"]) for r in rows))
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < lrs[0]  # the cosine schedule
    assert not reference.with_suffix(".checkpoint.safetensors").exists()  # removed once complete


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_an_interrupted_run_resumed_equals_an_uninterrupted_one(bag, reference, tmp_path, sig):
    model = tmp_path / "m.safetensors"
    checkpoint = model.with_suffix(".checkpoint.safetensors")
    env = {**os.environ, "LIQUID_CONTROL_PROGRESS": "1"}
    proc = _start("--bag", bag, "--output", model, *RUN, env=env)
    _wait_for(checkpoint, proc)  # the first validation is done
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        if proc.returncode == 0:
            pytest.skip("the run finished before Ctrl-C reached it")
        assert proc.returncode == 130, err
        assert "interrupted at iteration" in err and "--resume" in err
        assert "training:" in err and ("it/s" in err or "s/it" in err)  # tqdm's bar, with its rate
    else:
        assert proc.returncode == -signal.SIGKILL
    assert checkpoint.exists() and not model.exists()
    result = _train("--bag", bag, "--output", model, *RUN, "--resume")
    assert result.returncode == 0, result.stderr
    assert "resumed at iteration" in result.stdout
    _same_run(model, reference)


def test_resume_refuses_another_run_or_no_checkpoint(bag, tmp_path):
    model = tmp_path / "m.safetensors"
    result = _train("--bag", bag, "--output", model, *RUN, "--resume")
    assert result.returncode == 2 and "nothing to resume" in result.stderr
    proc = _start("--bag", bag, "--output", model, *RUN)
    _wait_for(model.with_suffix(".checkpoint.safetensors"), proc)
    proc.kill()
    proc.wait()
    result = _train("--bag", bag, "--output", model, *RUN, "--lr", "0.01", "--resume")
    assert result.returncode == 2 and "another run" in result.stderr and "lr" in result.stderr


def test_torchrun_with_two_processes_trains_a_model_that_loads_and_drives(bag, reference, tmp_path):
    model = tmp_path / "ddp.safetensors"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "liquid_control.learning.train",
            "--bag",
            str(bag),
            "--output",
            str(model),
            *RUN,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    policy, config = load_model(model)
    assert config.provenance["processes"] == 2
    rows, ref = _log(model), _log(reference)
    assert [r["iteration"] for r in rows] == [r["iteration"] for r in ref]
    # The same curve shape: both learn (validation falls below its first value) to a similar level.
    for log in (rows, ref):
        assert min(float(r["val_loss"]) for r in log[1:]) < float(log[0]["val_loss"])
    best, best_ref = (min(float(r["val_loss"]) for r in log) for log in (rows, ref))
    assert best < 2 * best_ref, (best, best_ref)
    summary = evaluate(EvalConfig(str(model), track="oval", episodes=1, seconds=1.0), show_progress=False)
    assert summary["mean_speed_mps"] > 0.0


def test_info_gives_the_rate_while_publishing_beside_the_rate_over_a_bag_with_gaps(bag):
    """collect leaves 1000 s of sensor time between episodes: the rate over the whole bag is far
    below the sensors', the rate between the gaps is theirs."""
    from liquid_control.bags.info import bag_info, format_bag_info

    info = bag_info(bag)
    for topic, hz in (("/imu/data", 200.0), ("/camera/image_raw", 30.0)):
        t = info["topics"][topic]
        assert t["gaps_over_s"] == {"0.5": 3}
        assert t["rate_publishing_hz"] == pytest.approx(hz, rel=0.02) and t["rate_hz"] < 0.5 * hz
    assert "200.00 Hz between its 3 gaps over 0.5 s" in format_bag_info(info)
