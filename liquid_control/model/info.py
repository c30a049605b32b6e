"""`liquid-control info MODEL`: what a model file holds (its config, parameter counts, wiring), as
a dict (`model_info`, the --json output) and as text (`format_model_info`), and its wiring drawn
(`--graph`). bags/info.py does the same for a bag."""

from __future__ import annotations

import json
from pathlib import Path

from ..paths import resolve_model_path
from .modelfile import ModelFileError, load_model, parameter_counts


def model_info(model: str | Path, graph: str | Path | None = None) -> dict:
    """The report of a model file (a path, or package://<package>/<file> as the node takes it);
    with `graph`, its wiring drawn to that PNG. ModelFileError for a file that cannot be used, or
    a graph asked of a core without a wiring; FileNotFoundError for a package that is not there."""
    network, config = load_model(resolve_model_path(model))
    core = getattr(network, "core", network)  # a LiquidPolicy wraps its liquid core
    wiring = core.wiring
    if wiring is not None and hasattr(wiring, "summary"):
        wiring_summary = wiring.summary()
    else:
        wiring_summary = {"type": "dense", "units": core.state_size}
    report = {
        "file": str(model),
        "config": json.loads(config.to_json()),
        "parameters": parameter_counts(network),
        "wiring": wiring_summary,
        "outputs_size": core.out_features,
        "state_size": core.state_size,
    }
    if graph:
        if wiring is None or not hasattr(wiring, "get_graph"):
            raise ModelFileError(
                model, f"has no wiring to draw: its core is {wiring_summary['type']} ({wiring_summary['units']} units)"
            )
        from ..draw.wiring import write_wiring_png

        write_wiring_png(graph, wiring, input_names=config.sensors.features, output_names=config.outputs.fields)
        report["graph"] = str(graph)
    return report


def format_model_info(report: dict) -> str:
    config, counts, wiring = report["config"], report["parameters"], report["wiring"]
    net, sensors, outputs = config["network"], config["sensors"], config["outputs"]
    lines = [
        f"model      {report['file']}",
        f"format     {config['format_version']}",
        f"network    {net['cell'].upper()} {'wired' if net.get('wiring') else 'fully connected'}, "
        f"{net['input_size']} inputs -> {report['outputs_size']} outputs, state {report['state_size']}",
    ]
    if config.get("encoder"):
        lines.append(f"policy     camera encoder {json.dumps(config['encoder'], sort_keys=True)}")
        lines.append(
            f"           parameters: camera encoder {counts['camera_encoder']}, liquid core "
            f"{counts['liquid_core']} ({counts['liquid_core_effective']} live), readout {counts['readout']}"
        )
    if net.get("wiring"):
        lines.append(f"wiring     {json.dumps(net['wiring'])}")
    if net.get("options"):
        lines.append(f"options    {json.dumps(net['options'], sort_keys=True)}")
    lines.append(f"parameters {counts['trainable']} trainable, {counts['effective']} on live synapses")
    if wiring.get("neurons_per_layer"):
        layers = ", ".join(f"{k} {v}" for k, v in wiring["neurons_per_layer"].items())
        lines.append(f"neurons    {layers}")
        lines.append(f"synapses   {wiring['sensory_synapses']} sensory, {wiring['synapses']} internal")
    lines.append(f"sensors    {', '.join(sensors['features'])}")
    if sensors.get("image"):
        lines.append(f"image      {json.dumps(sensors['image'])}")
    if config.get("encoder") is not None:  # a policy: which sensors it reads (the node subscribes to these)
        reads = ["camera"] + [kind for kind in ("imu", "odom") if sensors.get(f"{kind}_fields")]
        lines.append(f"reads      {', '.join(reads)}" + ("  (camera only)" if reads == ["camera"] else ""))
    if sensors.get("imu_fields"):
        lines.append(f"imu        {', '.join(sensors['imu_fields'])}")
    if sensors.get("odom_fields"):
        lines.append(f"odometry   {', '.join(sensors['odom_fields'])}")
    labels = config.get("provenance", {}).get("labels")
    if labels and (labels.get("kind") != "twist" or labels.get("wheelbase")):
        declared = ", ".join(
            f"{k} {labels[k]:g}" for k in ("wheelbase", "top_speed", "full_lock", "max_yaw_rate") if labels.get(k)
        )
        lines.append(
            f"labels     {labels['kind']} {' '.join(labels.get('types', []))}" + (f" ({declared})" if declared else "")
        )
    for name, unit, (lo, hi) in zip(outputs["fields"], outputs["units"], outputs["limits"], strict=True):
        lines.append(f"output     {name} [{unit}] in [{lo}, {hi}]")
    if config.get("provenance"):
        lines.append(f"provenance {json.dumps(config['provenance'], sort_keys=True)}")
    if report.get("graph"):
        lines.append(f"graph      {report['graph']}")
    return "\n".join(lines)
