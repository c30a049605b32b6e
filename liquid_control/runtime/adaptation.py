"""Online adaptation of the command readout by recursive least squares (RLS).

The readout is linear in the liquid state, y = W [h; 1]. Given teacher commands (a joystick, an
expert), RLS with exponential forgetting re-fits W to the recent (state, teacher) pairs:

    k = P phi / (lambda + phi' P phi)
    W <- W + clip(e k', max_step)          e = y_teacher - W phi
    P <- (P - k phi' P) / lambda

Each update is bounded (`max_step` per weight) and P's trace is capped, so a burst of odd teacher
data or a state that stops exciting some directions cannot blow the readout up.
"""

from __future__ import annotations

import numpy as np


class ReadoutRLS:
    def __init__(
        self,
        weight: np.ndarray,
        bias: np.ndarray,
        forgetting: float = 0.995,
        max_step: float = 0.05,
        initial_covariance: float = 10.0,
    ) -> None:
        self._w0 = np.concatenate([weight, bias[:, None]], axis=1).astype(np.float64)
        self.forgetting = forgetting
        self.max_step = max_step
        self.initial_covariance = initial_covariance
        self.updates = 0
        self.reset()

    def reset(self) -> None:
        """Back to the shipped readout."""
        self.w = self._w0.copy()
        n = self.w.shape[1]
        self.p = np.eye(n) * self.initial_covariance
        self._max_trace = n * self.initial_covariance * 10.0
        self.updates = 0
        self.last_error = 0.0

    @property
    def weight(self) -> np.ndarray:
        return self.w[:, :-1]

    @property
    def bias(self) -> np.ndarray:
        return self.w[:, -1]

    @property
    def drift(self) -> float:
        """How far the readout has moved from the shipped one (Frobenius norm)."""
        return float(np.linalg.norm(self.w - self._w0))

    def update(self, state: np.ndarray, target: np.ndarray) -> None:
        phi = np.append(state, 1.0)
        if not (np.all(np.isfinite(phi)) and np.all(np.isfinite(target))):
            raise ValueError("adaptation needs a finite state and teacher command")
        p_phi = self.p @ phi
        k = p_phi / (self.forgetting + phi @ p_phi)
        error = target - self.w @ phi
        self.w += np.clip(np.outer(error, k), -self.max_step, self.max_step)
        self.p = (self.p - np.outer(k, p_phi)) / self.forgetting
        self.p = 0.5 * (self.p + self.p.T)  # keep it symmetric against round-off
        trace = np.trace(self.p)
        if trace > self._max_trace:  # covariance wind-up when the state does not excite all directions
            self.p *= self._max_trace / trace
        self.updates += 1
        self.last_error = float(np.abs(error).max())
