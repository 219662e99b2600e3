"""A family from outside the slimzoo package (``example_family.tinyfam``) goes the whole way: registered through the
documented protocol (``--family-module``, ``$SLIMZOO_FAMILY_MODULES``, the ``slimzoo.families`` entry point group),
trained a few steps, profiled, searched, exported to ONNX, TFLite and Core ML (each validated), and built into a
zoo that passes the gate. Nothing in slimzoo knows its name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slimzoo.zoo.registry import ENV_VAR, build_spec, create_supernet, load_family_module

TESTS = Path(__file__).resolve().parents[1]
MODULE = "example_family.tinyfam"


def cli(*args: str):
    """The typer app in this process (a click ``Result``); rich output at 200 columns."""
    from typer.testing import CliRunner

    from slimzoo.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def ok(result) -> str:  # noqa: ANN001
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


def test_tinyfam_static_twin_and_spec() -> None:
    load_family_module(MODULE)
    spec = build_spec("tinyfam")
    assert [layer.kind for layer in spec.layers] == ["conv", "conv", "conv", "add", "pool_linear"]
    assert spec.layer("add").inputs == ("conv3", "conv2") and spec.layer("add").act == "relu"
    net = create_supernet(spec).eval()
    x = torch.randn(2, 1, 28, 28)
    for config in (spec.largest(), spec.smallest(), {"c1": 32, "c2": 16}):
        static = net.to_static(config).eval()
        with torch.no_grad():
            assert (net(x, spec.validate(config)) - static(x)).abs().max().item() <= 1e-5


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory):
    """A clean ``$SLIMZOO_FAMILY_MODULES`` for the module (the ``--family-module`` option adds to it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_VAR, "")  # not delenv: that would not undo what --family-module adds
        patch.setenv("SLIMZOO_REGISTRY", str(tmp_path_factory.mktemp("registry")))
        yield tmp_path_factory.mktemp("tinyfam")


@pytest.fixture(scope="module")
def trained(plugin: Path) -> Path:
    out = plugin / "tiny.safetensors"
    ok(cli("--family-module", MODULE, "train", "--family", "tinyfam", "--dataset", "digits", "--steps", "3",
           "--batch-size", "16", "--out", str(out)))
    return out


def test_train_profile_search(trained: Path) -> None:
    header = json.loads(ok(cli("search", "--checkpoint", str(trained), "--platform", "pixel5", "--json")))
    assert header["platform"] == "pixel5" and set(header["config"]) == {"c1", "c2"}
    profiled = ok(cli("profile", "--checkpoint", str(trained), "--platform", "host-cpu", "--samples", "8",
                      "--repeats", "5"))
    assert "acc10" in profiled or "within 10%" in profiled


# ONNX in the default run (the whole path there takes ~40 s on a shared CPU); TFLite and Core ML with -m slow
@pytest.mark.parametrize("fmt", ["onnx", pytest.param("tflite", marks=pytest.mark.slow),
                                 pytest.param("coreml", marks=pytest.mark.slow)])
def test_export_validates_in_every_format(trained: Path, fmt: str) -> None:
    report = json.loads(ok(cli("export", "--checkpoint", str(trained), "--platform", "pixel5", "--format", fmt,
                               "--out", str(trained.parent / f"export-{fmt}"), "--json")))
    check = report["validation"]  # exit 0: every check passed (a failed one is exit 1, no file)
    assert check["format"] == fmt and report["width_config"].keys() == {"c1", "c2"}
    if check["numerics_run"]:  # Core ML predicts only on macOS: on Linux its structure and weights are checked
        assert check["max_abs_diff"] <= check["atol"] and check["top1_agreement"] == 1.0
    else:
        assert fmt == "coreml" and sys.platform != "darwin"
    assert (trained.parent / f"export-{fmt}" / report["file"]).exists()


def test_build_zoo_and_gate(trained: Path) -> None:
    zoo = trained.parent / "zoo"
    ok(cli("build-zoo", "--checkpoint", str(trained), "--platforms", "host-cpu,pixel5", "--formats", "onnx",
           "--out", str(zoo), "--no-measure"))
    ok(cli("check", str(zoo)))


def _dist(root: Path, name: str, target: str) -> None:
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[slimzoo.families]\n{name} = {target}\n")


def test_entry_point_group_registers_and_a_broken_plugin_is_named(tmp_path: Path) -> None:
    """An installed plugin (a distribution with a ``slimzoo.families`` entry point) registers its family in a fresh
    process; a broken one leaves the built-in families working and is named when its family is asked for."""
    _dist(tmp_path, "tinyfam_plugin", MODULE)
    _dist(tmp_path, "broken_plugin", "example_family.no_such_module")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS)])}
    env.pop(ENV_VAR, None)
    code = ("from slimzoo.zoo.registry import get_family, list_families\n"
            "print(list_families(), get_family('tinyfam').origin)\n"
            "try:\n    get_family('brokenfam')\nexcept Exception as exc:\n    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()[:2]
    assert first == "['mobilenetv2', 'mobilenetv3', 'tinyfam'] example_family.tinyfam"
    assert "entry point broken_plugin = example_family.no_such_module failed to load" in second
    assert "ModuleNotFoundError" in second


def test_family_module_by_file_path_and_unknown_family_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "")  # --family-module below adds to it; setenv is undone afterwards
    env = {**os.environ, ENV_VAR: str(TESTS / "example_family" / "tinyfam.py")}
    code = "from slimzoo.zoo.registry import list_families; print(list_families())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and "tinyfam" in result.stdout, result.stderr
    missing = cli("--family-module", "example_family.nope", "train", "--family", "tinyfam", "--out",
                  str(tmp_path / "x.safetensors"))
    assert missing.exit_code != 0 and "example_family.nope" in " ".join(missing.stderr.split())
