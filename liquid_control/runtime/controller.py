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

The sensors are the ones the running model reads (its spec's `sensors`): always the camera, and the
IMU and wheel odometry where the model takes fields of them. Events of a sensor the model does not
read are ignored (counted as `unread`), and the watchdog does not wait for it.

Safety rules (all decided here; the node forwards events and publishes what comes back):
- Watchdog per sensor the model reads: one whose last *accepted* message was received more than
  its timeout ago (`camera_timeout`, `imu_timeout`, `odom_timeout`, each `sensor_timeout` when 0)
  stops the robot: every command is zero ("timeout") until it speaks again, also while the others
  flow. Messages that arrive but are not accepted (frozen or backward stamps, NaN) do not count as
  alive. "Received" is the caller's clock (the node's steady clock; the stamp itself in replay and
  sim).
- Before every sensor the model reads has spoken, commands are zero ("waiting").
- E-stop: zero commands while engaged, and no adaptation from teacher commands.

Takeovers (a person with a joystick, `on_teleop`): a takeover lasts while teleop commands keep
coming, each within `teleop_timeout` of the last (and, with `teleop_require_enable`, while a deadman
signal says true, itself fresh within that time). The person's command goes out through the same
speed and acceleration limits as the policy's, and the e-stop still zeroes it; the sensor watchdog
does not stop the person (a takeover is how a person drives a robot whose policy cannot). The policy
keeps stepping meanwhile: what a step returns during a takeover is its proposal (`proposal` True),
what it would command had it driven on alone: its commands within the same limits, ramped from its
own last proposal (from the last command sent when the takeover began), never from the person's.
When the takeover ends, the policy's next command ramps from the person's last.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from ..model.specs import ModelConfig
from .adaptation import ReadoutRLS
from .parameters import check_settings, setting_default
from .sensing import FIELDS

if TYPE_CHECKING:  # a policy is any object with this interface: the torch one, or the ONNX backend's
    from ..model.policy import LiquidPolicy, PolicyStep

COMMAND_FIELDS = ("linear.x", "angular.z")


@dataclass(frozen=True)
class Settings:
    """Everything a user tunes live; units SI (m/s, rad/s, m/s^2, rad/s^2, s). Defaults, types and
    ranges come from the parameter table (parameters.py), as the node's do."""

    max_linear_speed: float = setting_default("max_linear_speed")
    max_angular_speed: float = setting_default("max_angular_speed")
    max_linear_accel: float = setting_default("max_linear_accel")
    max_angular_accel: float = setting_default("max_angular_accel")
    speed_limit_mode: str = setting_default("speed_limit_mode")
    sensor_timeout: float = setting_default("sensor_timeout")
    camera_timeout: float = setting_default("camera_timeout")
    imu_timeout: float = setting_default("imu_timeout")
    odom_timeout: float = setting_default("odom_timeout")
    max_dt: float = setting_default("max_dt")
    tau_scale: float = setting_default("tau_scale")
    adaptation_enabled: bool = setting_default("adaptation_enabled")
    adaptation_forgetting: float = setting_default("adaptation_forgetting")
    adaptation_max_step: float = setting_default("adaptation_max_step")
    teleop_timeout: float = setting_default("teleop_timeout")
    teleop_require_enable: bool = setting_default("teleop_require_enable")

    def check(self) -> None:
        """Raise ValueError with a reason a user can act on (the parameter's type and range)."""
        check_settings(dataclasses.asdict(self))

    def timeout(self, sensor: str) -> float:
        """Seconds without an accepted message of `sensor` (SENSORS) before a safe stop."""
        own = {"camera": self.camera_timeout, "imu": self.imu_timeout, "odom": self.odom_timeout}[sensor]
        return own if own > 0.0 else self.sensor_timeout


@dataclass(frozen=True)
class Command:
    stamp: float
    linear_x: float
    angular_z: float
    reason: str  # "policy", "teleop", or why the command is zero: waiting, timeout, e_stop, gap_reset, nan_reset, error
    # A step's answer while a person commands (a takeover): the policy's proposal, not for cmd_vel.
    proposal: bool = False


