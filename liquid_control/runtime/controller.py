"""LiquidController: timestamped sensor events in, velocity commands out. No ROS here.

The same object runs in the ROS node, in offline bag replay and in the simulator. It keeps the
latest features of each sensor (zero-order hold), steps the liquid state on every event by the
event's stamp minus the previous step's stamp (sensor time, never arrival time), and applies the
speed and acceleration limits, the watchdog and the e-stop to what the network outputs.

Time rules, per event of sensor S with stamp t:
- t <= the last stamp of S: a repeat or a step back. Dropped, unless it is back by more than
  `max_dt` (a looping bag, a restarted clock): then everything resets and t starts afresh.
- t <= the last step (another sensor already stepped past t, e.g. a camera frame stamped at
  exposure that arrives after later IMU samples): the hold is updated, no step.
- t - last step > max_dt: the state is reset (a gap the network cannot bridge), zero command.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field, replace

import numpy as np

from .adaptation import ReadoutRLS
from .parameters import check_settings, setting_default
from .policy import LiquidPolicy, PolicyStep
from .sensing import IMU_FIELDS
from .specs import ModelConfig

COMMAND_FIELDS = ("linear.x", "angular.z")


@dataclass(frozen=True)
class Settings:
    """Everything a user tunes live; units SI (m/s, rad/s, m/s^2, rad/s^2, s). Defaults, types and
    ranges come from the parameter table (parameters.py), as the node's do."""

    max_linear_speed: float = setting_default("max_linear_speed")
    max_angular_speed: float = setting_default("max_angular_speed")
    max_linear_accel: float = setting_default("max_linear_accel")
    max_angular_accel: float = setting_default("max_angular_accel")
    sensor_timeout: float = setting_default("sensor_timeout")
    max_dt: float = setting_default("max_dt")
    tau_scale: float = setting_default("tau_scale")
    adaptation_enabled: bool = setting_default("adaptation_enabled")
    adaptation_forgetting: float = setting_default("adaptation_forgetting")
    adaptation_max_step: float = setting_default("adaptation_max_step")

    def check(self) -> None:
        """Raise ValueError with a reason a user can act on (the parameter's type and range)."""
        check_settings(dataclasses.asdict(self))


@dataclass(frozen=True)
class Command:
    stamp: float
    linear_x: float
    angular_z: float
    reason: str  # "policy", or why the command is zero: waiting, timeout, e_stop, gap_reset, nan_reset


@dataclass
class Counters:
    steps: int = 0
    camera: int = 0
    imu: int = 0
    late: int = 0
    stale_dropped: int = 0
    time_jumps: int = 0
    gap_resets: int = 0
    nan_resets: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


@dataclass(frozen=True)
class PreparedPolicy:
    """A policy checked against a controller, in its running form (LiquidController.prepare)."""

    policy: LiquidPolicy
    config: ModelConfig | None
    run: PolicyStep
    fields: tuple[str, ...]


def _clip(value: float, bound: float) -> float:
    """value limited to [-bound, bound] (plain floats: this runs on every step)."""
    return -bound if value < -bound else bound if value > bound else value


