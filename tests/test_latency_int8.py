"""Latency per precision (issue 14): int8 tables estimated (labelled as an assumption), measured on this machine
with int8 probes (ONNX Runtime on quantize_static QDQ models, LiteRT on full-integer flatbuffers), carried by the
profiling kit, and stored under their own key so that an fp32 table never stands in for an int8 one."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from slimzoo.errors import ExportError, LatencyTableError, RegistryError
from slimzoo.platforms import estimate_table, load_registry
from slimzoo.platforms.kit import import_results, kit_id, load_manifest, time_kit, write_kit
from slimzoo.platforms.latency import PRECISIONS, LatencyTable
from slimzoo.platforms.probes import ONNX_INT8, layer_model, network_model
from slimzoo.platforms.profile import profile_and_fit, save_measured_table
from slimzoo.platforms.registry import BUILTIN_DIR, load_platform_file
from slimzoo.platforms.report import latency_report
from slimzoo.platforms.roofline import PRECISION_SPEEDUPS
from slimzoo.platforms.timing import litert_available, open_backend
from slimzoo.zoo.mobilenetv2_spec import mobilenetv2_spec

TINY = mobilenetv2_spec(input_size=32, in_channels=1, num_classes=10, multipliers=(0.25, 1.0))
# What the int8 profiling and kit tests measure: quantize_static quantizes weights one channel at a time in Python,
# so narrow layers keep these tests fast.
NARROW = mobilenetv2_spec(input_size=16, in_channels=1, num_classes=10, width_mult=0.35, last_channel=128,
                          multipliers=(0.5, 1.0))
PIXEL5 = load_platform_file(BUILTIN_DIR / "pixel5.toml")
HOST = load_platform_file(BUILTIN_DIR / "host-cpu.toml")
IPHONE = load_platform_file(BUILTIN_DIR / "iphone12.toml")
QUICK = {"samples": 12, "holdout": 4, "repeats": 4, "rounds": 2, "network_runs": 6, "network_rounds": 2,
         "warmup": 1, "noise_configs": 2, "noise_copies": 2}


@pytest.fixture(autouse=True)
def _no_env_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLIMZOO_REGISTRY", raising=False)


# -- estimated tables ---------------------------------------------------------------------------------------------
GALAXY = load_platform_file(BUILTIN_DIR / "galaxy-s21.toml")


@pytest.mark.parametrize("platform", [PIXEL5, GALAXY], ids=lambda p: p.name)
def test_estimated_int8_differs_and_says_it_is_an_assumption(platform) -> None:  # noqa: ANN001
    fp32, int8 = estimate_table(platform, TINY), estimate_table(platform, TINY, "int8")
    assert fp32.precision == "fp32" and int8.precision == "int8" and int8.source == "estimated"
    speedup = PRECISION_SPEEDUPS["int8"][platform.runtime].speedup
    assert speedup > 1
    largest = TINY.largest()
    assert int8.predict(TINY, largest) < fp32.predict(TINY, largest)
    # compute and memory scale by 1/speed-up, overheads do not: the int8 prediction lies in between
    assert fp32.predict(TINY, largest) / speedup < int8.predict(TINY, largest)
    said = int8.provenance["precision_assumption"]
    assert said["assumed"] is True and said["speedup"] == speedup and "ASSUMED, not measured" in said["statement"]
    assert said["source"] and int8.provenance["precision"] == "int8"
    assert "hosted_models.md" in said["source"] and "17.5" in said["source"]
    # an fp32 table's JSON is what it was before precisions existed (zoo manifests hash it)
    assert "precision" not in fp32.to_json() and "precision_assumption" not in fp32.provenance
    assert int8.to_json()["precision"] == "int8"


@pytest.mark.parametrize(("platform", "why"), [(IPHONE, "A17 Pro"), (HOST, "engineering assumption")],
                         ids=["iphone12", "host-cpu"])
def test_no_speed_up_assumed_is_still_an_int8_table_that_says_why(platform, why: str) -> None:  # noqa: ANN001
    """Core ML on the A14 and ONNX Runtime on x86: no int8 gain is assumed, and the table says so and why."""
    fp32, int8 = estimate_table(platform, TINY), estimate_table(platform, TINY, "int8")
    assert int8.predict(TINY, TINY.largest()) == pytest.approx(fp32.predict(TINY, TINY.largest()))
    said = int8.provenance["precision_assumption"]
    assert int8.precision == "int8" and said["speedup"] == 1.0 and why in said["source"]
    assert "ASSUMED, not measured" in said["statement"] and int8.to_json() != fp32.to_json()


def test_platform_file_may_state_its_own_int8_speed_up(tmp_path: Path) -> None:
    text = (BUILTIN_DIR / "pixel5.toml").read_text().replace('name = "pixel5"', 'name = "my-phone"')
    (tmp_path / "mine.toml").write_text(text + 'int8_speedup = 2.5\nint8_speedup_source = "my own benchmark"\n')
    table = load_registry(tmp_path).latency_table("my-phone", TINY, "int8")
    said = table.provenance["precision_assumption"]
    assert said["speedup"] == 2.5 and "my own benchmark" in said["source"]
    (tmp_path / "mine.toml").write_text(text + "int8_speedup = 2.5\n")
    with pytest.raises(RegistryError, match="latency.int8_speedup_source' is missing"):
        load_registry(tmp_path)


def test_unknown_precision_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(LatencyTableError, match="unknown precision 'int4'; valid: fp32, fp16, int8"):
        load_registry(tmp_path).latency_table("pixel5", TINY, "int4")
    assert PRECISIONS == ("fp32", "fp16", "int8")


# -- the table file ------------------------------------------------------------------------------------------------
def test_old_table_json_without_precision_reads_as_fp32(tmp_path: Path) -> None:
    data = estimate_table(PIXEL5, TINY).to_json()
    assert "precision" not in data  # what every table written before issue 14 looks like
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert LatencyTable.load(tmp_path / "old.json").precision == "fp32"
    data["precision"] = "int4"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match="field 'precision' must be one of fp32, fp16, int8, got 'int4'"):
        LatencyTable.load(tmp_path / "bad.json")
    int8 = estimate_table(PIXEL5, TINY, "int8")
    int8.save(tmp_path / "int8.json")
    assert LatencyTable.load(tmp_path / "int8.json").precision == "int8"


def test_a_table_of_another_precision_in_the_wrong_folder_is_refused(tmp_path: Path) -> None:
    registry = load_registry(tmp_path)
    table = estimate_table(HOST, TINY, "int8")
    table.source, table.runtime = "measured", "onnxruntime"
    table.save(registry.table_path("host-cpu", TINY))  # an int8 table where the fp32 one belongs
    with pytest.raises(LatencyTableError, match="field 'precision' is 'int8', expected 'fp32'"):
        registry.latency_table("host-cpu", TINY)


def test_registry_paths_are_keyed_by_precision(tmp_path: Path) -> None:
    registry = load_registry(tmp_path)
    fp32, int8 = registry.table_path("pixel5", TINY), registry.table_path("pixel5", TINY, "int8")
    assert fp32 == tmp_path / "tables" / "pixel5" / "tflite" / f"{TINY.key()}.json"  # unchanged layout
    assert int8 == tmp_path / "tables" / "pixel5" / "tflite" / "int8" / f"{TINY.key()}.json"
    assert registry.find_table("pixel5", TINY, "int8") is None


# -- probes ----------------------------------------------------------------------------------------------------------
def test_onnx_int8_probes_are_quantize_static_qdq_models() -> None:
    import onnx

    layer = next(layer for layer in TINY.layers if layer.kind == "conv" and layer.residual)
    model, _ = layer_model("onnx", layer, 24, 32, np.random.default_rng(0), "int8")
    ops = [n.op_type for n in onnx.load_from_string(model).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "Conv" in ops
    weights = {t.name: t for t in onnx.load_from_string(model).graph.initializer}
    assert any(t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4 for t in weights.values())
    assert ONNX_INT8["per_channel"] and ONNX_INT8["activation_type"] == "QUInt8"


def test_int8_cells_are_timed_without_their_boundary_quantization() -> None:
    """As inside a network: the cell runs the quantized kernel alone on uint8 input, a residual Add reads the
    conv's output directly (no Transpose back to NCHW in between)."""
    import onnx

    backend = open_backend("onnxruntime", 1, np.random.default_rng(0), precision="int8")
    try:
        for layer in TINY.layers:
            if layer.kind == "pool_linear" or (layer.kind == "conv" and layer.residual) or layer.name == "b1.dw":
                c_in, c_out = TINY.channels(layer, TINY.largest())
                model, feeds, _ = backend.cell(layer, c_in, c_out)
                ops = [n.op_type for n in onnx.load_from_string(model).graph.node]
                assert not {"QuantizeLinear", "DequantizeLinear", "Transpose"} & set(ops), (layer.name, ops)
                assert any(op.startswith("Q") for op in ops), (layer.name, ops)
                assert all(v.dtype == np.uint8 for v in feeds.values()), layer.name
                assert np.all(np.isfinite(backend.time(backend.cell(layer, c_in, c_out), 3, 1)))
    finally:
        backend.close()


