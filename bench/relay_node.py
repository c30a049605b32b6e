"""The baseline for bench/node_latency.py: a bare rclpy node that answers every camera and IMU
message with a TwistStamped carrying the message's stamp, and does nothing else."""

import sys

import rclpy
from geometry_msgs.msg import TwistStamped
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, Imu


class Relay(Node):
    def __init__(self) -> None:
        super().__init__("relay")
        self.pub = self.create_publisher(TwistStamped, "cmd_vel", 10)
        self.create_subscription(Image, "camera/image_raw", self.relay, qos_profile_sensor_data)
        self.create_subscription(Imu, "imu/data", self.relay, qos_profile_sensor_data)

    def relay(self, msg) -> None:
        out = TwistStamped()
        out.header.stamp = msg.header.stamp
        self.pub.publish(out)


def main(args=None) -> None:
    rclpy.init(args=args)
    node = Relay()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