class LiquidController:
    def __init__(self, policy: LiquidPolicy, config: ModelConfig | None = None,
                 settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.settings.check()
        self.counters = Counters()
        self.e_stop = False
        self._install(self.prepare(policy, config))
        self.reset_state()
        self._last_command: Command | None = None

    # --- model -----------------------------------------------------------------------------
    def prepare(self, policy: LiquidPolicy, config: ModelConfig | None = None) -> PreparedPolicy:
        """Check a policy against this controller and build its running form (tracing the camera
        encoder takes tens of milliseconds), changing nothing: a node does this off the control
        path, then swaps at a step boundary. Raises ValueError if the policy cannot run here."""
        fields = config.outputs.fields if config else COMMAND_FIELDS[: policy.outputs]
        unknown = set(fields) - set(COMMAND_FIELDS)
        if unknown:
            raise ValueError(f"the model commands {sorted(unknown)}; this controller drives {COMMAND_FIELDS}")
        missing = set(policy.spec.imu_fields) - set(IMU_FIELDS)
        if missing:
            raise ValueError(f"the model reads IMU fields {sorted(missing)} that an Imu message does not have")
        return PreparedPolicy(policy, config, policy.streamer(), tuple(fields))

    def _install(self, prepared: PreparedPolicy) -> None:
        policy, config, fields = prepared.policy, prepared.config, prepared.fields
        self.policy = policy
        self.config = config
        self.run: PolicyStep = prepared.run
        self._fields = fields
        self._scale = np.array(config.outputs.scale if config and config.outputs.scale else [1.0] * len(fields))
        # Where linear.x and angular.z are in the policy's output (-1: not an output, always 0).
        self._command_index = tuple(self._fields.index(f) if f in self._fields else -1
                                    for f in ("linear.x", "angular.z"))
        self.adaptation = ReadoutRLS(self.run.readout_w, self.run.readout_b,
                                     self.settings.adaptation_forgetting, self.settings.adaptation_max_step)

    def swap_policy(self, policy: LiquidPolicy | PreparedPolicy, config: ModelConfig | None = None) -> None:
        """Switch models between two steps (a policy, or what prepare() made of one). The state is
        kept when the new core has the same size, else reset. Raises ValueError (and keeps the old
        model) if the new one cannot run."""
        prepared = policy if isinstance(policy, PreparedPolicy) else self.prepare(policy, config)
        old_state = self.state
        self._install(prepared)
        if self.run.initial_state().shape == old_state.shape:
            self.state = old_state
            # The held sensor values again, through the new model's encoders (its camera encoder
            # may differ in size and weights).
            if self._frame is not None:
                self.run.hold_camera(self.run.encode_image(self._frame))
            if self._imu is not None and self.run.stage_imu(self._imu):
                self.run.hold_staged_imu()
        else:
            self.reset_state()

    # --- settings --------------------------------------------------------------------------
    def update_settings(self, **changes) -> Settings:
        """Apply tuned values at the next step, keeping the network state. ValueError if invalid."""
        new = replace(self.settings, **changes)
        new.check()
        self.settings = new
        self.adaptation.forgetting = new.adaptation_forgetting
        self.adaptation.max_step = new.adaptation_max_step
        return new

    # --- state -----------------------------------------------------------------------------
    def reset_state(self) -> None:
        """Forget the liquid state and the held sensor values; time starts afresh."""
        self.state = self.run.initial_state()
        # The last frame and IMU sample the network took (PolicyStep holds their inputs); kept to
        # hold them again through a swapped model's encoders.
        self._frame: np.ndarray | None = None
        self._imu: np.ndarray | None = None
        self._last_stamp = {"camera": None, "imu": None}
        self._last_step: float | None = None

    def reset_adaptation(self) -> None:
        self.adaptation.reset()

    @property
    def hidden(self) -> np.ndarray:
        return self.state[: self.run.state_size]

    @property
    def time_constants(self) -> np.ndarray:
        """Each neuron's effective time constant at the last step, in seconds of sensor time."""
        return self.run.core.tau * self.settings.tau_scale

    # --- events ----------------------------------------------------------------------------
    def on_image(self, stamp: float, rgb: np.ndarray) -> Command | None:
        """A camera frame as an (H, W, 3) float RGB array in [0, 1] (any size)."""
        if not self._accept("camera", stamp):
            return None
        self.run.hold_camera(self.run.encode_image(rgb))
        self._frame = rgb
        self.counters.camera += 1
        return self._advance(stamp)

    def on_imu(self, stamp: float, values: np.ndarray) -> Command | None:
        """An IMU sample as the 9 values of sensing.IMU_FIELDS."""
        values = np.asarray(values, dtype=np.float64)
        if not self.run.stage_imu(values):
            self.counters.reject("imu_not_finite")
            return None
        if not self._accept("imu", stamp):
            return None
        self.run.hold_staged_imu()
        self._imu = values.copy()
        self.counters.imu += 1
        return self._advance(stamp)

    def on_sensor(self, kind: str, stamp: float, data: np.ndarray) -> Command | None:
        """One sensor event by kind, "camera" (on_image) or "imu" (on_imu): how bag replay and
        the simulator feed the controller their event streams."""
        if kind == "camera":
            return self.on_image(stamp, data)
        if kind == "imu":
            return self.on_imu(stamp, data)
        raise ValueError(f"unknown sensor event kind {kind!r}; expected 'camera' or 'imu'")

    def on_teacher(self, linear_x: float, angular_z: float) -> bool:
        """A teacher command: adapt the readout toward it from the live state. True if used."""
        if not self.settings.adaptation_enabled or self._last_step is None or self.e_stop:
            return False
        values = {"linear.x": linear_x, "angular.z": angular_z}
        target = np.array([values[f] for f in self._fields]) / self._scale
        if not np.all(np.isfinite(target)):
            self.counters.reject("teacher_not_finite")
            return False
        self.adaptation.update(self.hidden, target)
        return True

    def watchdog(self, now: float) -> Command | None:
        """Zero command when no sensor message arrived for sensor_timeout (sensor time `now`)."""
        return self._zero(now, "timeout") if self.timed_out(now) else None

    def stop(self, stamp: float, reason: str) -> Command:
        """A zero command (watchdog, e-stop); the next network command ramps up from it."""
        return self._zero(stamp, reason)

    def save_adapted(self, path, adapted_from: str = "") -> None:
        """Write the policy with the adapted readout to `path` (a new file, never over the original)."""
        from pathlib import Path

        import torch

        from .modelfile import save_model

        path = Path(path)
        if path.exists():
            raise ValueError(f"{path} exists; an adapted model is never written over another file")
        if self.config is None:
            raise ValueError("the running model has no config (sensor and output specs) to save")
        policy = copy.deepcopy(self.policy)
        with torch.no_grad():
            policy.readout.weight.copy_(torch.from_numpy(self.adaptation.weight))
            policy.readout.bias.copy_(torch.from_numpy(self.adaptation.bias))
        provenance = {**self.config.provenance, "adapted_from": adapted_from,
                      "adaptation_updates": self.adaptation.updates}
        save_model(path, policy, self.config.sensors, self.config.outputs, provenance)

    def timed_out(self, now: float) -> bool:
        stamps = [s for s in self._last_stamp.values() if s is not None]
        return not stamps or now - max(stamps) > self.settings.sensor_timeout

    # --- internals -------------------------------------------------------------------------
    def _accept(self, sensor: str, stamp: float) -> bool:
        if not math.isfinite(stamp):
            self.counters.reject("stamp_not_finite")
            return False
        last = self._last_stamp[sensor]
        if last is not None and stamp <= last:
            if last - stamp > self.settings.max_dt:
                self.counters.time_jumps += 1
                self.reset_state()
            else:
                self.counters.stale_dropped += 1
                return False
        self._last_stamp[sensor] = stamp
        return True

    def _advance(self, stamp: float) -> Command | None:
        if self._frame is None or self._imu is None:
            return self._zero(stamp, "waiting")  # not every sensor has spoken yet
        if self._last_step is None:
            self._last_step = stamp
            return self._zero(stamp, "waiting")
        dt = stamp - self._last_step
        if dt <= 0.0:
            self.counters.late += 1
            return None
        if dt > self.settings.max_dt:
            self.counters.gap_resets += 1
            self.state = self.run.initial_state()
            self._last_step = stamp
            return self._zero(stamp, "gap_reset")
        self._last_step = stamp
        adapted = self.settings.adaptation_enabled and self.adaptation.updates > 0
        raw = self.run.advance(self.state, dt / self.settings.tau_scale,
                               self.adaptation.weight if adapted else None, self.adaptation.bias if adapted else None)
        self.counters.steps += 1
        if raw is None:
            self.counters.nan_resets += 1
            self.state = self.run.initial_state()
            return self._zero(stamp, "nan_reset")
        if self.e_stop:
            return self._zero(stamp, "e_stop")
        lin, ang = self._command_index
        return self._limit(stamp, raw[lin] * self._scale[lin] if lin >= 0 else 0.0,
                           raw[ang] * self._scale[ang] if ang >= 0 else 0.0)

    def _limit(self, stamp: float, linear: float, angular: float) -> Command:
        s = self.settings
        linear = _clip(float(linear), s.max_linear_speed)
        angular = _clip(float(angular), s.max_angular_speed)
        last = self._last_command
        if last is not None:
            elapsed = max(stamp - last.stamp, 0.0)
            linear = last.linear_x + _clip(linear - last.linear_x, s.max_linear_accel * elapsed)
            angular = last.angular_z + _clip(angular - last.angular_z, s.max_angular_accel * elapsed)
        else:
            linear = angular = 0.0  # the first command starts from rest
        command = Command(stamp, linear, angular, "policy")
        self._last_command = command
        return command

    def _zero(self, stamp: float, reason: str) -> Command:
        command = Command(stamp, 0.0, 0.0, reason)
        self._last_command = command
        return command
