"""Training-window augmentation (learning/augment.py): each kind changes what it says it changes,
within its declared range, the mirror mirrors the labels and sensor fields exactly, and draws
come from the run's generator (a resumed run augments alike)."""

import numpy as np
import pytest
import torch

from liquid_control.learning.augment import (
    HAZE,
    MIRROR_SIGNS,
    RANGES,
    SHADOW,
    STANDARD,
    Augmenter,
    mirror_signs,
    parse,
    record,
)

IMU = ("angular_velocity.z", "linear_acceleration.x", "linear_acceleration.y")
ODOM = ("twist.linear.x", "twist.angular.z")
LUMA = torch.tensor([0.299, 0.587, 0.114])


def _batch(b=16, f=5, h=12, w=16, low=0, high=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(low, high, (b, f, h, w, 3), dtype=torch.uint8, generator=g)
    fields = torch.randn(b, 30, len(IMU) + len(ODOM), generator=g)
    target = torch.randn(b, 30, 2, generator=g)
    return frames, fields, target


def _run(p, batch=None, seed=1):
    frames, fields, target = batch or _batch()
    aug = Augmenter(p, mirror_signs(IMU, ODOM))
    return aug(frames, fields, target, np.random.default_rng(seed))


def test_parse_takes_kinds_probabilities_and_the_standard_set_and_names_what_is_wrong():
    assert parse(["standard"]) == STANDARD
    assert parse(["flip=0.25", "noise"]) == {"flip": 0.25, "noise": 0.5}
    assert parse(["standard", "flip=0"]) == {k: p for k, p in STANDARD.items() if k != "flip"}
    for bad, why in (("fog=0.5", "unknown kind 'fog'"), ("flip=2", r"in \[0, 1\]"), ("flip=x", "not a probability")):
        with pytest.raises(ValueError, match=why):
            parse([bad])
    kept = record({"brightness": 0.5})
    assert kept == {"brightness": {"p": 0.5, "range": list(RANGES["brightness"])}}


def test_nothing_drawn_changes_nothing():
    frames, fields, target = _batch()
    out = _run({"brightness": 0.0, "flip": 0.0}, (frames, fields, target))
    assert out[0] is frames and out[1] is fields and out[2] is target


def test_brightness_scales_every_frame_of_a_window_by_one_factor_in_its_range():
    frames = torch.full((32, 4, 6, 8, 3), 100, dtype=torch.uint8)
    out, _, _ = _run({"brightness": 1.0}, (frames, torch.zeros(32, 10, 5), torch.zeros(32, 10, 2)))
    factors = out.float().mean(dim=(2, 3, 4)) / 100.0  # (windows, frames)
    lo, hi = RANGES["brightness"]
    assert ((factors >= lo - 0.01) & (factors <= hi + 0.01)).all()
    assert (factors.max(1).values - factors.min(1).values).max() < 1e-6  # one factor per window
    assert factors[:, 0].std() > 0.1  # and different windows, different light


def test_the_mirror_mirrors_the_picture_the_yaw_rate_and_the_fields_that_change_sign():
    frames, fields, target = _batch()
    out, f2, t2 = _run({"flip": 1.0}, (frames, fields, target))
    assert torch.equal(out, frames.flip(3))
    assert torch.equal(t2[..., 0], target[..., 0]) and torch.equal(t2[..., 1], -target[..., 1])
    signs = [MIRROR_SIGNS["imu"][f] for f in IMU] + [MIRROR_SIGNS["odom"][f] for f in ODOM]
    assert signs == [-1.0, 1.0, -1.0, 1.0, -1.0]
    assert torch.equal(f2, fields * torch.tensor(signs))
    # Twice mirrored is the original.
    back, f3, t3 = _run({"flip": 1.0}, (out, f2, t2))
    assert torch.equal(back, frames) and torch.equal(f3, fields) and torch.equal(t3, target)


def test_the_palette_turns_colours_but_keeps_each_pixels_luma():
    frames, fields, target = _batch(low=90, high=160)  # away from 0 and 255: nothing clips
    out, _, _ = _run({"palette": 1.0}, (frames, fields, target))
    before, after = frames.float() @ LUMA, out.float() @ LUMA
    assert (before - after).abs().max() <= 1.5  # rounding to 8 bits, per channel
    hue_moved = (out.float() - frames.float()).abs().mean(dim=(1, 2, 3, 4))
    assert (hue_moved > 2.0).float().mean() > 0.8  # the colours themselves moved in most windows


def test_noise_has_the_spread_its_range_declares_and_blur_smooths():
    frames = torch.full((16, 2, 24, 32, 3), 128, dtype=torch.uint8)
    z = torch.zeros(16, 5, 5), torch.zeros(16, 5, 2)
    out, _, _ = _run({"noise": 1.0}, (frames, *z))
    spread = (out.float() / 255.0 - 128 / 255.0).std(dim=(1, 2, 3, 4))
    lo, hi = RANGES["noise"]
    assert (spread > 0.8 * lo).all() and (spread < 1.1 * hi).all()
    frames, fields, target = _batch()
    blurred, _, _ = _run({"blur": 1.0}, (frames, fields, target))
    step = lambda x: (x.float()[:, :, :, 1:] - x.float()[:, :, :, :-1]).abs().mean()  # noqa: E731
    assert step(blurred) < 0.8 * step(frames)


def test_haze_mixes_in_one_grey_most_at_the_top_and_never_more_than_its_strength():
    frames = torch.zeros((32, 3, 20, 30, 3), dtype=torch.uint8)  # black: what comes out is the haze alone
    out, _, _ = _run({"haze": 1.0}, (frames, torch.zeros(32, 5, 5), torch.zeros(32, 5, 2)))
    x = out.float() / 255.0
    lo, hi = RANGES["haze"]
    glo, ghi = HAZE["grey"]
    top = x[:, :, 0].mean(dim=(1, 2, 3))  # weight at the top row times the grey
    assert (top >= lo * (glo - HAZE["tint"]) - 0.01).all() and (top <= hi * (ghi + HAZE["tint"]) + 0.01).all()
    rows = x.mean(dim=(1, 3, 4))  # (windows, rows)
    assert (rows[:, 1:] <= rows[:, :-1] + 1.0 / 255).all()  # less haze down the picture
    assert (rows[:, -1] < 0.6 * rows[:, 0]).all()  # and the bottom row clearly less than the top
    assert torch.equal(out[:, 0], out[:, 2])  # the same haze in every frame of a window
    assert (x.std(dim=(1, 2, 3, 4)) > 0.0).all()
    # Greyish: the channels of one window differ by the tint at most.
    spread = x.amax(dim=-1) - x.amin(dim=-1)
    assert spread.max() <= 2 * HAZE["tint"] * hi + 2.0 / 255
    # Mixing toward the grey: a white picture gets darker at the top, a black one lighter.
    white, _, _ = _run({"haze": 1.0}, (torch.full_like(frames, 255), torch.zeros(32, 5, 5), torch.zeros(32, 5, 2)))
    assert (white[:, :, 0].float().mean(dim=(1, 2, 3)) < 255 * (1 - lo * (1 - ghi - HAZE["tint"])) + 1).all()


def test_shadows_darken_bands_by_a_factor_in_range_and_drift_down_the_picture():
    frames = torch.full((48, 6, 40, 60, 3), 200, dtype=torch.uint8)
    out, _, _ = _run({"shadow": 1.0}, (frames, torch.zeros(48, 5, 5), torch.zeros(48, 5, 2)))
    ratio = out.float() / 200.0
    assert (ratio <= 1.0 + 1e-6).all()  # shadows only darken
    lo, hi = RANGES["shadow"]
    dark = ratio < 0.999
    assert ((ratio[dark] >= lo - 0.01) & (ratio[dark] <= hi + 0.01)).all()
    share = dark[..., 0].float().mean(dim=(1, 2, 3))
    wlo, whi = SHADOW["width"]
    plo, phi = SHADOW["period"]
    # Every window has a band, and bands cover the share of the picture their width and period give.
    assert (share > 0.0).all() and (share < min(1.0, whi / plo) + 0.1).all()
    # Light and shade in each window: never all dark.
    assert (share < 0.99).all()
    # One factor per window: its dark pixels all alike.
    for w in range(48):
        d = ratio[w][dark[w]]
        assert d.max() - d.min() < 0.01
    # The bands drift down the picture (or stay), as the ground comes toward the camera: the last
    # frame's shade is the first frame's moved down by 0 to 5 x drift rows, never up.
    d = dark[..., 0]
    most = round(5 * SHADOW["drift"][1] * 40) + 1
    shifts = []
    for w in range(48):
        first, last = d[w, 0], d[w, 5]
        mismatch = {
            k: (first[max(0, -k) : 40 - max(0, k)] != last[max(0, k) : 40 - max(0, -k)]).float().mean()
            for k in range(-most, most + 1)
        }
        shifts.append(min(mismatch, key=mismatch.get))
        assert mismatch[shifts[-1]] < 0.05
    assert min(shifts) >= 0 and max(shifts) > 0


def test_adding_kinds_changes_nothing_for_a_run_that_does_not_use_them():
    batch = _batch()
    a = _run({"colour": 1.0, "palette": 1.0, "noise": 1.0}, batch, seed=5)
    rng = np.random.default_rng(5)
    aug = Augmenter({"colour": 1.0, "palette": 1.0, "noise": 1.0, "haze": 0.0}, mirror_signs(IMU, ODOM))
    b = aug(*batch, rng)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_the_same_generator_state_augments_alike():
    batch = _batch()
    every = {**STANDARD, "haze": 0.5, "shadow": 0.5}
    a = _run(every, batch, seed=7)
    b = _run(every, batch, seed=7)
    c = _run(every, batch, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
