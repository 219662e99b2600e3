"""The shipped Fashion-MNIST checkpoint and its accuracy model: a zoo that differs per device, within budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slimzoo import api
from slimzoo.cli import app
from slimzoo.search import within_budget
from slimzoo.zoo.accuracy import accuracy_model_path, load_accuracy_model
from slimzoo.zoo.checkpoint import load_checkpoint, shipped_checkpoint_path


def test_shipped_checkpoint_is_fashion_mnist_trained_for_the_platforms(shipped: None) -> None:
    ck = load_checkpoint(None)
    assert ck.path == shipped_checkpoint_path()
    assert ck.meta["dataset"]["name"] == "fashion-mnist"
    assert ck.meta["training"]["strategy"] == "platforms"
    assert ck.spec.params["input_size"] == 28 and ck.spec.params["stem_stride"] == 2
    summary = ck.meta["training"]["summary"]
    assert summary["test_split"]["images"] == 10_000  # reported on the full test split


def test_shipped_accuracy_model_is_stored_and_verified(shipped: None) -> None:
    ck = load_checkpoint(None)
    stored = load_accuracy_model(accuracy_model_path(ck.path), ck.spec, ck.sha256)
    held = stored.report["held_out_figures"]
    assert stored.report["split"]["split"] == "val"  # fitted on the split held out from training, never test
    assert held["fitted"]["spearman"] > held["training_proxy"]["spearman"]


@pytest.mark.parametrize("objective", ["auto", "fitted"])
def test_all_platforms_differ_and_stay_within_budget(shipped: None, objective: str) -> None:
    ck = load_checkpoint(None)
    stored = load_accuracy_model(accuracy_model_path(ck.path), ck.spec, ck.sha256)
    found = api.search_all_platforms(objective=objective)
    configs = {r.platform: r.config for r in found.results}
    assert len(set(configs.values())) >= 5, found.notes()
    expected = stored.report["objective_check"]["preferred"] if objective == "auto" else "fitted"
    for r in found.results:
        assert r.problem.meta["objective"] == expected
        assert within_budget(r.solution.latency, r.budget_ms)
        assert r.solution.optimal
    if objective == "fitted":  # the accuracy model: every budget binds, every platform its own model
        assert len(set(configs.values())) == 6 and not found.notes()


def test_notes_say_when_budgets_do_not_bind_and_configs_repeat(tmp_path: Path) -> None:
    """The digits fixture at a budget of 100 ms: every platform gets its least-objective config, the same one."""
    result = CliRunner().invoke(app, ["search", "--all-platforms", "--budget", "100", "--json"])
    assert result.exit_code == 0, result.output
    notes = json.loads(result.output)["notes"]
    assert sum("does not bind" in n for n in notes) == 6
    assert any("get the same configuration" in n for n in notes)
    text = CliRunner().invoke(app, ["search", "--platform", "pixel5", "--budget", "100"])
    assert "note: pixel5: the budget does not bind" in " ".join(text.output.split())


@pytest.mark.slow
def test_export_reports_the_full_test_split(shipped: None, tmp_path: Path) -> None:
    result = api.export_platform("moto-g-power", "onnx", tmp_path)
    split = result.sidecar["accuracy_split"]
    assert split["dataset"] == "fashion-mnist" and split["split"] in ("test",)
    assert result.sidecar["objective"] in ("fitted", "proxy")