@pytest.mark.skipif(not litert_available(), reason="ai-edge-litert not installed")
def test_tflite_int8_probes_run_in_litert() -> None:
    from ai_edge_litert.interpreter import Interpreter

    dw = next(layer for layer in TINY.layers if layer.kind == "dwconv" and layer.stride == 2)
    for (data, feeds), in_type, out_type in (
            (layer_model("tflite", dw, 48, 48, np.random.default_rng(0), "int8"), np.int8, np.int8),
            (network_model("tflite", TINY, TINY.largest(), precision="int8"), np.float32, np.float32)):
        interpreter = Interpreter(model_content=data, num_threads=1)
        interpreter.allocate_tensors()
        for d in interpreter.get_input_details():
            assert d["dtype"] == in_type
            interpreter.set_tensor(d["index"], feeds[d["name"]])
        interpreter.invoke()
        detail = interpreter.get_output_details()[0]
        out = interpreter.get_tensor(detail["index"])
        assert detail["dtype"] == out_type and np.all(np.isfinite(out.astype(np.float64)))
        assert any(d["dtype"] == np.int8 for d in interpreter.get_tensor_details())


# -- measured tables -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def int8_table() -> LatencyTable:
    return profile_and_fit(NARROW, HOST, precision="int8", **QUICK)


