"""controller_node: the ROS 2 face of LiquidController.

The sensors the running model reads in (sensor data QoS): the camera, and the IMU and wheel
odometry where the model reads them; a camera-only model's node subscribes to the camera alone, and
the subscriptions follow a model swapped in at runtime. The liquid state stepped on every message
by its header stamp, velocity commands out; tuned live through parameters, adapted online from teacher commands. All
decisions live in LiquidController; this node declares the interface, converts messages and
publishes.

Threads, and why: the safety decisions (the e-stop and the per-sensor watchdog) have a wait loop of
their own thread (sensor_loop.py), as does each sensor (parameter `sensor_thread`); the rest
(parameters, services, teacher, diagnostics) runs on the executor the user spins. A new model is
read, built and prepared in a loader thread (runtime/loading.py) and swapped in between two steps.
One lock keeps the controller and the command publisher consistent between these threads, and it
is only ever held for short work (a step, a swap, a zero command): nothing that can take long
(loading a model, writing one, diagnostics, saliency) holds it, so no safety decision waits behind
it. `~/saliency` (where the camera encoder looks, runtime/saliency.py) is computed in a thread of
its own from the latest frame, after that frame's command is out.

Takeovers and shadow mode: a person's joystick on teleop/cmd_vel takes over while its commands keep
coming (and teleop/enable says true, where teleop.require_enable): their commands go out on cmd_vel
through the same limits, in the safety thread like the e-stop, while the policy steps on. Every step's
command, whoever drives, goes out on ~/proposed_cmd_vel (TwistStamped with the stamp of the sensor
message it answers), and ~/intervention (std_msgs/Bool) says on every step, and at once when it
changes, whether a person commands: `record` keeps both, `train` weights takeovers, `info` counts
them. With publish_cmd_vel false nothing goes out on cmd_vel (shadow mode), only the proposals.

A managed (lifecycle) node when started with `--managed` (Nav2 and ros2_control bring robots up
that way): configure loads, checks and prepares the model and makes the subscriptions, publishers,
services and threads (a model that fails is a failed transition); activate starts commanding;
deactivate publishes one zero and stops commanding (the sensors are not stepped while inactive,
and activation starts the liquid state afresh); cleanup and shutdown release everything. Without
`--managed` the node goes through configure and activate by itself at start, has no lifecycle
services, and runs on without a model (commanding zero) as it always has.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, Imu
from std_msgs.msg import Bool, Float64MultiArray, MultiArrayDimension
from std_srvs.srv import Trigger

from .. import topics
from ..model.specs import ModelFileError, model_file
from ..runtime.controller import SENSORS, Command, LiquidController, Settings
from ..runtime.loading import LoadResult, ModelLoader, SaliencyWorker
from ..runtime.parameters import BY_NAME, BY_SETTING, settings_fields
from ..runtime.sensing import (
    SensorError,
    compressed_to_array,
    image_to_array,
    imu_to_array,
    odometry_to_array,
    seconds_to_stamp,
    stamp_to_seconds,
)
from .params import declare_all
from .runner import run_node
from .sensor_loop import SensorLoop

THROTTLE_S = 5.0
WATCHDOG_PERIOD_S = 0.05  # how often the safety thread checks the sensors (and republishes zeros)
STOP_THREADS_S = 2.0  # what destroy_node gives its threads to end, all together
UNLOADED_INPUTS = ("camera", "imu")  # subscribed while no model runs (what the shipped model reads)
INTERVENTION_PERIOD_S = 0.1  # ~/intervention repeated this often while the policy steps
SAMPLE_NAMES = {"imu": "IMU message", "odom": "odometry message"}


class LiquidControllerNode(LifecycleNode):
    def __init__(self, managed: bool = False, **kwargs) -> None:
        super().__init__("liquid_controller", enable_communication_interface=managed, **kwargs)
        self.managed = managed
        declare_all(self)
        self._backend = self.get_parameter("backend").value
        BY_NAME["backend"].check(self._backend)  # read-only: a wrong value stops the start
        BY_NAME["camera_transport"].check(self.get_parameter("camera_transport").value)  # read-only too
        # Held by whoever touches the controller or the command publisher, and only for short work:
        # the sensor threads for a step, the safety thread for the e-stop and the watchdog, the
        # loader for a swap, the executor for applying parameters, teacher, services and transitions.
        self._lock = threading.Lock()
        self.controller: LiquidController | None = None
        self.model_error = "not configured"
        # The last e_stop message, kept only to hand it to a controller made later (a model set
        # at runtime after a start without one): LiquidController decides what it means.
        self._e_stop_requested = False
        self.running_model = ""  # the model_path of the model that runs ("" none)
        # Models set at runtime: built in a thread of their own, swapped in by _model_ready.
        self._loader = ModelLoader(self._build, self._model_ready, name=f"{self.get_name()}_loader")
        self._reverting = False
        self.last_load_error = ""  # why the last model set at runtime was not loaded
        self._revert = self.create_guard_condition(self._revert_model_path)
        # After a swap, on the executor: the subscriptions made to follow the new model's sensors.
        self._resubscribe = self.create_guard_condition(self._sync_inputs)
        self._inputs_lock = threading.Lock()  # held while the sensor subscriptions change
        self._set_threads(self.get_parameter("num_threads").value)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # What configure makes and cleanup releases.
        self._configured = False
        self._active = False  # commands are published only while active (under the lock)
        self.cmd_pub = self.state_pub = self.diag_pub = self.proposed_pub = self.intervention_pub = None
        self._proposed_msg = TwistStamped()
        self._intervening = False  # what ~/intervention last said, and when
        self._intervention_said = -math.inf
        self.saliency: SaliencyWorker | None = None
        self.saliency_pub = None
        self._sensors: dict[str, SensorLoop] = {}  # per sensor read, with sensor_thread
        self._input_subs: dict[str, object] = {}  # per sensor read, on the executor (sensor_thread false)
        self._safety: SensorLoop | None = None
        self._entities: list[tuple[Callable, object]] = []  # (destroy, entity): subscriptions, services, timer
        self._last_publish = -math.inf
        self._last_zero = True  # whether the last command published was zero (the robot starts at rest)
        self._last_state_publish = -math.inf
        self._cache_output_params({})
        self._health = "waiting"
        self._latencies: list[float] = []
        self._window = dict.fromkeys(SENSORS, 0)
        self._window_start = time.monotonic()
        self._rejected = 0
        self._errors = 0
        if not managed:  # configure and activate at once; what fails is the start's error
            self._start_error: Exception | None = None
            self.trigger_configure()
            if self._start_error is not None:
                raise self._start_error
            self.trigger_activate()

    @property
    def e_stop(self) -> bool:
        return self.controller.e_stop if self.controller is not None else self._e_stop_requested

    @property
    def lifecycle_state(self) -> str:
        """unconfigured, inactive, active or finalized (rclpy's state machine)."""
        return self._state_machine.current_state[1]

    # --- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001 - a failed transition, said; rclpy would swallow it
            self._release()
            if not self.managed:
                self._start_error = exc
            elif isinstance(exc, (ModelFileError, ValueError)):
                self.get_logger().error(f"configure failed: {exc}")
            else:
                self.get_logger().error(f"configure failed: {''.join(traceback.format_exception(exc)).strip()}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            if self.controller is not None:
                self.controller.reset_state()  # time starts afresh: nothing was stepped while inactive
            self._active, self._last_zero, self._health = True, True, "waiting"
        if self.managed:
            self.get_logger().info("active: commanding")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_commanding("inactive")
        self.get_logger().info("inactive: one zero command sent, commanding stopped")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_commanding("shutdown")
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_commanding("error")
        self._release()
        return TransitionCallbackReturn.SUCCESS  # back to unconfigured: configure may be tried again

    def _stop_commanding(self, reason: str) -> None:
        with self._lock:
            if self._active:
                self._publish(Command(self._now(), 0.0, 0.0, reason), force=True)
            self._active = False

    def _configure(self) -> None:
        """The model (loaded, checked and prepared here, before anything commands), then every
        subscription, publisher, service and thread of the node."""
        path = self.get_parameter("model_path").value
        if path:
            try:
                self.controller, self.running_model, self.model_error = self._build(path), path, ""
                self.get_logger().info(f"model {path} running")  # as a swap says it: the start is done
            except ModelFileError as exc:
                if self.managed:
                    raise
                self.model_error = str(exc)
                self.get_logger().error(f"no model running, commanding zero: {exc}")
        elif self.managed:
            raise ValueError("model_path is empty")
        else:
            self.model_error = "model_path is empty"
        self._install_cmd_publisher(*self._new_cmd_publisher(self.get_parameter("cmd_vel_stamped").value))
        self.proposed_pub = self.create_publisher(TwistStamped, topics.PROPOSED, 10)
        self.intervention_pub = self.create_publisher(Bool, topics.INTERVENTION, 10)
        # Outputs for tools: QoS mismatches there are reported on the tool's side, so no event
        # handlers here (each one is polled on every executor wait).
        quiet = PublisherEventCallbacks(use_default_callbacks=False)
        self.state_pub = self.create_publisher(Float64MultiArray, topics.LIQUID_STATE, 10, event_callbacks=quiet)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10, event_callbacks=quiet)
        # ~/saliency needs the torch encoder's feature maps: none with backend onnx (said once).
        if self._backend == "torch":
            self.saliency_pub = self.create_publisher(Image, topics.SALIENCY, 5, event_callbacks=quiet)
            self.saliency = SaliencyWorker(self._saliency_watched, self._publish_saliency, self._saliency_failed)
        elif self.get_parameter("saliency_rate").value > 0.0:
            self.get_logger().info(
                f"{topics.SALIENCY} is not available with backend {self._backend}: "
                "VisualBackProp needs the feature maps of the torch camera encoder"
            )
        teacher_type = TwistStamped if self.get_parameter("teacher_stamped").value else Twist
        self._entities.append(
            (
                self.destroy_subscription,
                self.create_subscription(
                    teacher_type,
                    topics.TEACHER,
                    self._on_teacher,
                    10,
                    event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False),
                ),
            )
        )
        # The e-stop and the watchdog in a thread of their own: never behind a parameter callback,
        # a service or anything else the executor runs.
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self._safety = SensorLoop(self, self._sensor_failure, name="safety")
        self._safety.subscribe(Bool, topics.E_STOP, self._on_e_stop, latched)
        # A person taking over is a safety action too: never behind the executor's work.
        teleop_type = TwistStamped if self.get_parameter("teleop.stamped").value else Twist
        self._safety.subscribe(teleop_type, topics.TELEOP, self._on_teleop, 10)
        self._safety.subscribe(Bool, topics.TELEOP_ENABLE, self._on_teleop_enable, 10)
        self._safety.every(WATCHDOG_PERIOD_S, self._watchdog)
        for name, action in (
            ("reset_state", self._reset_state),
            ("reset_adaptation", self._reset_adaptation),
            ("save_model", self._save_model),
        ):
            self._entities.append(
                (self.destroy_service, self.create_service(Trigger, f"~/{name}", self._trigger(action)))
            )
        self._entities.append((self.destroy_timer, self.create_timer(1.0, self._publish_diagnostics)))
        self._configured = True
        self._safety.start()
        self._sync_inputs()

    def _input(self, kind: str) -> tuple[type, str, Callable]:
        """The message type, topic and callback of a sensor."""
        if kind == "camera":
            if self.get_parameter("camera_transport").value == "compressed":
                return CompressedImage, topics.CAMERA_COMPRESSED, self._on_image
            return Image, topics.CAMERA, self._on_image
        if kind == "imu":
            return Imu, topics.IMU, self._on_imu
        return Odometry, topics.ODOM, self._on_odom

    def _sync_inputs(self) -> None:
        """Subscribe to the sensors the running model reads, and to no other (the camera and IMU
        while no model runs): at configure, and on the executor after a swap. With sensor_thread,
        each sensor in a wait loop of its own thread: an IMU step never waits behind a frame's
        conversion and encoding (those run outside the lock, too)."""
        with self._inputs_lock:
            with self._lock:
                if not self._configured:
                    return
                wanted = self.controller.sensors if self.controller is not None else UNLOADED_INPUTS
            for kind in [k for k in (*self._sensors, *self._input_subs) if k not in wanted]:
                if kind in self._sensors:
                    loop = self._sensors.pop(kind)
                    loop.stop(timeout=STOP_THREADS_S)  # a callback in progress ends first
                    loop.destroy()
                else:
                    self.destroy_subscription(self._input_subs.pop(kind))
            for kind in wanted:
                if kind in self._sensors or kind in self._input_subs:
                    continue
                msg_type, topic, callback = self._input(kind)
                if self.get_parameter("sensor_thread").value:
                    loop = SensorLoop(self, self._sensor_failure, name=topic.split("/")[0])
                    loop.subscribe(msg_type, topic, callback, qos_profile_sensor_data)
                    self._sensors[kind] = loop
                    loop.start()
                else:
                    self._input_subs[kind] = self.create_subscription(
                        msg_type,
                        topic,
                        callback,
                        qos_profile_sensor_data,
                        event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False),
                    )

    def _release(self, timeout: float = STOP_THREADS_S) -> None:
        """Stop the node's threads (within `timeout` all together: one that does not end in time is
        named in the log and left to end with the process) and destroy what configure made."""
        deadline = time.monotonic() + timeout
        self._loader.cancel()  # a build in progress is dropped, never installed
        with self._inputs_lock:
            sensors, self._sensors = list(self._sensors.values()), {}
            subscriptions, self._input_subs = list(self._input_subs.values()), {}
        loops = [loop for loop in (self._safety, *sensors) if loop is not None]
        for loop in loops:
            loop.stop(wait=False)  # no callback may run on a node being released
        for loop in loops:
            loop.join(max(deadline - time.monotonic(), 0.0))
        stuck = [loop.name for loop in loops if loop.running]
        if stuck:
            self.get_logger().warning(
                f"threads {', '.join(stuck)} did not stop within {timeout:g} s; leaving them to end with the process"
            )
        if self.saliency is not None:
            self.saliency.stop(max(deadline - time.monotonic(), 0.0))
        for loop in loops:
            loop.destroy()
        for subscription in subscriptions:
            self.destroy_subscription(subscription)
        for destroy, entity in self._entities:
            destroy(entity)
        with self._lock:
            for publisher in (
                self.cmd_pub,
                self.state_pub,
                self.diag_pub,
                self.saliency_pub,
                self.proposed_pub,
                self.intervention_pub,
            ):
                if publisher is not None:
                    self.destroy_publisher(publisher)
            self.cmd_pub = self.state_pub = self.diag_pub = self.saliency_pub = None
            self.proposed_pub = self.intervention_pub = None
            self.saliency, self._safety, self._entities = None, None, []
            self.controller, self.running_model, self.model_error = None, "", "not configured"
            self._active = self._configured = False

    def destroy_node(self) -> None:
        """Release everything (threads within STOP_THREADS_S) and end the loader. No zero goes out
        here: after Ctrl-C the context is already shut down (the shutdown transition sends one)."""
        with self._lock:
            self._active = False
        self._release()
        self._loader.stop(timeout=0.5)
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
            from ..model.modelfile import load_policy

            return load_policy(path)
        except ModelFileError:
            raise
        except ImportError as exc:
            raise ModelFileError(
                path,
                f"backend {self._backend} cannot run here ({exc}): install "
                "liquid_control[full] for torch, or export the model and run "
                "backend:=onnx with liquid_control[edge]",
            ) from None
        except Exception as exc:  # noqa: BLE001 - a model file must never take the node down
            raise ModelFileError(path, f"cannot be loaded: {type(exc).__name__}: {exc}") from None

    def _build(self, path: str) -> LiquidController:
        """A controller running the model at `path` with the current settings and e-stop, built
        and prepared without touching the running one (the loader thread calls this)."""
        policy, config = self._load(path)
        with self._lock:
            settings = self.controller.settings if self.controller is not None else self._settings_from_params()
            e_stop = self.e_stop
        try:
            return LiquidController(policy, config, settings, e_stop=e_stop)
        except Exception as exc:  # noqa: BLE001 - prepare() says why; a model must never take the node down
            raise ModelFileError(
                path, str(exc) if isinstance(exc, ValueError) else f"cannot run: {type(exc).__name__}: {exc}"
            ) from None

    def _check_model(self, path: str) -> None:
        """What can be said of a model file at once, from its header (the parameter callback's
        refusals): ModelFileError for a path that is empty, missing or not a regular file, or a
        file whose config or sizes are wrong. Building it is the loader's work."""
        if self._backend == "onnx":
            model_file(path)
            return
        from ..model.modelfile import check_model_file

        check_model_file(path)

    def _model_ready(self, result: LoadResult) -> None:
        """The loader's answer (in its thread): the new controller swapped in between two steps,
        or the failure said and model_path returned to the model that runs."""
        with self._lock:
            if not self._loader.current(result.generation) or not self._configured:
                return  # a later model_path was set meanwhile (that one decides), or cleaned up
            if result.ok:
                fresh: LiquidController = result.value
                if self.controller is None:
                    fresh.update_settings(**dataclasses.asdict(self._settings_from_params()))
                    fresh.e_stop = self._e_stop_requested
                    self.controller = fresh
                else:
                    self.controller.swap_policy(fresh.prepared)
                self.running_model, self.model_error = result.path, ""
        if result.ok:
            self.get_logger().info(f"model {result.path} running")
            self._resubscribe.trigger()  # to the sensors it reads, on the executor
        else:
            self.last_load_error = f"model not loaded, the old one runs on: {result.error}"
            self.get_logger().error(self.last_load_error)
            self._revert.trigger()  # model_path back to what runs, on the executor

    def _revert_model_path(self) -> None:
        if self._loader.loading is not None or self.get_parameter("model_path").value == self.running_model:
            return
        self._reverting = True
        try:
            self.set_parameters([Parameter("model_path", value=self.running_model)])
        finally:
            self._reverting = False

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Check every change first, apply them together, or refuse with a reason. A new model is
        checked here from its header and built by the loader thread (the old one runs on)."""
        changes = {p.name: p.value for p in params}
        settings = settings_fields(changes)
        with self._lock:
            current = self.controller.settings if self.controller else self._settings_from_params()
        try:
            new_settings = dataclasses.replace(current, **settings)
            new_settings.check()
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        load = None
        if (
            "model_path" in changes
            and not self._reverting
            and changes["model_path"] != self.get_parameter("model_path").value
        ):
            load = changes["model_path"]
            try:
                self._check_model(load)
            except ModelFileError as exc:
                return SetParametersResult(successful=False, reason=f"model not loaded, the old one runs on: {exc}")
        publisher = None
        if "cmd_vel_stamped" in changes and self._configured:
            publisher = self._new_cmd_publisher(changes["cmd_vel_stamped"])
        if "num_threads" in changes:
            self._set_threads(changes["num_threads"])
        with self._lock:
            if self.controller is not None:
                self.controller.update_settings(**dataclasses.asdict(new_settings))
            old_publisher = self._install_cmd_publisher(*publisher) if publisher else None
            if changes.get("publish_cmd_vel") and not self._publish_cmd_vel and self.controller is not None:
                self.controller.start_from_rest()  # out of shadow mode: the first command is zero, then a ramp
            self._cache_output_params(changes)
        if old_publisher is not None:
            self.destroy_publisher(old_publisher)
        if load is not None and self._configured:  # unconfigured: configure loads it
            self._loader.request(load)
            self.get_logger().info(f"loading model {load} (the old one runs on meanwhile)")
        elif self._reverting:
            self._loader.cancel()
        return SetParametersResult(successful=True)

    def _cache_output_params(self, changes: dict) -> None:
        """Parameters read on every message, kept as attributes (get_parameter costs ~10 us)."""
        for name in (
            "max_publish_rate",
            "state_publish_rate",
            "frame_id",
            "publish_state",
            "max_image_pixels",
            "saliency_rate",
            "publish_cmd_vel",
        ):
            setattr(self, f"_{name}", changes.get(name, self.get_parameter(name).value))

    def _new_cmd_publisher(self, stamped: bool):
        msg = TwistStamped() if stamped else Twist()
        return stamped, msg, self.create_publisher(type(msg), topics.CMD_VEL, 10)

    def _install_cmd_publisher(self, stamped: bool, msg, publisher):
        """Use a new command publisher (under the lock); returns the old one to destroy."""
        old, self.cmd_pub = getattr(self, "cmd_pub", None), publisher
        self.cmd_stamped, self._cmd_msg = stamped, msg
        return old

    # --- sensors ---------------------------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        if not self._active:
            return  # inactive: not stepped (activation starts the state afresh)
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
                self._handle(
                    msg.header.stamp,
                    lambda: self.controller.on_image(stamp_to_seconds(msg.header.stamp), frame, received),
                )
        # After the command is out, and outside the lock: a frame for ~/saliency, now and then.
        if frame is not None and self.saliency is not None and self._saliency_rate > 0.0:
            stamp = msg.header.stamp
            self.saliency.offer(
                controller.policy, frame.rgb, (stamp.sec, stamp.nanosec), msg.header.frame_id, self._saliency_rate
            )

    def _saliency_watched(self) -> bool:
        publisher = self.saliency_pub
        return publisher is not None and publisher.get_subscription_count() > 0

    def _publish_saliency(self, picture: np.ndarray, stamp: tuple[int, int], frame_id: str) -> None:
        """A map from the saliency thread (runtime/loading.SaliencyWorker) as an rgb8 Image."""
        h, w = picture.shape[:2]
        msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=3 * w, data=picture.tobytes())
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
        msg.header.frame_id = frame_id
        publisher = self.saliency_pub
        if publisher is not None:
            publisher.publish(msg)

    def _saliency_failed(self, error: str) -> None:  # a picture for tools must never take the node down
        self.get_logger().error(f"{topics.SALIENCY} failed: {error}", throttle_duration_sec=THROTTLE_S)

    def _to_array(self, msg, controller: LiquidController | None) -> np.ndarray:
        """A camera message as RGB; its size is checked before any conversion or decoding."""
        if isinstance(msg, CompressedImage):
            width, height = (
                (controller.run.image_width, controller.run.image_height) if controller is not None else (0, 0)
            )
            # Decoded at the smallest JPEG scale that still covers the model's input.
            return compressed_to_array(msg, width, height, self._max_image_pixels, dtype=np.uint8)
        return image_to_array(msg, self._max_image_pixels, dtype=np.uint8)  # the size before any conversion

    def _on_imu(self, msg: Imu) -> None:
        self._on_sample("imu", msg, imu_to_array)

    def _on_odom(self, msg: Odometry) -> None:
        self._on_sample("odom", msg, odometry_to_array)

    def _on_sample(self, kind: str, msg, to_array: Callable) -> None:
        """An IMU or odometry message: its values to the controller, which steps on them."""
        if not self._active:
            return
        received = time.monotonic()
        name = SAMPLE_NAMES[kind]
        try:
            values = to_array(msg)
        except SensorError as exc:
            with self._lock:
                self._window[kind] += 1
                self._reject(f"{name} rejected: {exc}")
                if self.controller is not None:
                    self.controller.note_refused(kind, received, f"messages rejected ({exc})")
            return
        with self._lock:
            self._window[kind] += 1
            if self.controller is None:
                return
            rejected = self.controller.counters.rejected
            before = rejected.get(f"{kind}_not_finite", 0)
            self._handle(
                msg.header.stamp,
                lambda: self.controller.on_sensor(kind, stamp_to_seconds(msg.header.stamp), values, received),
            )
            if rejected.get(f"{kind}_not_finite", 0) > before:
                self._reject(f"{name} rejected: NaN or Inf in a field the model reads")

    def _sensor_failure(self, exc: BaseException) -> None:
        """A sensor or safety callback raised (a defect, not bad input): command zero, log it, go on."""
        with self._lock:
            self._errors += 1
            stamp = self._now()
            command = self.controller.stop(stamp, "error") if self.controller else Command(stamp, 0.0, 0.0, "error")
            self._publish(command, force=True)
        self.get_logger().error(
            f"sensor callback failed, commanding zero: {''.join(traceback.format_exception(exc)).strip()}",
            throttle_duration_sec=THROTTLE_S,
        )

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
        self._publish_proposal(command, header_stamp)
        if not command.proposal:  # during a takeover the person's commands go out, not this
            self._publish(command, header_stamp=header_stamp)

    def _on_teacher(self, msg) -> None:
        twist = msg.twist if isinstance(msg, TwistStamped) else msg
        with self._lock:
            if self.controller is not None:
                self.controller.on_teacher(twist.linear.x, twist.angular.z)

    def _on_teleop(self, msg) -> None:
        """In the safety thread: a person's command, out at once through the limits while it makes
        a takeover."""
        twist = msg.twist if isinstance(msg, TwistStamped) else msg
        with self._lock:
            if self.controller is None or not self._active:
                return  # no limits to put it through: nothing but zero goes out without a model
            command = self.controller.on_teleop(self._now(), twist.linear.x, twist.angular.z, time.monotonic())
            if command is not None:
                self._publish(command)
            self._say_intervention(self.controller.takeover(time.monotonic()), changed_only=True)

    def _on_teleop_enable(self, msg: Bool) -> None:
        with self._lock:
            if self.controller is not None:
                self.controller.on_teleop_enable(msg.data, time.monotonic())

    def _say_intervention(self, active: bool, changed_only: bool = False) -> None:
        """~/intervention (the caller holds the lock): at once on a change, and with the steps'
        proposals every INTERVENTION_PERIOD_S (a bag's reader holds the last value between)."""
        now = time.monotonic()
        changed = active != self._intervening
        if not changed and (changed_only or now - self._intervention_said < INTERVENTION_PERIOD_S):
            return
        if changed:
            self.get_logger().info("takeover: the person commands" if active else "takeover ended: the policy commands")
        self._intervening, self._intervention_said = active, now
        if self.intervention_pub is not None:
            self.intervention_pub.publish(Bool(data=active))

    def _publish_proposal(self, command: Command, header_stamp) -> None:
        """The policy's command of a step on ~/proposed_cmd_vel, and whether a person commands
        (the caller holds the lock)."""
        if not self._active or self.proposed_pub is None:
            return
        self._say_intervention(command.proposal)
        if self.proposed_pub.get_subscription_count() == 0:
            return  # nobody listens (a record does): do not fill the message
        msg = self._proposed_msg
        stamp = msg.header.stamp
        stamp.sec, stamp.nanosec = header_stamp.sec, header_stamp.nanosec
        msg.header.frame_id = self._frame_id
        msg.twist.linear.x, msg.twist.angular.z = command.linear_x, command.angular_z
        self.proposed_pub.publish(msg)

    def _on_e_stop(self, msg: Bool) -> None:
        """In the safety thread: an engaged e-stop's zero goes out at once, whatever the cap."""
        with self._lock:
            self._e_stop_requested = engaged = bool(msg.data)
            command = self.controller.set_e_stop(engaged, self._now()) if self.controller is not None else None
            if engaged:
                self._publish(command or Command(self._now(), 0.0, 0.0, "e_stop"), force=True)
        if engaged:
            self.get_logger().warning("e_stop engaged: zero commands until released")
        else:
            self.get_logger().info("e_stop released")

    def _reject(self, message: str) -> None:
        self._rejected += 1
        self.get_logger().warning(message, throttle_duration_sec=THROTTLE_S)

    # --- output ----------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _publish(self, command: Command, force: bool = False, header_stamp=None) -> None:
        """Publish a command (the caller holds the lock). max_publish_rate caps every message, zeros
        included, except `force` (an e-stop) and the first zero after motion: a stop goes out at once."""
        if not self._active or not self._publish_cmd_vel:
            return  # a managed node commands only while active; in shadow mode never
        rate = self._max_publish_rate
        now = time.monotonic()
        zero = command.linear_x == 0.0 and command.angular_z == 0.0
        if rate > 0.0 and not force and not (zero and not self._last_zero) and now - self._last_publish < 1.0 / rate:
            return
        self._last_publish, self._last_zero = now, zero
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
        if (
            command.reason == "policy"
            and self._publish_state
            and (state_rate <= 0.0 or now - self._last_state_publish >= 1.0 / state_rate)
        ):
            self._last_state_publish = now
            if self.state_pub.get_subscription_count() == 0:
                return  # nobody listens: do not build the message
            # A 2 x n matrix: row 0 the hidden state, row 1 each neuron's time constant (s).
            state = Float64MultiArray()
            hidden, tau = self.controller.hidden, self.controller.time_constants
            n = hidden.size
            state.layout.dim = [
                MultiArrayDimension(label="state_then_tau_s", size=2, stride=2 * n),
                MultiArrayDimension(label="neuron", size=n, stride=n),
            ]
            state.data = hidden.tolist() + tau.tolist()
            self.state_pub.publish(state)

    def _watchdog(self) -> None:
        """In the safety thread, every WATCHDOG_PERIOD_S: the controller's watchdog on the steady
        clock (it must also fire when a simulator, and with it /clock, stalls); its zero commands
        carry the node clock's stamp."""
        with self._lock:
            if not self._active:
                return
            stamp = self._now()
            if self.controller is None:
                self._publish(Command(stamp, 0.0, 0.0, "no_model"))
                return
            now = time.monotonic()
            health = self.controller.health(now)
            command = self.controller.watchdog(now, stamp)
            if command is not None:
                self._publish(command)
            self._say_intervention(self.controller.takeover(now), changed_only=True)
            previous, self._health = self._health, health.level
        if health.level == previous:
            return
        if health.level == "error":
            self.get_logger().error(f"commanding zero: {health.message}")
        elif health.level == "ok" and previous == "error":
            self.get_logger().info("sensor data flowing again")
        elif health.level == "ok":
            self.get_logger().info("sensor data flowing")

    def _publish_diagnostics(self) -> None:
        """Every second, on the executor: what is needed is copied under the lock, the rest is
        worked out and published outside it."""
        loading = self._loader.loading
        with self._lock:
            if not self._configured:
                return  # a tick already queued when cleanup destroyed the timer
            sensors_stopped = any(not loop.running for loop in (self._safety, *tuple(self._sensors.values())))
            diag_pub = self.diag_pub
            now = time.monotonic()
            elapsed = max(now - self._window_start, 1e-6)
            rates = {k: v / elapsed for k, v in self._window.items()}
            self._window = dict.fromkeys(SENSORS, 0)
            self._window_start = now
            controller = self.controller
            latencies = np.array(self._latencies) * 1e6 if self._latencies else np.zeros(1)
            health = controller.health(now) if controller is not None else None
            e_stop = self.e_stop
            counters = dataclasses.replace(controller.counters) if controller is not None else None
            adaptation = (
                (controller.settings.adaptation_enabled, controller.adaptation.updates, controller.adaptation.drift)
                if controller is not None
                else None
            )
            running, error = self.running_model, self.model_error
        status = DiagnosticStatus(name="liquid_controller: control", hardware_id=self.get_fully_qualified_name())
        if controller is None:
            status.level, status.message = DiagnosticStatus.ERROR, f"no model: {error}"
        elif sensors_stopped:
            status.level, status.message = DiagnosticStatus.ERROR, "sensor thread stopped: commanding zero"
        elif health.level == "error":
            status.level, status.message = DiagnosticStatus.ERROR, f"commanding zero: {health.message}"
        elif health.level == "waiting":
            status.level, status.message = DiagnosticStatus.WARN, f"commanding zero: {health.message}"
        elif e_stop:
            status.level, status.message = DiagnosticStatus.WARN, "e_stop engaged"
        else:
            status.level, status.message = DiagnosticStatus.OK, "running"
        values = {
            "camera_rate_hz": f"{rates['camera']:.1f}",
            "imu_rate_hz": f"{rates['imu']:.1f}",
            "odom_rate_hz": f"{rates['odom']:.1f}",
            "inputs": ", ".join(controller.sensors) if controller is not None else "",
            "step_latency_p50_us": f"{np.percentile(latencies, 50):.1f}",
            "step_latency_p99_us": f"{np.percentile(latencies, 99):.1f}",
            "rejected_messages": str(self._rejected),
            "callback_errors": str(self._errors),
            "model": running,
            "model_loading": loading or "",
            "model_load_error": self.last_load_error,
        }
        if counters is not None:
            c = counters
            values.update(
                steps=str(c.steps),
                stale_dropped=str(c.stale_dropped),
                late=str(c.late),
                time_jumps=str(c.time_jumps),
                gap_resets=str(c.gap_resets),
                nan_resets=str(c.nan_resets),
            )
            enabled, updates, drift = adaptation
            values.update(
                adaptation_enabled=str(enabled).lower(),
                adaptation_updates=str(updates),
                adaptation_drift=f"{drift:.4f}",
            )
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        diag_pub.publish(array)

    # --- services --------------------------------------------------------------------------
    def _trigger(self, action):
        """A std_srvs/Trigger callback: action() (called under the lock, so it must be short) on
        the running controller returns the message, or a callable to finish outside the lock that
        returns it; with no model, or when the action raises, the call fails with the reason."""

        def callback(request, response):
            try:
                with self._lock:
                    if self.controller is None:
                        response.success, response.message = False, f"no model: {self.model_error}"
                        return response
                    result = action()
                response.success, response.message = True, result() if callable(result) else result
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

    def _save_model(self):
        """Under the lock: the adapted readout, copied. Outside it: the file, written into
        adapted_model_dir (never the model's own folder: an installed model's share/ is not the
        user's), at most max_saved_models of them."""
        if self._backend != "torch":
            raise ValueError("saving an adapted model needs backend torch (the ONNX file holds no trainable model)")
        adapted = self.controller.adapted()
        name = self.running_model
        folder_param = self.get_parameter("adapted_model_dir").value
        limit = self.get_parameter("max_saved_models").value

        def write() -> str:
            folder = (
                Path(folder_param).expanduser()
                if folder_param
                else Path(os.environ.get("ROS_HOME", Path.home() / ".ros")).expanduser()
                / "liquid_control"
                / "adapted_models"
            )
            folder.mkdir(parents=True, exist_ok=True)
            if not folder.is_dir():
                raise ValueError(f"adapted_model_dir {folder} is not a folder")
            stem = Path(name).stem if name else "model"
            saved = sorted(folder.glob("*.adapted-*.safetensors"))
            if len(saved) >= limit:
                raise ValueError(
                    f"{len(saved)} adapted models already in {folder} (max_saved_models {limit}): "
                    "remove some, or raise max_saved_models"
                )
            target = (
                folder / f"{stem}.adapted-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}.safetensors"
            )
            adapted.save(target, adapted_from=str(name))
            return str(target)

        return write


def _options(parser) -> None:
    parser.add_argument(
        "--managed",
        action="store_true",
        help="a lifecycle node: wait in unconfigured for configure and activate (from a "
        "lifecycle manager or `ros2 lifecycle set`) instead of starting at once",
    )


def main(args=None) -> None:
    run_node(
        "controller_node",
        "Liquid controller: camera/image_raw + imu/data in, cmd_vel out. Parameters in "
        "config/controller.yaml; ROS arguments after --ros-args.",
        lambda options: LiquidControllerNode(managed=options.managed),
        args,
        errors=(ValueError,),
        options=_options,
        exit_process=True,
    )


if __name__ == "__main__":
    main()
