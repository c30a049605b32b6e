"""The feedforward baseline's streaming step (batch 1, float64, torch-free): `mlp_step` and
`FusedFeedforward`."""

from __future__ import annotations

import math

import numba
import numpy as np

from ..kernels import ACT_IDS, DT_SCALE, _activate
from ..stream import FusedStep

FF_ACTIVATIONS = ("relu", "tanh", "silu")  # hidden layers (ids from ACT_IDS); the last layer is tanh

# One row of the layer table per Linear, in order: where its weight (rows x cols, row-major) and
# bias start in the flat float64 parameter vector, and its shape.
_L_ROWS, _L_COLS, _L_W, _L_B = range(4)


@numba.njit(cache=True)
def mlp_step(x, dt, time_input, p, table, act, work, state, out):
    """One step: out = the MLP of [x (, dt / DT_SCALE)], also written to state (the readout reads
    it there). work (2, widest layer) holds the layers' inputs and outputs in turn."""
    n_in = x.shape[0]
    for k in range(n_in):
        work[1, k] = x[k]
    if time_input:
        work[1, n_in] = dt / DT_SCALE
    n_layers = table.shape[0]
    for layer in range(n_layers):
        rows, cols = table[layer, _L_ROWS], table[layer, _L_COLS]
        w_off, b_off = table[layer, _L_W], table[layer, _L_B]
        src, dst = (layer + 1) % 2, layer % 2
        last = layer == n_layers - 1
        for r in range(rows):
            acc = p[b_off + r]
            base = w_off + r * cols
            for k in range(cols):
                acc += p[base + k] * work[src, k]
            if last:
                out[r] = math.tanh(acc)
            else:
                work[dst, r] = _activate(acc, act)
    for j in range(out.shape[0]):
        state[j] = out[j]


class FusedFeedforward(FusedStep):
    """Batch-1 streaming step of a Feedforward core (float64, allocation-free after construction).

    `tau` is NaN: a memoryless map has no time constant."""

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray], activation: str, time_input: bool) -> None:
        if activation not in FF_ACTIVATIONS:
            raise ValueError(f"activation must be one of {FF_ACTIVATIONS}, got {activation!r}")
        self.weights = [np.ascontiguousarray(w, dtype=np.float64) for w in weights]
        self.biases = [np.ascontiguousarray(b, dtype=np.float64) for b in biases]
        self.activation, self.time_input = activation, bool(time_input)
        self.act = ACT_IDS[activation]
        table, chunks, offset = [], [], 0
        for w, b in zip(self.weights, self.biases, strict=True):
            table.append((w.shape[0], w.shape[1], offset, offset + w.size))
            chunks += [w.ravel(), b]
            offset += w.size + b.size
        self.p = np.concatenate(chunks)
        self.table = np.array(table, dtype=np.int64)
        self.input_size = self.weights[0].shape[1] - int(self.time_input)
        self.state_size = self.state_len = self.weights[-1].shape[0]
        self.out = np.zeros(self.state_size, dtype=np.float64)
        self.tau = np.full(self.state_size, np.nan)
        self.work = np.zeros((2, max(max(w.shape) for w in self.weights)), dtype=np.float64)

    @classmethod
    def from_module(cls, core) -> FusedFeedforward:
        as64 = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
        return cls(
            [as64(layer.weight) for layer in core.layers],
            [as64(layer.bias) for layer in core.layers],
            core.activation,
            core.time_input,
        )

    def to_arrays(self) -> dict:
        return {
            "kind": "mlp",
            "activation": self.activation,
            "time_input": self.time_input,
            "weights": [{"shape": list(w.shape), "data": w.ravel().tolist()} for w in self.weights],
            "biases": [b.tolist() for b in self.biases],
        }

    @classmethod
    def _from_arrays(cls, d: dict) -> FusedFeedforward:
        weights = [np.array(w["data"], dtype=np.float64).reshape(w["shape"]) for w in d["weights"]]
        return cls(
            weights, [np.array(b, dtype=np.float64) for b in d["biases"]], d["activation"], bool(d["time_input"])
        )

    def step(self, x: np.ndarray, state: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        self._check(x, state, dt)
        mlp_step(x, float(dt), self.time_input, self.p, self.table, self.act, self.work, state, self.out)
        return self.out, state
