"""Model paths as users write them: files, and package:// URIs resolved through the ament index."""

from pathlib import Path

import pytest

from liquid_control.model.modelfile import load_model
from liquid_control.paths import DEFAULT_MODEL, resolve_model_path


def test_the_default_model_uri_resolves_to_the_shipped_policy_file():
    path = resolve_model_path(DEFAULT_MODEL)
    assert path.name == "ncp_cfc_lane_keeping.safetensors" and path.is_file()
    policy, config = load_model(path)
    assert config.network.wiring["units"] == 19


def test_plain_paths_pass_through_with_the_home_expanded(tmp_path):
    assert resolve_model_path(tmp_path / "m.safetensors") == tmp_path / "m.safetensors"
    assert resolve_model_path("~/m.safetensors") == Path.home() / "m.safetensors"


@pytest.mark.parametrize(
    "uri, reason",
    [
        ("package://", "package://<package>/<path>"),
        ("package://liquid_control", "package://<package>/<path>"),
        ("package://no_such_package_here/x.safetensors", "no_such_package_here"),
        ("package://liquid_control/models/missing.safetensors", "not found"),
    ],
)
def test_bad_package_uris_say_what_is_wrong(uri, reason):
    with pytest.raises(FileNotFoundError, match=reason.replace("<", ".").replace(">", ".")):
        resolve_model_path(uri)
