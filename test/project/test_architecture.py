"""The layering of docs/architecture.md, checked: imports only point down the layers, the network
core and the runtime import neither rclpy nor MuJoCo, and only the ROS adapters (and the live bag
recorder and player) import rclpy."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "liquid_control"

# Bottom to top; a module may import from its own layer and the ones before it, never after.
LAYERS = [
    {"nets", "paths", "files", "topics", "processes", "draw", "progress", "cliargs"},
    {"model", "runtime"},  # the model (spec, file, torch policy, export) and the controller that runs it
    {"sim"},
    {"bags"},
    {"learning"},
    {"nodes"},
    {"demos", "launching"},
    {"cli", "start"},
]
RANK = {part: k for k, parts in enumerate(LAYERS) for part in parts}
# The only modules that may import rclpy or ROS message packages: the adapters.
ROS_MODULES = {"nodes", "bags.record", "bags.play", "bags.ros", "demos.ros_drive"}
ROS_PACKAGES = {
    "rclpy",
    "rcl_interfaces",
    "sensor_msgs",
    "geometry_msgs",
    "nav_msgs",
    "std_msgs",
    "std_srvs",
    "diagnostic_msgs",
    "rosgraph_msgs",
    "launch",
    "launch_ros",
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        if parts:
            yield path, parts, path.name == "__init__.py"


def _imports(path: Path, parts: list[str], is_package: bool, skip_main: bool = False):
    """(target module parts inside liquid_control or None, top-level package name) of every import,
    module-level or inside functions; with `skip_main`, not those under `if __name__ == "__main__":`
    (what running the module as a program imports, not what importing it does)."""
    tree = ast.parse(path.read_text())
    skipped = _main_guarded(tree) if skip_main else set()
    for node in ast.walk(tree):
        if id(node) not in skipped:
            yield from _node_imports(node, parts, is_package)


def _node_imports(node: ast.AST, parts: list[str], is_package: bool):
    here = parts if is_package else parts[:-1]
    if isinstance(node, ast.Import):
        for alias in node.names:
            names = alias.name.split(".")
            yield (names[1:] if names[0] == "liquid_control" else None), names[0]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = here[: len(here) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            if not target:  # `from .. import x`: x is a module of the package
                for alias in node.names:
                    yield [alias.name], "liquid_control"
            else:
                yield target, "liquid_control"
        else:
            names = node.module.split(".")
            yield (names[1:] if names[0] == "liquid_control" else None), names[0]


def _main_guarded(tree: ast.Module) -> set[int]:
    """Ids of the import nodes under a module-level `if __name__ == "__main__":`."""
    guarded = set()
    for node in tree.body:
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Compare)
            and getattr(node.test.left, "id", None) == "__name__"
        ):
            guarded |= {id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return guarded


def import_graph():
    """liquid_control's modules (dotted, without the package name) -> the modules they import,
    at module level or inside functions (a lazy import is still a dependency)."""
    import networkx as nx

    modules = {".".join(parts): (path, parts, is_package) for path, parts, is_package in _modules()}
    graph = nx.DiGraph()
    for name, (path, parts, is_package) in modules.items():
        graph.add_node(name)
        for target, _ in _imports(path, parts, is_package, skip_main=True):
            if not target:
                continue
            for k in range(len(target), 0, -1):  # `from .x import name`: the module x, or x.name if that is one
                candidate = ".".join(target[:k])
                if candidate in modules:
                    if candidate != name:
                        graph.add_edge(name, candidate)
                    break
    return graph


# None left (each network type has one home; nets/sequence.py asks the module for its kernel).
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def _canonical(cycle: list[str]) -> tuple[str, ...]:
    k = cycle.index(min(cycle))
    return tuple(cycle[k:] + cycle[:k])


def test_no_new_import_cycle():
    import networkx as nx

    cycles = {_canonical(c) for c in nx.simple_cycles(import_graph())}
    new = cycles - KNOWN_CYCLES
    assert not new, "import cycles: " + "; ".join(" -> ".join((*c, c[0])) for c in sorted(new))
    gone = KNOWN_CYCLES - cycles
    assert not gone, f"remove {sorted(gone)} from KNOWN_CYCLES: they are gone"


def test_the_cycle_check_sees_a_lazy_cycle_and_ignores_a_main_guard(tmp_path, monkeypatch):
    package = tmp_path / "liquid_control"
    package.mkdir()
    (package / "a.py").write_text("def f():\n    from . import b\n")
    (package / "b.py").write_text("from .a import f\n")
    (package / "c.py").write_text("if __name__ == '__main__':\n    from . import a\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    graph = import_graph()
    assert set(graph.edges) == {("a", "b"), ("b", "a")}


def _owner(parts: list[str]) -> str:
    """The module's place in ROS_MODULES terms: 'nodes', or 'bags.record'."""
    return ".".join(parts[:2]) if parts[0] != "nodes" else "nodes"


