"""LiquidPolicy: the streaming form equals the training form on the same event sequence."""

import numpy as np
import pytest
import torch

from liquid_control import nets
from liquid_control.model.policy import CameraEncoder, EncoderSpec, LiquidPolicy


def _policy(cell="cfc"):
    torch.manual_seed(0)
    spec = EncoderSpec(image_width=32, image_height=24, channels=(4, 8), camera_features=6)
    core = (nets.CfC if cell == "cfc" else nets.LTC)(spec.core_inputs, nets.AutoNCP(12, 2, seed=3))
    return LiquidPolicy(spec, core, outputs=2, imu_mean=(0.0, 0.1, 9.8), imu_std=(0.5, 1.0, 1.0)).eval()


@pytest.mark.parametrize("cell", ["cfc", "ltc"])
def test_streaming_step_equals_sequence_forward(cell):
    policy = _policy(cell)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (1, 4, 24, 32, 3), dtype=np.uint8)  # model frames, as training caches them
    # 4 camera frames, 20 events: camera events switch the held frame, the rest are IMU events.
    frame_index = np.repeat(np.arange(4), 5)[None]
    imu = rng.normal(size=(1, 20, 3)) + np.array([0.0, 0.1, 9.8])
    dt = rng.uniform(0.003, 0.04, size=(1, 20))
    with torch.no_grad():
        ref = policy(
            torch.tensor(frames),
            torch.tensor(frame_index),
            torch.tensor(imu, dtype=torch.float32),
            torch.tensor(dt, dtype=torch.float32),
        )[0].numpy()
    run = policy.streamer()
    state = run.initial_state()
    out = []
    for t in range(20):
        cam = run.encode_image(frames[0, frame_index[0, t]])
        out.append(run.step(cam, run.normalize_imu(imu[0, t]), state, float(dt[0, t])).copy())
    np.testing.assert_allclose(np.array(out), ref, atol=2e-5)


def test_core_input_size_must_fit_the_encoders():
    spec = EncoderSpec(camera_features=6)
    with pytest.raises(ValueError, match="takes 5 inputs but the encoders give 9"):
        LiquidPolicy(spec, nets.CfC(5, 8), outputs=2)


def test_policy_trains_end_to_end():
    policy = _policy().train()
    frames = torch.rand(2, 3, 24, 32, 3)
    idx = torch.tensor([[0, 0, 1, 1, 2, 2]] * 2)
    imu = torch.randn(2, 6, 3)
    ts = torch.full((2, 6), 0.02)
    loss = policy(frames, idx, imu, ts).pow(2).mean()
    loss.backward()
    assert policy.camera.convs[0].weight.grad.abs().sum() > 0
    assert policy.readout.weight.grad.abs().sum() > 0


def test_policy_model_file_round_trip(tmp_path):
    from liquid_control.model.modelfile import OutputSpec, load_model, parameter_counts, save_model

    policy = _policy()
    outputs = OutputSpec(("linear.x", "angular.z"), ("m/s", "rad/s"), ((0.0, 0.5), (-1.0, 1.0)))
    path = tmp_path / "policy.safetensors"
    save_model(path, policy, policy.sensor_spec(), outputs, {"trainer": "test"})
    loaded, config = load_model(path)
    assert isinstance(loaded, LiquidPolicy)
    assert config.sensors.image == {"width": 32, "height": 24, "encoding": "rgb8"}
    torch.testing.assert_close(loaded.imu_std, policy.imu_std)
    frames, idx = torch.rand(1, 2, 24, 32, 3), torch.tensor([[0, 1, 1]])
    imu, ts = torch.randn(1, 3, 3), torch.full((1, 3), 0.01)
    with torch.no_grad():
        assert torch.equal(loaded(frames, idx, imu, ts), policy(frames, idx, imu, ts))
    counts = parameter_counts(loaded)
    assert counts["trainable"] == counts["camera_encoder"] + counts["liquid_core"] + counts["readout"]
    assert counts["liquid_core_effective"] < counts["liquid_core"]
    with pytest.raises(ValueError, match="sensor_spec"):
        save_model(
            tmp_path / "bad.safetensors",
            policy,
            loaded.sensor_spec().__class__(features=policy.sensor_spec().features, mean=(0.0,) * 9, std=(1.0,) * 9),
            outputs,
        )


def test_streaming_encoder_sees_the_model_frame_training_sees():
    """A frame of any size, dtype and layout reaches the running encoder as sensing.model_frame
    makes it, the frame training caches: the features equal the training encoder's on that frame."""
    from liquid_control.runtime.sensing import model_frame

    policy = _policy()
    run = policy.streamer()
    frame = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    with torch.no_grad():
        trained = policy.camera(torch.from_numpy(model_frame(frame, 32, 24))[None])[0].double().numpy()
    for image in (frame, np.ascontiguousarray(frame[:, :, ::-1])[:, :, ::-1], frame.astype(np.float32) / 255):
        np.testing.assert_allclose(run.encode_image(image), trained, rtol=0, atol=1e-5)


