"""What CfC and LTC share: the sequence loop with per-sample, per-step time spans, the optional
memory cell, and the streaming interface (`initial_state`, `step`) backed by a fused kernel.
The streaming part, `StreamingModule`, is also the base of the LSTM and GRU baselines."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .lstm import LSTMCell

if TYPE_CHECKING:  # stream.py pulls in numba, which the training path does not need
    from .stream import FusedStep

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def normalize_timespans(
    timespans: Any, batch: int, seq: int, batch_first: bool, batched: bool, like: torch.Tensor
) -> torch.Tensor | None:
    """Time spans as a (seq, batch, 1) tensor, or None for the regular 1.0 of ncps.

    Accepts a number, or a tensor shaped (batch, seq), (batch, seq, 1), (seq,) or (seq, 1) for
    unbatched input; time-major when `batch_first` is False. Unlike ncps 1.0.1 (which squeezes the
    span to (batch,) and broadcasts it across neurons), each sample keeps its own span.
    """
    if timespans is None:
        return None
    ts = torch.as_tensor(timespans, dtype=like.dtype, device=like.device)
    if ts.dim() == 0:
        return ts.expand(seq, batch, 1)
    if not batched:
        ts, batch_first = ts.reshape(1, -1), True
    if ts.dim() == 3:
        if ts.shape[-1] != 1:
            raise ValueError(f"timespans with 3 dimensions must end in 1, got {tuple(ts.shape)}")
        ts = ts[..., 0]
    if ts.dim() != 2:
        raise ValueError(f"timespans must be (batch, time) or (batch, time, 1), got {tuple(ts.shape)}")
    if not batch_first:
        ts = ts.transpose(0, 1)
    if tuple(ts.shape) != (batch, seq):
        raise ValueError(
            f"timespans shape {tuple(ts.shape)} does not match the input's (batch, time) = ({batch}, {seq})"
        )
    return ts.transpose(0, 1).unsqueeze(-1)


class StreamingModule(nn.Module):
    """A core that streams at batch 1 through a fused kernel built from its weights and cached:
    `fused()`, `initial_state()` and `step()`. Subclasses say how to build the kernel."""

    _fused: FusedStep | None = None
    _fused_key: tuple | None = None
    _tensors: Sequence[torch.Tensor] = ()  # the state dict's tensors at the last build

    def _build_fused(self) -> FusedStep:
        raise NotImplementedError

    def _watched_tensors(self) -> Iterable[torch.Tensor]:
        """The tensors whose change rebuilds the kernel: those of the last build, kept as a list
        because walking the module tree on every step would cost more than the step itself."""
        return self._tensors

    def fused(self, refresh: bool = False) -> FusedStep:
        """The fused inference kernel for the current weights.

        Rebuilt when a weight changed in place (optimizer step, `load_state_dict`) or its storage
        moved; after replacing a Parameter object itself, pass refresh=True.
        """
        if refresh or self._fused is None or self._weights_key() != self._fused_key:
            self._tensors = list(self.state_dict(keep_vars=True).values())
            self._fused = self._build_fused()
            self._fused_key = self._weights_key()
        return self._fused

    def _weights_key(self) -> tuple:
        return tuple((t._version, t.data_ptr()) for t in self._watched_tensors())

    def initial_state(self) -> np.ndarray:
        """A zero state for `step` (float64; holds h, then c when the core has a memory cell)."""
        return self.fused().initial_state()

    def step(self, x: np.ndarray, state: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """One streaming step at batch 1: (output, state). `state` is updated in place and returned;
        the output array is reused by the next call (copy it to keep it)."""
        return self.fused().step(x, state, dt)

    # --- what a model file says about it (registry.py names the types) ---------------------------
    def config(self) -> dict[str, Any]:
        """What rebuilds this core (without its weights): cell, units or wiring (a dict), options;
        `from_config(input_size, **config)` builds it again."""
        raise NotImplementedError

    @classmethod
    def from_config(
        cls,
        input_size: int,
        cell: str,
        units: int | None = None,
        wiring: dict | None = None,
        options: dict | None = None,
    ) -> StreamingModule:
        return cls(input_size, units, **(options or {}))

    def masked_weights(self) -> int:
        """Weights a sparsity mask zeroes: they never act (none unless wired)."""
        return 0

    def export_step(self, x: torch.Tensor, state: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """One step of batch-1 `x` (1, inputs) from the flat `state` (state_len,) to the new flat state,
        in traceable torch (what an ONNX export records; the sequence API may run a fused kernel)."""
        _, h = self._cell(x, state[None], dt.reshape(1, 1))
        return h[0]


class LiquidRNN(StreamingModule):
    """Base of CfC and LTC: sequence forward as in ncps, plus a fused streaming step."""

    state_size: int
    output_size: int
    use_mixed: bool
    batch_first: bool
    return_sequences: bool

    @classmethod
    def from_config(
        cls,
        input_size: int,
        cell: str,
        units: int | None = None,
        wiring: dict | None = None,
        options: dict | None = None,
    ) -> LiquidRNN:
        from .wirings import wiring_from_config

        return cls(input_size, wiring_from_config(wiring) if wiring is not None else units, **(options or {}))

    def _config(self, cell: str, options: dict[str, Any]) -> dict[str, Any]:
        from .wirings import wiring_to_config

        if self.wired:
            return {"cell": cell, "wiring": wiring_to_config(self.wiring), "options": options}
        return {"cell": cell, "units": self.state_size, "options": options}

    # Weights per zero of a sparsity mask: CfC masks its value heads (ff1, and ff2 unless pure);
    # LTC masks w, mu, sigma and erev.
    _masked_per_synapse = 4

    def masked_weights(self) -> int:
        zeros = sum(int((m == 0).sum()) for k, m in self.state_dict().items() if k.endswith("sparsity_mask"))
        return zeros * self._masked_per_synapse

    def _init_memory(self, input_size: int, mixed_memory: bool) -> None:
        self.use_mixed = mixed_memory
        if mixed_memory:
            self.lstm = LSTMCell(input_size, self.state_size)

    # --- training path ---------------------------------------------------------------------
    def _cell(self, x: torch.Tensor, h: torch.Tensor, ts: Any) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _readout(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def forward(
        self, input: torch.Tensor, hx: State | None = None, timespans: Any = None
    ) -> tuple[torch.Tensor, State]:
        """input (batch, time, features) when batch_first, else (time, batch, features); or
        (time, features) unbatched. Returns (outputs, final state) as ncps does."""
        batched = input.dim() == 3
        if input.dim() not in (2, 3):
            raise ValueError(f"input must be 2-D or 3-D, got shape {tuple(input.shape)}")
        batch_dim, seq_dim = (0, 1) if self.batch_first else (1, 0)
        if not batched:
            input = input.unsqueeze(batch_dim)
        batch, seq = input.size(batch_dim), input.size(seq_dim)
        if seq == 0:
            raise ValueError("input has no time steps")
        ts_all = normalize_timespans(timespans, batch, seq, self.batch_first, batched, input)
        h, c = self._initial_hx(hx, batch, batched, input)

        outputs = []
        out = None
        for t in range(seq):
            x = input[:, t] if self.batch_first else input[t]
            ts = 1.0 if ts_all is None else ts_all[t]
            if self.use_mixed:
                h, c = self.lstm(x, (h, c))
            out, h = self._cell(x, h, ts)
            if self.return_sequences:
                outputs.append(self._readout(out))
        readout = (
            torch.stack(outputs, dim=1 if self.batch_first else 0) if self.return_sequences else self._readout(out)
        )
        if not batched:
            readout = readout.squeeze(batch_dim)
            h = h[0]
            c = c[0] if c is not None else None
        return readout, ((h, c) if self.use_mixed else h)

    def _initial_hx(self, hx: State | None, batch: int, batched: bool, like: torch.Tensor):
        if hx is None:
            zeros = torch.zeros((batch, self.state_size), device=like.device, dtype=like.dtype)
            return zeros, (torch.zeros_like(zeros) if self.use_mixed else None)
        if self.use_mixed:
            if isinstance(hx, torch.Tensor):
                raise ValueError("a network with mixed_memory=True takes its state as a tuple (h, c)")
            h, c = hx
        else:
            h, c = hx, None
        want = 2 if batched else 1
        if h.dim() != want:
            raise ValueError(f"state must be {want}-D for this input, got {h.dim()}-D")
        if not batched:
            h = h.unsqueeze(0)
            c = c.unsqueeze(0) if c is not None else None
        return h, c

    # The default of state_sequence's `fused` for this module (None: automatic). Set it to False to
    # train a policy through the reference loop, e.g. `policy.core.fused_sequence = False`.
    fused_sequence: bool | None = None

    def state_sequence(
        self, x: torch.Tensor, timespans: torch.Tensor, hx: State | None = None, fused: bool | None = None
    ) -> torch.Tensor:
        """The full state (all neurons, which a policy's readout reads) after each step of a
        batch-first sequence: x (B, T, input_size), timespans (B, T) seconds -> (B, T, state_size);
        hx the initial state ((h, c) with mixed memory), zeros when None.

        fused None (the default, or this module's `fused_sequence`): the fused sequence kernel of
        `sequence.py` (forward and backward compiled, whole batch and window in one call) when
        `sequence.fused_support` says this configuration has one and the environment does not ask
        for the loop (LIQUID_CONTROL_SEQUENCE=loop), else the reference loop; True: the kernel, or a
        ValueError saying why there is none; False: the reference loop."""
        if fused is None:
            fused = self.fused_sequence
        if fused is not False:
            from .sequence import fused_state_sequence, fused_support, loop_forced

            if fused or not loop_forced():
                reason = fused_support(self, x, timespans, hx)
                if reason is None:
                    return fused_state_sequence(self, x, timespans, hx)
                if fused:
                    raise ValueError(f"no fused sequence kernel for this {type(self).__name__}: {reason}")
        return self.reference_state_sequence(x, timespans, hx)

    def reference_state_sequence(
        self, x: torch.Tensor, timespans: torch.Tensor, hx: State | None = None
    ) -> torch.Tensor:
        """`state_sequence` as a Python loop over the cells: the definition the kernel must equal."""
        if hx is None:
            h = torch.zeros(x.shape[0], self.state_size, dtype=x.dtype)
            c = torch.zeros_like(h) if self.use_mixed else None
        elif self.use_mixed:
            h, c = hx
        else:
            h, c = hx, None
        states = []
        for t in range(x.shape[1]):
            ts = timespans[:, t].unsqueeze(-1)
            if self.use_mixed:
                h, c = self.lstm(x[:, t], (h, c))
            _, h = self._cell(x[:, t], h, ts)
            states.append(h)
        return torch.stack(states, dim=1)
