"""Argument helpers shared by `liquid-control` and the module entry points (`python -m
liquid_control.learning.train`, as torchrun starts it), so that both parse the same options."""

from __future__ import annotations

import importlib


class LazyChoices:
    """The names of a registry in another module, read when argparse first checks or lists them,
    so that building the parser (and every command that does not use them) imports no torch."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def _names(self) -> list[str]:
        return sorted(getattr(importlib.import_module(self.module), self.name))

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __iter__(self):
        return iter(self._names())


def add_topic_arguments(parser, prefix: str = "") -> None:
    parser.add_argument(
        "--camera-topic",
        metavar="TOPIC",
        help=f"{prefix}the camera (sensor_msgs/Image or CompressedImage); default: the bag's only one",
    )
    parser.add_argument("--imu-topic", metavar="TOPIC", help=f"{prefix}the IMU; default: the bag's only one")
    parser.add_argument(
        "--label-topic",
        metavar="TOPIC",
        help=f"{prefix}the commands to learn (Twist, matched by "
        "bag time, or TwistStamped, by header stamp); default: the bag's only one",
    )
