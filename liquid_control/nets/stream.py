"""Fused streaming kernels: one CfC, LTC, Liquid-S4, LSTM, GRU or feedforward step at batch 1 in a
single compiled loop, with numpy and numba only (no torch: the ONNX backend streams every core here,
rebuilt by `FusedStep.from_arrays` from what `to_arrays` put in the exported file).

A controller steps its network hundreds of times a second with one sample, where torch's per-op
dispatch costs far more than the arithmetic. These kernels take a snapshot of a module's weights,
fold the sparsity masks in, concatenate each layer's heads into one matrix (CfC) or list only the
existing synapses (LTC), and run the step with numba: no autograd, no allocation per call. The torch
modules stay the reference; tests hold the two paths equal.

This module holds what every streaming kernel shares: `FusedStep` (the input check,
`initial_state`, the arrays an export carries) and the packer. Each network type's kernel lives in
its own folder (`cfc/stream.py`, `ltc/stream.py`, `liquid_s4/stream.py`, `feedforward/stream.py`,
`recurrent/stream.py`), its arithmetic in `kernels.py`; `registry.py` says which class streams which
kind. The modules build their kernel with `fused()`.

Precision: float64 throughout, so the fused step is at least as exact as the float32 torch path.
"""

from __future__ import annotations

import math

import numpy as np

from .registry import STREAMED_KINDS, stream_class

__all__ = ["STREAMED_KINDS", "FusedStep", "Packer", "pack_lstm"]


class Packer:
    """Appends float64 blocks to one flat parameter vector and hands back their offsets."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.size = 0

    def add(self, array) -> int:
        if hasattr(array, "detach"):  # a torch tensor (torch is imported only by from_module's callers)
            array = array.detach().cpu().double().numpy()
        block = np.ascontiguousarray(array, dtype=np.float64).ravel()
        offset = self.size
        self.blocks.append(block)
        self.size += block.size
        return offset

    def vector(self) -> np.ndarray:
        return np.concatenate(self.blocks) if self.blocks else np.zeros(1)


def pack_lstm(packer: Packer, lstm) -> int:
    off = packer.add(lstm.input_map.weight)
    packer.add(lstm.input_map.bias)
    packer.add(lstm.recurrent_map.weight)
    return off


class FusedStep:
    """Common streaming interface: `initial_state()` and `step(x, state, dt) -> (y, state)`.

    After a step, `tau` holds each neuron's effective time constant at that step, in the units
    of dt (the "liquid" part: it moves with the input; NaN for a discrete cell, which has none).
    Every step runs `_check` first: the kernels index without bounds checks."""

    input_size: int
    state_len: int
    out: np.ndarray

    def initial_state(self) -> np.ndarray:
        return np.zeros(self.state_len, dtype=np.float64)

    def to_arrays(self) -> dict:
        """Everything the kernel needs, as plain numbers and lists (JSON; float64 repr is exact):
        how an exported model carries its core to a runtime without torch (`from_arrays`)."""
        raise NotImplementedError

    ARRAYS: tuple[str, ...] = ()  # the float64 arrays that to_arrays writes by name (shape and data)

    def _named_arrays(self) -> dict:
        return {
            k: {"shape": list(getattr(self, k).shape), "data": getattr(self, k).ravel().tolist()} for k in self.ARRAYS
        }

    @classmethod
    def _arrays_of(cls, d: dict) -> dict[str, np.ndarray]:
        return {
            k: np.ascontiguousarray(np.array(d[k]["data"], dtype=np.float64).reshape(d[k]["shape"])) for k in cls.ARRAYS
        }

    @staticmethod
    def from_arrays(data: dict) -> FusedStep:
        if data.get("kind") not in STREAMED_KINDS:
            raise ValueError(f"no fused kernel of kind {data.get('kind')!r}; known: {sorted(STREAMED_KINDS)}")
        return stream_class(data["kind"])._from_arrays(data)

    def _check(self, x: np.ndarray, state: np.ndarray, dt: float) -> None:
        if not dt > 0.0 or not math.isfinite(dt):
            raise ValueError(f"dt must be a finite positive number of seconds, got {dt}")
        if x.shape != (self.input_size,):
            raise ValueError(f"input must have shape ({self.input_size},), got {x.shape}")
        if state.shape != (self.state_len,) or state.dtype != np.float64:
            raise ValueError(
                f"state must be float64 of shape ({self.state_len},) from initial_state(), "
                f"got {state.dtype} {state.shape}"
            )
