"""Fitted latency tables: the constrained least-squares fit, accuracy figures, profiling on this machine, the
profiling kit's round trip (write, time here, import) and every bad input of the import."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slimzoo.errors import ExportError, LatencyTableError, RegistryError
from slimzoo.platforms import estimate_table, load_registry, timing
from slimzoo.platforms.fit import FitSettings, TableLayout, accuracy, fit_table, noise_figures, spearman
from slimzoo.platforms.kit import import_results, kit_id, load_manifest, time_kit, write_kit
from slimzoo.platforms.latency import LATENCY_STATISTIC, LatencyTable
from slimzoo.platforms.probes import layer_probe, network_probe
from slimzoo.platforms.profile import profile_and_fit, profile_platform, sample_configs
from slimzoo.platforms.registry import BUILTIN_DIR, load_platform_file
from slimzoo.platforms.report import build_report, latency_report, write_scatter
from slimzoo.platforms.timing import litert_available
from slimzoo.zoo.mobilenetv2_spec import mobilenetv2_spec

TINY = mobilenetv2_spec(input_size=32, in_channels=1, num_classes=10, multipliers=(0.25, 1.0))
SMALL = mobilenetv2_spec(input_size=32, in_channels=1, num_classes=10, multipliers=(0.25, 0.625, 1.0))
PIXEL5 = load_platform_file(BUILTIN_DIR / "pixel5.toml")
HOST = load_platform_file(BUILTIN_DIR / "host-cpu.toml")  # runs onnxruntime: the platform an onnx kit is for


@pytest.fixture(autouse=True)
def _no_env_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLIMZOO_REGISTRY", raising=False)


# -- the fit ----------------------------------------------------------------------------------------------------
def _synthetic(seed: int = 0) -> tuple[LatencyTable, float, dict[str, np.ndarray]]:
    """A known 'true' table and a per-layer start that is off the way layers timed alone are: every layer scaled
    and shifted by its own amount, plus 3% noise per cell, and a doubled offset."""
    true = estimate_table(PIXEL5, SMALL)
    rng = np.random.default_rng(seed)
    prior = {}
    for layer in SMALL.layers:
        t = true.terms[layer.name]
        prior[layer.name] = np.maximum(t * rng.uniform(0.85, 1.35) + rng.uniform(-0.002, 0.006)
                                       + t * rng.normal(0, 0.03, t.shape), 1e-4)
    return true, 2 * true.offset_ms, prior


def test_fit_recovers_a_known_table_from_noisy_whole_networks() -> None:
    true, prior_offset, prior_terms = _synthetic()
    rng = random.Random(1)
    fit_configs, heldout = sample_configs(SMALL, 150, 50, seed=1)
    noise = np.random.default_rng(2)
    measured = [true.predict(SMALL, c) * (1 + noise.normal(0, 0.01)) for c in fit_configs]
    result = fit_table(SMALL, prior_offset, prior_terms, fit_configs, measured)
    fitted = LatencyTable(SMALL.key(), "pixel5", "measured", {}, result.offset_ms, result.terms)
    prior = LatencyTable(SMALL.key(), "pixel5", "measured", {}, prior_offset, prior_terms)
    extremes = [SMALL.smallest(), SMALL.largest(), *(SMALL.random(rng) for _ in range(20))]
    truth = [true.predict(SMALL, c) for c in [*heldout, *extremes]]
    before = accuracy([prior.predict(SMALL, c) for c in [*heldout, *extremes]], truth)
    after = accuracy([fitted.predict(SMALL, c) for c in [*heldout, *extremes]], truth)
    assert before["mape_pct"] > 10 and before["acc10"] < 0.5
    assert after["mape_pct"] < 1.5 and after["acc5"] == 1.0 and after["spearman"] > 0.99
    assert all(np.all(t >= 0) for t in result.terms.values()) and result.offset_ms >= 0
    assert result.info["chosen_by"] == "cross-validation" and result.info["fit_samples"] == len(fit_configs)
    for config in (SMALL.smallest(), SMALL.largest()):  # the ends, where a search often lands
        assert fitted.predict(SMALL, config) == pytest.approx(true.predict(SMALL, config), rel=0.03)
    # The terms themselves moved towards the truth, not just their sums. (Only up to a constant per layer: every
    # config uses exactly one cell of each layer, so such constants trade off against each other and the offset.)
    layout = TableLayout(SMALL)
    x_true, x_prior = layout.flatten(true.offset_ms, true.terms), layout.flatten(prior_offset, prior_terms)
    x_fit = layout.flatten(result.offset_ms, result.terms)
    assert np.abs(x_fit[1:] - x_true[1:]).sum() < 0.75 * np.abs(x_prior[1:] - x_true[1:]).sum()

    def centred(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x[layout.layer_of == i] - x[layout.layer_of == i].mean()
                               for i in range(len(SMALL.layers))])

    assert np.abs(centred(x_fit) - centred(x_true)).sum() < 0.85 * np.abs(centred(x_prior) - centred(x_true)).sum()


def test_fit_keeps_terms_non_negative_and_monotone() -> None:
    """Networks measured far below the per-layer sum, with a start that violates monotonicity: the fit must not
    answer with negative terms, nor with a layer that gets cheaper as it gets wider."""
    true, _, prior_terms = _synthetic(3)
    prior_terms = {k: v.copy() for k, v in prior_terms.items()}
    prior_terms["b2.project"][-1, -1] = prior_terms["b2.project"][0, 0] * 0.5  # widest cell cheapest
    configs, _ = sample_configs(SMALL, 60, 0, seed=4)
    measured = [0.3 * true.predict(SMALL, c) for c in configs]
    result = fit_table(SMALL, 0.0, prior_terms, configs, measured, FitSettings(ridge=0.01, smooth=1.0))
    assert all(np.all(t >= 0) for t in result.terms.values())
    layout = TableLayout(SMALL)
    lo, hi = layout.pairs()
    x = layout.flatten(result.offset_ms, result.terms)
    layer_scale = np.array([prior_terms[layer.name].mean() for layer in SMALL.layers])[layout.layer_of[lo]]
    assert np.max((x[lo] - x[hi]) / layer_scale) < 0.01  # soft, but monotone to within 1% of the layer's scale
    assert result.info["largest_violation_pct_of_layer"] < 1 and result.info["terms_at_zero"] > 0
    term = result.terms["b2.project"]
    assert term[-1, -1] >= term[0, 0]


def test_fit_refuses_bad_measurements() -> None:
    true, offset, terms = _synthetic()
    configs, _ = sample_configs(SMALL, 10, 0)
    with pytest.raises(LatencyTableError, match="finite and > 0"):
        fit_table(SMALL, offset, terms, configs, [-1.0] * len(configs))
    with pytest.raises(LatencyTableError, match="no whole-network"):
        fit_table(SMALL, offset, terms, [], [])


def test_accuracy_figures() -> None:
    m = accuracy([1.04, 2.19, 2.9, 4.0], [1.0, 2.0, 3.0, 4.0])
    assert m["n"] == 4 and m["acc5"] == 0.75 and m["acc10"] == 1.0
    assert m["mape_pct"] == pytest.approx(100 * (0.04 + 0.095 + 1 / 30 + 0) / 4)
    assert m["spearman"] == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None
    noise = noise_figures([{"config": {"a": 1}, "measured_ms": 1.0, "split": "heldout"},
                           {"config": {"a": 1}, "measured_ms": 1.02, "split": "repeat"},
                           {"config": {"a": 2}, "measured_ms": 5.0, "split": "heldout"}])
    assert noise is not None and noise["configs"] == 1 and 1.0 < noise["cv_pct"] < 1.6


def test_sample_configs_are_distinct_and_cover_the_range() -> None:
    fit, held = sample_configs(SMALL, 60, 20, seed=5)
    assert len(held) == 20 and len(fit) == 40 + len(set(SMALL.multipliers))
    assert len(set(fit) | set(held)) == len(fit) + len(held)
    macs = sorted(SMALL.macs(c) for c in fit + held)
    lo, hi = SMALL.macs(SMALL.smallest()), SMALL.macs(SMALL.largest())
    assert macs[3] < lo + 0.25 * (hi - lo) and macs[-4] > lo + 0.6 * (hi - lo)


# -- profiling on this machine ------------------------------------------------------------------------------------
def test_profile_and_fit_records_provenance_and_heldout(tmp_path: Path) -> None:
    platform = load_registry(tmp_path).get("host-cpu")
    table = profile_and_fit(TINY, platform, samples=9, holdout=3, repeats=4, rounds=2, network_runs=4,
                            network_rounds=2, warmup=1, noise_configs=2, noise_copies=2)
    prov = table.provenance
    for key in ("cpu_model", "cores", "threads", "runtime", "runtime_version", "date", "repetitions", "statistic"):
        assert key in prov, key
    assert prov["networks"]["heldout"] == 3 and prov["fit"]["heldout"]["fitted"]["n"] == 3
    # one statistic: the cells and the networks the table is fitted to are medians, as the gate measures
    assert prov["statistic"] == prov["networks"]["statistic"] == LATENCY_STATISTIC == "median"
    assert "noise" in prov and table.prior is not None
    assert {s["split"] for s in table.samples or []} == {"fit", "heldout", "repeat"}
    path = tmp_path / "t.json"
    table.save(path)
    loaded = LatencyTable.load(path)
    assert loaded.samples == json.loads(json.dumps(table.samples))
    assert loaded.prior_table().predict(TINY, TINY.largest()) == pytest.approx(  # type: ignore[union-attr]
        table.prior_table().predict(TINY, TINY.largest()))  # type: ignore[union-attr]
    report = build_report(TINY, platform, loaded)
    assert set(report.metrics) == {"per-layer sum", "fitted table", "roofline estimate"}
    assert report.to_json()["predictors"]["roofline estimate"]["source"].startswith("estimated")


def test_litert_missing_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timing, "litert_available", lambda: False)
    with pytest.raises(RegistryError, match="runtime 'litert' is not available") as info:
        profile_platform(TINY, load_registry(tmp_path).get("host-cpu"), repeats=2, runtime="litert")
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not litert_available(), reason="ai-edge-litert not installed")
def test_tflite_probes_run_in_litert() -> None:
    from ai_edge_litert.interpreter import Interpreter

    dw = next(layer for layer in TINY.layers if layer.kind == "dwconv" and layer.stride == 2)
    for data, shape in ((layer_probe("tflite", dw, 48, 48), (1, dw.out_hw, dw.out_hw, 48)),
                        (network_probe("tflite", TINY, TINY.largest()), (1, 10))):
        interpreter = Interpreter(model_content=data, num_threads=1)
        interpreter.allocate_tensors()
        for d in interpreter.get_input_details():
            interpreter.set_tensor(d["index"], np.ones(d["shape"], dtype=np.float32))
        interpreter.invoke()
        out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        assert out.shape == shape and np.all(np.isfinite(out))


# -- the kit: round trip and bad input ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def timed_kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TINY onnx kit for host-cpu (an onnxruntime platform), timed on this machine (1 round, few runs: the round
    trip, not the numbers)."""
    kit = tmp_path_factory.mktemp("kits") / "kit"
    summary = write_kit(TINY, HOST, "onnx", kit, samples=12, holdout=4, noise_configs=2, noise_copies=2)
    assert summary["probes"] == len(load_manifest(kit)["probes"])
    summary = time_kit(kit, kit / "results.csv", rounds=1, runs=3, warmup=1)
    assert summary["statistic"] == LATENCY_STATISTIC
    return kit


