"""Fused sequence kernels for training: a whole CfC or LTC window, whole batch, in one compiled call,
forward and backward, as a `torch.autograd.Function`.

The Python time loop of `LiquidRNN.state_sequence` dispatches a dozen small torch ops per step and
as many again in the backward pass; at 19 neurons that dispatch is the whole cost. Here torch does
only what is done once per call: it masks the weights, makes the LTC's positive parameters positive
(softplus or identity), gathers the LTC's synapses and packs everything into one float64 vector
`p`, all as ordinary autograd ops. The kernel then runs the recurrence over (batch, time) in numba
and its hand-written backward returns dL/dp, dL/dx, dL/dtimespans and dL/d(initial state); torch's
autograd takes dL/dp back through the packing to every parameter, so masked weights get the zero
gradient the mask gives them, and the parameters get gradients in their own dtype.

The kernels live with their network types (`cfc/train.py`, `ltc/train.py`, `liquid_s4/train.py`),
their arithmetic in `kernels.py`; this module runs them: the lanes layout, the thread pool, storage
reused across calls, the autograd Function, and the checks common to every kernel.

Layout and speed: the batch runs in chunks (one per thread, one by default), each chunk's samples
innermost in every array ("lanes"), so each step is a handful of loops over (neuron, lane) with
the same weight or synapse for all lanes. What the backward pass needs is stored per step (head
values; LTC: v before each unfold, 1 / denominator, synapse sigmoids) in buffers reused across
calls once their autograd node is gone; nothing is stored when no gradient is wanted (validation
under no_grad).

Precision: everything runs in float64 whatever the module's dtype: a float32 module gives the
float64 answer for its float32 weights, rounded to float32 once at the end.

Supported: CfC (wired or fully connected with any backbone, every mode and activation, mixed
memory; backbone dropout only in eval mode) and LTC (any wiring, mappings, constraints, unfolds,
mixed memory), float32 / float64 on the CPU. `fused_support(module, ...)` says why a configuration
has no kernel (None when it has one): the module's own `_kernel_support()` first, then what every
kernel needs; `LiquidRNN.state_sequence` then runs the reference loop.
LIQUID_CONTROL_SEQUENCE=loop (or `module.fused_sequence = False`) forces the loop everywhere.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

ENV = "LIQUID_CONTROL_SEQUENCE"  # "loop" (or "reference") forces the Python loop everywhere


def loop_forced() -> bool:
    """True when the environment asks for the reference loop (LIQUID_CONTROL_SEQUENCE=loop)."""
    return os.environ.get(ENV, "").strip().lower() in ("loop", "reference", "0", "off")


# --- torch side --------------------------------------------------------------------------------

_POOLS: dict[int, ThreadPoolExecutor] = {}
if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads
    os.register_at_fork(after_in_child=_POOLS.clear)


def _pool(threads: int) -> ThreadPoolExecutor:
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="liquid-sequence")
    return _POOLS[threads]


THREADS_ENV = "LIQUID_CONTROL_SEQUENCE_THREADS"  # threads for one call (default 1)


def _threads(batch: int) -> int:
    """Threads for this call, one chunk of the batch each: LIQUID_CONTROL_SEQUENCE_THREADS (default 1),
    at most torch's setting, one per sample and one per core. One by default: on the 2-core machine
    this was measured on, shared with other jobs, handing a chunk to a second thread cost more than
    it saved (bench/train_step.py --threads 2 measures it where cores are free)."""
    try:
        wanted = int(os.environ.get(THREADS_ENV, "1"))
    except ValueError:
        wanted = 1
    return max(1, min(wanted, torch.get_num_threads(), os.cpu_count() or 1, batch))


class Pack:
    """Collects torch tensors into the flat parameter vector and hands back their offsets."""

    def __init__(self) -> None:
        self.pieces: list[torch.Tensor] = []
        self.size = 1  # offset 0 is a dummy, as in every layout (0 means "none")

    def add(self, tensor: torch.Tensor) -> int:
        flat = tensor.reshape(-1)
        offset = self.size
        self.pieces.append(flat)
        self.size += flat.numel()
        return offset

    def vector(self) -> torch.Tensor:
        return torch.cat([torch.zeros(1, dtype=torch.float64), *self.pieces])


def as64(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64)


def _lanes(a: np.ndarray, chunks: int, lanes: int, fill: float) -> np.ndarray:
    """(B, ...) -> (chunks, ... x lanes): the batch padded with `fill` to chunks x lanes, each
    chunk's samples innermost (the kernels' layout)."""
    b = a.shape[0]
    if chunks * lanes != b:
        a = np.concatenate([a, np.full((chunks * lanes - b, *a.shape[1:]), fill)])
    return np.ascontiguousarray(a.reshape(chunks, lanes, -1).transpose(0, 2, 1)).reshape(chunks, -1)


def _unlanes(a: np.ndarray, batch: int, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of `_lanes`: (chunks, ... x lanes) -> (batch, *shape)."""
    chunks = a.shape[0]
    a = a.reshape(chunks, -1, a.shape[1] // int(np.prod(shape))).transpose(0, 2, 1)
    return np.ascontiguousarray(a.reshape(-1, *shape)[:batch])


# Storage for the backward pass, reused: page-faulting fresh buffers in (megabytes per call) cost
# as much as the LTC's whole forward pass. A set returns to the pool only when the autograd node
# holding it is gone (so no graph that could still run backward ever shares it).
_POOL: list[tuple[tuple, tuple[np.ndarray, ...]]] = []
_POOL_BYTES = 128 * 2**20  # at most this much kept free
_POOL_LOCK = threading.Lock()


class Stored:
    """One forward pass's storage, from the pool or new; back to the pool when garbage."""

    __slots__ = ("key", "arrays")

    def __init__(self, shapes: tuple) -> None:
        self.key = shapes
        with _POOL_LOCK:
            for i, (key, arrays) in enumerate(_POOL):
                if key == shapes:
                    del _POOL[i]
                    self.arrays = arrays
                    return
        self.arrays = tuple(np.empty(shape) for shape in shapes)

    def __del__(self) -> None:
        try:
            with _POOL_LOCK:
                _POOL.append((self.key, self.arrays))
                while sum(a.nbytes for _, arrays in _POOL for a in arrays) > _POOL_BYTES:
                    del _POOL[0]
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class Kernel:
    """A compiled sequence kernel with the static parts of one module's packing: `forward` and
    `backward` on float64 numpy arrays x (B, T, inputs), ts (B, T), h0, c0 (B, state), p."""

    n: int
    stored: tuple[int, ...]  # floats stored per step and lane, one entry per stored array

    def _static(self) -> tuple:
        return ()

    def _run(self, fn, chunks: int, *args) -> None:
        """fn over all chunks: in this thread, or one chunk per thread of the pool (the kernels
        release the GIL). Every argument with a leading chunk axis is split along it."""
        if chunks == 1:
            fn(*args)
            return
        pool = _pool(chunks)
        parts = [
            [a[c : c + 1] if isinstance(a, np.ndarray) and a.ndim == 2 and a.shape[0] == chunks else a for a in args]
            for c in range(chunks)
        ]
        for future in [pool.submit(fn, *part) for part in parts]:
            future.result()

    @staticmethod
    def _split(batch: int) -> tuple[int, int]:
        chunks = _threads(batch)
        return chunks, -(-batch // chunks)

    def forward(self, x, ts, h0, c0, p, store):
        b, t = x.shape[:2]
        chunks, lanes = self._split(b)
        S = np.empty((chunks, t * self.n * lanes))
        if store:
            saved = Stored(tuple((chunks, t * size * lanes) for size in self.stored))
            arrays = saved.arrays
        else:
            saved, arrays = None, tuple(np.empty((chunks, 1)) for _ in self.stored)
        self._run(
            self.fwd,
            chunks,
            _lanes(x, chunks, lanes, 0.0),
            _lanes(ts, chunks, lanes, 1.0),
            _lanes(h0, chunks, lanes, 0.0),
            _lanes(c0, chunks, lanes, 0.0),
            p,
            *self._static(),
            S,
            *arrays,
            store,
            lanes,
        )
        # the layout goes with the storage: the thread count may change before the backward pass
        return _unlanes(S, b, (t, self.n)), (saved, S, chunks, lanes)

    def backward(self, x, ts, h0, c0, p, saved, gS):
        b, t = x.shape[:2]
        stored, S, chunks, lanes = saved
        dP = np.zeros((chunks, p.shape[0] * lanes))
        dX = np.empty((chunks, x[0].size * lanes))
        dTS = np.empty((chunks, t * lanes))
        dH0, dC0 = np.empty((chunks, self.n * lanes)), np.empty((chunks, self.n * lanes))
        self._run(
            self.bwd,
            chunks,
            _lanes(x, chunks, lanes, 0.0),
            _lanes(ts, chunks, lanes, 1.0),
            _lanes(h0, chunks, lanes, 0.0),
            _lanes(c0, chunks, lanes, 0.0),
            p,
            *self._static(),
            S,
            *stored.arrays,
            _lanes(gS, chunks, lanes, 0.0),
            dP,
            dX,
            dTS,
            dH0,
            dC0,
            lanes,
        )
        dp = dP.reshape(chunks, -1, lanes).sum(axis=(0, 2))
        return (
            dp,
            _unlanes(dX, b, x.shape[1:]),
            _unlanes(dTS, b, (t,)),
            _unlanes(dH0, b, (self.n,)),
            _unlanes(dC0, b, (self.n,)),
        )


class _Sequence(torch.autograd.Function):
    """states = kernel(x, ts, h0, c0, p), all float64 CPU tensors; backward by the kernel."""

    @staticmethod
    def forward(ctx, kernel, x, ts, h0, c0, p, store):
        arrays = [t.detach().contiguous().numpy() for t in (x, ts, h0, c0, p)]
        S, saved = kernel.forward(*arrays, store)
        ctx.kernel, ctx.saved = kernel, saved
        ctx.save_for_backward(x, ts, h0, c0, p)
        return torch.from_numpy(S)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_states):
        arrays = [t.detach().contiguous().numpy() for t in ctx.saved_tensors]
        gS = g_states.detach().to(torch.float64).contiguous().numpy()
        grads = ctx.kernel.backward(*arrays, ctx.saved, gS)
        need = ctx.needs_input_grad
        # grads: dp, dx, dts, dh0, dc0; inputs: kernel, x, ts, h0, c0, p, store
        dp, dx, dts, dh0, dc0 = grads
        out = [torch.from_numpy(a) if need[i] else None for i, a in ((1, dx), (2, dts), (3, dh0), (4, dc0), (5, dp))]
        return (None, *out, None)


# --- what has a kernel --------------------------------------------------------------------------


def _has_hooks(module: nn.Module) -> bool:
    from torch.nn.modules import module as module_mod

    if module_mod._global_forward_hooks or module_mod._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def fused_support(module, x: torch.Tensor | None = None, timespans: torch.Tensor | None = None, hx=None) -> str | None:
    """None when `module.state_sequence(x, timespans, hx)` can run the fused kernel, else why not
    (the reference loop then runs: it is the definition the kernel must equal)."""
    check = getattr(module, "_kernel_support", None)
    if check is None:
        return f"no kernel for {type(module).__name__}"
    reason = check()
    if reason is not None:
        return reason
    kind = type(module).__name__
    if _has_hooks(module):
        return "forward hooks (the loop calls the cells, the kernel does not)"
    tensors = list(module.parameters())
    if x is not None:
        tensors.append(x)
    if timespans is not None:
        tensors.append(timespans)
    if any(t.device.type != "cpu" for t in tensors):
        return "tensors not on the CPU"
    if any(t.dtype not in (torch.float32, torch.float64) for t in tensors):
        return "a dtype other than float32 / float64"
    if x is not None and timespans is not None:
        if x.dim() != 3 or x.shape[-1] != module.input_size or timespans.shape != x.shape[:2]:
            return (
                f"shapes x {tuple(x.shape)}, timespans {tuple(timespans.shape)} ({kind} wants (B, T, "
                f"{module.input_size}) and (B, T))"
            )
        if x.shape[1] == 0 or x.shape[0] == 0:
            return "an empty sequence"
        want = (x.shape[0], module.state_size)
        if hx is not None:
            parts = hx if module.use_mixed else (hx,)
            if module.use_mixed and not (isinstance(hx, tuple | list) and len(hx) == 2):
                return "mixed memory wants the initial state as (h, c)"
            for part in parts:
                if not isinstance(part, torch.Tensor) or tuple(part.shape) != want:
                    return f"an initial state that is not a ({want[0]}, {want[1]}) tensor"
                tensors.append(part)
            if any(t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64) for t in parts):
                return "an initial state not float32 / float64 on the CPU"
    return None


def _initial(module, hx, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b = x.shape[0]
    zeros = torch.zeros(b, module.state_size, dtype=torch.float64)
    if hx is None:
        return zeros, zeros
    if module.use_mixed:
        h, c = hx
    else:
        h, c = hx, None
    return as64(h), (zeros if c is None else as64(c))


def fused_state_sequence(module, x: torch.Tensor, timespans: torch.Tensor, hx=None) -> torch.Tensor:
    """The fused equivalent of the reference `state_sequence` loop: x (B, T, inputs), timespans
    (B, T), hx the initial state ((h, c) with mixed memory) or None for zeros -> (B, T, state)."""
    kernel, p = module._sequence_kernel()
    h0, c0 = _initial(module, hx, x)
    x64, ts64 = as64(x), as64(timespans)
    store = torch.is_grad_enabled() and any(t.requires_grad for t in (x64, ts64, h0, c0, p))
    states = _Sequence.apply(kernel, x64, ts64, h0, c0, p, store)
    return states.to(x.dtype)
