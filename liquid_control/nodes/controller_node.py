"""controller_node: the ROS 2 face of LiquidController.

Camera and IMU in (sensor data QoS), the liquid state stepped on every message by its header stamp,
velocity commands out; tuned live through parameters, adapted online from teacher commands. All
decisions live in LiquidController; this node declares the interface, converts messages and
publishes.

Camera and IMU are served by a wait loop of their own thread (sensor_loop.py; parameter
`sensor_thread`), the rest on the executor that spins the node; one lock keeps the controller
and the command publisher consistent between the two. `~/saliency` (where the camera encoder looks,
runtime/saliency.py) is computed in a thread of its own from the latest frame, after that frame's
command is out.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
import traceback
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, Imu
from std_msgs.msg import Bool, Float64MultiArray, MultiArrayDimension
from std_srvs.srv import Trigger

from .. import topics
from ..paths import resolve_model_path
from ..runtime.controller import Command, LiquidController, Settings
from ..runtime.parameters import BY_NAME, BY_SETTING, settings_fields
from ..runtime.sensing import (
    SensorError,
    compressed_to_array,
    image_to_array,
    imu_to_array,
    seconds_to_stamp,
    stamp_to_seconds,
)
from ..runtime.specs import ModelFileError
from .params import declare_all
from .runner import run_node
from .sensor_loop import SensorLoop

THROTTLE_S = 5.0


class LiquidControllerNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("liquid_controller", **kwargs)
        declare_all(self)
        self._backend = self.get_parameter("backend").value
        BY_NAME["backend"].check(self._backend)  # read-only: a wrong value stops the start
        # Held by whoever touches the controller or the command publisher: the sensor thread for
        # a step, the executor for parameters, services, teacher, e-stop and the watchdog.
        self._lock = threading.Lock()
        self.controller: LiquidController | None = None
        self.model_error = ""
        # The last e_stop message, kept only to hand it to a controller made later (a model set
        # at runtime after a start without one): LiquidController decides what it means.
        self._e_stop_requested = False
        path = self.get_parameter("model_path").value
        if path:
            try:
                self.controller = LiquidController(*self._load(path), self._settings_from_params())
            except ModelFileError as exc:
                self.model_error = str(exc)
                self.get_logger().error(f"no model running, commanding zero: {exc}")
        else:
            self.model_error = "model_path is empty"
        self._set_threads(self.get_parameter("num_threads").value)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.cmd_pub = None
        self._make_cmd_publisher(self.get_parameter("cmd_vel_stamped").value)
        # Outputs for tools: QoS mismatches there are reported on the tool's side, so no event
        # handlers here (each one is polled on every executor wait).
        quiet = PublisherEventCallbacks(use_default_callbacks=False)
        self.state_pub = self.create_publisher(Float64MultiArray, topics.LIQUID_STATE, 10, event_callbacks=quiet)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10, event_callbacks=quiet)
        # ~/saliency needs the torch encoder's feature maps: none with backend onnx (said once).
        self.saliency: SaliencyWorker | None = None
        if self._backend == "torch":
            self.saliency = SaliencyWorker(self.create_publisher(Image, topics.SALIENCY, 5, event_callbacks=quiet),
                                           self.get_logger())
        elif self.get_parameter("saliency_rate").value > 0.0:
            self.get_logger().info(f"{topics.SALIENCY} is not available with backend {self._backend}: "
                                   "VisualBackProp needs the feature maps of the torch camera encoder")
        # Camera and IMU each in a wait loop of its own thread: an IMU step never waits behind a
        # frame's conversion and encoding (those run outside the lock, too).
        self._sensors: list[SensorLoop] = []
        transport = self.get_parameter("camera_transport").value
        BY_NAME["camera_transport"].check(transport)  # read-only: a wrong value stops the start
        camera = ((CompressedImage, topics.CAMERA_COMPRESSED) if transport == "compressed"
                  else (Image, topics.CAMERA))
        for msg_type, topic, callback in ((*camera, self._on_image), (Imu, topics.IMU, self._on_imu)):
            if self.get_parameter("sensor_thread").value:
                loop = SensorLoop(self, self._sensor_failure, name=topic.split("/")[0])
                loop.subscribe(msg_type, topic, callback, qos_profile_sensor_data)
                self._sensors.append(loop)
            else:
                self.create_subscription(msg_type, topic, callback, qos_profile_sensor_data,
                                         event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False))
        teacher_type = TwistStamped if self.get_parameter("teacher_stamped").value else Twist
        self.create_subscription(teacher_type, topics.TEACHER, self._on_teacher, 10,
                                 event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False))
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(Bool, topics.E_STOP, self._on_e_stop, latched)
        self.create_service(Trigger, "~/reset_state", self._trigger(self._reset_state))
        self.create_service(Trigger, "~/reset_adaptation", self._trigger(self._reset_adaptation))
        self.create_service(Trigger, "~/save_model", self._trigger(self._save_model))

        self._last_publish = -math.inf
        self._last_state_publish = -math.inf
        self._cache_output_params({})
        self._health = "waiting"
        self._latencies: list[float] = []
        self._window = {"camera": 0, "imu": 0}
        self._window_start = time.monotonic()
        self._rejected = 0
        # One housekeeping timer (every wait of rclpy's executor walks every entity, so fewer is
        # faster): the watchdog at 20 Hz, diagnostics every second.
        self._next_diagnostics = time.monotonic() + 1.0
        self.create_timer(0.05, self._housekeeping)
        self._errors = 0
        for loop in self._sensors:
            loop.start()

    @property
    def e_stop(self) -> bool:
        return self.controller.e_stop if self.controller is not None else self._e_stop_requested

    def destroy_node(self) -> None:
        for loop in self._sensors:
            loop.stop(wait=False)  # no callback may run on a node being destroyed
        for loop in self._sensors:
            loop.join()
        if self.saliency is not None:
            self.saliency.stop()
        super().destroy_node()

    # --- model and parameters --------------------------------------------------------------
    def _settings_from_params(self) -> Settings:
        return Settings(**{field: self.get_parameter(p.name).value for field, p in BY_SETTING.items()})

    def _set_threads(self, n: int) -> None:
        if self._backend == "torch":  # ONNX Runtime sessions run on one thread of their own
            import torch

            torch.set_num_threads(n)

    def _load(self, path: str):
        """(policy, config) of a model file for the backend; any failure to load or build it is a
        ModelFileError naming the file (the controller's prepare() then checks that it runs)."""
        try:
            if self._backend == "onnx":
                from ..runtime.onnx_policy import load_onnx_policy

                return load_onnx_policy(path)
            from ..runtime.modelfile import load_policy

            return load_policy(path)
        except ModelFileError:
            raise
        except ImportError as exc:
            raise ModelFileError(path, f"backend {self._backend} cannot run here ({exc}): install "
                                       "liquid_control[full] for torch, or export the model and run "
                                       "backend:=onnx with liquid_control[edge]") from None
        except Exception as exc:  # noqa: BLE001 - a model file must never take the node down
            raise ModelFileError(path, f"cannot be loaded: {type(exc).__name__}: {exc}") from None

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Check every change first, apply them together, or refuse with a reason."""
        changes = {p.name: p.value for p in params}
        settings = settings_fields(changes)
        current = self.controller.settings if self.controller else self._settings_from_params()
        try:
            new_settings = dataclasses.replace(current, **settings)
            new_settings.check()
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        swap = fresh = None
        if "model_path" in changes and changes["model_path"] != self.get_parameter("model_path").value:
            # Loaded, checked and traced here, off the control path; swapped at a step boundary.
            path = changes["model_path"]
            try:
                policy, config = self._load(path)
                if self.controller is None:
                    fresh = LiquidController(policy, config, new_settings, e_stop=self._e_stop_requested)
                else:
                    swap = self.controller.prepare(policy, config)
            except ModelFileError as exc:
                return SetParametersResult(successful=False, reason=f"model not loaded, the old one runs on: {exc}")
            except Exception as exc:  # noqa: BLE001 - prepare() says why the model cannot run
                return SetParametersResult(successful=False,
                                           reason=f"model not loaded, the old one runs on: model file {path}: {exc}")
        with self._lock:
            if fresh is not None:
                self.controller, self.model_error = fresh, ""
            elif self.controller is not None:
                if swap is not None:
                    self.controller.swap_policy(swap)
                self.controller.update_settings(**dataclasses.asdict(new_settings))
            if "num_threads" in changes:
                self._set_threads(changes["num_threads"])
            if "cmd_vel_stamped" in changes:
                self._make_cmd_publisher(changes["cmd_vel_stamped"])
            self._cache_output_params(changes)
        return SetParametersResult(successful=True)

    def _cache_output_params(self, changes: dict) -> None:
        """Parameters read on every message, kept as attributes (get_parameter costs ~10 us)."""
        for name in ("max_publish_rate", "state_publish_rate", "frame_id", "publish_state", "max_image_pixels",
                     "saliency_rate"):
            setattr(self, f"_{name}", changes.get(name, self.get_parameter(name).value))

    def _make_cmd_publisher(self, stamped: bool) -> None:
        if self.cmd_pub is not None:
            self.destroy_publisher(self.cmd_pub)
        self.cmd_stamped = stamped
        self._cmd_msg = TwistStamped() if stamped else Twist()
        self.cmd_pub = self.create_publisher(type(self._cmd_msg), topics.CMD_VEL, 10)

    # --- sensors ---------------------------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        received = time.monotonic()
        controller = self.controller
        frame = error = None
        try:
            rgb = self._to_array(msg, controller)
        except SensorError as exc:
            error = exc
        else:
            if controller is not None:
                frame = controller.encode_image(rgb)  # outside the lock: the IMU steps on meanwhile
        with self._lock:
            self._window["camera"] += 1
            if error is not None:
                self._reject(f"camera image rejected: {error}")
                if self.controller is not None:
                    self.controller.note_refused("camera", received, f"images rejected ({error})")
            elif frame is not None and self.controller is not None:
                self._handle(msg.header.stamp,
                             lambda: self.controller.on_image(stamp_to_seconds(msg.header.stamp), frame, received))
        # After the command is out, and outside the lock: a frame for ~/saliency, now and then.
        if frame is not None and self.saliency is not None and self._saliency_rate > 0.0:
            self.saliency.offer(controller.policy, frame.rgb, msg.header, self._saliency_rate)

    def _to_array(self, msg, controller: LiquidController | None) -> np.ndarray:
        """A camera message as RGB; its size is checked before any conversion or decoding."""
        if isinstance(msg, CompressedImage):
            width, height = ((controller.run.image_width, controller.run.image_height)
                             if controller is not None else (0, 0))
            # Decoded at the smallest JPEG scale that still covers the model's input.
            return compressed_to_array(msg, width, height, self._max_image_pixels, dtype=np.uint8)
        return image_to_array(msg, self._max_image_pixels, dtype=np.uint8)  # the size before any conversion

    def _on_imu(self, msg: Imu) -> None:
        received = time.monotonic()
        try:
            values = imu_to_array(msg)
        except SensorError as exc:
            with self._lock:
                self._window["imu"] += 1
                self._reject(f"IMU message rejected: {exc}")
                if self.controller is not None:
                    self.controller.note_refused("imu", received, f"messages rejected ({exc})")
            return
        with self._lock:
            self._window["imu"] += 1
            if self.controller is None:
                return
            rejected = self.controller.counters.rejected
            before = rejected.get("imu_not_finite", 0)
            self._handle(msg.header.stamp,
                         lambda: self.controller.on_imu(stamp_to_seconds(msg.header.stamp), values, received))
            if rejected.get("imu_not_finite", 0) > before:
                self._reject("IMU message rejected: NaN or Inf in a field the model reads")

    def _sensor_failure(self, exc: BaseException) -> None:
        """A sensor callback raised (a defect, not bad input): log it, command zero, go on."""
        with self._lock:
            self._errors += 1
            self.get_logger().error(
                f"sensor callback failed, commanding zero: {''.join(traceback.format_exception(exc)).strip()}",
                throttle_duration_sec=THROTTLE_S)
            stamp = self._now()
            command = self.controller.stop(stamp, "error") if self.controller else Command(stamp, 0.0, 0.0, "error")
            self._publish(command, force=True)

    def _handle(self, header_stamp, event) -> None:
        """Step the controller and publish its answer (the caller holds the lock)."""
        t0 = time.perf_counter()
        command = event()
        self._latencies.append(time.perf_counter() - t0)
        if len(self._latencies) > 5000:
            del self._latencies[:2500]
        if command is None:
            return
        # A command carries the exact stamp of the sensor message it answers (float seconds
        # near 1.7e9 would round it by a few hundred nanoseconds).
        self._publish(command, header_stamp=header_stamp)

    def _on_teacher(self, msg) -> None:
        twist = msg.twist if isinstance(msg, TwistStamped) else msg
        with self._lock:
            if self.controller is not None:
                self.controller.on_teacher(twist.linear.x, twist.angular.z)

    def _on_e_stop(self, msg: Bool) -> None:
        with self._lock:
            self._e_stop_requested = engaged = bool(msg.data)
            command = self.controller.set_e_stop(engaged, self._now()) if self.controller is not None else None
            if engaged:
                self.get_logger().warning("e_stop engaged: zero commands until released")
                self._publish(command or Command(self._now(), 0.0, 0.0, "e_stop"), force=True)
            else:
                self.get_logger().info("e_stop released")

    def _reject(self, message: str) -> None:
        self._rejected += 1
        self.get_logger().warning(message, throttle_duration_sec=THROTTLE_S)

    # --- output ----------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _publish(self, command: Command, force: bool = False, header_stamp=None) -> None:
        rate = self._max_publish_rate
        now = time.monotonic()
        if not force and command.reason == "policy" and rate > 0.0:
            if now - self._last_publish < 1.0 / rate:
                return
            self._last_publish = now
        # One message object, refilled each time: publish() serialises it at once, and building
        # a new rosidl message costs more than the network step.
        msg = self._cmd_msg
        if self.cmd_stamped:
            stamp = msg.header.stamp
            if header_stamp is not None:
                stamp.sec, stamp.nanosec = header_stamp.sec, header_stamp.nanosec
            else:
                stamp.sec, stamp.nanosec = seconds_to_stamp(command.stamp)
            msg.header.frame_id = self._frame_id
            twist = msg.twist
        else:
            twist = msg
        twist.linear.x = command.linear_x
        twist.angular.z = command.angular_z
        self.cmd_pub.publish(msg)
        state_rate = self._state_publish_rate
        if (command.reason == "policy" and self._publish_state
                and (state_rate <= 0.0 or now - self._last_state_publish >= 1.0 / state_rate)):
            self._last_state_publish = now
            if self.state_pub.get_subscription_count() == 0:
                return  # nobody listens: do not build the message
            # A 2 x n matrix: row 0 the hidden state, row 1 each neuron's time constant (s).
            state = Float64MultiArray()
            hidden, tau = self.controller.hidden, self.controller.time_constants
            n = hidden.size
            state.layout.dim = [MultiArrayDimension(label="state_then_tau_s", size=2, stride=2 * n),
                                MultiArrayDimension(label="neuron", size=n, stride=n)]
            state.data = hidden.tolist() + tau.tolist()
            self.state_pub.publish(state)

    def _housekeeping(self) -> None:
        with self._lock:
            self._watchdog()
            if time.monotonic() >= self._next_diagnostics:
                self._next_diagnostics += 1.0
                self._publish_diagnostics()

    def _watchdog(self) -> None:
        """The controller's watchdog on the steady clock (it must also fire when a simulator, and
        with it /clock, stalls); its zero commands carry the node clock's stamp."""
        stamp = self._now()
        if self.controller is None:
            self._publish(Command(stamp, 0.0, 0.0, "no_model"), force=True)
            return
        health = self.controller.health(time.monotonic())
        if health.level != self._health:
            if health.level == "error":
                self.get_logger().error(f"commanding zero: {health.message}")
            elif health.level == "ok" and self._health == "error":
                self.get_logger().info("sensor data flowing again")
            elif health.level == "ok":
                self.get_logger().info("sensor data flowing")
            self._health = health.level
        command = self.controller.watchdog(time.monotonic(), stamp)
        if command is not None:
            self._publish(command, force=True)

    def _publish_diagnostics(self) -> None:
        elapsed = max(time.monotonic() - self._window_start, 1e-6)
        rates = {k: v / elapsed for k, v in self._window.items()}
        self._window = {"camera": 0, "imu": 0}
        self._window_start = time.monotonic()
        status = DiagnosticStatus(name="liquid_controller: control", hardware_id=self.get_fully_qualified_name())
        if self.controller is None:
            status.level, status.message = DiagnosticStatus.ERROR, f"no model: {self.model_error}"
        elif any(not loop.running for loop in self._sensors):
            status.level, status.message = DiagnosticStatus.ERROR, "sensor thread stopped: commanding zero"
        else:
            health = self.controller.health(time.monotonic())
            if health.level == "error":
                status.level, status.message = DiagnosticStatus.ERROR, f"commanding zero: {health.message}"
            elif health.level == "waiting":
                status.level, status.message = DiagnosticStatus.WARN, f"commanding zero: {health.message}"
            elif self.e_stop:
                status.level, status.message = DiagnosticStatus.WARN, "e_stop engaged"
            else:
                status.level, status.message = DiagnosticStatus.OK, "running"
        lat = np.array(self._latencies) * 1e6 if self._latencies else np.zeros(1)
        values = {
            "camera_rate_hz": f"{rates['camera']:.1f}",
            "imu_rate_hz": f"{rates['imu']:.1f}",
            "step_latency_p50_us": f"{np.percentile(lat, 50):.1f}",
            "step_latency_p99_us": f"{np.percentile(lat, 99):.1f}",
            "rejected_messages": str(self._rejected),
            "callback_errors": str(self._errors),
        }
        if self.controller is not None:
            c = self.controller.counters
            values.update(steps=str(c.steps), stale_dropped=str(c.stale_dropped), late=str(c.late),
                          time_jumps=str(c.time_jumps), gap_resets=str(c.gap_resets), nan_resets=str(c.nan_resets))
            a = self.controller.adaptation
            values.update(adaptation_enabled=str(self.controller.settings.adaptation_enabled).lower(),
                          adaptation_updates=str(a.updates), adaptation_drift=f"{a.drift:.4f}")
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)

    # --- services --------------------------------------------------------------------------
    def _trigger(self, action):
        """A std_srvs/Trigger callback: action() on the running controller returns the message;
        with no model, or when the action raises, the call fails with the reason."""

        def callback(request, response):
            with self._lock:
                if self.controller is None:
                    response.success, response.message = False, f"no model: {self.model_error}"
                    return response
                try:
                    response.success, response.message = True, action()
                except (OSError, ValueError) as exc:
                    response.success, response.message = False, str(exc)
            return response

        return callback

    def _reset_state(self) -> str:
        self.controller.reset_state()
        return "liquid state reset"

    def _reset_adaptation(self) -> str:
        self.controller.reset_adaptation()
        return "readout restored to the shipped model"

    def _save_model(self) -> str:
        if self._backend != "torch":
            raise ValueError("saving an adapted model needs backend torch (the ONNX file holds no trainable model)")
        name = self.get_parameter("model_path").value
        source = resolve_model_path(name)
        # Next to the original; an installed model's directory may be read-only: then ROS_HOME.
        folder = source.parent
        if not os.access(folder, os.W_OK):
            folder = Path(os.environ.get("ROS_HOME", Path.home() / ".ros")).expanduser() / "liquid_control"
            folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{source.stem}.adapted-{time.strftime('%Y%m%d-%H%M%S')}.safetensors"
        self.controller.save_adapted(target, adapted_from=str(name))
        return str(target)


