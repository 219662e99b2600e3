"""Platform registry, latency tables, roofline estimates and ONNX Runtime profiling."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from slimzoo.errors import LatencyTableError, RegistryError
from slimzoo.platforms import (
    LatencyTable,
    Registry,
    estimate_table,
    load_platform_file,
    load_registry,
    market_weights,
    measure_network,
    profile_platform,
    save_measured_table,
    user_registry_dir,
)
from slimzoo.platforms.registry import BUILTIN_DIR
from slimzoo.platforms.roofline import calibration_spec
from slimzoo.platforms.timing import litert_available
from slimzoo.zoo.mobilenetv2_spec import mobilenetv2_spec
from slimzoo.zoo.spec import ArchSpec, LayerSpec, WidthVariable

BUILTINS = sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))
SHIPPED = mobilenetv2_spec(input_size=32, in_channels=1, num_classes=10)
TINY = mobilenetv2_spec(input_size=32, in_channels=1, num_classes=10, multipliers=(0.25, 1.0))


@pytest.fixture(autouse=True)
def _no_env_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not see the developer's own registry."""
    monkeypatch.delenv("SLIMZOO_REGISTRY", raising=False)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return load_registry(tmp_path)


def _base_toml() -> str:
    return (BUILTIN_DIR / "galaxy-s21.toml").read_text()


# -- registry -----------------------------------------------------------------------------------------------
def test_builtin_set() -> None:
    assert BUILTINS == ["galaxy-s21", "host-cpu", "iphone12", "lg-velvet", "moto-g-power", "pixel5"]


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_loads_with_all_fields(registry: Registry, name: str) -> None:
    p = registry.get(name)
    assert p.name == name and p.builtin
    assert p.vendor and p.device and p.soc
    assert p.runtime in ("coreml", "tflite", "onnxruntime")
    assert 0.0 <= p.market.share <= 1.0 and p.market.source and p.market.date
    assert p.budget.position is not None and 0 < p.budget.position < 1  # built-ins: relative budgets
    assert p.latency.source == "estimated" and p.latency.calibration
    assert (p.latency.calibration_ms is None) != (p.latency.assumed_gmacs_per_s is None)
    for fact in p.specs.facts().values():
        assert fact.confidence in ("verified", "third-party", "unknown")
        assert (fact.value is None) == (fact.confidence == "unknown")
    assert not p.specs.peak_fp32_gflops.known  # no built-in has a published peak: it must stay unknown


def test_builtin_facts_follow_the_reference(registry: Registry) -> None:
    assert registry.get("iphone12").runtime == "coreml"
    assert registry.get("galaxy-s21").specs.memory_bandwidth_gbps.value == 51.2
    assert registry.get("galaxy-s21").specs.memory_bandwidth_gbps.confidence == "verified"
    assert registry.get("moto-g-power").specs.memory_bandwidth_gbps.confidence == "third-party"
    velvet = registry.get("lg-velvet")
    assert "765G" in velvet.soc and "Dimensity" in velvet.device and "not" in velvet.device
    pixel = registry.get("pixel5")
    assert pixel.market.share == pytest.approx(0.02) and pixel.market.assumed
    host = registry.get("host-cpu")
    assert host.market.share == 0 and host.this_machine and host.runtime == "onnxruntime"
    assert host.specs.cpu.known and host.specs.big_cores.known  # read from this machine


