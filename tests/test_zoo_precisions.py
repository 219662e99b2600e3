"""build-zoo --precisions: int8 variants beside each format's default, searched on the int8 latency table,
named platform/format/int8 in the manifest and held by the gate to the same budget in ms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, cli

from slimzoo import api
from slimzoo.pipeline.building import _variants


def test_variants_keep_each_format_default_once() -> None:
    assert _variants(["onnx", "coreml"], None) == [("onnx", None), ("coreml", None)]
    assert _variants(["onnx", "coreml"], ["fp32", "int8"]) == [("onnx", None), ("onnx", "int8"),
                                                                ("coreml", "fp32"), ("coreml", "int8")]


def test_a_precision_a_format_lacks_is_refused_up_front(tmp_path: Path) -> None:
    r = cli("build-zoo", "--platforms", "pixel5", "--formats", "onnx", "--precisions", "fp16", "--out",
            str(tmp_path / "zoo"))
    assert_one_line_error(r, 2, "--precisions: onnx has no fp16")
    assert not (tmp_path / "zoo" / "manifest.json").exists()
    r = cli("build-zoo", "--platforms", "pixel5", "--precisions", "int9", "--out", str(tmp_path / "zoo"))
    assert_one_line_error(r, 2, "--precisions: unknown precision 'int9'", "did you mean 'int8'")


def test_int8_search_uses_the_int8_table_and_the_same_budget() -> None:
    ws = api.Workspace()
    fp32 = api.search_platform("pixel5", workspace=ws)
    int8 = api.search_platform("pixel5", workspace=ws, precision="int8")
    assert int8.budget_ms == fp32.budget_ms  # a budget is the device's requirement in ms
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    table = ws.latency_table("pixel5", "int8")
    assert table.precision == "int8" and int8.solution.latency == pytest.approx(table.predict(ws.spec, int8.config))
    assert int8.solution.latency <= int8.budget_ms


@pytest.mark.slow
def test_int8_zoo_builds_checks_and_reuses(tmp_path: Path) -> None:
    out = tmp_path / "zoo"
    summary = api.build_zoo(out, platforms=["pixel5"], formats=["onnx"], precisions=["fp32", "int8"],
                            measure=False)
    assert summary["failed"] == 0 and summary["built"] == 2, summary
    manifest = json.loads((out / "manifest.json").read_text())
    by_id = {m.get("id", f"{m['platform']}/{m['format']}"): m for m in manifest["models"]}
    assert set(by_id) == {"pixel5/onnx", "pixel5/onnx/int8"}
    assert by_id["pixel5/onnx/int8"]["precision"] == "int8" and by_id["pixel5/onnx/int8"]["latency_precision"] == "int8"
    assert (out / "pixel5" / "pixel5.int8.onnx").is_file() and (out / "pixel5" / "pixel5.onnx").is_file()
    assert api.check_zoo(out).passed
    again = api.build_zoo(out, platforms=["pixel5"], formats=["onnx"], precisions=["fp32", "int8"], measure=False)
    assert again["reused"] == 2 and again["built"] == 0
