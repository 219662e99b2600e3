"""Readability on real terminals (issue 12): every table-printing command's default view fits 100 columns with no
platform name or figure cut short ("galaxy-s…"), `search --all-platforms` is one row per platform, the export
bar names its stages, and width configs read in network order (b2 before b10, stem first, head last) wherever a
person or a JSON reader sees them.

The commands run in this process (typer's CliRunner) with ``COLUMNS`` set and fresh rich consoles, as in a
terminal that wide. Commands whose work takes minutes (profile, latency-report, fit-accuracy) are given their
library result, so what is checked here is the rendering.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from slimzoo import api, cli
from slimzoo.cli import app
from slimzoo.fileio import strict_json, write_json
from slimzoo.zoo.checkpoint import read_checkpoint_header

from conftest import DIGITS_CHECKPOINT

LONGEST = "moto-g-power"  # the longest built-in platform name


class Run:
    """One command line's outcome at a terminal width."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, args: list[str], columns: int) -> None:
        monkeypatch.setenv("COLUMNS", str(columns))
        monkeypatch.setattr(cli, "console", Console())  # rich reads COLUMNS when a console is made
        monkeypatch.setattr(cli, "err_console", Console(stderr=True))
        r = CliRunner().invoke(app, args, env={"COLUMNS": str(columns)})
        self.args, self.columns, self.code, self.out, self.err = args, columns, r.exit_code, r.stdout, r.stderr
        assert self.code == 0, (args, self.code, self.out, self.err, r.exception)

    def assert_fits(self) -> None:
        """No line wider than the terminal, and no cell cut short with an ellipsis."""
        for text in (self.out, self.err):
            assert "…" not in text, f"{self.args}: a cell was cut short:\n{text}"
            wide = [line for line in text.splitlines() if len(line) > self.columns]
            assert not wide, f"{self.args}: {len(wide)} lines over {self.columns} columns:\n{text}"

    def cells(self) -> list[list[str]]:
        """The table body's rows, cell texts stripped (one entry per printed line)."""
        return [[c.strip() for c in line.strip("│").split("│")] for line in self.out.splitlines()
                if line.startswith("│")]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Any:
    def invoke(*args: str, columns: int = 100) -> Run:
        return Run(monkeypatch, list(args), columns)

    return invoke


# -- platforms and search ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("columns", [100, 80])
def test_list_platforms_fits_and_names_every_platform_whole(run: Any, columns: int) -> None:
    r = run("list-platforms", columns=columns)
    r.assert_fits()
    names = {row["name"] for row in api.list_platforms()}
    assert names <= {row[0] for row in r.cells()}, r.out
    verbose = run("list-platforms", "--verbose", columns=columns)
    verbose.assert_fits()
    text = " ".join(verbose.out.split())
    assert "vendor Samsung; SoC Qualcomm Snapdragon 888" in text and "galaxy-s21.toml" in text


def test_search_one_platform_fits(run: Any) -> None:
    r = run("search", "--platform", LONGEST)
    r.assert_fits()
    assert r.out.index("stem=") < r.out.index("b2.expand=") < r.out.index("b10.expand=") < r.out.index("head=")


@pytest.mark.parametrize("columns", [100, 80])
def test_search_all_platforms_is_one_row_per_platform(run: Any, columns: int) -> None:
    """The default view is one row per platform and a summary (it was 158 lines of wrapped width configs at 100
    columns); the configs are one --verbose away, in network order."""
    r = run("search", "--all-platforms", columns=columns)
    r.assert_fits()
    names = [row["name"] for row in api.list_platforms()]
    rows = r.cells()
    assert [row[0] for row in rows] == sorted(names), r.out  # one line each: nothing wraps
    assert "=" not in r.out and "widths: --verbose" in " ".join(r.out.split())
    assert len(r.out.splitlines()) <= len(names) + 16, r.out  # the table, the summary, a few notes (was 171)
    verbose = run("search", "--all-platforms", "--verbose", columns=columns)
    verbose.assert_fits()
    text = " ".join(verbose.out.split())
    for name in names:
        assert f"{name}: stem=" in text
    assert text.index("b2.expand=") < text.index("b10.expand=")


# -- accuracy and markets ----------------------------------------------------------------------------------------
def test_evaluate_fits(run: Any) -> None:
    r = run("evaluate", "--platforms", f"{LONGEST},galaxy-s21")
    r.assert_fits()
    assert {row[0] for row in r.cells()} == {LONGEST, "galaxy-s21"}


def test_market_crp_fits(run: Any) -> None:
    r = run("market", "crp", "--platforms", "6", "--alpha", "1")
    r.assert_fits()
    assert LONGEST in {row[0] for row in r.cells()}


