"""The controller node's ROS parameter declarations, made from the one parameter table
(runtime/parameters.py): names, types, defaults, ranges and descriptions all come from there."""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from ..runtime.parameters import DEFAULTS, PARAMETERS, Parameter

ROS_TYPES = {
    float: ParameterType.PARAMETER_DOUBLE,
    int: ParameterType.PARAMETER_INTEGER,
    bool: ParameterType.PARAMETER_BOOL,
    str: ParameterType.PARAMETER_STRING,
}


def descriptor(p: Parameter) -> ParameterDescriptor:
    kind = ROS_TYPES[p.type]
    d = ParameterDescriptor(name=p.name, type=kind, description=p.description, read_only=p.read_only)
    if p.range is not None and p.type is float:
        d.floating_point_range = [FloatingPointRange(from_value=float(p.range[0]), to_value=float(p.range[1]))]
    elif p.range is not None and p.type is int:
        d.integer_range = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]), step=1)]
    return d


def declare_all(node) -> None:
    """Declare every controller parameter on `node` with the table's default (a params file or
    launch argument overrides it as usual)."""
    for p in PARAMETERS:
        node.declare_parameter(p.name, DEFAULTS[p.name], descriptor(p))
