"""TrackEnv: the robot on a track in MuJoCo, as a stream of timestamped sensor events (camera at
30 Hz, IMU at 200 Hz, each on its own clock, optional jitter, drops, noise, biases and motion blur)
that takes velocity commands (through the robot's motor gain and command delay), with ground truth
(pose, cross-track error, progress, off-road) for experts and metrics.
Deterministic under a seed. The same events drive LiquidController here, in the ROS sim_node, and
in recorded bags.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

# Offscreen rendering: without a display (a server, a container, CI), GLFW cannot make a context and
# MuJoCo fails at the first Renderer; EGL renders headless on the CPU. Set before MuJoCo loads; an
# explicit MUJOCO_GL is kept.
if "MUJOCO_GL" not in os.environ and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ["MUJOCO_GL"] = "egl"

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from transforms3d.euler import euler2quat, quat2euler

from .track import Track
from .world import RobotSpec, distractors_along, scene_xml


@dataclass(frozen=True)
class SensorConfig:
    camera_hz: float = 30.0
    imu_hz: float = 200.0
    camera_jitter: float = 0.002  # s: each frame's stamp moves by up to this, uniformly
    camera_drop: float = 0.0  # probability that a frame is lost
    gyro_noise: float = 0.005  # rad/s, white, per sample
    accel_noise: float = 0.05  # m/s^2, white, per sample
    gyro_bias: float = 0.0  # rad/s, on z
    accel_bias: float = 0.0  # m/s^2, on x and y
    image_noise: float = 0.0  # std of per-pixel noise, in [0, 1] units
    exposure: float = 0.0  # s the shutter is open before each frame's stamp (0: instantaneous)
    exposure_samples: int = 8  # renders averaged over the exposure (motion blur), when exposure > 0


@dataclass(frozen=True)
class SensorEvent:
    stamp: float
    kind: str  # "camera" or "imu"
    data: np.ndarray  # camera: (h, w, 3) float32 RGB in [0, 1]; imu: sensing.IMU_FIELDS values


class TrackEnv:
    def __init__(
        self,
        track: Track,
        robot: RobotSpec | None = None,
        sensors: SensorConfig | None = None,
        seed: int = 0,
        timestep: float = 0.001,
        distractors: int = 0,
    ) -> None:
        robot, sensors = robot or RobotSpec(), sensors or SensorConfig()
        self.track, self.robot, self.sensors = track, robot, sensors
        self.distractors = distractors_along(track, distractors, seed)
        xml, assets = scene_xml(track, robot, timestep=timestep, distractors=self.distractors)
        self.model = mujoco.MjModel.from_xml_string(xml, assets)
        self.data = mujoco.MjData(self.model)
        look = track.look
        if look.fog_end:
            # MuJoCo's fog distances are in units of the model's extent, known once compiled; the
            # renderer's context reads them when it is made.
            self.model.vis.map.fogstart = look.fog_start / self.model.stat.extent
            self.model.vis.map.fogend = look.fog_end / self.model.stat.extent
        self._renderer = mujoco.Renderer(self.model, robot.image_height, robot.image_width)
        if look.fog_end:
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_FOG] = 1
        self._pending: deque[tuple[float, tuple[float, ...]]] = deque()  # delayed commands (due, actuator values)
        self._exposure: list[float] = []  # the next frame's sub-frame times not yet rendered
        self._exposed = np.zeros((robot.image_height, robot.image_width, 3))
        self._sensor = {name: self.model.sensor(name).adr[0] for name in ("accel", "gyro", "orientation")}
        driven = (
            ("rear_left_wheel", "rear_right_wheel") if robot.drive == "ackermann" else ("left_wheel", "right_wheel")
        )
        self._wheel_dofs = [int(self.model.joint(name).dofadr[0]) for name in driven]
        self._seed = seed
        self.reset()

    # --- episode ---------------------------------------------------------------------------
    def reset(self, s: float = 0.0, offset: float = 0.0, heading_error: float = 0.0, seed: int | None = None) -> None:
        """Place the robot at progress s, `offset` m left of the centreline, turned by
        heading_error from the road direction; time starts at 0."""
        self.rng = np.random.default_rng(self._seed if seed is None else seed)
        mujoco.mj_resetData(self.model, self.data)
        x, y, yaw = self.track.pose_at(s, offset)
        yaw += heading_error
        self.data.qpos[0:2] = (x, y)
        self.data.qpos[3:7] = euler2quat(0.0, 0.0, yaw, axes="sxyz")
        mujoco.mj_forward(self.model, self.data)
        self._next_imu = 0.0
        self._camera_index = 0
        self._next_camera = self._camera_time(0)
        self._open_shutter()
        self._start_s = s
        self._laps_s = 0.0
        self._last_s = self.track.project(x, y)["s"]
        self._pending.clear()
        self.data.ctrl[:] = 0.0

    def close(self) -> None:
        self._renderer.close()

    # --- control ---------------------------------------------------------------------------
    def command(self, linear: float, angular: float) -> None:
        """A body-frame velocity command (m/s, rad/s) for the actuators, reaching them command_delay
        s of sim time later. A differential drive's two wheel servos take (linear -+ angular * b / 2)
        / r, scaled by motor_gain. A car steers to the curvature angular / linear within full lock
        (CarSpec.steering; each front wheel at its Ackermann angle) and drives each rear wheel at
        its speed on that circle, scaled by motor_gain: a yaw rate beyond what the steering allows
        at that speed is not reached, as on a real car."""
        robot = self.robot
        r, b, gain = robot.wheel_radius, robot.wheel_separation, robot.motor_gain
        if robot.drive == "ackermann":
            delta = robot.steering(linear, angular)
            kappa = math.tan(delta) / robot.wheelbase
            ctrl = (
                gain * linear * (1.0 - kappa * b / 2) / r,
                gain * linear * (1.0 + kappa * b / 2) / r,
                *robot.wheel_angles(delta),
            )
        else:
            ctrl = (gain * (linear - angular * b / 2) / r, gain * (linear + angular * b / 2) / r)
        if robot.command_delay > 0:
            self._pending.append((self.time + robot.command_delay, ctrl))
        else:
            self.data.ctrl[: len(ctrl)] = ctrl

    # --- sensing ---------------------------------------------------------------------------
    @property
    def time(self) -> float:
        return float(self.data.time)

    def events(self, duration: float) -> Iterator[SensorEvent]:
        """Sensor events for the next `duration` s of sim time, in stamp order. Physics advances
        between events, so a command given after an event acts from that moment on."""
        end = self.time + duration
        while True:
            camera_next = self._next_camera <= self._next_imu
            stamp = self._next_camera if camera_next else self._next_imu
            if stamp > end:
                return
            self._advance_to(stamp)
            if camera_next:
                self._camera_index += 1
                self._next_camera = self._camera_time(self._camera_index)
                dropped = self.rng.random() < self.sensors.camera_drop
                image = None if dropped else self._exposed_frame()
                self._open_shutter()
                if image is not None:
                    yield SensorEvent(stamp, "camera", image)
            else:
                self._next_imu = stamp + 1.0 / self.sensors.imu_hz
                yield SensorEvent(stamp, "imu", self.imu())

    def _camera_time(self, index: int) -> float:
        jitter = self.sensors.camera_jitter
        t = index / self.sensors.camera_hz + (self.rng.uniform(-jitter, jitter) if jitter else 0.0)
        return max(t, 0.0)

    def _advance_to(self, t: float) -> None:
        dt = self.model.opt.timestep
        while self.data.time + dt / 2 < t:
            self._expose(dt)
            while self._pending and self._pending[0][0] <= self.data.time + dt / 2:
                ctrl = self._pending.popleft()[1]
                self.data.ctrl[: len(ctrl)] = ctrl
            mujoco.mj_step(self.model, self.data)
            self._track_progress()
        self._expose(dt)

    # Motion blur: a frame stamped T is the mean of exposure_samples renders spread evenly over
    # [T - exposure, T], each of the state at its own time (physics steps between them).
    def _open_shutter(self) -> None:
        cfg = self.sensors
        if cfg.exposure > 0 and cfg.exposure_samples > 1:
            n, end = cfg.exposure_samples, self._next_camera
            self._exposure = [end - cfg.exposure * (n - 1 - k) / (n - 1) for k in range(n - 1)]
            self._exposed[:] = 0.0

    def _expose(self, dt: float) -> None:
        while self._exposure and self._exposure[0] <= self.data.time + dt / 2:
            self._exposure.pop(0)
            self._exposed += self._render_rgb()

    def _exposed_frame(self) -> np.ndarray:
        cfg = self.sensors
        if not (cfg.exposure > 0 and cfg.exposure_samples > 1):
            return self.render()
        self._expose(math.inf)  # sub-frames not reached yet (none, unless the stamp came early)
        total = self._exposed + self._render_rgb()
        return self._finish((total / cfg.exposure_samples).astype(np.float32))

    def _render_rgb(self) -> np.ndarray:
        self._renderer.update_scene(self.data, camera="front")
        return self._renderer.render()

    def render(self) -> np.ndarray:
        """The camera's view now (an instantaneous exposure), with the configured pixel noise."""
        return self._finish(self._render_rgb().astype(np.float32))

    def _finish(self, rgb: np.ndarray) -> np.ndarray:
        image = rgb * np.float32(1.0 / 255.0)
        if self.sensors.image_noise > 0:
            image += self.rng.normal(0.0, self.sensors.image_noise, image.shape).astype(np.float32)
            np.clip(image, 0.0, 1.0, out=image)
        return image

    def imu(self) -> np.ndarray:
        """angular velocity (rad/s), linear acceleration incl. gravity (m/s^2), roll/pitch/yaw."""
        s, d, cfg = self._sensor, self.data.sensordata, self.sensors
        gyro = d[s["gyro"] : s["gyro"] + 3] + self.rng.normal(0.0, cfg.gyro_noise, 3)
        gyro[2] += cfg.gyro_bias
        accel = d[s["accel"] : s["accel"] + 3] + self.rng.normal(0.0, cfg.accel_noise, 3)
        accel[:2] += cfg.accel_bias
        euler = quat2euler(d[s["orientation"] : s["orientation"] + 4], axes="sxyz")
        return np.concatenate([gyro, accel, euler])

    def odometry(self) -> np.ndarray:
        """Wheel odometry, the values of ODOM_FIELDS (twist.linear.x, twist.linear.y,
        twist.angular.z): what a base's encoders give, from the spin of the driven wheels (a car's
        rear wheels), each v = spin x wheel radius: forward speed (v_left + v_right) / 2 and yaw
        rate (v_right - v_left) / wheel_separation; no lateral speed (wheels cannot measure it). A
        wheel that slips counts road it did not cover, as on a real base. sim_node publishes it on
        odom, collect records it, and eval, table and dagger feed it to a model that reads it."""
        r, b = self.robot.wheel_radius, self.robot.wheel_separation
        left, right = (float(self.data.qvel[dof]) * r for dof in self._wheel_dofs)
        return np.array([(left + right) / 2.0, 0.0, (right - left) / b])

    # --- ground truth ----------------------------------------------------------------------
    def _track_progress(self) -> None:
        # Progress through laps: the projection's s wraps at the start line.
        if int(round(self.data.time / self.model.opt.timestep)) % 20:
            return
        s = self.track.project(*self.data.qpos[0:2])["s"]
        delta = s - self._last_s
        if delta < -self.track.length / 2:
            delta += self.track.length
        elif delta > self.track.length / 2:
            delta -= self.track.length
        self._laps_s += delta
        self._last_s = s

    def truth(self) -> dict[str, float | bool]:
        """Pose, road-relative errors, distance driven along the road, and whether a wheel is off
        the road."""
        x, y = (float(v) for v in self.data.qpos[0:2])
        yaw = quat2euler(self.data.qpos[3:7], axes="sxyz")[2]
        p = self.track.project(x, y)
        speed = float(np.hypot(*self.data.qvel[0:2]))
        return {
            "x": x,
            "y": y,
            "yaw": yaw,
            "xte": p["xte"],
            "s": p["s"],
            "heading_error": math.remainder(yaw - p["heading"], 2 * math.pi),
            "curvature": p["curvature"],
            "progress": self._laps_s,
            "speed": speed,
            "off_road": self.track.off_road(x, y, yaw, self.robot.wheel_contacts),
        }