def test_the_encoder_scales_uint8_frames_to_unit_range_itself():
    torch.manual_seed(0)
    for norm in ("fixed", "frame"):
        encoder = CameraEncoder(EncoderSpec(image_norm=norm)).eval()
        frames = torch.randint(0, 256, (2, 48, 64, 3), dtype=torch.uint8)
        with torch.no_grad():
            torch.testing.assert_close(encoder(frames), encoder(frames.float() / 255), rtol=0, atol=0)


@pytest.mark.parametrize("norm", ["fixed", "frame"])
def test_onnx_runtime_and_torch_encoders_give_the_same_features(norm):
    """With onnxruntime installed the torch backend runs its encoder in ONNX Runtime (an in-memory
    export); without, the frozen torch encoder: the same features within 1e-5 either way."""
    pytest.importorskip("onnxruntime")
    from liquid_control.model.policy import PolicyStep

    torch.manual_seed(1)
    spec = EncoderSpec(image_norm=norm)
    policy = LiquidPolicy(spec, nets.CfC(spec.core_inputs, nets.AutoNCP(12, 2, seed=3)), outputs=2).eval()
    ort_run, torch_run = PolicyStep(policy), PolicyStep(policy, encoder="torch")
    assert (ort_run.encoder, torch_run.encoder) == ("onnxruntime", "torch (frozen)")
    assert PolicyStep(policy, encoder="onnxruntime").encoder == "onnxruntime"
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(20)]
    frames += [np.zeros((48, 64, 3), np.uint8), np.full((48, 64, 3), 255, np.uint8)]
    for frame in frames:
        a, b = ort_run.encode_frame(frame), torch_run.encode_frame(frame)
        assert a.dtype == b.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="encoder must be one of"):
        PolicyStep(policy, encoder="tensorrt")


def test_per_frame_normalisation_is_blind_to_global_brightness_and_fixed_is_not():
    torch.manual_seed(0)
    frames = torch.rand(3, 48, 64, 3)
    for norm, blind in (("frame", True), ("fixed", False)):
        encoder = CameraEncoder(EncoderSpec(image_norm=norm)).eval()
        with torch.no_grad():
            change = (encoder(frames) - encoder(frames * 0.35)).abs().max().item()
            black = encoder(torch.zeros(1, 48, 64, 3))
        assert (change < 1e-4) == blind
        assert torch.isfinite(black).all()
    with pytest.raises(ValueError, match="image_norm"):
        EncoderSpec(image_norm="auto")


def test_model_files_without_image_norm_load_with_the_fixed_normalisation(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from liquid_control.model.modelfile import METADATA_KEY, OutputSpec, load_model, save_model

    spec = EncoderSpec(image_norm="fixed")
    policy = LiquidPolicy(spec, nets.CfC(spec.core_inputs, 8), outputs=2).eval()
    path = tmp_path / "new.safetensors"
    save_model(
        path,
        policy,
        policy.sensor_spec(),
        OutputSpec(("linear.x", "angular.z"), ("m/s", "rad/s"), ((0.0, 1.0), (-1.5, 1.5))),
    )
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()[METADATA_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    del meta["encoder"]["image_norm"]  # as written before the key existed
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata={METADATA_KEY: json.dumps(meta)})
    loaded, _ = load_model(old)
    assert loaded.spec.image_norm == "fixed"


@pytest.mark.slow
def test_the_encoder_graph_is_kept_so_a_second_start_skips_the_onnx_export(tmp_path):
    """Exporting the camera encoder needs the onnx package (~0.8 s to import at a node's start): the
    graph is kept in the cache, a second start loads it without onnx, and a damaged one is replaced."""
    import json
    import os
    import subprocess
    import sys

    from liquid_control.paths import DEFAULT_MODEL

    pytest.importorskip("onnxruntime")
    script = (
        f"import json, sys\nfrom liquid_control.model.modelfile import load_policy\n"
        f"from liquid_control.model.policy import PolicyStep, example_frame\n"
        f"policy, _ = load_policy({DEFAULT_MODEL!r})\nstep = PolicyStep(policy)\n"
        f"f = step.encode_frame(example_frame(policy.spec).numpy()[0] // 2)\n"
        f"print(json.dumps([step.encoder, 'onnx' in sys.modules, f.tolist()]))\n"
    )
    env = {**os.environ, "LIQUID_CONTROL_CACHE": str(tmp_path / "cache")}

    def start():
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    encoder, onnx_imported, first = start()
    kept = list((tmp_path / "cache" / "encoders").glob("*.onnx"))
    assert encoder == "onnxruntime" and onnx_imported and len(kept) == 1
    graph = kept[0].read_bytes()
    encoder, onnx_imported, again = start()
    assert encoder == "onnxruntime" and not onnx_imported and again == first
    kept[0].write_bytes(b"not an onnx graph")
    encoder, onnx_imported, repaired = start()
    assert encoder == "onnxruntime" and onnx_imported and repaired == first and kept[0].read_bytes() == graph