def test_unknown_platform_suggests_nearest(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="did you mean 'pixel5'"):
        registry.get("pixel-5")


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda t: t.replace('name = "galaxy-s21"', 'name = "galaxy-s21'), None),  # bad TOML: no field, a line
        (lambda t: t.replace('runtime = "tflite"\n', ""), "runtime"),  # missing field
        (lambda t: t.replace('runtime = "tflite"', 'runtime = "tensorrt"'), "runtime"),
        (lambda t: t.replace("share = 0.232", "share = 1.5"), "market.share"),
        (lambda t: t.replace("latency_budget_position = 0.34", "latency_budget_ms = -1.0"), "latency_budget_ms"),
        (lambda t: t.replace("latency_budget_position = 0.34", "latency_budget_ms = 0"), "latency_budget_ms"),
        (lambda t: t.replace("latency_budget_position = 0.34", 'latency_budget_ms = "fast"'), "latency_budget_ms"),
        (lambda t: t.replace("latency_budget_position = 0.34", "latency_budget_position = 1.5"),
         "latency_budget_position"),
        (lambda t: t.replace("latency_budget_position = 0.34", "latency_budget_position = -0.1"),
         "latency_budget_position"),
        (lambda t: t.replace("latency_budget_position = 0.34", "latency_budget_fps = 0"), "latency_budget_fps"),
        (lambda t: t.replace("latency_budget_position = 0.34", ""), "latency_budget_position"),  # no budget at all
        (lambda t: t.replace("assumed = false", "assumed = 0"), "market.assumed"),
        (lambda t: t.replace('name = "galaxy-s21"', 'name = "../escape"'), "name"),
        (lambda t: t.replace('confidence = "verified" }', 'confidence = "sure" }', 1), "specs.cpu.confidence"),
        (lambda t: t.replace('runtime = "tflite"', 'runtime = "tflite"\nlatncy_budget_ms = 3'), "latncy_budget_ms"),
        (lambda t: t.replace("calibration_ms = 7.63", ""), "latency.calibration_ms"),
    ],
)
def test_malformed_file_names_path_and_field(tmp_path: Path, edit, field: str | None) -> None:  # noqa: ANN001
    path = tmp_path / "broken.toml"
    path.write_text(edit(_base_toml()))
    with pytest.raises(RegistryError) as info:
        load_platform_file(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert (f"field '{field}'" in message) if field else ("not valid TOML" in message and "line 2" in message)
    with pytest.raises(RegistryError):  # the whole registry refuses to load over it
        load_registry(tmp_path)


def test_unknown_fact_refuses_a_value(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text(_base_toml().replace("[specs]", '[specs]\npeak_fp32_gflops = { value = 100, confidence = "unknown" }'))
    with pytest.raises(RegistryError, match="specs.peak_fp32_gflops.value"):
        load_platform_file(path)


def test_user_file_overrides_builtin_via_dir_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my-pixel.toml").write_text(
        (BUILTIN_DIR / "pixel5.toml").read_text().replace("share = 0.02", "share = 0.3"))
    (tmp_path / "new.toml").write_text(_base_toml().replace('name = "galaxy-s21"', 'name = "my-phone"'))
    by_arg = load_registry(tmp_path)
    assert by_arg.get("pixel5").market.share == 0.3 and not by_arg.get("pixel5").builtin
    assert "my-phone" in by_arg.names() and set(BUILTINS) <= set(by_arg.names())
    monkeypatch.setenv("SLIMZOO_REGISTRY", str(tmp_path))
    assert user_registry_dir(None) == tmp_path
    assert load_registry().get("pixel5").market.share == 0.3


def test_default_user_dir_and_missing_explicit_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert user_registry_dir(None) == Path("~/.config/slimzoo/registry").expanduser()
    with pytest.raises(RegistryError, match="does not exist"):
        load_registry(tmp_path / "nope")
    monkeypatch.setenv("SLIMZOO_REGISTRY", str(tmp_path / "nope"))
    with pytest.raises(RegistryError, match="does not exist"):
        load_registry()


def test_duplicate_user_names_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(_base_toml())
    (tmp_path / "b.toml").write_text(_base_toml())
    with pytest.raises(RegistryError, match="already defined"):
        load_registry(tmp_path)


def test_market_weights_normalise(registry: Registry) -> None:
    weights = market_weights([registry.get("iphone12"), registry.get("galaxy-s21"), registry.get("host-cpu")])
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["iphone12"] == pytest.approx(0.471 / (0.471 + 0.232))
    assert weights["host-cpu"] == 0
    with pytest.raises(RegistryError, match="all 0"):
        market_weights([registry.get("host-cpu")])
    with pytest.raises(RegistryError):
        market_weights([])


# -- latency tables -----------------------------------------------------------------------------------------
def test_table_round_trip(registry: Registry, tmp_path: Path) -> None:
    table = registry.latency_table("pixel5", TINY)
    path = tmp_path / "t" / "table.json"
    table.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["table.json"]  # no temp file left behind
    loaded = LatencyTable.load(path)
    assert loaded.arch_key == table.arch_key and loaded.source == "estimated"
    assert loaded.provenance == json.loads(json.dumps(table.provenance))
    for name, term in table.terms.items():
        np.testing.assert_array_equal(loaded.terms[name], term)
        assert loaded.terms[name].shape == term.shape
    for config in (TINY.smallest(), TINY.largest()):
        assert loaded.predict(TINY, config) == pytest.approx(table.predict(TINY, config))


def test_fixed_channel_layer_gets_a_scalar_term(registry: Registry, tmp_path: Path) -> None:
    spec = ArchSpec("toy", {}, (WidthVariable("a", (8, 16)),),
                    (LayerSpec("fixed", "conv", 3, 8, kernel=3, in_hw=8), LayerSpec("free", "conv", 8, "a", in_hw=8)))
    table = registry.latency_table("pixel5", spec)
    assert table.terms["fixed"].shape == () and table.terms["free"].shape == (2,)
    table.save(tmp_path / "toy.json")
    loaded = LatencyTable.load(tmp_path / "toy.json")
    assert loaded.terms["fixed"].shape == ()
    assert loaded.predict(spec, {"a": 16}) == pytest.approx(table.predict(spec, {"a": 16}))


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("arch_key"), "arch_key"),
        (lambda d: d.update(source="guessed"), "source"),
        (lambda d: d.update(offset_ms="x"), "offset_ms"),
        (lambda d: d["terms"].update(stem=[[1.0, 2.0], [3.0]]), "terms.stem"),
        (lambda d: d["terms"].update(stem=[-1.0] * 4), "terms.stem"),
        (lambda d: d.update(version=99), "version"),
    ],
)
def test_malformed_table_names_file_and_field(registry: Registry, tmp_path: Path, mutate, field: str) -> None:  # noqa: ANN001
    data = registry.latency_table("pixel5", TINY).to_json()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LatencyTableError) as info:
        LatencyTable.load(path)
    assert str(path) in str(info.value) and f"'{field}'" in str(info.value)