@dataclass(frozen=True)
class PurePursuit:
    """The expert: pure pursuit of the centreline on ground truth, for either robot.

    At a constant `speed`, or, with `max_speed`, at a speed scheduled by the road ahead: the
    largest |curvature| within `preview` m (averaged over 0.5 m of road) sets v = sqrt(lateral_accel
    / |curvature|), kept within [speed, max_speed], so the expert slows for the curves it sees
    coming and a policy trained on it has to learn its speed from the camera, not a constant."""

    speed: float = 0.5  # m/s (the least, with max_speed)
    lookahead: float = 0.6  # m
    max_angular: float = 1.5  # rad/s
    max_speed: float | None = None  # m/s: schedule the speed between `speed` and this
    lateral_accel: float = 0.3  # m/s^2 allowed in a curve (0.82-1.0 m/s on oval and kidney, 0.61 in the hairpin)
    preview: float = 1.5  # m of road ahead the schedule reads

    def target_speed(self, track: Track, s: float) -> float:
        if self.max_speed is None:
            return self.speed
        arc, length = track.arclength, track.length
        kappa = _smoothed_curvature(track)
        ahead = np.mod(arc - s, length) <= self.preview
        worst = float(kappa[ahead].max()) if ahead.any() else 0.0
        v = math.sqrt(self.lateral_accel / worst) if worst > 1e-6 else self.max_speed
        return min(self.max_speed, max(self.speed, v))

    def __call__(self, env: TrackEnv) -> tuple[float, float]:
        """(linear, angular): the arc from the robot's base_link (a car's rear axle: pure pursuit on
        the bicycle model) through the point `lookahead` m ahead on the centreline, no tighter
        than the robot can drive (its max_curvature)."""
        t = env.truth()
        speed = self.target_speed(env.track, t["s"])
        gx, gy, _ = env.track.pose_at(t["s"] + self.lookahead)
        dx, dy = gx - t["x"], gy - t["y"]
        # The goal in the robot frame; curvature of the arc through it.
        ly = -math.sin(t["yaw"]) * dx + math.cos(t["yaw"]) * dy
        dist2 = dx * dx + dy * dy
        bound = env.robot.max_curvature
        curvature = max(-bound, min(bound, 2.0 * ly / max(dist2, 1e-6)))
        angular = max(-self.max_angular, min(self.max_angular, speed * curvature))
        return speed, angular


_SMOOTHED: dict[int, tuple[Track, np.ndarray]] = {}


def _smoothed_curvature(track: Track, window: float = 0.5) -> np.ndarray:
    """|curvature| of the track's samples, averaged over `window` m of road (the loop closed)."""
    hit = _SMOOTHED.get(id(track))
    if hit is not None and hit[0] is track:
        return hit[1]
    k = np.abs(track.curvature())
    n = max(1, int(round(window / (track.length / len(k)))))
    padded = np.concatenate([k[-n:], k, k[:n]])
    smooth = np.convolve(padded, np.ones(2 * n + 1) / (2 * n + 1), mode="same")[n:-n]
    _SMOOTHED[id(track)] = (track, smooth)
    return smooth
