"""Argument helpers shared by `liquid-control` and the module entry points (`python -m
liquid_control.learning.train`, as torchrun starts it), so that both parse the same options.

A command's options are one dataclass (`TrainConfig`, `EvalConfig`, `TableConfig`, `ReplayConfig`):
each field, declared with `option()`, is a command-line option (`add_options`), a keyword of the
object the command's function takes (`from_args`), and, where it says so, part of the run key that a
resumed or cached run must match (`run_key`) and of the provenance a result records
(`provenance`). An option is written once.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import types
import typing
from typing import Any

_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    *,
    help: str = "",
    metavar: str | None = None,
    choices: Any = None,
    flag: str | None = None,
    positional: bool = False,
    key: bool = False,
    provenance: bool = False,
    record_as: str | None = None,
    cli: bool = True,
) -> Any:
    """A field of a command's config. `flag`: the option's name (default --field-name); a tuple or
    list type is a repeated option (`--bag A --bag B`); a bool is a switch. `key`: part of the run
    key; `provenance`: recorded with the result; `record_as`: the name in both (default the field's).
    `cli=False`: for callers in Python only."""
    metadata = {
        "help": help,
        "metavar": metavar,
        "choices": choices,
        "flag": flag,
        "positional": positional,
        "key": key,
        "provenance": provenance,
        "record_as": record_as,
        "cli": cli,
    }
    if default is _MISSING:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _kind(hint: Any) -> tuple[type, bool]:
    """(the value type, repeated) of a field's annotation: int, float, str or bool, optionally
    `| None`, or a tuple of one of them."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (tuple, list):
        return typing.get_args(hint)[0], True
    return hint, False


def add_options(parser: argparse.ArgumentParser, config: type) -> None:
    """One argparse option per field of the `config` dataclass (see `option`)."""
    hints = typing.get_type_hints(config)
    for f in dataclasses.fields(config):
        m = f.metadata
        if not m.get("cli", True):
            continue
        value_type, repeated = _kind(hints[f.name])
        required = f.default is _MISSING and f.default_factory is _MISSING
        kwargs: dict[str, Any] = {"help": m.get("help") or None}
        if value_type is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = value_type
            if m.get("metavar"):
                kwargs["metavar"] = m["metavar"]
            if m.get("choices") is not None:
                kwargs["choices"] = m["choices"]
            if repeated:
                kwargs["action"] = "append"
        if m.get("positional"):
            parser.add_argument(f.name, **kwargs)
            continue
        if required:
            kwargs["required"] = True
        else:  # a repeated option given no times: the field's default (from_args)
            kwargs["default"] = None if repeated else f.default
        parser.add_argument(m.get("flag") or "--" + f.name.replace("_", "-"), dest=f.name, **kwargs)


def from_args(config: type, args: argparse.Namespace, **more: Any):
    """The `config` dataclass from parsed options (repeated ones as tuples), with `more` on top."""
    hints = typing.get_type_hints(config)
    values = {}
    for f in dataclasses.fields(config):
        if f.metadata.get("cli", True) and hasattr(args, f.name):
            value = getattr(args, f.name)
            if _kind(hints[f.name])[1]:
                if value is None:
                    continue  # not given: the field's default
                value = tuple(value)
            values[f.name] = value
    return config(**{**values, **more})


def _recorded(config: Any, which: str) -> dict[str, Any]:
    return {
        f.metadata.get("record_as") or f.name: (list(v) if isinstance(v := getattr(config, f.name), tuple) else v)
        for f in dataclasses.fields(config)
        if f.metadata.get(which)
    }


def run_key(config: Any) -> dict[str, Any]:
    """What a resumed or cached run must match: the fields declared with key=True."""
    return _recorded(config, "key")


def provenance(config: Any) -> dict[str, Any]:
    """What a result records of how it was made: the fields declared with provenance=True."""
    return _recorded(config, "provenance")


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


# The topics a bag's sensors and labels are found on (info and train pick them the same way).
TOPIC_HELP = {
    "camera_topic": "the camera (sensor_msgs/Image or CompressedImage); default: the bag's only one",
    "imu_topic": "the IMU (sensor_msgs/Imu); default: the bag's only one, none if it has none; 'none': not read",
    "odom_topic": "wheel odometry (nav_msgs/Odometry) to read beside the camera; 'auto': the bag's only one; "
    "default: none",
    "label_topic": "the commands to learn (Twist, matched by bag time, or TwistStamped, by header stamp); "
    "default: the bag's only one",
    "intervention_topic": "the controller node's takeover marks (std_msgs/Bool); default: the bag's only "
    ".../intervention topic, if any; 'none': not read",
}


def add_topic_arguments(parser, prefix: str = "") -> None:
    for name, text in TOPIC_HELP.items():
        parser.add_argument("--" + name.replace("_", "-"), metavar="TOPIC", help=prefix + text)
