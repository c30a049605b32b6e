"""What tests in several folders share: waiting for a condition (never for a fixed time), a peer
node in a DDS context of its own, a small model file, the shipped policy with its config changed or
its bytes damaged, the installed executables and the command line.
Imported by the test modules that need it (`from support import ...`); ROS and torch are imported
lazily, so that a module without them can still import wait_for."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

EXECUTABLE = Path(sys.prefix) / "lib" / "liquid_control" / "controller_node"


def __getattr__(name: str):
    """SPEC (the small model's camera encoder) and OUTPUTS (its outputs), made when first asked for:
    they import the torch policy, which a module that only waits need not."""
    if name == "SPEC":
        from liquid_control.model.policy import EncoderSpec

        return EncoderSpec(image_width=32, image_height=24, channels=(4, 8), camera_features=4)
    if name == "OUTPUTS":
        from liquid_control.model.modelfile import OutputSpec

        return OutputSpec(("linear.x", "angular.z"), ("m/s", "rad/s"), ((0.0, 0.5), (-1.5, 1.5)), scale=(0.5, 1.5))
    raise AttributeError(name)


def wait_for(condition, timeout=10.0, what=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")


CLI = [sys.executable, "-m", "liquid_control.cli"]


def run_cli(*args, timeout=120.0, env=None):
    """`liquid-control ARGS...` in a process of its own (each argument str()-ed, `env` its
    environment where given), its output captured as text."""
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


SIM_NODE = Path(sys.prefix) / "lib" / "liquid_control" / "sim_node"


def stop_process(proc, timeout=10.0):
    """SIGINT, then SIGTERM, then SIGKILL (processes.stop); the exit status."""
    from liquid_control.processes import stop

    return stop(proc, timeout=timeout)[0]


def spinning_node(name: str, ns: str):
    """A node in a context of its own, spun by an executor thread; returns it and what ends it all."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name, namespace=ns, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    def close():
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=5.0)
        node.destroy_node()
        rclpy.shutdown(context=context)

    return node, close


def publish_sensors(imu, camera, t: float, frame: bool, width: int = 64, height: int = 48) -> None:
    """One IMU message at rest stamped `t` and, with `frame`, a black rgb8 camera frame of the same stamp."""
    from sensor_msgs.msg import Image, Imu

    msg = Imu()
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int(round((t % 1) * 1e9))
    msg.linear_acceleration.z = 9.8
    imu.publish(msg)
    if frame:
        image = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=bytes(width * height * 3))
        image.header = msg.header
        camera.publish(image)


def streaming_peer(ns):
    """A peer in its own context publishing camera and IMU into `ns` from a thread; stop() ends it."""
    from geometry_msgs.msg import Twist
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, Imu

    peer, close = spinning_node("exit_peer", ns)
    context = peer.context
    imu = peer.create_publisher(Imu, "imu/data", qos_profile_sensor_data)
    camera = peer.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
    commands = []
    peer.create_subscription(Twist, "cmd_vel", commands.append, 100)
    running = threading.Event()
    running.set()

    def publish():
        k = 0
        while running.is_set() and context.ok():
            publish_sensors(imu, camera, 100.0 + k * 0.005, frame=k % 7 == 0)
            k += 1
            time.sleep(0.005)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()

    def stop_peer():
        running.clear()
        publisher.join(timeout=5.0)
        close()

    return commands, stop_peer


def make_model(path, seed=0, bias=None, **fields):
    """A small CfC policy (12 NCP neurons, a 32x24 camera) saved at `path`; `bias` sets its readout's.
    `fields` (imu_fields, odom_fields) replace SPEC's sensors: imu_fields=() is a camera-only model."""
    import dataclasses

    import torch

    from liquid_control import nets
    from liquid_control.model.modelfile import save_model
    from liquid_control.model.policy import LiquidPolicy

    spec, outputs = dataclasses.replace(__getattr__("SPEC"), **fields), __getattr__("OUTPUTS")
    n = len(spec.held_fields)
    torch.manual_seed(seed)
    policy = LiquidPolicy(
        spec,
        nets.CfC(spec.core_inputs, nets.AutoNCP(12, 2, seed=seed)),
        outputs=2,
        imu_mean=(0.0, 0.0, 9.8) if not fields else (0.0,) * n,
        imu_std=(0.5, 1.0, 1.0) if not fields else (1.0,) * n,
    ).eval()
    if bias is not None:
        with torch.no_grad():
            policy.readout.bias[:] = torch.tensor(bias)
    save_model(path, policy, policy.sensor_spec(), outputs, {"trainer": "test"})
    return path