SENSORS = ("camera", "imu", "odom")  # a model reads the camera and any of the others (spec.sensors)


@dataclass(frozen=True)
class Health:
    """What the controller can say about its inputs at a moment: `level` "ok", "waiting" (not
    every sensor the model reads has spoken yet) or "error" (a sensor timed out), and a message naming the sensor
    and why."""

    level: str
    message: str

    @property
    def ok(self) -> bool:
        return self.level == "ok"


@dataclass(frozen=True)
class EncodedFrame:
    """A camera frame and its features from a model's encoder (LiquidController.encode_image),
    made outside any lock; used as they are while that model still runs."""

    rgb: np.ndarray
    features: np.ndarray
    run: PolicyStep


@dataclass
class Counters:
    steps: int = 0
    camera: int = 0
    imu: int = 0
    odom: int = 0
    unread: int = 0  # events of a sensor the running model does not read (ignored)
    late: int = 0
    waiting: int = 0  # accepted before every sensor had spoken (no step)
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


@dataclass(frozen=True)
class AdaptedModel:
    """A running policy's readout as adaptation left it (LiquidController.adapted)."""

    policy: LiquidPolicy
    config: ModelConfig
    weight: np.ndarray
    bias: np.ndarray
    updates: int

    def save(self, path, adapted_from: str = "") -> None:
        """Write the policy with this readout to `path`, a new file (never over another)."""
        from pathlib import Path

        import torch

        from ..model.modelfile import save_model

        path = Path(path)
        if path.exists() or path.is_symlink():
            raise ValueError(f"{path} exists; an adapted model is never written over another file")
        policy = copy.deepcopy(self.policy)
        with torch.no_grad():
            policy.readout.weight.copy_(torch.from_numpy(self.weight))
            policy.readout.bias.copy_(torch.from_numpy(self.bias))
        provenance = {**self.config.provenance, "adapted_from": adapted_from, "adaptation_updates": self.updates}
        save_model(path, policy, self.config.sensors, self.config.outputs, provenance)


def _clip(value: float, bound: float) -> float:
    """value limited to [-bound, bound] (plain floats: this runs on every step)."""
    return -bound if value < -bound else bound if value > bound else value


