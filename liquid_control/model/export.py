"""`liquid-control export MODEL --onnx OUT.onnx`: a policy's whole streaming step as one ONNX graph,
for ONNX Runtime (and TensorRT from ONNX) on boards where torch is a burden.

The graph (opset 17):
    inputs   frame  uint8   (1, H, W, 3)  RGB at the model's input size, as sensing.model_frame makes it
             imu    float64 (k,)          the model's raw IMU fields, then its odometry fields
                                          (config sensors.imu_fields, odom_fields; k = 0 for a
                                          camera-only model; named for the IMU, the only one once)
             dt     float64 (1,)          seconds the network steps (the controller passes dt / tau_scale)
             state  float64 (n,)          the liquid state (zeros to start)
    outputs  command          float64 (outputs,)  the raw command, before output scale and limits
             new_state        float64 (n,)
             camera_features  float64 (F,)        what the camera encoder made of `frame`
The camera encoder (its uint8 -> [0, 1] scaling included) runs in float32 as in the torch runtime;
the core and the readout in float64, as the fused streaming kernels do. The model's config (the
same JSON as in the .safetensors file) is in the metadata under "liquid_control", with the readout
weights under "liquid_control.readout" (the ONNX backend adapts them online without the graph), the
core's fused streaming kernel under
"liquid_control.core" (CfC and LTC cores: the ONNX backend steps the state with it, in numba, and
runs only the camera encoder in ONNX Runtime: a graph call costs more than a whole liquid step), and
the camera encoder alone as an ONNX graph (base64) under "liquid_control.encoder" (ONNX Runtime has
no way to run part of a graph: the whole one costs about 30 us more per frame).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import torch
from torch import nn

from ..runtime.onnx_policy import CORE_KEY, ENCODER_KEY, READOUT_KEY
from .modelfile import load_policy
from .policy import OPSET, LiquidPolicy, encoder_graph, example_frame
from .specs import METADATA_KEY, ModelFileError

INPUTS = ("frame", "imu", "dt", "state")
OUTPUTS = ("command", "new_state", "camera_features")


class StreamingStep(nn.Module):
    """One event of LiquidPolicy's running form as a module: what PolicyStep computes."""

    def __init__(self, policy: LiquidPolicy) -> None:
        super().__init__()
        core = policy.core
        if getattr(core, "use_mixed", False):
            raise ValueError("export does not support cores with mixed_memory (an LSTM state beside the liquid one)")
        self.camera = policy.camera.float().eval()
        self.core = core.double().eval()
        self.readout = policy.readout.double().eval()
        self.register_buffer("imu_mean", policy.imu_mean.double())
        self.register_buffer("imu_std", policy.imu_std.double())

    def forward(self, frame, imu, dt, state):
        features = self.camera(frame)[0].double()
        x = torch.cat([features, (imu - self.imu_mean) / self.imu_std])[None]
        core = self.core
        new_state = core.export_step(x, state, dt)
        command = self.readout(new_state[: core.state_size])
        return command, new_state, features


def _keep_every_input(graph, example: tuple[torch.Tensor, ...]) -> None:
    """The documented inputs, in order, whatever the step reads: torch's exporter drops an input no
    output depends on (dt for a core that ignores time, the state of a memoryless core), and a caller
    feeding the four inputs would then be refused by ONNX Runtime. An input nothing reads is valid."""
    import onnx
    from onnx import helper

    have = {i.name: i for i in graph.graph.input}
    types = {
        torch.uint8: onnx.TensorProto.UINT8,
        torch.float64: onnx.TensorProto.DOUBLE,
        torch.float32: onnx.TensorProto.FLOAT,
    }
    inputs = [
        have.get(name) or helper.make_tensor_value_info(name, types[x.dtype], list(x.shape))
        for name, x in zip(INPUTS, example, strict=True)
    ]
    del graph.graph.input[:]
    graph.graph.input.extend(inputs)


def export_onnx(model: str | Path, output: str | Path) -> dict:
    """Write `model`'s streaming step to `output` (never over an existing file). Returns a summary."""
    import onnx

    output = Path(output)
    if output.exists():
        raise FileExistsError(f"{output} exists; an export is never written over another file")
    policy, config = load_policy(model)
    run = policy.streamer()
    try:
        step = StreamingStep(policy)
    except ValueError as exc:
        raise ModelFileError(model, str(exc)) from None
    spec = policy.spec
    example = (
        example_frame(spec),
        torch.zeros(len(spec.held_fields), dtype=torch.float64),
        torch.full((1,), 0.005, dtype=torch.float64),
        torch.as_tensor(run.initial_state(), dtype=torch.float64),
    )
    tmp = output.with_name(output.name + ".tmp")
    with torch.no_grad():
        torch.onnx.export(
            step,
            example,
            str(tmp),
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            opset_version=OPSET,
            dynamo=False,
        )
    graph = onnx.load(str(tmp))
    _keep_every_input(graph, example)
    readout = {"weight": run.readout_w.tolist(), "bias": run.readout_b.tolist()}
    entries = [
        (METADATA_KEY, config.to_json()),
        (READOUT_KEY, json.dumps(readout)),
        (ENCODER_KEY, base64.b64encode(encoder_graph(policy.camera.float(), example[0])).decode("ascii")),
    ]
    try:
        entries.append((CORE_KEY, json.dumps(run.core.to_arrays())))
    except NotImplementedError:  # a core with no torch-free kernel: the graph runs anywhere, the backend says why not
        pass
    for key, value in entries:
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    graph.producer_name = "liquid_control"
    onnx.checker.check_model(graph)
    onnx.save(graph, str(tmp))
    tmp.replace(output)
    return {
        "model": str(model),
        "onnx": str(output),
        "opset": OPSET,
        "bytes": output.stat().st_size,
        "inputs": {
            "frame": [1, spec.image_height, spec.image_width, 3],
            "imu": [len(spec.held_fields)],
            "dt": [1],
            "state": [int(run.initial_state().size)],
        },
        "outputs": {
            "command": [policy.outputs],
            "new_state": [int(run.initial_state().size)],
            "camera_features": [spec.camera_features],
        },
    }