def test_table_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(LatencyTableError, match=str(path)):
        LatencyTable.load(path)


def test_arch_key_mismatch_refused(registry: Registry) -> None:
    table = registry.latency_table("pixel5", TINY)
    with pytest.raises(LatencyTableError) as info:
        table.predict(SHIPPED, SHIPPED.largest())
    assert str(info.value) == f"latency table for pixel5 was made for {TINY.key()}, not {SHIPPED.key()}"
    with pytest.raises(LatencyTableError):
        table.factors(SHIPPED)


def test_factors_reproduce_predict(registry: Registry) -> None:
    table = registry.latency_table("galaxy-s21", SHIPPED)
    offset, factors = table.factors(SHIPPED)
    assert len(factors) == len(SHIPPED.layers)
    config = SHIPPED.random(random.Random(3))
    index = SHIPPED.index_of(config)
    total = offset + sum(float(t[tuple(index[v] for v in names)]) for names, t in factors)
    assert total == pytest.approx(table.predict(SHIPPED, config))


def test_measured_table_replaces_estimate(registry: Registry, tmp_path: Path) -> None:
    estimate = registry.latency_table("host-cpu", TINY)
    measured = LatencyTable(TINY.key(), "host-cpu", "measured", {"note": "synthetic"}, 0.5,
                            {k: v * 2 for k, v in estimate.terms.items()}, runtime="onnxruntime")
    path = save_measured_table(measured, tmp_path)
    assert path == tmp_path / "tables" / "host-cpu" / "onnxruntime" / f"{TINY.key()}.json"
    used = load_registry(tmp_path).latency_table("host-cpu", TINY)
    assert used.source == "measured" and used.offset_ms == 0.5
    assert registry.latency_table("host-cpu", SHIPPED).source == "estimated"  # other archs still estimated
    data = json.loads(path.read_text())
    data["platform"] = "pixel5"
    path.write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match="'platform'"):
        load_registry(tmp_path).latency_table("host-cpu", TINY)