def test_host_int8_table_predicts_int8_networks_with_acc10(int8_table: LatencyTable) -> None:
    prov = int8_table.provenance
    assert int8_table.precision == prov["precision"] == "int8" and int8_table.runtime == "onnxruntime"
    assert prov["quantization"]["tool"] == "onnxruntime.quantization.quantize_static"
    assert "int8 probes" in prov["method"]
    held = prov["fit"]["heldout"]["fitted"]
    assert held["n"] == QUICK["holdout"] and 0.0 <= held["acc10"] <= 1.0 and np.isfinite(held["mape_pct"])
    cut, _, timed = prov["boundary_quantization_removed"].split()[:3]
    assert cut == timed == str(prov["cells"])  # every cell was cut
    assert int8_table.prior_table().precision == "int8"  # type: ignore[union-attr]


def test_int8_and_fp32_tables_are_stored_apart(int8_table: LatencyTable, tmp_path: Path) -> None:
    int8_path = save_measured_table(int8_table, tmp_path)
    assert int8_path == tmp_path / "tables" / "host-cpu" / "onnxruntime" / "int8" / f"{NARROW.key()}.json"
    registry = load_registry(tmp_path)
    # no fp32 table measured: fp32 is the estimate, not the int8 measurement
    assert registry.latency_table("host-cpu", NARROW).source == "estimated"
    fp32 = profile_and_fit(NARROW, HOST, **QUICK)
    fp32_path = save_measured_table(fp32, tmp_path)
    assert fp32_path == tmp_path / "tables" / "host-cpu" / "onnxruntime" / f"{NARROW.key()}.json"
    registry = load_registry(tmp_path)
    got_int8, got_fp32 = registry.latency_table("host-cpu", NARROW, "int8"), registry.latency_table("host-cpu", NARROW)
    assert (got_int8.precision, got_int8.source) == ("int8", "measured")
    assert (got_fp32.precision, got_fp32.source) == ("fp32", "measured")
    assert got_int8.to_json() == json.loads(json.dumps(int8_table.to_json()))  # not replaced by the fp32 save
    # and the other way round: a new int8 table leaves the fp32 one as it is
    before = fp32_path.read_bytes()
    save_measured_table(int8_table, tmp_path)
    assert fp32_path.read_bytes() == before
    report = latency_report(NARROW, "host-cpu", registry, precision="int8")
    assert report.to_json()["precision"] == "int8"
    assert report.metrics["roofline estimate"]["n"] == QUICK["holdout"]


def test_no_int8_table_means_the_int8_estimate_never_the_fp32_measurement(tmp_path: Path) -> None:
    table = estimate_table(HOST, NARROW)
    table.source, table.runtime = "measured", "onnxruntime"
    save_measured_table(table, tmp_path)
    registry = load_registry(tmp_path)
    assert registry.latency_table("host-cpu", NARROW).source == "measured"
    int8 = registry.latency_table("host-cpu", NARROW, "int8")
    assert int8.source == "estimated" and int8.precision == "int8"
    assert int8.provenance["precision_assumption"]["assumed"] is True
    assert registry.budget_ms("host-cpu", NARROW, precision="int8") == pytest.approx(
        registry.budget_ms("host-cpu", NARROW, table=int8))


