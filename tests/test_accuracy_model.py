"""The fitted additive accuracy model: the fit, its storage and integrity, and the search using it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from slimzoo import api
from slimzoo.cli import app
from slimzoo.errors import CheckpointError, ConfigError
from slimzoo.zoo.accuracy import (
    AdditiveAccuracyModel,
    StoredAccuracyModel,
    accuracy_model_path,
    load_accuracy_model,
    rank_figures,
    sample_configs,
    search_objective,
)
from slimzoo.zoo.checkpoint import default_checkpoint_path, load_checkpoint
from slimzoo.zoo.mobilenetv2_spec import mobilenetv2_spec

SPEC = mobilenetv2_spec(input_size=28, in_channels=1, num_classes=10, stem_stride=2)


def true_error(configs: list, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A monotone additive ground truth (wider is better, with diminishing returns) plus measurement noise."""
    terms = {v.name: rng.uniform(0.05, 1.0) * (1 - np.asarray(v.choices) / v.choices[-1]) ** 1.5
             for v in SPEC.variables}
    y = np.array([8.0 + sum(terms[v.name][v.choices.index(c[v.name])] for v in SPEC.variables) for c in configs])
    return terms, y + rng.normal(0, 0.05, len(y))


def test_sampled_configs_span_the_width_range() -> None:
    configs = sample_configs(SPEC, 60, seed=3)
    assert len(set(configs)) == 60
    macs = np.array([SPEC.macs(c) for c in configs])
    lo, hi = SPEC.macs(SPEC.smallest()), SPEC.macs(SPEC.largest())
    span = (macs.max() - macs.min()) / (hi - lo)
    assert span > 0.7  # plain uniform sampling would bunch in the middle
    assert sample_configs(SPEC, 60, seed=3) == configs  # seeded


def test_fit_recovers_a_monotone_additive_truth_on_held_out_configs() -> None:
    rng = np.random.default_rng(0)
    configs = sample_configs(SPEC, 160, seed=0)
    _, y = true_error(configs, rng)
    model = AdditiveAccuracyModel().fit(SPEC, configs[:120], y[:120])
    predicted = model.predict(SPEC, configs[120:])
    figures = rank_figures(predicted, 1 - y[120:] / 100)
    assert figures["spearman"] > 0.9
    assert np.mean(np.abs(predicted - y[120:])) < 0.5
    if model.monotone_:
        for v in SPEC.variables:  # wider never predicted worse
            assert np.all(np.diff(model.terms_[v.name]) <= 1e-9)
    assert model.cv_mae_ and set(model.unary()) == set(SPEC.variable_names)


def test_fit_refuses_too_few_rows() -> None:
    with pytest.raises(ConfigError):
        AdditiveAccuracyModel().fit(SPEC, sample_configs(SPEC, 3), [1.0, 2.0, 3.0])


@pytest.fixture
def checkpoint_copy(tmp_path: Path) -> Path:
    path = tmp_path / "ck.safetensors"
    shutil.copy(default_checkpoint_path(), path)
    return path


def stored_for(path: Path) -> StoredAccuracyModel:
    ck = load_checkpoint(path)
    rng = np.random.default_rng(1)
    configs = sample_configs(ck.spec, 40, seed=1)
    # the shipped spec: wider means lower error, so the search moves once the model is fitted
    y = np.array([10 - 5 * ck.spec.macs(c) / ck.spec.macs(ck.spec.largest()) for c in configs])
    model = AdditiveAccuracyModel(alpha=0.1).fit(ck.spec, configs, y + rng.normal(0, 0.01, len(y)))
    return StoredAccuracyModel(ck.spec.key(), ck.sha256, model, {"note": "test"})


def test_storage_round_trip_and_search_uses_it(checkpoint_copy: Path) -> None:
    ck = load_checkpoint(checkpoint_copy)
    assert search_objective(ck)[0] == "proxy"
    stored = stored_for(checkpoint_copy)
    path = stored.save(accuracy_model_path(checkpoint_copy))
    assert path.name == "ck.accuracy.json"
    back = load_accuracy_model(path, ck.spec, ck.sha256)
    for name, values in stored.model.terms_.items():
        assert np.allclose(back.model.terms_[name], values)
    name, unary = search_objective(ck)
    assert name == "fitted" and np.allclose(unary["head"], stored.model.terms_["head"])
    assert search_objective(ck, "proxy")[0] == "proxy"
    found = api.search_platform("pixel5", checkpoint=checkpoint_copy)
    assert found.to_json()["objective"] == "fitted"
    assert api.search_platform("pixel5", checkpoint=checkpoint_copy, objective="proxy").to_json()["objective"] \
        == "proxy"
    result = CliRunner().invoke(app, ["search", "--platform", "pixel5", "--checkpoint", str(checkpoint_copy)])
    assert result.exit_code == 0 and "fitted accuracy" in " ".join(result.output.split())