def _synthetic_measured(registry: Registry, offset: float, runtime: str | None) -> LatencyTable:
    estimate = registry.latency_table("host-cpu", TINY)
    return LatencyTable(TINY.key(), "host-cpu", "measured", {"runtime": runtime} if runtime else {}, offset,
                        dict(estimate.terms), runtime=runtime)


def test_tables_are_keyed_by_runtime(registry: Registry, tmp_path: Path) -> None:
    """Profiling host-cpu with LiteRT must not replace its ONNX Runtime table, and neither may stand in for the
    other: host-cpu runs onnxruntime, so search reads the onnxruntime table whatever else is stored."""
    onnx_path = save_measured_table(_synthetic_measured(registry, 0.5, "onnxruntime"), tmp_path)
    before = onnx_path.read_bytes()
    lite_path = save_measured_table(_synthetic_measured(registry, 0.9, "tflite"), tmp_path)
    assert lite_path == tmp_path / "tables" / "host-cpu" / "tflite" / f"{TINY.key()}.json"
    assert onnx_path.read_bytes() == before
    assert load_registry(tmp_path).latency_table("host-cpu", TINY).offset_ms == 0.5
    # a table whose recorded runtime is not its folder's is refused, not used
    data = json.loads(lite_path.read_text())
    onnx_path.write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match="field 'runtime' is 'tflite', but host-cpu runs onnxruntime"):
        load_registry(tmp_path).latency_table("host-cpu", TINY)


@pytest.mark.parametrize(("recorded", "usable"), [("onnxruntime", True), ("litert", False), (None, False)])
def test_tables_from_before_runtime_keys(registry: Registry, tmp_path: Path, recorded: str | None,
                                         usable: bool) -> None:
    """A table in the old place (``tables/<platform>/<key>.json``, no runtime field) is read only when its
    provenance shows it was timed with the platform's runtime; otherwise one line says to measure again."""
    old = _synthetic_measured(registry, 0.7, None)
    old.provenance = {"runtime": recorded} if recorded else {}
    legacy = tmp_path / "tables" / "host-cpu" / f"{TINY.key()}.json"
    old.save(legacy)
    reg = load_registry(tmp_path)
    assert reg.find_table("host-cpu", TINY) == legacy
    if usable:
        assert reg.latency_table("host-cpu", TINY).offset_ms == 0.7
        return
    with pytest.raises(LatencyTableError) as info:
        reg.latency_table("host-cpu", TINY)
    message = str(info.value)
    assert "\n" not in message and str(legacy) in message and "host-cpu runs onnxruntime" in message
    assert "measure it again (slimzoo profile --platform host-cpu --runtime onnxruntime)" in message


def test_source_measured_without_table_is_an_error(tmp_path: Path) -> None:
    text = (BUILTIN_DIR / "host-cpu.toml").read_text().replace('source = "estimated"', 'source = "measured"')
    (tmp_path / "host.toml").write_text(text)
    with pytest.raises(LatencyTableError, match="no measured latency table"):
        load_registry(tmp_path).latency_table("host-cpu", TINY)


# -- roofline -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in BUILTINS if n != "host-cpu"])
def test_roofline_lands_on_calibration_point(registry: Registry, name: str) -> None:
    platform = registry.get(name)
    spec = calibration_spec(platform)
    predicted = estimate_table(platform, spec).predict(spec, spec.largest())
    assert predicted == pytest.approx(platform.latency.calibration_ms, rel=0.01)
    if platform.latency.calibration_width_mult == 1.0:
        assert spec.macs(spec.largest()) == pytest.approx(300e6, rel=0.01)  # the standard MobileNetV2 1.0