class SaliencyWorker:
    """~/saliency: a thread of its own computes the VisualBackProp map of the latest frame offered
    (runtime/saliency.py) and publishes the frame at the model's input size with the map over it
    (sensor_msgs/Image rgb8, the camera frame's header). The camera thread only offers: at most
    `rate` frames per second of header stamps, none while nobody subscribes; a frame offered while
    the thread is busy replaces the one waiting. torch is imported when the first map is made."""

    def __init__(self, publisher, logger) -> None:
        self.publisher, self._logger = publisher, logger
        self.published = self.computed = 0
        self._last: float | None = None  # the stamp of the last frame taken, s
        self._pending = None
        self._vbp = None
        self._cond = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="saliency", daemon=True)
        self._thread.start()

    def offer(self, policy, rgb: np.ndarray, header, rate: float) -> None:
        """From the camera callback: cheap, never waits on a map being made."""
        stamp = stamp_to_seconds(header.stamp)
        last = self._last
        if last is not None and last <= stamp < last + 1.0 / rate:
            return  # within the cap (a stamp going back restarts it)
        if self.publisher.get_subscription_count() == 0:
            return  # nobody looks: nothing is computed
        self._last = stamp
        with self._cond:
            self._pending = (policy, rgb, (header.stamp.sec, header.stamp.nanosec), header.frame_id)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify()
        self._thread.join(timeout=5.0)

    def _serve(self) -> None:
        while True:
            with self._cond:
                while self._running and self._pending is None:
                    self._cond.wait()
                if not self._running:
                    return
                job, self._pending = self._pending, None
            try:
                msg = self._image(*job)
            except Exception as exc:  # noqa: BLE001 - a picture for tools must never take the node down
                self._logger.error(f"{topics.SALIENCY} failed: {type(exc).__name__}: {exc}",
                                   throttle_duration_sec=THROTTLE_S)
                continue
            with self._cond:
                if not self._running:
                    return
                self.publisher.publish(msg)
                self.published += 1

    def _image(self, policy, rgb, stamp, frame_id) -> Image:
        from ..runtime.saliency import VisualBackProp, overlay

        if self._vbp is None or self._vbp.policy is not policy:  # a swapped model: its own encoder
            self._vbp = VisualBackProp(policy)
        frame = self._vbp.frame(rgb)
        picture = overlay(frame, self._vbp.from_frame(frame))
        self.computed += 1
        h, w = picture.shape[:2]
        msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=3 * w, data=picture.tobytes())
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
        msg.header.frame_id = frame_id
        return msg


def main(args=None) -> None:
    run_node("controller_node",
             "Liquid controller: camera/image_raw + imu/data in, cmd_vel out. Parameters in "
             "config/controller.yaml; ROS arguments after --ros-args.",
             LiquidControllerNode, args, errors=(ValueError,))


if __name__ == "__main__":
    main()