def _rows(kit: Path) -> list[list[str]]:
    with (kit / "results.csv").open(newline="") as fh:
        return list(csv.reader(fh))


def _write_rows(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def test_kit_contents(timed_kit: Path) -> None:
    manifest = load_manifest(timed_kit)
    kinds = [p["kind"] for p in manifest["probes"]]
    assert kinds.count("identity") == 1 and kinds.count("layer") == manifest["counts"]["layer"]
    assert all(p["id"].startswith(kit_id(TINY) + "-") for p in manifest["probes"])
    assert all((timed_kit / p["file"]).is_file() for p in manifest["probes"])
    readme = (timed_kit / "README.md").read_text()
    assert "slimzoo import-latency --platform host-cpu" in readme and "Xcode" in readme
    assert (timed_kit / "order_1.txt").read_text().count("\n") == len(manifest["probes"])


@pytest.mark.skipif(not litert_available(), reason="ai-edge-litert not installed")
def test_tflite_kit_has_adb_scripts(tmp_path: Path) -> None:
    spec = mobilenetv2_spec(input_size=8, in_channels=1, num_classes=4, multipliers=(0.5, 1.0))
    write_kit(spec, PIXEL5, "tflite", tmp_path / "kit", samples=2, holdout=1, noise_configs=0)
    readme = (tmp_path / "kit" / "README.md").read_text()
    assert "benchmark_model" in readme and "adb push" in readme and "taskset" in readme
    assert os.access(tmp_path / "kit" / "run_tflite.sh", os.X_OK)
    script = (tmp_path / "kit" / "device_run.sh").read_text()
    assert "avg=" in script and " min=" not in script  # the typical run, not the best one (one statistic)
    assert all(p.suffix == ".tflite" for p in (tmp_path / "kit" / "probes").iterdir())


def test_import_round_trip_installs_a_measured_table(timed_kit: Path, tmp_path: Path) -> None:
    table, path = import_results(timed_kit / "results.csv", TINY, HOST, user_dir=tmp_path)
    assert path == tmp_path / "tables" / "host-cpu" / "onnxruntime" / f"{TINY.key()}.json"
    used = load_registry(tmp_path).latency_table("host-cpu", TINY)
    assert used.source == "measured" and used.provenance["kit"]["kit_id"] == kit_id(TINY)
    assert used.runtime == "onnxruntime" and used.provenance["fit"]["heldout"]["fitted"]["n"] == 4
    assert used.provenance["statistic"] == LATENCY_STATISTIC
    report = latency_report(TINY, "host-cpu", load_registry(tmp_path), plot=tmp_path / "scatter.png")
    assert report.metrics["fitted table"]["n"] == 4
    assert (tmp_path / "scatter.png").read_bytes()[:4] == b"\x89PNG"
    assert write_scatter(report, tmp_path / "again.png").is_file()
    assert load_registry(tmp_path).latency_table("iphone12", TINY).source == "estimated"  # others untouched


def _bad_results(kit: Path, tmp_path: Path, case: str) -> Path:
    rows = _rows(kit)
    header, body = rows[0], rows[1:]
    if case == "missing":
        gone = body[5][0]
        body = [r for r in body if r[0] != gone]
    elif case == "negative":
        body[7][1] = "-0.25"
    elif case == "non-numeric":
        body[7][1] = "fast"
    elif case == "other-arch":
        body[7][0] = "0123abcd-" + body[7][0].split("-", 1)[1]
    return _write_rows(tmp_path / f"{case}.csv", [header, *body])


@pytest.mark.parametrize(("case", "fragment"), [
    ("missing", "no time for 1 of"),
    ("negative", "must be a finite number > 0"),
    ("non-numeric", "is not a number"),
    ("other-arch", "from another architecture's kit (0123abcd)"),
])
def test_bad_results_are_refused_and_nothing_is_overwritten(timed_kit: Path, tmp_path: Path, case: str,
                                                           fragment: str) -> None:
    registry = tmp_path / "registry"
    _, installed = import_results(timed_kit / "results.csv", TINY, HOST, user_dir=registry)
    before = installed.read_bytes()
    bad = _bad_results(timed_kit, tmp_path, case)
    with pytest.raises(LatencyTableError) as info:
        import_results(bad, TINY, HOST, kit=timed_kit, user_dir=registry)
    message = str(info.value)
    assert fragment in message and "\n" not in message
    assert str(bad) in message and (case == "missing" or f"{bad} line 9:" in message)  # header + 7 rows before
    assert installed.read_bytes() == before
    assert [p.name for p in installed.parent.iterdir()] == [installed.name]  # no temp file left behind


def test_kit_for_another_architecture_is_refused(timed_kit: Path, tmp_path: Path) -> None:
    with pytest.raises(LatencyTableError, match=f"made for {TINY.key()}, but the checkpoint's architecture is "
                                                f"{SMALL.key()}"):
        import_results(timed_kit / "results.csv", SMALL, HOST, user_dir=tmp_path)
    assert not (tmp_path / "tables").exists()


def test_kit_manifest_problems_are_one_line(timed_kit: Path, tmp_path: Path) -> None:
    with pytest.raises(LatencyTableError, match="no kit manifest here"):
        import_results(timed_kit / "results.csv", TINY, HOST, kit=tmp_path, user_dir=tmp_path)
    copy = tmp_path / "kit"
    shutil.copytree(timed_kit, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["spec"]["params"]["num_classes"] = 11
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match="does not match 'arch_key'"):
        import_results(copy / "results.csv", TINY, HOST, user_dir=tmp_path)
    iphone = load_platform_file(BUILTIN_DIR / "iphone12.toml")
    with pytest.raises(LatencyTableError, match="iphone12 runs coreml"):
        import_results(timed_kit / "results.csv", TINY, iphone, user_dir=tmp_path)


def test_import_refuses_another_runtimes_kit_even_under_its_own_name(timed_kit: Path, tmp_path: Path) -> None:
    """An onnx kit labelled as pixel5's (pixel5 runs tflite) must not become pixel5's measured table."""
    copy = tmp_path / "kit"
    shutil.copytree(timed_kit, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["platform"], data["platform_runtime"] = "pixel5", "tflite"
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(LatencyTableError) as info:
        import_results(copy / "results.csv", TINY, PIXEL5, user_dir=tmp_path)
    message = str(info.value)
    assert "onnx probes (timed with onnxruntime), but pixel5 runs tflite" in message and "\n" not in message
    assert not (tmp_path / "tables").exists()


def test_kit_of_another_runtime_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="pixel5 runs tflite: onnx probes would time the wrong runtime"):
        write_kit(TINY, PIXEL5, "onnx", tmp_path / "kit")
    iphone = load_platform_file(BUILTIN_DIR / "iphone12.toml")
    with pytest.raises(ExportError, match="Core ML probe kits are not built yet"):
        write_kit(TINY, iphone, "tflite", tmp_path / "kit")
    assert not (tmp_path / "kit").exists()


def test_report_without_a_measured_table(tmp_path: Path) -> None:
    with pytest.raises(LatencyTableError, match="no measured latency table for pixel5"):
        latency_report(TINY, "pixel5", load_registry(tmp_path))


def test_cli_import_for_another_architecture_is_one_line(timed_kit: Path, tmp_path: Path) -> None:
    """Through the command line: the kit (TINY) does not cover the shipped checkpoint's architecture."""
    proc = subprocess.run([sys.executable, "-m", "slimzoo.cli", "import-latency", str(timed_kit / "results.csv"),
                           "--platform", "pixel5", "--registry", str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "250"}, timeout=300)
    assert proc.returncode == 2, proc.stderr
    text = " ".join(proc.stderr.split())
    assert text.startswith("error:") and "Traceback" not in proc.stderr
    assert f"was made for {TINY.key()}" in text and not (tmp_path / "tables").exists()