def test_roofline_provenance_and_monotone(registry: Registry) -> None:
    table = registry.latency_table("moto-g-power", SHIPPED)
    prov = table.provenance
    assert table.source == "estimated" and "peak_fp32_gflops" in prov["specs_unknown"]
    assert prov["specs_used"] == ["memory_bandwidth_gbps"] and prov["calibration_ms"] == 34.54
    assert "host" in registry.latency_table("host-cpu", SHIPPED).provenance
    for name, term in table.terms.items():
        if term.ndim:
            assert np.all(np.diff(term, axis=0) >= 0), name  # more channels never cost less


def test_infeasible_calibration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fast.toml"
    path.write_text((BUILTIN_DIR / "iphone12.toml").read_text().replace("memory_term = false", "memory_term = true"))
    platform = load_platform_file(path)
    with pytest.raises(RegistryError, match="latency.calibration_ms"):
        estimate_table(platform, TINY)


FASHION = mobilenetv2_spec(input_size=28, in_channels=1, num_classes=10, stem_stride=2)


@pytest.mark.parametrize("spec", [SHIPPED, FASHION], ids=["32x32", "28x28-s2"])
@pytest.mark.parametrize("name", BUILTINS)
def test_budget_strictly_between_smallest_and_largest(registry: Registry, name: str, spec: ArchSpec) -> None:
    """Relative budgets: for any spec, with the default table, the budget must make the search choose."""
    table = registry.latency_table(name, spec)
    smallest = table.predict(spec, spec.smallest())
    largest = table.predict(spec, spec.largest())
    assert smallest < registry.budget_ms(name, spec) < largest


def test_budget_rule_tightest_wins_and_scales_with_the_table(tmp_path: Path) -> None:
    text = _base_toml().replace("latency_budget_position = 0.34", "latency_budget_position = 0.5\n"
                                "latency_budget_fps = 4000\nlatency_budget_ms = 0.3")
    (tmp_path / "mine.toml").write_text(text.replace('name = "galaxy-s21"', 'name = "mine"'))
    registry = load_registry(tmp_path)
    plat = registry.get("mine")
    table = registry.latency_table(plat, FASHION)
    fast, full = table.fastest(FASHION), table.predict(FASHION, FASHION.largest())
    assert fast <= table.predict(FASHION, FASHION.smallest()) < full
    middle = fast + 0.5 * (full - fast)
    assert plat.budget.candidates(fast, full) == pytest.approx(
        {"latency_budget_position": middle, "latency_budget_fps": 0.25, "latency_budget_ms": 0.3})
    assert registry.budget_ms(plat, FASHION) == pytest.approx(min(middle, 0.25, 0.3))
    # the position follows the network: a bigger input has slower configs and so a larger budget
    wide = mobilenetv2_spec(input_size=56, in_channels=1, num_classes=10, stem_stride=2)
    only_position = text.replace("latency_budget_fps = 4000\nlatency_budget_ms = 0.3", "")
    (tmp_path / "mine.toml").write_text(only_position.replace('name = "galaxy-s21"', 'name = "mine"'))
    alone = load_registry(tmp_path)
    wide_table = alone.latency_table("mine", wide)
    expected = wide_table.fastest(wide) + 0.5 * (wide_table.predict(wide, wide.largest()) - wide_table.fastest(wide))
    assert alone.budget_ms("mine", wide) == pytest.approx(expected)
    assert alone.budget_ms("mine", wide) > alone.budget_ms("mine", FASHION)