# --- model files: the shipped policy, changed or damaged ------------------------------------------
def shipped_with_config(tmp_path, name, change):
    """A copy of the shipped policy whose metadata config is changed by `change(config_dict)`."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from liquid_control.paths import DEFAULT_MODEL, resolve_model_path

    source = resolve_model_path(DEFAULT_MODEL)
    with safe_open(str(source), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        config = json.loads(f.metadata()["liquid_control"])
    change(config)
    path = tmp_path / f"{name}.safetensors"
    save_file(tensors, str(path), metadata={"liquid_control": json.dumps(config)})
    return path


BAD_CONFIGS = {
    "zero_width": lambda c: c["encoder"].update(image_width=0),
    "negative_channels": lambda c: c["encoder"].update(channels=[-1, 16, 24]),
    "huge_kernel_input": lambda c: c["encoder"].update(image_width=2, image_height=2),
    "wiring_units_zero": lambda c: c["network"]["wiring"].update(units=0),
    "string_channels": lambda c: c["encoder"].update(channels="abc"),
}


_ODD_VALUES = [0, -1, 1, 3_000, 20_000, 2**31, 2**62, 10**12, 1e308, float("nan"), "x", "", [], [1] * 3, {}, None, True]


def damaged_model(source: bytes, rng: np.random.Generator) -> bytes:
    """A model file damaged in one of the ways files get damaged or made: the header's length, a
    tensor's offsets, shape or dtype, a value anywhere in the config, a size in it (what a build
    allocates by), bytes of the header or the weights, or the file cut short."""
    import struct

    from liquid_control.model.specs import METADATA_KEY

    n = struct.unpack("<Q", source[:8])[0]
    header = json.loads(source[8 : 8 + n])
    data = source[8 + n :]
    kind = int(rng.integers(7))
    if kind == 0:  # the header's length
        lengths = [0, 1, n - 1, n + 1, len(source), 2**40, 2**64 - 1]
        length = lengths[int(rng.integers(len(lengths)))]
        return struct.pack("<Q", length) + source[8:]
    if kind == 1:  # a tensor's offsets, shape or dtype
        name = str(rng.choice([k for k in header if k != "__metadata__"]))
        entry = header[name]
        field = str(rng.choice(["data_offsets", "shape", "dtype"]))
        if field == "dtype":
            entry["dtype"] = str(rng.choice(["F64", "I64", "BOOL", "F8_E4M3", "Q4", ""]))
        else:
            sizes = [0, 1, 7, 10**6, 2**40, 2**60]
            entry[field] = [sizes[int(i)] for i in rng.integers(len(sizes), size=len(entry[field]) or 1)]
    elif kind == 2:  # any value of the config
        config = json.loads(header["__metadata__"][METADATA_KEY])
        paths = []

        def walk(node, path):
            paths.append(path)
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            for key, child in items:
                walk(child, (*path, key))

        walk(config, ())
        path = paths[int(rng.integers(1, len(paths)))]
        parent = config
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = _ODD_VALUES[int(rng.integers(len(_ODD_VALUES)))]
        header["__metadata__"][METADATA_KEY] = json.dumps(config)
    elif kind == 6:  # a size in the config: what a build would allocate by
        config = json.loads(header["__metadata__"][METADATA_KEY])
        sizes = [
            (config["network"], "input_size"),
            (config["encoder"], "image_width"),
            (config["encoder"], "image_height"),
            (config["encoder"], "camera_features"),
        ]
        sizes += [(config["network"]["wiring"], "units")] if config["network"].get("wiring") else []
        sizes += [(config["encoder"]["channels"], i) for i in range(len(config["encoder"]["channels"]))]
        parent, key = sizes[int(rng.integers(len(sizes)))]
        parent[key] = [3_000, 20_000, 2**31][int(rng.integers(3))]
        header["__metadata__"][METADATA_KEY] = json.dumps(config)
    elif kind == 3:  # bytes of the header
        text = bytearray(source[8 : 8 + n])
        for at in rng.integers(0, len(text), size=int(rng.integers(1, 8))):
            text[at] = int(rng.integers(32, 127))
        return source[:8] + bytes(text) + data
    elif kind == 4:  # bytes of the weights (NaN, Inf, anything)
        weights = bytearray(data)
        for at in rng.integers(0, len(weights), size=int(rng.integers(1, 64))):
            weights[at] = int(rng.integers(256))
        return source[: 8 + n] + bytes(weights)
    else:  # cut short
        return source[: int(rng.integers(0, len(source)))]
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def shipped_bytes() -> bytes:
    from liquid_control.paths import DEFAULT_MODEL, resolve_model_path

    return resolve_model_path(DEFAULT_MODEL).read_bytes()


# A camera-only car's drive as a robot records it beside the controller node (write_camera_drive).
DRIVE_CAMERA = "/car/camera/image_raw/compressed"
DRIVE_LABEL = "/car/cmd_vel"
DRIVE_MARKS = "/car/liquid_controller/intervention"
DRIVE_PROPOSED = "/car/liquid_controller/proposed_cmd_vel"
T0 = 1_700_000_000.0
PERIOD = 6.0


def _drive_header(TS, t: float):
    sec = int(t)
    return TS.types["std_msgs/msg/Header"](
        stamp=TS.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=int(round((t - sec) * 1e9))), frame_id="x"
    )


def _drive_twist(TS, linear: float, angular: float):
    v3 = TS.types["geometry_msgs/msg/Vector3"]
    return TS.types["geometry_msgs/msg/Twist"](linear=v3(x=linear, y=0.0, z=0.0), angular=v3(x=0.0, y=0.0, z=angular))


def person(t: float) -> float:
    """What the person steers at time t (s from the start): toward the dark band in the camera."""
    return -1.2 * 0.6 * np.sin(2 * np.pi * t / PERIOD)


def write_camera_drive(
    path: Path, seconds: float, takeovers: list[tuple[float, float]], seed: int = 3, shade: float = 1.0
) -> Path:
    """A camera-only car at 20 Hz whose policy does not steer (angular.z 0 on /cmd_vel) but where a
    person took over in `takeovers` (start, end in s): there /cmd_vel holds the person's steering,
    and the marks say true (on every frame, as the node says them with its steps). No takeover
    listed: the person drove throughout, and the bag has no marks. `shade` scales the light (0.4: a
    darker day than 1.0's)."""
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    TS = get_typestore(Stores.ROS2_JAZZY)
    CAMERA, LABEL, MARKS, PROPOSED = DRIVE_CAMERA, DRIVE_LABEL, DRIVE_MARKS, DRIVE_PROPOSED
    rng = np.random.default_rng(seed)
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        cam = w.add_connection(CAMERA, "sensor_msgs/msg/CompressedImage", typestore=TS)
        lab = w.add_connection(LABEL, "geometry_msgs/msg/Twist", typestore=TS)
        marks = w.add_connection(MARKS, "std_msgs/msg/Bool", typestore=TS) if takeovers else None
        proposed = w.add_connection(PROPOSED, "geometry_msgs/msg/TwistStamped", typestore=TS) if takeovers else None
        for k in range(int(seconds * 20)):
            s = k * 0.05
            t = T0 + s
            ns = int(round(t * 1e9))
            offset = 0.6 * np.sin(2 * np.pi * s / PERIOD)
            img = np.full((120, 160, 3), 170, np.uint8)
            centre = int(80 + offset * 60)
            img[:, max(centre - 15, 0) : centre + 15] = 40
            img = np.clip((img + rng.normal(0, 6, img.shape)) * shade, 0, 255).astype(np.uint8)
            frame = TS.types["sensor_msgs/msg/CompressedImage"](
                header=_drive_header(TS, t),
                format="rgb8; jpeg compressed bgr8",
                data=np.frombuffer(cv2.imencode(".jpg", img[:, :, ::-1])[1].tobytes(), np.uint8),
            )
            w.write(cam, ns + 20_000_000, TS.serialize_cdr(frame, "sensor_msgs/msg/CompressedImage"))
            taken = not takeovers or any(a <= s < b for a, b in takeovers)
            if marks is not None:
                w.write(
                    marks,
                    ns + 21_000_000,
                    TS.serialize_cdr(TS.types["std_msgs/msg/Bool"](data=taken), "std_msgs/msg/Bool"),
                )
                stamped = TS.types["geometry_msgs/msg/TwistStamped"](
                    header=_drive_header(TS, t), twist=_drive_twist(TS, 0.3, 0.0)
                )
                w.write(proposed, ns + 21_000_000, TS.serialize_cdr(stamped, "geometry_msgs/msg/TwistStamped"))
            command = _drive_twist(TS, 0.3, person(s) if taken else 0.0)
            w.write(lab, ns + 22_000_000, TS.serialize_cdr(command, "geometry_msgs/msg/Twist"))
    return path