@pytest.mark.parametrize("edit", ["terms", "checkpoint", "garbage", "version"])
def test_tampered_or_foreign_model_is_refused_in_one_line(checkpoint_copy: Path, edit: str) -> None:
    ck = load_checkpoint(checkpoint_copy)
    path = stored_for(checkpoint_copy).save(accuracy_model_path(checkpoint_copy))
    data = json.loads(path.read_text())
    if edit == "terms":
        data["terms"]["head"][0] += 1.0  # hash no longer matches
    elif edit == "checkpoint":
        data = StoredAccuracyModel(ck.spec.key(), "0" * 64, stored_for(checkpoint_copy).model, {}).to_json()
    elif edit == "version":
        data["version"] = 99
    path.write_text("{not json" if edit == "garbage" else json.dumps(data))
    with pytest.raises(CheckpointError) as info:
        search_objective(ck)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    result = CliRunner().invoke(app, ["search", "--platform", "pixel5", "--checkpoint", str(checkpoint_copy)])
    assert result.exit_code == 2 and len([x for x in result.output.splitlines() if x.strip()]) == 1


def test_auto_follows_the_measured_objective_check(checkpoint_copy: Path) -> None:
    """fit-accuracy measures both objectives' optima on the validation split; auto follows the better one, and
    an explicit --objective still wins."""
    ck = load_checkpoint(checkpoint_copy)
    stored = stored_for(checkpoint_copy)
    stored.report["objective_check"] = {"preferred": "proxy", "mean_val_accuracy": {"fitted": 0.84, "proxy": 0.86}}
    stored.save(accuracy_model_path(checkpoint_copy))
    assert search_objective(ck)[0] == "proxy"
    assert search_objective(ck, "fitted")[0] == "fitted"
    stored.report["objective_check"]["preferred"] = "fitted"
    stored.save(accuracy_model_path(checkpoint_copy))
    assert search_objective(ck)[0] == "fitted"


def test_fitted_objective_without_a_model_says_how_to_make_one(checkpoint_copy: Path) -> None:
    with pytest.raises(CheckpointError, match="fit-accuracy"):
        search_objective(load_checkpoint(checkpoint_copy), "fitted")
    with pytest.raises(ConfigError, match="did you mean 'fitted'"):
        search_objective(load_checkpoint(checkpoint_copy), "fited")


def test_fit_accuracy_command_measures_fits_and_stores(checkpoint_copy: Path, tmp_path: Path) -> None:
    """End to end on the digits fixture: real sub-networks measured on the validation split, model stored beside
    the checkpoint, held-out figures for both objectives, a plot, and the search switching to it."""
    plot = tmp_path / "fit.png"
    result = CliRunner().invoke(app, ["fit-accuracy", "--checkpoint", str(checkpoint_copy), "--configs", "8",
                                      "--plot", str(plot), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["configs"] == 8 and report["held_out"] == 2 and report["split"]["split"] == "val"
    assert set(report["held_out_figures"]) == {"fitted", "training_proxy"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ck = load_checkpoint(checkpoint_copy)
    stored = load_accuracy_model(accuracy_model_path(checkpoint_copy), ck.spec, ck.sha256)
    rows = stored.report["measurements"]
    assert len(rows) == 8 and all(0.5 < r["val_accuracy"] <= 1 for r in rows)  # digits: every width is good
    check = stored.report["objective_check"]
    assert set(check["platforms"]) == {"galaxy-s21", "host-cpu", "iphone12", "lg-velvet", "moto-g-power", "pixel5"}
    means = check["mean_val_accuracy"]
    assert check["preferred"] == ("proxy" if means["proxy"] > means["fitted"] else "fitted")
    assert search_objective(ck)[0] == check["preferred"]


def test_fit_accuracy_refuses_too_few_configs(checkpoint_copy: Path) -> None:
    result = CliRunner().invoke(app, ["fit-accuracy", "--checkpoint", str(checkpoint_copy), "--configs", "3"])
    assert result.exit_code == 2 and not accuracy_model_path(checkpoint_copy).exists()


def test_noise_ceiling_is_what_binomial_noise_allows() -> None:
    from slimzoo.zoo.accuracy import noise_ceiling

    rng = np.random.default_rng(0)
    truth = rng.uniform(0.83, 0.87, 4000)
    measured = rng.binomial(5000, truth) / 5000
    ceiling = noise_ceiling(measured, 5000)
    assert abs(ceiling - np.corrcoef(truth, measured)[0, 1]) < 0.02  # the correlation a perfect model can reach
    assert noise_ceiling(measured, 10**9) > 0.999 and np.isnan(noise_ceiling([0.5, 0.5], 100))
