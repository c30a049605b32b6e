"""Online adaptation in closed loop on the real simulator, with the shipped policy: a steering bias
the policy never saw, a teacher that knows it, and the tracking error before, during and after."""

import numpy as np
import pytest

pytestmark = pytest.mark.sim

pytest.importorskip("mujoco")

from liquid_control.model.modelfile import load_model  # noqa: E402
from liquid_control.paths import share_path  # noqa: E402
from liquid_control.runtime.controller import LiquidController, Settings  # noqa: E402
from liquid_control.sim.env import PurePursuit, TrackEnv  # noqa: E402
from liquid_control.sim.track import Track, track_path  # noqa: E402

BIAS = 0.4  # rad/s added to every executed steering command
START_S = 2.0  # m along the oval: where the drive without adaptation starts, and again after the reset


def test_adaptation_halves_the_tracking_error_under_an_unseen_bias_and_reset_restores_it():
    policy, config = load_model(share_path("models", "ncp_cfc_lane_keeping.safetensors"))
    env = TrackEnv(Track.load(track_path("oval")), seed=3)
    env.reset(s=START_S)
    controller = LiquidController(policy, config, Settings(adaptation_enabled=True))
    expert = PurePursuit()

    def drive(seconds, teacher):
        xte = []
        for event in env.events(seconds):
            if event.kind == "camera":
                command = controller.on_image(event.stamp, event.data)
            else:
                command = controller.on_imu(event.stamp, event.data)
                xte.append(abs(env.truth()["xte"]))
                if teacher:
                    linear, angular = expert(env)
                    controller.on_teacher(linear, angular - BIAS)  # a teacher who knows the bias
            if command is not None:
                env.command(command.linear_x, command.angular_z + BIAS)
        return np.array(xte)

    try:
        before = drive(8.0, teacher=False)[-800:].mean()
        assert controller.adaptation.updates == 0 and controller.adaptation.drift == 0.0  # no teacher, no change
        adapting = drive(20.0, teacher=True)
        after = adapting[-1000:].mean()
        within_10s = adapting[1000:2000].mean()
        # The same start again (place, sensor noise, liquid state): what is left to differ is the
        # readout, which reset_adaptation puts back.
        controller.reset_adaptation()
        controller.reset_state()
        env.reset(s=START_S)
        restored = drive(8.0, teacher=False)[-800:].mean()
    finally:
        env.close()
    print(
        f"\nmean |xte| under the bias: {before:.3f} m without adaptation, {within_10s:.3f} m in the "
        f"second 5 s of adaptation (10 s in), {after:.3f} m after 20 s, {restored:.3f} m after reset_adaptation"
    )
    assert before > 0.05  # the bias pulls the shipped policy off the centreline
    assert within_10s <= before / 2 and after <= before / 2
    assert restored == pytest.approx(before, rel=0.1)  # reset: the shipped behaviour again (adapted: ~0.002 m)