def test_relative_budget_is_feasible_even_for_a_tiny_overhead_bound_net(registry: Registry) -> None:
    """A 16x16 quarter-width net is mostly per-layer overhead: every built-in budget still lies in its range."""
    tiny = mobilenetv2_spec(input_size=16, in_channels=1, num_classes=10, width_mult=0.25, multipliers=(0.5, 1.0))
    for name in BUILTINS:
        table = registry.latency_table(name, tiny)
        assert table.fastest(tiny) < registry.budget_ms(name, tiny) < table.predict(tiny, tiny.largest())


# -- profiling ----------------------------------------------------------------------------------------------
def test_profile_tiny_spec(registry: Registry, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    table = profile_platform(TINY, registry.get("host-cpu"), repeats=9, warmup=2,
                             progress=lambda done, total: calls.append((done, total)))
    assert table.source == "measured" and table.arch_key == TINY.key()
    assert calls[-1][0] == calls[-1][1] and len(calls) == calls[-1][1]
    assert table.spread is not None and set(table.spread) == set(table.terms)
    assert all(np.all(t > 0) for t in table.terms.values()) and table.offset_ms > 0
    assert table.predict(TINY, TINY.largest()) > table.predict(TINY, TINY.smallest())
    for key in ("cpu_model", "cores", "threads", "runtime_version", "date", "repetitions", "warmup"):
        assert key in table.provenance
    path = save_measured_table(table, tmp_path)
    assert load_registry(tmp_path).latency_table("host-cpu", TINY).source == "measured"
    assert LatencyTable.load(path).spread is not None


@pytest.mark.skipif(not litert_available(), reason="ai-edge-litert not installed")
def test_litert_profile_is_stored_beside_the_onnx_one(registry: Registry, tmp_path: Path) -> None:
    """``profile --platform host-cpu --runtime litert``: the table says tflite and goes to its own file."""
    onnx_path = save_measured_table(_synthetic_measured(registry, 0.5, "onnxruntime"), tmp_path)
    before = onnx_path.read_bytes()
    table = profile_platform(TINY, registry.get("host-cpu"), repeats=2, warmup=0, rounds=1, runtime="litert",
                             network_check=False)
    assert table.runtime == "tflite" and table.provenance["runtime"] == "litert"
    path = save_measured_table(table, tmp_path)
    assert path.parent.name == "tflite" and onnx_path.read_bytes() == before
    assert LatencyTable.load(path).runtime == "tflite"


def test_profile_refuses_other_devices(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="cannot profile 'pixel5'"):
        profile_platform(TINY, registry.get("pixel5"))


def test_measure_network_runs_the_whole_spec() -> None:
    small = measure_network(TINY, TINY.smallest(), repeats=20, warmup=3)
    large = measure_network(TINY, TINY.largest(), repeats=20, warmup=3)
    assert 0 < small < large


def test_builtin_facts_are_cited_from_the_repository() -> None:
    """The built-in files and the platform docs cite their facts in docs/, which ships with the repository (not
    a folder outside it), and the cited page holds each file's calibration point and market share."""
    import re
    import tomllib

    root = BUILTIN_DIR.parents[2]
    facts = root / "docs" / "device-facts.md"
    cited: set[str] = set()
    for path in [*sorted(BUILTIN_DIR.glob("*.toml")), root / "docs" / "platforms.md"]:
        text = path.read_text()
        assert "shared/" not in text, f"{path} cites a file outside the repository"
        cited |= set(re.findall(r"docs/[\w./-]+\.md", text))
    assert "docs/device-facts.md" in cited and all((root / c).is_file() for c in cited), cited
    page = facts.read_text()
    for path in sorted(BUILTIN_DIR.glob("*.toml")):
        data = tomllib.loads(path.read_text())
        ms = data["latency"].get("calibration_ms")
        if ms is not None:
            assert re.search(rf"\b{re.escape(f'{ms:g}')} (ms|/)", page), \
                f"{path.name}: calibration point {ms} ms not in {facts}"
        share = data["market"]["share"]
        if share and not data["market"]["assumed"]:
            assert f"{share:.1%}" in page, f"{path.name}: market share {share:.1%} not in {facts}"
