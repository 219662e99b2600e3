"""The command line end to end, as a user runs it (subprocess), including every bad input's one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error

from slimzoo.zoo.checkpoint import default_checkpoint_path


def slimzoo(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slimzoo.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, cwd=cwd, timeout=600)


def test_list_platforms_json_has_every_builtin() -> None:
    proc = slimzoo("list-platforms", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert {"iphone12", "galaxy-s21", "pixel5", "lg-velvet", "moto-g-power", "host-cpu"} <= set(rows)
    assert rows["pixel5"]["market_share_assumed"] is True
    assert rows["iphone12"]["latency_table"] == "estimated"


def test_list_platforms_table() -> None:
    proc = slimzoo("list-platforms")
    assert proc.returncode == 0, proc.stderr
    assert "iphone12" in proc.stdout and "iPhone 12" in proc.stdout and "estimated" in proc.stdout
    proc = slimzoo("list-platforms", "--verbose")  # vendor, SoC and the platform file
    assert proc.returncode == 0 and "iphone12: vendor Apple; SoC Apple A14" in proc.stdout, proc.stderr


def test_search_meets_budget_and_beats_or_ties_uniform() -> None:
    proc = slimzoo("search", "--platform", "iphone12", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["predicted_latency_ms"] <= result["budget_ms"] * (1 + 1e-9)
    assert result["latency_table_source"] == "estimated"
    base = result["uniform_baseline"]
    assert base is None or result["loss_proxy"] <= base["loss_proxy"] + 1e-12


def test_export_onnx_end_to_end(tmp_path: Path) -> None:
    proc = slimzoo("export", "--platform", "galaxy-s21", "--format", "onnx", "--out", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    sidecar = json.loads(proc.stdout)
    model = tmp_path / "galaxy-s21.onnx"
    assert model.is_file() and (tmp_path / "galaxy-s21.onnx.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["galaxy-s21.onnx", "galaxy-s21.onnx.json"]
    assert sidecar["validation"]["max_abs_diff"] <= 1e-4
    assert sidecar["validation"]["top1_agreement"] == 1.0
    assert sidecar["predicted_latency_ms"] <= sidecar["budget_ms"] * (1 + 1e-9)
    assert json.loads((tmp_path / "galaxy-s21.onnx.json").read_text()) == sidecar


@pytest.mark.parametrize("args, code, fragments", [
    (["search", "--platform", "iphone-12"], 2, ["unknown platform 'iphone-12'", "did you mean 'iphone12'"]),
    (["search", "--platform", "iphone12", "--budget", "0.00001"], 1, ["infeasible", "fastest configuration"]),
    (["search", "--platform", "iphone12", "--solver", "greedy"], 2, ["unknown solver 'greedy'"]),
    (["export", "--platform", "iphone12", "--format", "onxx"], 2, ["unknown format 'onxx'", "did you mean 'onnx'"]),
    (["export", "--platform", "iphone12", "--format", "coreml", "--layout", "nhwc"], 2,
     ["--layout nhwc is not valid for coreml; valid: nchw"]),
    (["export", "--platform", "iphone12", "--format", "tflite", "--input-type", "image"], 2,
     ["--input-type is not an option for tflite"]),
    (["export", "--platform", "iphone12", "--precision", "int3"], 2, ["--precision int3 is not valid for onnx"]),
    (["search", "--platform", "iphone12", "--checkpoint", "/nonexistent.safetensors"], 2, ["no such checkpoint"]),
])
def test_bad_input_is_one_clear_line(args: list[str], code: int, fragments: list[str], tmp_path: Path) -> None:
    proc = slimzoo(*args, "--out", str(tmp_path)) if args[0] == "export" else slimzoo(*args)
    assert_one_line_error(proc, code, *fragments)
    if args[0] == "export":
        assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_truncated_checkpoint_on_the_command_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(default_checkpoint_path().read_bytes()[:5000])
    proc = slimzoo("search", "--platform", "pixel5", "--checkpoint", str(bad))
    assert_one_line_error(proc, 2, str(bad))


def test_malformed_user_platform_file_names_path_and_field(tmp_path: Path) -> None:
    (tmp_path / "mydevice.toml").write_text('name = "mydevice"\nvendor = 3\n')
    proc = slimzoo("list-platforms", "--registry", str(tmp_path))
    assert_one_line_error(proc, 2, "mydevice.toml")


def test_list_platforms_says_what_a_user_file_shadows_and_what_search_will_refuse(tmp_path: Path) -> None:
    """A user file named like a built-in replaces it: list-platforms says so. A user file that search would
    refuse (it asks for a measured table that does not exist) is flagged with search's own reason, and the
    listing still shows every other platform."""
    import re

    from slimzoo.platforms.registry import BUILTIN_DIR

    (tmp_path / "pixel5.toml").write_text((BUILTIN_DIR / "pixel5.toml").read_text())
    lab = (BUILTIN_DIR / "galaxy-s21.toml").read_text().replace('name = "galaxy-s21"', 'name = "labphone"')
    lab = re.sub(r'(?m)^source = "estimated"$', 'source = "measured"', lab)
    assert 'source = "measured"' in lab
    (tmp_path / "labphone.toml").write_text(lab)
    proc = slimzoo("list-platforms", "--registry", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["pixel5"]["shadows"] == str(BUILTIN_DIR / "pixel5.toml")
    assert rows["pixel5"]["file"] == str(tmp_path / "pixel5.toml") and rows["pixel5"]["problem"] is None
    assert rows["iphone12"]["shadows"] is None and rows["labphone"]["shadows"] is None
    assert rows["labphone"]["problem"].startswith("search will refuse it: no measured latency table for labphone")
    assert rows["labphone"]["latency_budget_ms"] is None and rows["iphone12"]["latency_budget_ms"] > 0
    proc = slimzoo("list-platforms", "--registry", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert f"pixel5: your file {tmp_path / 'pixel5.toml'} replaces the built-in" in " ".join(proc.stdout.split())
    assert "labphone: search will refuse it" in " ".join(proc.stderr.split())
    search = slimzoo("search", "--platform", "labphone", "--registry", str(tmp_path))
    assert_one_line_error(search, 2, "no measured latency table for labphone")