def test_fit_accuracy_fits(run: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shipped = Path(cli.__file__).parent / "zoo" / "shipped" / "mobilenetv2_fashion_mnist.accuracy.json"
    report = dict(json.loads(shipped.read_text())["report"])
    report["model_file"] = str(tmp_path / ("a-rather-long-folder-name-" * 3) / "checkpoint.accuracy.json")
    monkeypatch.setattr(api, "fit_accuracy", lambda *a, **k: report)
    run("fit-accuracy").assert_fits()


# -- latency tables ----------------------------------------------------------------------------------------------
def _held_out() -> dict[str, Any]:
    return {"n": 50, "acc5": 0.62, "acc10": 0.9, "mape_pct": 5.43, "spearman": 0.981, "bias_pct": -1.2}


def _measured_table(tmp_path: Path) -> tuple[Any, Path]:
    held = {"per_layer_sum": _held_out(), "fitted": _held_out()}
    prov = {"cpu_model": "AMD EPYC 7B13 64-Core Processor", "cores": 2, "threads": 1, "runtime": "onnxruntime",
            "runtime_version": "1.32.0", "date": "2026-12-02T09:36:02+00:00", "statistic": "median",
            "repetitions": 30, "cells": 1800, "wall_s": 812.5,
            "networks": {"fit": 100, "heldout": 50, "repeat": 10, "runs": 500, "rounds": 5, "statistic": "median"},
            "fit": {"heldout": held}, "noise": {"configs": 10, "measurements": 40, "cv_pct": 1.2,
                                               "mape_floor_pct": 0.95}}
    table = SimpleNamespace(platform="host-cpu", source="measured", arch_key="mobilenetv2-70dfba853e68",
                            provenance=prov)
    # a registry folder as deep as a CI runner's workspace: the path is one long word
    path = tmp_path / "registry-of-a-ci-runner-workspace" / "tables" / "host-cpu" / "onnxruntime" / \
        "mobilenetv2-70dfba853e68.json"
    return table, path


def test_profile_fits(run: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(api, "profile", lambda *a, **k: _measured_table(tmp_path))
    r = run("profile", "--platform", "host-cpu")
    r.assert_fits()
    assert "mobilenetv2-70dfba853e68.json" in "".join(r.out.split()).replace("│", "")


def test_latency_report_fits(run: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    table, path = _measured_table(tmp_path)
    metrics = {name: _held_out() for name in ("per-layer sum", "fitted table", "roofline estimate")}
    report = SimpleNamespace(platform="host-cpu", table_path=str(path), metrics=metrics, measured=[1.0] * 50,
                             noise=table.provenance["noise"], plot=None,
                             to_json=lambda: {"measurement": table.provenance})
    monkeypatch.setattr(api, "latency_report", lambda *a, **k: report)
    run("latency-report", "--platform", "host-cpu").assert_fits()


# -- export and the zoo ------------------------------------------------------------------------------------------
def test_export_fits_and_names_its_stages(run: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The bar shows each stage by name as it starts (it was a bare spinner), and the summary table keeps the
    sidecar's path whole, however deep the output folder."""
    labels: list[str] = []
    real_bar = cli.progress_bar

    def recording_bar(description: str) -> Any:
        from contextlib import contextmanager

        @contextmanager
        def bar() -> Any:
            with real_bar(description) as update:
                def record(done: int, total: int, status: str = "") -> None:
                    labels.append(status)
                    update(done, total, status)

                yield record

        return bar()

    monkeypatch.setattr(cli, "progress_bar", recording_bar)
    out = tmp_path / "a-deep-output-folder-for-the-exported-models"
    r = run("export", "--platform", LONGEST, "--format", "onnx", "--out", str(out))
    r.assert_fits()
    assert str(out / f"{LONGEST}.onnx.json") in "".join(line.strip("│ ") for line in r.out.splitlines())
    assert labels[0] == "search" and any("slice" in s for s in labels) and any("convert" in s for s in labels)
    assert f"exporting {LONGEST} as onnx" in r.err


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zoo") / "zoo"
    summary = api.build_zoo(out, [LONGEST], ["onnx"], measure=False)
    assert summary["failed"] == 0, summary
    return out


def test_zoo_list_fits(run: Any, zoo: Path) -> None:
    for columns in (100, 80):
        r = run("zoo", "list", str(zoo), columns=columns)
        r.assert_fits()
        assert [row[:3] for row in r.cells()] == [[LONGEST, "onnx", "ok"]]
    verbose = run("zoo", "list", str(zoo), "--verbose")
    verbose.assert_fits()
    assert f"{LONGEST}/{LONGEST}.onnx" in verbose.out


def test_zoo_show_fits_with_the_config_in_network_order(run: Any, zoo: Path) -> None:
    r = run("zoo", "show", str(zoo), LONGEST)
    r.assert_fits()
    text = " ".join(r.out.split())
    assert text.index("stem=") < text.index("b2.expand=") < text.index("b10.expand=") < text.index("head=")
    assert f"onnx: {LONGEST}/{LONGEST}.onnx" in text


def test_check_fits(run: Any, zoo: Path) -> None:
    r = run("check", str(zoo))
    r.assert_fits()
    assert f"{LONGEST}/onnx" in {row[0] for row in r.cells()}


# -- width configs in network order ------------------------------------------------------------------------------
def test_width_config_json_is_in_network_order(tmp_path: Path) -> None:
    """A config is written and printed in the spec's variable order (b2 before b10, stem first, head last), also
    once read back from a file and written again; every other dict stays key-sorted (deterministic bytes), and
    the hash of JSON data does not depend on the order."""
    from slimzoo.exporters.manifest import content_hash

    spec = read_checkpoint_header(DIGITS_CHECKPOINT).spec
    config = spec.largest().to_json()
    order = spec.variable_names
    assert order.index("b2.expand") < order.index("b10.expand")
    data = {"z": 1, "width_config": config, "a": {"y": 2, "b": 3}}
    printed = json.loads(strict_json(data))
    assert list(printed) == ["a", "width_config", "z"] and list(printed["a"]) == ["b", "y"]
    assert list(printed["width_config"]) == order
    path = write_json(tmp_path / "x.json", data)
    again = write_json(tmp_path / "y.json", json.loads(path.read_text()))  # a plain dict now, as read back
    assert path.read_text() == again.read_text()
    assert list(json.loads(path.read_text())["width_config"]) == order
    assert content_hash(data) == content_hash({**data, "width_config": dict(sorted(config.items()))})


def test_search_json_config_is_in_network_order(run: Any) -> None:
    r = run("search", "--platform", "pixel5", "--json")
    config = json.loads(r.out)["config"]
    assert list(config) == read_checkpoint_header(DIGITS_CHECKPOINT).spec.variable_names
