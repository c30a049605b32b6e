"""A memoryless baseline core: a multilayer perceptron from the current inputs (the held camera
features and IMU values) to `units` features, which the policy's linear readout turns into commands.
With a wide camera encoder it is the feedforward CNN policy of ~100k parameters that the 19-neuron
NCP lane-keeping result is quoted against (Lechner et al. 2020, "Neural circuit policies enabling
auditable autonomy"): what a policy does that has no state and no time.

    z_k = tanh(W_L act(... act(W_1 [x_k (, dt_k / DT_SCALE)] + b_1) ...) + b_L)

Hidden layers use `activation` (relu, tanh or silu); the last layer tanh, so that the features the
readout reads are bounded like an LSTM's h (online adaptation's least squares regress on them).

No state is carried between steps. `state_size` = units and the streaming "state" is the last
output, kept only because the runtime reads its readout's input from the state; nothing reads it
back: a step's output depends on that step's inputs alone, whatever the state holds.

Time: dt is ignored by default (time_input=False), as in the CNN of the comparison: a memoryless
map cannot integrate anything over time, and what the elapsed time would tell it is at most which
sensor fired last. time_input=True gives it dt / DT_SCALE as one more input, as the LSTM/GRU
baselines have it (nets/recurrent/). Either way a step checks dt as every core does (finite and
positive), so all cores take and refuse the same input.

In a model file it is the network cell "mlp" (model/specs.py), options hidden, activation and
time_input; the policy's parameter table counts it as the core.

Training (`state_sequence`): the layers applied to the whole (batch, time) window at once, no loop
over time. Streaming (`fused()`): `mlp_step`, one numba call per step in float64 over the weights
packed into one vector, in `stream.py` (numpy and numba only: the ONNX backend streams this core
without torch).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..base import StreamingModule
from ..kernels import DT_SCALE  # noqa: F401 - re-exported
from .stream import FF_ACTIVATIONS, FusedFeedforward

ACTIVATIONS = FF_ACTIVATIONS  # hidden layers (ids from kernels.ACT_IDS); the last layer is tanh
_TORCH_ACT = {"relu": F.relu, "tanh": torch.tanh, "silu": F.silu}


class Feedforward(StreamingModule):
    """A memoryless core: `hidden` layers of `activation`, then `units` tanh features (what a
    policy's readout reads). See the module docstring.

    >>> core = Feedforward(15, units=64, hidden=(128, 64))
    >>> z = core.state_sequence(torch.randn(4, 50, 15), torch.rand(4, 50) * 0.03)   # (4, 50, 64)
    """

    wiring = None
    wired = False
    use_mixed = False

    def __init__(
        self,
        input_size: int,
        units: int,
        hidden: Iterable[int] = (64,),
        activation: str = "relu",
        time_input: bool = False,
    ) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if min((input_size, units, *hidden)) < 1:
            raise ValueError(
                f"input_size, units and every hidden width must be positive, got {input_size}, {units}, {hidden}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.input_size, self.hidden, self.activation = input_size, hidden, activation
        self.time_input = bool(time_input)
        self.state_size = self.output_size = self.out_features = units
        widths = (input_size + int(self.time_input), *hidden, units)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))

    def _features(self, z: torch.Tensor) -> torch.Tensor:
        act = _TORCH_ACT[self.activation]
        for layer in self.layers[:-1]:
            z = act(layer(z))
        return torch.tanh(self.layers[-1](z))

    def _inputs(self, x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, ts / DT_SCALE], dim=-1) if self.time_input else x

    def state_sequence(self, x: torch.Tensor, timespans: torch.Tensor) -> torch.Tensor:
        """x (B, T, input_size), timespans (B, T) seconds -> the features after each step
        (B, T, units), every step at once (each depends on its own inputs only)."""
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"x must be (batch, time, {self.input_size}), got {tuple(x.shape)}")
        if x.shape[1] == 0:
            raise ValueError("x has no time steps")
        ts = torch.as_tensor(timespans, dtype=x.dtype, device=x.device)
        if tuple(ts.shape) != tuple(x.shape[:2]):
            raise ValueError(f"timespans must be (batch, time) = {tuple(x.shape[:2])}, got {tuple(ts.shape)}")
        return self._features(self._inputs(x, ts.unsqueeze(-1)))

    def _cell(self, x: torch.Tensor, state: torch.Tensor, ts) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on (batch, features) inputs: (z, new state = z); the state is not read (the
        exporter's StreamingStep steps a generic core through this)."""
        b = x.shape[0]
        dt = ts if isinstance(ts, torch.Tensor) else torch.as_tensor(ts, dtype=x.dtype, device=x.device)
        z = self._features(self._inputs(x, dt.to(x.dtype).reshape(-1, 1).expand(b, 1)))
        return z, z

    def forward(self, input: torch.Tensor, hx=None, timespans=None):
        """(batch, time, features) -> (features, the last step's), batch first, for parity with
        the other cores' sequence API; spans 1.0 when None. There is no state to start from."""
        if hx is not None:
            raise ValueError("a Feedforward core has no state to start from; pass hx=None")
        ts = torch.ones(input.shape[:2], dtype=input.dtype) if timespans is None else timespans
        out = self.state_sequence(input, ts)
        return out, out[:, -1]

    def config(self) -> dict:
        # hidden as a list: what the config's JSON reads back
        options = {"hidden": list(self.hidden), "activation": self.activation, "time_input": self.time_input}
        return {"cell": "mlp", "units": self.state_size, "options": options}

    def _build_fused(self) -> FusedFeedforward:
        return FusedFeedforward.from_module(self)

    def _watched_tensors(self) -> Iterable[torch.Tensor]:
        return self.parameters()  # a few tensors: walking them also sees a replaced Parameter
