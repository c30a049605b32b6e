"""sim_node: the ROS 2 face of TrackEnv. Publishes the robot's camera, IMU, odometry, /clock and
the expert's command (teacher/cmd_vel) with sim-time stamps; drives the robot with cmd_vel.

The simulator runs in its own thread at `real_time_factor` (1.0 = real time; 0 = as fast as the
CPU allows, for everyone on use_sim_time). Every message is stamped with the simulator's time.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import rclpy
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, Imu
from transforms3d.euler import euler2quat

from .. import topics
from ..runtime.sensing import seconds_to_stamp
from ..sim.conditions import CONDITIONS
from ..sim.env import PurePursuit, SensorConfig, TrackEnv
from ..sim.track import Track, track_path
from ..sim.world import DEFAULT_ROBOT, ROBOTS, robot_spec
from .runner import run_node


def _stamp(msg_stamp, t: float) -> None:
    msg_stamp.sec, msg_stamp.nanosec = seconds_to_stamp(t)


class SimNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("liquid_sim", **kwargs)

        def param(name, value, description, lo=None, hi=None):
            d = ParameterDescriptor(description=description, read_only=True)
            if lo is not None:
                d.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi)]
            return self.declare_parameter(name, value, d).value

        track = param("track", "oval", "A shipped track name (oval, kidney, serpentine) or a track file.")
        robot = param(
            "robot",
            DEFAULT_ROBOT,
            f"The robot that drives: one of {', '.join(ROBOTS)} (car: Ackermann steering, cmd_vel's curvature).",
        )
        self.rtf = param("real_time_factor", 1.0, "Sim seconds per wall second; 0 = as fast as possible.", 0.0, 100.0)
        seed = param("seed", 0, "Random seed of the sensor noise and the start.")
        sensors = SensorConfig(
            image_noise=param("image_noise", 0.0, "Std of camera pixel noise in [0, 1] units.", 0.0, 1.0),
            gyro_noise=param("gyro_noise", 0.005, "Gyro noise std, rad/s.", 0.0, 10.0),
            gyro_bias=param("gyro_bias", 0.0, "Gyro z bias, rad/s.", -10.0, 10.0),
            camera_hz=param("camera_hz", 30.0, "Camera rate, Hz.", 1.0, 120.0),
            imu_hz=param("imu_hz", 200.0, "IMU rate, Hz.", 10.0, 1000.0),
        )
        self.steering_bias = param(
            "steering_bias",
            0.0,
            "Added to every executed angular.z, rad/s (a robot that pulls to one side).",
            -2.0,
            2.0,
        )
        stamped = param("cmd_vel_stamped", False, "cmd_vel is TwistStamped instead of Twist.")
        self.expert = PurePursuit(speed=param("expert_speed", 0.5, "Teacher speed, m/s.", 0.0, 3.0))
        name = param(
            "condition",
            "nominal",
            "An evaluation condition applied to the world and sensors "
            f"(liquid-control eval --condition): one of {', '.join(CONDITIONS)}.",
        )
        if name not in CONDITIONS:
            raise ValueError(f"unknown condition {name!r}; choose from {sorted(CONDITIONS)}")
        condition = CONDITIONS[name]
        self.track, sensors = condition.apply(Track.load(track_path(condition.track or track)), sensors)
        self._env_args = (sensors, seed, condition.env_kwargs(robot_spec(robot)))
        self.env: TrackEnv | None = None

        self.camera_pub = self.create_publisher(Image, topics.CAMERA, qos_profile_sensor_data)
        self.info_pub = self.create_publisher(CameraInfo, topics.CAMERA_INFO, qos_profile_sensor_data)
        self.imu_pub = self.create_publisher(Imu, topics.IMU, qos_profile_sensor_data)
        self.odom_pub = self.create_publisher(Odometry, topics.ODOM, 10)
        self.teacher_pub = self.create_publisher(Twist, topics.TEACHER, 10)
        self.clock_pub = self.create_publisher(Clock, topics.CLOCK, 10)
        self.create_subscription(TwistStamped if stamped else Twist, topics.CMD_VEL, self._on_cmd_vel, 10)
        self._command = (0.0, 0.0)
        self._lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        self.get_logger().info(f"simulating the {robot} on track {self.track.name} at real-time factor {self.rtf}")

    def _on_cmd_vel(self, msg) -> None:
        twist = msg.twist if isinstance(msg, TwistStamped) else msg
        if math.isfinite(twist.linear.x) and math.isfinite(twist.angular.z):
            with self._lock:
                self._command = (twist.linear.x, twist.angular.z)

    def _loop(self) -> None:
        # The renderer's EGL context belongs to the thread that creates it: create it here.
        sensors, seed, others = self._env_args  # the condition's robot and distractors
        self.env = TrackEnv(self.track, sensors=sensors, seed=seed, **others)
        self.env.reset(s=0.0)
        try:
            self._run()
        except Exception:
            # SIGINT shuts the context down under a publish in flight: that is a normal end.
            if self._running and rclpy.ok(context=self.context):
                raise
        finally:
            self.env.close()

    def _run(self) -> None:
        start = time.monotonic()
        robot = self.env.robot
        while self._running and rclpy.ok(context=self.context):
            for event in self.env.events(0.1):
                if not self._running:
                    return
                if self.rtf > 0:
                    delay = start + event.stamp / self.rtf - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                with self._lock:
                    linear, angular = self._command
                self.env.command(linear, angular + self.steering_bias)
                if event.kind == "camera":
                    self._publish_image(event.stamp, event.data, robot)
                else:
                    self._publish_imu(event.stamp, event.data)

    def _publish_image(self, t: float, rgb: np.ndarray, robot) -> None:
        msg = Image(height=robot.image_height, width=robot.image_width, encoding="rgb8", step=robot.image_width * 3)
        _stamp(msg.header.stamp, t)
        msg.header.frame_id = topics.CAMERA_FRAME
        msg.data = np.round(rgb * 255.0).astype(np.uint8).tobytes()
        self.camera_pub.publish(msg)
        info = CameraInfo(height=robot.image_height, width=robot.image_width, distortion_model="plumb_bob")
        info.header = msg.header
        f = (robot.image_height / 2) / math.tan(math.radians(robot.camera_fovy_deg) / 2)
        cx, cy = robot.image_width / 2, robot.image_height / 2
        info.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
        info.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.d = [0.0] * 5
        self.info_pub.publish(info)

    def _publish_imu(self, t: float, values: np.ndarray) -> None:
        clock = Clock()
        _stamp(clock.clock, t)
        self.clock_pub.publish(clock)
        msg = Imu()
        _stamp(msg.header.stamp, t)
        msg.header.frame_id = topics.IMU_FRAME
        msg.angular_velocity.x, msg.angular_velocity.y, msg.angular_velocity.z = (float(v) for v in values[0:3])
        a = msg.linear_acceleration
        a.x, a.y, a.z = (float(v) for v in values[3:6])
        w, x, y, z = euler2quat(*values[6:9], axes="sxyz")
        msg.orientation.w, msg.orientation.x, msg.orientation.y, msg.orientation.z = w, x, y, z
        self.imu_pub.publish(msg)
        truth = self.env.truth()
        odom = Odometry(child_frame_id=topics.BASE_FRAME)
        _stamp(odom.header.stamp, t)
        odom.header.frame_id = topics.ODOM_FRAME
        odom.pose.pose.position.x, odom.pose.pose.position.y = truth["x"], truth["y"]
        q = odom.pose.pose.orientation
        q.w, q.x, q.y, q.z = (float(v) for v in euler2quat(0.0, 0.0, truth["yaw"], axes="sxyz"))
        twist = odom.twist.twist
        twist.linear.x, twist.linear.y, twist.angular.z = (float(v) for v in self.env.odometry())
        self.odom_pub.publish(odom)
        linear, angular = self.expert(self.env)
        teacher = Twist()
        teacher.linear.x, teacher.angular.z = linear, angular - self.steering_bias
        self.teacher_pub.publish(teacher)

    def destroy_node(self) -> None:
        self._running = False
        self._thread.join(timeout=5.0)
        super().destroy_node()


def main(args=None) -> None:
    run_node(
        "sim_node",
        "MuJoCo lane-keeping simulator: camera/image_raw, imu/data, odom, /clock and teacher/cmd_vel "
        "out, cmd_vel in. Parameters (track, condition, real_time_factor, seed, noise) after --ros-args.",
        SimNode,
        args,
        errors=(ValueError, FileNotFoundError),  # a bad track, track file or condition
        exit_process=True,
    )


if __name__ == "__main__":
    main()