class LiquidController:
    def __init__(
        self,
        policy: LiquidPolicy,
        config: ModelConfig | None = None,
        settings: Settings | None = None,
        e_stop: bool = False,
    ) -> None:
        self.settings = settings or Settings()
        self.settings.check()
        self.counters = Counters()
        self.e_stop = e_stop
        self._install(self.prepare(policy, config))
        self.reset_state()
        self._last_command: Command | None = None
        self._last_proposal: Command | None = None  # during a takeover, the policy's own history
        # Per sensor, in the caller's clock: when a message last arrived (accepted or not), when
        # one was last accepted, and why the last one was not.
        self._seen: dict[str, float | None] = dict.fromkeys(SENSORS)
        self._alive: dict[str, float | None] = dict.fromkeys(SENSORS)
        self._refusal: dict[str, str] = {}
        self._first_seen: float | None = None
        # Takeovers, in the caller's clock: when the last teleop command and enable signal came.
        self._teleop_at: float | None = None
        self._enable_at: float | None = None
        self._enabled = False
        self.takeovers = 0  # takeovers begun (each a stretch of fresh teleop commands)
        self._in_takeover = False

    # --- model -----------------------------------------------------------------------------
    def prepare(self, policy: LiquidPolicy, config: ModelConfig | None = None) -> PreparedPolicy:
        """Check a policy against this controller and build its running form (tracing the camera
        encoder takes tens of milliseconds), changing nothing: a node does this off the control
        path, then swaps at a step boundary. Raises ValueError if the policy cannot run here."""
        fields = config.outputs.fields if config else COMMAND_FIELDS[: policy.outputs]
        unknown = set(fields) - set(COMMAND_FIELDS)
        if unknown:
            raise ValueError(f"the model commands {sorted(unknown)}; this controller drives {COMMAND_FIELDS}")
        for kind, names in policy.spec.fields.items():
            missing = set(names) - set(FIELDS[kind])
            if missing:
                raise ValueError(f"the model reads {kind} fields {sorted(missing)} that its message does not have")
        try:
            run = policy.streamer()
            run.check()
        except Exception as exc:  # noqa: BLE001 - any failure to prepare is a model that cannot run
            raise ValueError(f"the model cannot run: {type(exc).__name__}: {exc}") from None
        return PreparedPolicy(policy, config, run, tuple(fields))

    def _install(self, prepared: PreparedPolicy) -> None:
        policy, config, fields = prepared.policy, prepared.config, prepared.fields
        self.policy = policy
        self.config = config
        self.run: PolicyStep = prepared.run
        self.sensors: tuple[str, ...] = prepared.run.sensors  # what this model reads
        self._fields = fields
        self._scale = np.array(config.outputs.scale if config and config.outputs.scale else [1.0] * len(fields))
        # Where linear.x and angular.z are in the policy's output (-1: not an output, always 0).
        self._command_index = tuple(
            self._fields.index(f) if f in self._fields else -1 for f in ("linear.x", "angular.z")
        )
        self.adaptation = ReadoutRLS(
            self.run.readout_w,
            self.run.readout_b,
            self.settings.adaptation_forgetting,
            self.settings.adaptation_max_step,
        )

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
            for kind, values in self._held.items():
                if kind in self.sensors and self.run.stage(kind, values):
                    self.run.hold_staged(kind)
        else:
            self.reset_state()

    @property
    def prepared(self) -> PreparedPolicy:
        """The running model in the form swap_policy takes (how a controller built elsewhere, off
        the control path, hands its model to the one that runs)."""
        return PreparedPolicy(self.policy, self.config, self.run, self._fields)

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
        # The last frame and IMU and odometry samples the network took (PolicyStep holds their
        # inputs); kept to hold them again through a swapped model's encoders.
        self._frame: np.ndarray | None = None
        self._held: dict[str, np.ndarray] = {}
        self._last_stamp = dict.fromkeys(SENSORS)
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
    def encode_image(self, rgb: np.ndarray) -> EncodedFrame:
        """The running model's camera features of a frame, touching no controller state: a node
        calls this outside its lock (resize and encoder take most of a frame's time), then passes
        the result to on_image."""
        run = self.run
        return EncodedFrame(rgb, run.encode_image(rgb), run)

    def on_image(self, stamp: float, rgb: np.ndarray | EncodedFrame, received: float | None = None) -> Command | None:
        """A camera frame as an (H, W, 3) RGB array of any size (uint8 as image_to_array and
        compressed_to_array give it with dtype=np.uint8, or float in [0, 1]; sensing.model_frame
        makes it the model's input), or what encode_image made of one. `received`: when it arrived, in the caller's clock (default: the
        stamp, as in replay and simulation)."""
        if not self._accept("camera", stamp, stamp if received is None else received):
            return None
        if isinstance(rgb, EncodedFrame):
            frame = rgb
            # Encoded by a model that has been swapped out since: encode again with this one.
            features = frame.features if frame.run is self.run else self.run.encode_image(frame.rgb)
            rgb = frame.rgb
        else:
            features = self.run.encode_image(rgb)
        self.run.hold_camera(features)
        self._frame = rgb
        self.counters.camera += 1
        return self._advance(stamp, stamp if received is None else received)

    def on_imu(self, stamp: float, values: np.ndarray, received: float | None = None) -> Command | None:
        """An IMU sample as the 9 values of sensing.IMU_FIELDS (`received` as for on_image)."""
        return self._on_fields("imu", stamp, values, received)

    def on_odom(self, stamp: float, values: np.ndarray, received: float | None = None) -> Command | None:
        """An odometry message as the 3 values of sensing.ODOM_FIELDS (`received` as for on_image)."""
        return self._on_fields("odom", stamp, values, received)

    def on_sensor(self, kind: str, stamp: float, data: np.ndarray, received: float | None = None) -> Command | None:
        """One sensor event by kind, "camera" (on_image), "imu" (on_imu) or "odom" (on_odom): how
        bag replay and the simulator feed the controller their event streams."""
        if kind == "camera":
            return self.on_image(stamp, data, received)
        if kind in ("imu", "odom"):
            return self._on_fields(kind, stamp, data, received)
        raise ValueError(f"unknown sensor event kind {kind!r}; expected one of {SENSORS}")

    def _on_fields(self, kind: str, stamp: float, values: np.ndarray, received: float | None) -> Command | None:
        if kind not in self.sensors:
            self.counters.unread += 1
            return None
        received = stamp if received is None else received
        values = np.asarray(values, dtype=np.float64)
        if not self.run.stage(kind, values):
            self.counters.reject(f"{kind}_not_finite")
            self.note_refused(kind, received, "NaN or Inf in a field the model reads")
            return None
        if not self._accept(kind, stamp, received):
            return None
        self.run.hold_staged(kind)
        self._held[kind] = values.copy()
        setattr(self.counters, kind, getattr(self.counters, kind) + 1)
        return self._advance(stamp, received)

    def note_refused(self, sensor: str, received: float, why: str) -> None:
        """A message of `sensor` arrived but could not be used (refused before it reached the
        controller, e.g. a malformed or oversized image): it does not keep the sensor alive, and
        the watchdog says why. Nothing, for a sensor the model does not read."""
        if sensor not in self.sensors:
            return
        self._saw(sensor, received)
        self._refusal[sensor] = why

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

    def on_teleop(
        self, stamp: float, linear_x: float, angular_z: float, received: float | None = None
    ) -> Command | None:
        """A person's command (a joystick's teleop twist) at `stamp`, arrived at `received` (the
        caller's clock, as for sensors; default the stamp). While it makes a takeover (see
        `takeover`), the command to send: the person's within the limits ("teleop"), or zero while
        the e-stop is engaged. None when it does not (a non-finite command, or no enable signal
        where one is required)."""
        received = stamp if received is None else received
        if not (math.isfinite(linear_x) and math.isfinite(angular_z) and math.isfinite(stamp)):
            self.counters.reject("teleop_not_finite")
            return None
        self._teleop_at = received
        if not self.takeover(received):
            return None
        if self.e_stop:
            return self._zero(stamp, "e_stop")
        return self._limit(stamp, linear_x, angular_z, "teleop")

    def on_teleop_enable(self, engaged: bool, received: float) -> None:
        """The deadman (enable) signal of teleop, at `received` (the caller's clock)."""
        self._enabled, self._enable_at = bool(engaged), received

    def takeover(self, now: float) -> bool:
        """Whether a person commands at `now` (the caller's clock): the last teleop command came
        within teleop_timeout and, with teleop_require_enable, the enable signal is true and came
        within that time too. Counts each takeover begun (`takeovers`)."""
        s = self.settings
        active = self._teleop_at is not None and now - self._teleop_at <= s.teleop_timeout
        if active and s.teleop_require_enable:
            active = self._enabled and self._enable_at is not None and now - self._enable_at <= s.teleop_timeout
        if active and not self._in_takeover:
            self.takeovers += 1
            self._last_proposal = self._last_command  # the proposals ramp on from what was sent
        self._in_takeover = active
        return active

    def health(self, now: float) -> Health:
        """The inputs' state at `now` (the caller's clock, as `received`)."""
        if self._first_seen is None:
            return Health("waiting", "waiting for sensors: none has spoken yet")
        problems, waiting = [], []
        for sensor in self.sensors:
            timeout = self.settings.timeout(sensor)
            alive, seen = self._alive[sensor], self._seen[sensor]
            if alive is not None and now - alive <= timeout:
                continue
            if alive is None and seen is None:
                if now - self._first_seen <= timeout:
                    waiting.append(sensor)
                else:
                    problems.append(f"no {sensor} data for {now - self._first_seen:.2f} s since the first sensor spoke")
                continue
            since = f"for {now - alive:.2f} s" if alive is not None else "since the start"
            if seen is not None and now - seen <= timeout:
                why = self._refusal.get(sensor, "refused")
                problems.append(f"{sensor} {why}: no message accepted {since}")
            else:
                problems.append(f"{sensor} silent {since} (timeout {timeout:g} s)")
        if problems:
            return Health("error", "; ".join(problems))
        if waiting:
            return Health("waiting", f"waiting for {', '.join(waiting)}")
        return Health("ok", "running")

    def watchdog(self, now: float, stamp: float | None = None) -> Command | None:
        """A zero command while a sensor has timed out or not every sensor has spoken ("timeout"
        or "waiting"), else None; decided at `now` (the caller's clock, as `received`), stamped
        `stamp` (sensor time; default `now`). Call it periodically: it also stops the robot when
        nothing at all arrives any more."""
        health = self.health(now)
        if health.ok or self.takeover(now):  # a person who commands is not stopped for the policy's sensors
            return None
        return self._zero(now if stamp is None else stamp, "timeout" if health.level == "error" else "waiting")

    def set_e_stop(self, engaged: bool, stamp: float) -> Command | None:
        """Engage (a zero command now, and zero commands and no adaptation until released) or
        release the e-stop; the next network command ramps up from zero."""
        self.e_stop = bool(engaged)
        return self._zero(stamp, "e_stop") if self.e_stop else None

    def start_from_rest(self) -> None:
        """Forget the commands sent: the next one starts from rest, as the first one does."""
        self._last_command = None

    def stop(self, stamp: float, reason: str) -> Command:
        """A zero command (e.g. after a failure); the next network command ramps up from it."""
        return self._zero(stamp, reason)

    def adapted(self) -> AdaptedModel:
        """What save_adapted writes, taken now (cheap: the readout's arrays are copied, the policy is
        shared): a node takes it under its lock and writes the file outside it."""
        if self.config is None:
            raise ValueError("the running model has no config (sensor and output specs) to save")
        return AdaptedModel(
            self.policy,
            self.config,
            self.adaptation.weight.copy(),
            self.adaptation.bias.copy(),
            self.adaptation.updates,
        )

    def save_adapted(self, path, adapted_from: str = "") -> None:
        """Write the policy with the adapted readout to `path` (a new file, never over the original)."""
        self.adapted().save(path, adapted_from)

    # --- internals -------------------------------------------------------------------------
    def _saw(self, sensor: str, received: float) -> None:
        self._seen[sensor] = received
        if self._first_seen is None:
            self._first_seen = received

    def _accept(self, sensor: str, stamp: float, received: float) -> bool:
        self._saw(sensor, received)
        if not math.isfinite(stamp):
            self.counters.reject("stamp_not_finite")
            self._refusal[sensor] = "stamps not finite"
            return False
        last = self._last_stamp[sensor]
        if last is not None and stamp <= last:
            if last - stamp > self.settings.max_dt:
                self.counters.time_jumps += 1
                self.reset_state()
            else:
                self.counters.stale_dropped += 1
                self._refusal[sensor] = "stamps frozen or going back"
                return False
        self._last_stamp[sensor] = stamp
        self._alive[sensor] = received
        return True

    def _timed_out(self, now: float) -> bool:
        for sensor in self.sensors:
            alive = self._alive[sensor]
            if alive is not None and now - alive > self.settings.timeout(sensor):
                return True
        return False

    def _advance(self, stamp: float, received: float) -> Command | None:
        """Step the network: the command, or during a takeover the proposal."""
        return self._step(stamp, received, proposal=self._teleop_at is not None and self.takeover(received))

    def _step(self, stamp: float, received: float, proposal: bool) -> Command | None:
        if self._frame is None or any(kind not in self._held for kind in self.sensors[1:]):
            self.counters.waiting += 1
            return self._zero(stamp, "waiting", proposal=proposal)  # not every sensor the model reads has spoken yet
        if self._last_step is None:
            self.counters.waiting += 1
            self._last_step = stamp
            return self._zero(stamp, "waiting", proposal=proposal)
        dt = stamp - self._last_step
        if dt <= 0.0:
            self.counters.late += 1
            return None
        if dt > self.settings.max_dt:
            self.counters.gap_resets += 1
            self.state = self.run.initial_state()
            self._last_step = stamp
            return self._zero(stamp, "gap_reset", proposal=proposal)
        self._last_step = stamp
        adapted = self.settings.adaptation_enabled and self.adaptation.updates > 0
        raw = self.run.advance(
            self.state,
            dt / self.settings.tau_scale,
            self.adaptation.weight if adapted else None,
            self.adaptation.bias if adapted else None,
        )
        self.counters.steps += 1
        if raw is None:
            self.counters.nan_resets += 1
            self.state = self.run.initial_state()
            return self._zero(stamp, "nan_reset", proposal=proposal)
        if self.e_stop:
            return self._zero(stamp, "e_stop", proposal=proposal)
        if self._timed_out(received):  # the other sensor went quiet: the state steps on, the robot stops
            return self._zero(stamp, "timeout", proposal=proposal)
        lin, ang = self._command_index
        return self._limit(
            stamp,
            raw[lin] * self._scale[lin] if lin >= 0 else 0.0,
            raw[ang] * self._scale[ang] if ang >= 0 else 0.0,
            proposal=proposal,
        )

    def _limit(
        self, stamp: float, linear: float, angular: float, reason: str = "policy", proposal: bool = False
    ) -> Command:
        """The policy's (or a person's) command within the speed and acceleration limits. speed_limit_mode
        "curvature": the speed limits scale both fields by one factor (the smallest that brings each
        within its limit), and when the linear acceleration limit holds linear.x below what was
        asked, angular.z is scaled by the same fraction: angular.z / linear.x, the path's curvature,
        stays the policy's. Never scaled up: where braking is limited, linear.x stays above what
        was asked and angular.z is left as asked, so the robot never turns harder than the policy
        said. The angular acceleration limit then applies as it is (a physical bound).
        "independent": each field clipped on its own. `proposal`: a proposal during a takeover,
        ramped from the last proposal instead of the last command sent."""
        s = self.settings
        linear, angular = float(linear), float(angular)
        curvature = s.speed_limit_mode == "curvature"
        if curvature:
            factor = 1.0
            if abs(linear) > s.max_linear_speed:
                factor = s.max_linear_speed / abs(linear)
            if abs(angular) * factor > s.max_angular_speed:
                factor = s.max_angular_speed / abs(angular)
            linear, angular = linear * factor, angular * factor
        linear = _clip(linear, s.max_linear_speed)  # exact bounds (a factor's rounding) in both modes
        angular = _clip(angular, s.max_angular_speed)
        last = self._last_proposal if proposal else self._last_command
        if last is not None:
            elapsed = max(stamp - last.stamp, 0.0)
            limited = last.linear_x + _clip(linear - last.linear_x, s.max_linear_accel * elapsed)
            if curvature and linear != 0.0 and abs(limited) < abs(linear):
                angular *= max(limited / linear, 0.0)  # the same fraction; 0 while reversing through 0
            linear = limited
            angular = last.angular_z + _clip(angular - last.angular_z, s.max_angular_accel * elapsed)
        else:
            linear = angular = 0.0  # the first command starts from rest
        return self._sent(Command(stamp, linear, angular, reason, proposal))

    def _zero(self, stamp: float, reason: str, proposal: bool = False) -> Command:
        return self._sent(Command(stamp, 0.0, 0.0, reason, proposal))

    def _sent(self, command: Command) -> Command:
        """The command, kept as the acceleration limits' reference of its kind."""
        if command.proposal:
            self._last_proposal = command
        else:
            self._last_command = command
        return command
