"""The controller's parameters files, read without ROS (runtime/parameters.read_params, as replay
reads them), against rclpy's own parser (rcl_yaml_param_parser) on the same files: which sections
apply to the node in which namespace, and how several that apply are merged."""

import textwrap

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.node import Node  # noqa: E402

from liquid_control.runtime.parameters import NODE_NAME, read_params  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.sim]

FILES = {
    "wildcard_then_node": """
        /**:
          ros__parameters:
            max_linear_speed: 0.3
            frame_id: everyone
        /**/liquid_controller:
          ros__parameters:
            max_angular_speed: 1.0
            frame_id: ours
        """,
    "node_then_wildcard": """
        liquid_controller:
          ros__parameters:
            max_linear_speed: 0.2
            adaptation:
              enabled: true
        /**:
          ros__parameters:
            max_linear_speed: 0.4
        """,
    "namespaced": """
        /robot1/liquid_controller:
          ros__parameters:
            max_linear_speed: 0.25
        /**:
          ros__parameters:
            max_dt: 0.2
        /*/liquid_controller:
          ros__parameters:
            tau_scale: 2.0
        """,
    "other_nodes_only": """
        /**/sim_node:
          ros__parameters:
            max_linear_speed: 0.1
        liquid_controller_x:
          ros__parameters:
            max_linear_speed: 0.1
        """,
}


def _rclpy_view(path, namespace):
    """What rclpy gives a node named liquid_controller in `namespace` from this params file."""
    context = rclpy.context.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(path)], context=context)
    try:
        node = Node(NODE_NAME, namespace=namespace, context=context)
        try:
            # The overrides rclpy resolved for this node from the file (what declare_parameter
            # then takes over its default).
            return {name: p.value for name, p in node._parameter_overrides.items()}
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


@pytest.mark.parametrize("namespace", ["/", "/robot1", "/a/b"])
@pytest.mark.parametrize("name", sorted(FILES))
def test_read_params_merges_sections_as_rclpy_does(tmp_path, name, namespace):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(FILES[name]))
    expected = _rclpy_view(path, namespace)
    if not expected:
        with pytest.raises(ValueError, match="no section for liquid_controller"):
            read_params(path, namespace=namespace)
        return
    assert read_params(path, namespace=namespace) == expected


def test_read_params_without_a_namespace_takes_every_section_that_could_apply(tmp_path):
    """Offline tools do not know where a file was launched: a namespaced section applies too."""
    path = tmp_path / "namespaced.yaml"
    path.write_text(textwrap.dedent(FILES["namespaced"]))
    assert read_params(path) == {"max_linear_speed": 0.25, "max_dt": 0.2, "tau_scale": 2.0}