def test_measured_only_platform_without_an_int8_table_says_how_to_measure(tmp_path: Path) -> None:
    text = (BUILTIN_DIR / "pixel5.toml").read_text().replace('name = "pixel5"', 'name = "strict"')
    (tmp_path / "strict.toml").write_text(text.replace('source = "estimated"', 'source = "measured"'))
    with pytest.raises(LatencyTableError) as info:
        load_registry(tmp_path).latency_table("strict", NARROW, "int8")
    assert "no measured int8 latency table for strict" in str(info.value)
    assert "--precision int8" in str(info.value) and "\n" not in str(info.value)


def test_fp16_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as info:
        profile_and_fit(NARROW, HOST, precision="fp16", **QUICK)
    assert "cannot profile fp16 with onnxruntime" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ExportError, match="fp16 onnx probe kits are not built"):
        write_kit(NARROW, HOST, "onnx", tmp_path / "kit", precision="fp16")
    assert not (tmp_path / "kit").exists()


@pytest.mark.skipif(not litert_available(), reason="ai-edge-litert not installed")
def test_litert_int8_profile(tmp_path: Path) -> None:
    spec = mobilenetv2_spec(input_size=8, in_channels=1, num_classes=4, multipliers=(0.5, 1.0))
    table = profile_and_fit(spec, HOST, runtime="litert", precision="int8", **QUICK)
    assert (table.precision, table.runtime) == ("int8", "tflite")
    assert "int8" in table.provenance["quantization"]["activations"]
    assert save_measured_table(table, tmp_path).parent.name == "int8"


# -- the kit ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def int8_kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    kit = tmp_path_factory.mktemp("kits") / "kit8"
    summary = write_kit(NARROW, HOST, "onnx", kit, samples=12, holdout=4, noise_configs=2, noise_copies=2,
                        precision="int8")
    assert summary["precision"] == "int8" and summary["kit_id"] == kit_id(NARROW, "int8")
    time_kit(kit, kit / "results.csv", rounds=1, runs=3, warmup=1)
    return kit


def test_int8_kit_carries_int8_probes_and_imports_as_the_int8_table(int8_kit: Path, tmp_path: Path) -> None:
    import onnx

    manifest = load_manifest(int8_kit)
    assert manifest["precision"] == "int8" and manifest["kit_id"] == kit_id(NARROW) + "i8"
    layer = next(p for p in manifest["probes"] if p["kind"] == "layer")
    ops = {n.op_type for n in onnx.load(str(int8_kit / layer["file"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "int8 probes" in (int8_kit / "README.md").read_text()
    table, path = import_results(int8_kit / "results.csv", NARROW, HOST, user_dir=tmp_path)
    assert table.precision == "int8" and path.parent.name == "int8"
    registry = load_registry(tmp_path)
    assert registry.latency_table("host-cpu", NARROW, "int8").source == "measured"
    assert registry.latency_table("host-cpu", NARROW).source == "estimated"  # the fp32 table is not this one


def test_timings_of_the_fp32_kit_are_refused_by_the_int8_kit(int8_kit: Path, tmp_path: Path) -> None:
    with (int8_kit / "results.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    rows[3][0] = kit_id(NARROW) + "-" + rows[3][0].split("-", 1)[1]  # an fp32 kit's probe id
    with (tmp_path / "mixed.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    copy = tmp_path / "kit"
    shutil.copytree(int8_kit, copy)
    with pytest.raises(LatencyTableError) as info:
        import_results(tmp_path / "mixed.csv", NARROW, HOST, kit=copy, user_dir=tmp_path / "reg")
    assert "from this architecture's fp32 kit" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "reg").exists()


@pytest.mark.skipif(not litert_available(), reason="ai-edge-litert not installed")
def test_tflite_int8_kit(tmp_path: Path) -> None:
    spec = mobilenetv2_spec(input_size=8, in_channels=1, num_classes=4, multipliers=(0.5, 1.0))
    summary = write_kit(spec, PIXEL5, "tflite", tmp_path / "kit", samples=2, holdout=1, noise_configs=0,
                        precision="int8")
    assert summary["precision"] == "int8"
    assert all(p.suffix == ".tflite" for p in (tmp_path / "kit" / "probes").iterdir())