def test_every_module_has_a_layer():
    missing = sorted({parts[0] for _, parts, _ in _modules()} - set(RANK))
    assert not missing, f"give these a layer in LAYERS (and docs/architecture.md): {missing}"


def test_imports_point_down_the_layers():
    wrong = []
    for path, parts, is_package in _modules():
        for target, _ in _imports(path, parts, is_package):
            if target and RANK[target[0]] > RANK[parts[0]]:
                wrong.append(f"{'.'.join(parts)} imports {'.'.join(target)}")
    assert not wrong, "\n".join(wrong)


def test_only_the_ros_adapters_import_ros():
    wrong = []
    for path, parts, is_package in _modules():
        if _owner(parts) in ROS_MODULES or parts[0] == "launching":
            continue
        for _, top in _imports(path, parts, is_package):
            if top in ROS_PACKAGES:
                wrong.append(f"{'.'.join(parts)} imports {top}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The walk above finds lazy, relative imports too (a checker that sees nothing passes anything)."""
    bad = tmp_path / "controller.py"
    bad.write_text("def f():\n    from ..nodes.controller_node import X\n    import rclpy\n")
    found = list(_imports(bad, ["runtime", "controller"], False))
    assert (["nodes", "controller_node"], "liquid_control") in found and (None, "rclpy") in found


# What the ONNX backend loads must run where torch is not installed (pip install liquid_control[edge]).
TORCH_FREE = [
    "liquid_control.runtime.onnx_policy",
    "liquid_control.runtime.controller",
    "liquid_control.nets.stream",
    "liquid_control.nets.cfc.stream",
    "liquid_control.nets.ltc.stream",
    "liquid_control.nets.liquid_s4.stream",
    "liquid_control.nets.feedforward.stream",
    "liquid_control.nets.recurrent.stream",
    "liquid_control.nets.registry",
    "liquid_control.model.specs",
    "liquid_control.nets.wirings",
    "liquid_control.nodes.controller_node",
]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_the_onnx_backend_path_loads_without_torch(module):
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mujoco', 'onnx')); "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{module} pulls in {result.stdout.strip()} {result.stderr[-500:]}"


ROS_FREE = [
    "liquid_control.nets",
    "liquid_control.runtime.controller",
    "liquid_control.model.modelfile",
    "liquid_control.runtime.parameters",
    "liquid_control.bags.replay",
    "liquid_control.learning.train",
    "liquid_control.learning.evaluate",
    "liquid_control.cli",
]
MUJOCO_FREE = {
    "liquid_control.nets",
    "liquid_control.runtime.controller",
    "liquid_control.model.modelfile",
    "liquid_control.runtime.parameters",
    "liquid_control.bags.replay",
    "liquid_control.learning.train",
}


@pytest.mark.parametrize("module", ROS_FREE)
def test_module_loads_without_ros(module):
    """What really gets loaded (imports of imports included) when the module is imported."""
    forbidden = ("rclpy", "rcl_interfaces") + (("mujoco",) if module in MUJOCO_FREE else ())
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r}); "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{module} pulls in {result.stdout.strip()} {result.stderr[-500:]}"
