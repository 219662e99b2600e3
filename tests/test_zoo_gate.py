"""The zoo and its CI gate: build-zoo, the manifest, `slimzoo check`, `zoo list/show` and the HTML report.

One small zoo (two platforms x ONNX; the other formats are exercised by the exporter tests and take minutes each
on a shared CPU) is built once per module; each tampering test works on its own copy.
"""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from slimzoo import api
from slimzoo.exporters.manifest import FORMAT_VERSION, MANIFEST_NAME, ManifestError, read_manifest
from slimzoo.platforms import load_registry

PLATFORMS = ["host-cpu", "pixel5"]
FORMATS = ["onnx"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line in a subprocess: exit codes as CI sees them."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "slimzoo.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def cli_inproc(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line in this process (no interpreter + torch start-up: ~10 s each on a shared CPU)."""
    from typer.testing import CliRunner

    from slimzoo.cli import app

    r = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return subprocess.CompletedProcess(list(args), r.exit_code, r.stdout, r.stderr)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("zoo") / "zoo"
    summary = api.build_zoo(out, PLATFORMS, FORMATS)
    return out, summary


@pytest.fixture
def copy(zoo: tuple[Path, dict], tmp_path: Path) -> Path:
    dst = tmp_path / "zoo"
    shutil.copytree(zoo[0], dst)
    return dst


def test_build_writes_manifest(zoo: tuple[Path, dict]) -> None:
    out, summary = zoo
    assert summary["failed"] == 0 and summary["built"] == len(PLATFORMS) * len(FORMATS)
    m = read_manifest(out)
    registry, spec = load_registry(), api.Workspace().spec
    assert m["format_version"] == FORMAT_VERSION
    assert len(m["checkpoint"]["sha256"]) == 64
    assert {(x["platform"], x["format"]) for x in m["models"]} == {(p, f) for p in PLATFORMS for f in FORMATS}
    for x in m["models"]:
        assert x["status"] == "ok"
        assert (out / x["path"]).is_file() and (out / x["sidecar"]).is_file()
        for key in ("sha256", "size_bytes", "width_config", "parameters", "macs", "predicted_latency_ms",
                    "budget_ms", "accuracy", "validation", "tool_versions", "latency_table", "input_hash"):
            assert key in x, key
        # the source the registry gives this platform (estimated unless the machine's registry has a measured one)
        expected = "measured" if registry.find_table(x["platform"], spec) is not None else "estimated"
        assert x["latency_table"]["source"] == expected
        assert "provenance" in x["latency_table"]
        # the figure is the exported model's (or the sliced PyTorch model's) and far above chance (10 classes)
        val = x["validation"]
        assert x["accuracy"] == (val["accuracy_exported"] if val["accuracy_exported"] is not None
                                 else val["accuracy_reference"])
        assert 0.5 < x["accuracy"] <= 1.0
    host = next(x for x in m["models"] if x["platform"] == "host-cpu")
    assert host["measured_latency"]["runs_here"] is True
    assert "host-cpu/onnx" in summary["measured_latency_ms"]  # in build-log.json, not in the manifest
    assert next(x for x in m["models"] if x["platform"] == "pixel5")["measured_latency"]["runs_here"] is False
    assert set(m["platforms"]) == set(PLATFORMS) and m["platforms"]["pixel5"]["front"]


def test_gate_passes_clean_zoo(zoo: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = zoo
    report = api.check_zoo(out)
    assert report.passed, report.to_json()
    assert any(c.warning for c in report.cases)  # built-in tables are estimates: flagged
    junit = tmp_path / "report.xml"
    r = cli("check", str(out), "--junit", str(junit), "--json")
    assert r.returncode == 0, r.stderr + r.stdout
    data = json.loads(r.stdout)
    assert data["passed"] and data["warnings"]
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert int(suite.get("tests", "-1")) == len(cases) == len(report.cases)
    assert int(suite.get("failures", "-1")) == 0
    names = {(c.get("classname"), c.get("name")) for c in cases}
    for p in PLATFORMS:
        assert (f"{p}/onnx", "checksum") in names and (f"{p}/onnx", "predicted-latency") in names
    assert ("zoo", "files") in names


def test_gate_measure(zoo: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    """The measured gate times what runs here, and its verdict follows budget x (1 + tolerance): checked with the
    timer pinned on each side of the limit (a shared CPU's real timings would make the verdict a coin toss)."""
    import slimzoo.platforms.timing as timing

    out, _ = zoo
    real = api.check_zoo(out, measure=True)
    measured = real.measured["host-cpu/onnx"]
    assert 0 < measured < 1000 and set(real.measured) == {"host-cpu/onnx"}  # pixel5's runtime does not run here
    budget = next(m["budget_ms"] for m in read_manifest(out)["models"] if m["platform"] == "host-cpu")
    for factor, verdict in ((1.09, "pass"), (1.11, "fail")):
        monkeypatch.setattr(timing, "time_onnx_file", lambda *a, f=factor, **k: (budget * f, 0.0))
        report = api.check_zoo(out, measure=True, tolerance=0.10)
        cases = {(c.model, c.gate): c for c in report.cases}
        case = cases[("host-cpu/onnx", "measured-latency")]
        assert case.status == verdict, case.message
        assert case.message.startswith(f"measured median {budget * factor:.4f} ms")  # the one statistic, named
        assert cases[("pixel5/onnx", "measured-latency")].status == "skip"
        assert report.exit_code == (0 if verdict == "pass" else 1)


def test_gate_flags_a_table_fitted_to_another_statistic() -> None:
    """A table fitted to p2 latencies predicts a best case the median-measuring gate does not see: say so."""
    from slimzoo.exporters.manifest import measured_case

    model = {"platform": "host-cpu", "format": "onnx", "budget_ms": 1.0,
             "latency_table": {"source": "measured", "provenance": {"statistic": "p2"}}}
    assert "fitted to p2 latencies, the gate measures the median" in measured_case(model, 0.5, 0.1).warning
    model["latency_table"]["provenance"]["statistic"] = "median"
    assert measured_case(model, 0.5, 0.1).warning == ""


def _verdict(zoo: Path, junit: Path) -> tuple[int, str, ET.Element]:
    r = cli("check", str(zoo), "--junit", str(junit))
    return r.returncode, r.stdout + r.stderr, ET.parse(junit).getroot()


def test_edited_file_fails(copy: Path, tmp_path: Path) -> None:
    model = copy / "pixel5" / "pixel5.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    report = api.check_zoo(copy)
    failed = [c for c in report.cases if c.status == "fail"]
    assert [(c.model, c.gate) for c in failed] == [("pixel5/onnx", "checksum")]
    assert "pixel5.onnx" in failed[0].message and "edited" in failed[0].message
    code, text, root = _verdict(copy, tmp_path / "r.xml")
    assert code == 1 and "pixel5.onnx" in text
    assert int(root.find("testsuite").get("failures")) == 1  # type: ignore[union-attr]


def test_removed_file_fails(copy: Path, tmp_path: Path) -> None:
    (copy / "host-cpu" / "host-cpu.onnx").unlink()
    report = api.check_zoo(copy)
    failed = [c for c in report.cases if c.status == "fail"]
    assert ("host-cpu/onnx", "checksum") in [(c.model, c.gate) for c in failed]
    assert any("host-cpu.onnx: removed" in c.message for c in failed)
    code, text, _ = _verdict(copy, tmp_path / "r.xml")
    assert code == 1 and "removed" in text


def test_removed_sidecar_fails(copy: Path) -> None:
    (copy / "pixel5" / "pixel5.onnx.json").unlink()
    report = api.check_zoo(copy)
    assert not report.passed
    assert any("pixel5.onnx.json: removed" in c.message for c in report.cases if c.status == "fail")


def test_added_file_fails(copy: Path, tmp_path: Path) -> None:
    (copy / "pixel5" / "extra.onnx").write_bytes(b"not in the manifest")
    report = api.check_zoo(copy)
    failed = [c for c in report.cases if c.status == "fail"]
    assert [(c.model, c.gate) for c in failed] == [("zoo", "files")]
    assert "extra.onnx: added" in failed[0].message
    code, text, _ = _verdict(copy, tmp_path / "r.xml")
    assert code == 1 and "extra.onnx" in text


def test_other_manifest_version_fails_closed(copy: Path, tmp_path: Path) -> None:
    path = copy / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="format_version"):
        api.check_zoo(copy)
    code, text, root = _verdict(copy, tmp_path / "r.xml")
    assert code == 2 and "manifest.json" in text and "format_version" in text
    assert root.find("testsuite/testcase/error") is not None  # the JUnit file is red, not empty


def test_truncated_manifest_fails_closed(copy: Path, tmp_path: Path) -> None:
    path = copy / MANIFEST_NAME
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    code, out, _ = _verdict(copy, tmp_path / "r.xml")
    assert code == 2 and "manifest.json" in out and "truncated" in out
    r = cli_inproc("zoo", "list", str(copy))
    assert r.returncode == 2 and "manifest.json" in r.stderr


def test_missing_zoo_is_exit_2(tmp_path: Path) -> None:
    r = cli("check", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "nowhere" in r.stderr


def _user_platform(registry: Path, name: str, budget_ms: float | None = None,
                   calibration_factor: float = 1.0) -> Path:
    """A user registry file shadowing built-in ``name``: its budget replaced by ``budget_ms`` (absolute), and/or
    its calibration point scaled by ``calibration_factor`` (so its estimated latency table changes)."""
    import re
    import tomllib

    from slimzoo.platforms.registry import BUILTIN_DIR

    text = (BUILTIN_DIR / f"{name}.toml").read_text()
    if budget_ms is not None:
        text = re.sub(r"(?m)^latency_budget_\w+ = .*$\n", "", text)
        text = re.sub(r'(?m)^(runtime = .*)$', rf"\1\nlatency_budget_ms = {budget_ms!r}", text, count=1)
    if calibration_factor != 1.0:
        ms = tomllib.loads(text)["latency"]["calibration_ms"]
        text = re.sub(r"(?m)^calibration_ms = .*$", f"calibration_ms = {ms * calibration_factor!r}", text)
    registry.mkdir(parents=True, exist_ok=True)
    path = registry / f"{name}.toml"
    path.write_text(text)
    return path


def test_over_budget_fails_gate(copy: Path, tmp_path: Path) -> None:
    """The registry's budget lowered after the build (the manifest untouched): the gate holds the model to the
    budget as it is now, and says the budget changed."""
    m = read_manifest(copy)
    pixel5 = next(x for x in m["models"] if x["platform"] == "pixel5")
    registry = tmp_path / "registry"
    _user_platform(registry, "pixel5", budget_ms=pixel5["predicted_latency_ms"] / 2)
    report = api.check_zoo(copy, registry_dir=registry)
    failed = [c for c in report.cases if c.status == "fail"]
    assert [(c.model, c.gate) for c in failed] == [("pixel5/onnx", "predicted-latency")]
    assert "budget changed since the build" in failed[0].message
    assert f"budget {pixel5['predicted_latency_ms'] / 2:g} ms" in failed[0].message
    r = cli_inproc("check", str(copy), "--registry", str(registry))
    assert r.returncode == 1 and "budget changed since the build" in r.stdout
    assert api.check_zoo(copy).passed  # the built-in budget: still within


def test_latency_table_drift_recomputed(copy: Path, tmp_path: Path) -> None:
    """The platform's latency table changed since the build (here: a slower calibration point): the gate
    recomputes the model's latency from its width config on today's table and reports the drift."""
    m = read_manifest(copy)
    pixel5 = next(x for x in m["models"] if x["platform"] == "pixel5")
    registry = tmp_path / "registry"
    # an absolute budget at the built latency: the same config on a 3x slower table cannot stay within it
    _user_platform(registry, "pixel5", budget_ms=pixel5["predicted_latency_ms"] * 1.01, calibration_factor=3.0)
    report = api.check_zoo(copy, registry_dir=registry)
    case = next(c for c in report.cases if (c.model, c.gate) == ("pixel5/onnx", "predicted-latency"))
    assert case.status == "fail" and "latency table changed since the build" in case.message
    predicted_now = float(case.message.split()[1])
    assert predicted_now > 1.2 * pixel5["predicted_latency_ms"]  # a slower table (plus fixed overheads)
    # the same table change under a relative budget (a fraction of the largest config on the same table) still
    # passes, with the drift as a warning
    _user_platform(registry, "pixel5", calibration_factor=3.0)
    report = api.check_zoo(copy, registry_dir=registry)
    case = next(c for c in report.cases if (c.model, c.gate) == ("pixel5/onnx", "predicted-latency"))
    assert case.status == "pass" and "latency table changed since the build" in case.warning
    assert "budget changed since the build" in case.warning


def test_edited_manifest_fails(copy: Path) -> None:
    """A budget edited into the manifest by hand: the manifest no longer matches its own sha256, and the latency
    gate ignores the edited figure (it recomputes)."""
    path = copy / MANIFEST_NAME
    data = json.loads(path.read_text())
    model = data["models"][0]
    model["budget_ms"] = model["predicted_latency_ms"] / 2
    path.write_text(json.dumps(data))
    report = api.check_zoo(copy)
    failed = [(c.model, c.gate) for c in report.cases if c.status == "fail"]
    assert failed == [("zoo", "manifest")]
    case = next(c for c in report.cases if (c.model, c.gate) == (f"{model['platform']}/onnx", "predicted-latency"))
    assert "budget changed since the build" in case.warning  # the edited number is reported, not believed


def test_rebuild_skips_and_is_deterministic(zoo: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = zoo
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != "build-log.json"}
    summary = api.build_zoo(out, PLATFORMS, FORMATS)
    assert summary["built"] == 0 and summary["reused"] == len(PLATFORMS) * len(FORMATS)
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != "build-log.json"}
    assert after == before
    # build again from scratch elsewhere: same model bytes, same manifest bytes
    other = tmp_path / "again"
    shutil.copytree(out, other)
    (other / "pixel5" / "pixel5.onnx").unlink()  # its checksum fails now, so it is exported again (one export:
    summary = api.build_zoo(other, PLATFORMS, FORMATS, measure=False)  # each takes ~10-30 s on a shared CPU)
    assert summary["built"] == 1 and summary["reused"] == len(PLATFORMS) * len(FORMATS) - 1
    for p in PLATFORMS:
        assert (other / p / f"{p}.onnx").read_bytes() == (out / p / f"{p}.onnx").read_bytes()
        assert (other / p / f"{p}.onnx.json").read_bytes() == (out / p / f"{p}.onnx.json").read_bytes()
    assert (other / MANIFEST_NAME).read_bytes() == (out / MANIFEST_NAME).read_bytes()


def test_upgraded_converter_rebuilds(zoo: tuple[Path, dict], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache key holds the tool versions: the same inputs under an upgraded onnxruntime are exported again,
    not reused (one pair, to keep it to one export)."""
    from slimzoo.exporters.onnx import OnnxExporter

    out, _ = zoo
    other = tmp_path / "upgraded"
    shutil.copytree(out, other)
    real = OnnxExporter.versions
    monkeypatch.setattr(OnnxExporter, "versions", lambda self: {**real(self), "onnxruntime": "99.0"})
    summary = api.build_zoo(other, ["pixel5"], FORMATS, measure=False)
    assert summary["built"] == 1 and summary["reused"] == 0
    model = read_manifest(other)["models"][0]
    assert model["tool_versions"]["onnxruntime"] == "99.0"


def test_export_options_in_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A changed format default (Core ML's precision) or tolerance changes the key build-zoo caches under."""
    from slimzoo.exporters.coreml import CoreMLExporter
    from slimzoo.exporters.manifest import content_hash

    before = content_hash(api.zoo_export_key("coreml"))
    monkeypatch.setattr(CoreMLExporter, "default_precision", "fp32")
    assert api.zoo_export_key("coreml")["options"]["precision"] == "fp32"
    assert content_hash(api.zoo_export_key("coreml")) != before
    fp32 = content_hash(api.zoo_export_key("coreml"))
    monkeypatch.setattr(CoreMLExporter, "atol", CoreMLExporter.atol * 10)  # fp32 is held to atol
    assert content_hash(api.zoo_export_key("coreml")) != fp32


def test_failed_pair_recorded_others_kept(zoo: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = zoo
    other = tmp_path / "partial"
    shutil.copytree(out, other)
    # an infeasible budget fails host-cpu's pair (found only by the search); pixel5's built pair is reused and kept
    summary = api.build_zoo(other, ["host-cpu", "pixel5"], ["onnx"], measure=False, budgets={"host-cpu": 1e-6})
    assert summary["failed"] == 1 and summary["reused"] == 1
    m = read_manifest(other)
    status = {(x["platform"], x["format"]): x for x in m["models"]}
    assert status[("pixel5", "onnx")]["status"] == "ok"
    assert status[("host-cpu", "onnx")]["status"] == "failed"
    reason = status[("host-cpu", "onnx")]["reason"]
    assert "budget" in reason.lower() and "Error" not in reason  # the user's words, not an exception class
    assert not (other / "host-cpu" / "host-cpu.onnx").exists()  # no file left that the manifest does not own
    report = api.check_zoo(other)
    failed = {(c.model, c.gate) for c in report.cases if c.status == "fail"}
    assert failed == {("host-cpu/onnx", "build")}
    assert report.exit_code == 1


def test_failed_pair_cli_exit_code(tmp_path: Path) -> None:
    r = cli("build-zoo", "--platforms", "host-cpu", "--formats", "onnx", "--budgets", "host-cpu=0.000001",
            "--out", str(tmp_path / "z"))
    assert r.returncode == 1 and "budget" in r.stderr and "BudgetError" not in r.stderr + r.stdout
    assert read_manifest(tmp_path / "z")["models"][0]["status"] == "failed"


@pytest.mark.parametrize(("args", "fragment"), [
    (["--platforms", "iphone12", "--budgets", "iphon12=0.1"], "unknown platform 'iphon12' (did you mean 'iphone12'?)"),
    (["--platforms", "pixel5", "--budgets", "iphone12=0.1"], "iphone12 is not being built (--platforms pixel5)"),
    (["--platforms", "pixel5", "--formats", "pt"], "--formats: unknown format 'pt'"),
    (["--platforms", "pixel5", "--formats", "onnx,tflte"], "unknown format 'tflte' (did you mean 'tflite'?)"),
    (["--platforms", "pixel5", "--budgets", "pixel5=-1"], "pixel5's budget must be a finite number of ms > 0, got -1"),
    (["--platforms", "pixel5", "--budgets", "pixel5=nan"], "pixel5's budget must be a finite number of ms > 0, got nan"),
    (["--platforms", "pixel5", "--budgets", "pixel5=inf"], "pixel5's budget must be a finite number of ms > 0, got inf"),
], ids=["misspelt-platform", "platform-not-built", "unknown-format", "misspelt-format", "negative", "nan", "inf"])
def test_bad_build_request_is_refused_up_front(tmp_path: Path, args: list[str], fragment: str) -> None:
    """Bad input to build-zoo: exit 2, one line, before any work (no zoo folder)."""
    out = tmp_path / "z"
    r = cli_inproc("build-zoo", *args, "--out", str(out))
    assert r.returncode == 2, r.stdout + r.stderr
    message = " ".join(r.stderr.split())
    assert message.startswith("error:") and fragment in message and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1  # one line (COLUMNS=200: no wrapping)
    assert not out.exists()


def test_concurrent_build_into_one_folder_is_refused(copy: Path) -> None:
    """While one build-zoo holds the folder's lock, a second is refused in one line (exit 2) and touches
    nothing: the two would otherwise delete each other's files and the last manifest would win."""
    from filelock import FileLock

    from slimzoo.exporters.manifest import LOCK_NAME

    before = {p: p.read_bytes() for p in sorted(copy.rglob("*")) if p.is_file()}
    with FileLock(copy / LOCK_NAME):  # what the first build holds (another file descriptor: a separate lock)
        r = cli_inproc("build-zoo", "--platforms", "pixel5", "--formats", "onnx", "--out", str(copy))
    assert r.returncode == 2, r.stdout + r.stderr
    message = " ".join(r.stderr.split())
    assert "another `slimzoo build-zoo` is writing into this folder" in message and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in sorted(copy.rglob("*")) if p.is_file()} == before
    assert api.check_zoo(copy).passed  # the lock file is no part of the zoo


def test_interrupted_build_is_reported_as_such_not_as_edited(copy: Path) -> None:
    """A build that stopped after rewriting a model but before its manifest: the gate says the build is
    incomplete, and blames the differing file on that, not on an edit."""
    from slimzoo.exporters.manifest import MARKER_NAME, zoo_build_session

    with pytest.raises(KeyboardInterrupt), zoo_build_session(copy):
        model = copy / "pixel5" / "pixel5.onnx"
        model.write_bytes(model.read_bytes() + b"\0")  # the new model of an unfinished rebuild
        raise KeyboardInterrupt
    assert (copy / MARKER_NAME).is_file()
    report = api.check_zoo(copy)
    failed = {(c.model, c.gate): c.message for c in report.cases if c.status == "fail"}
    assert failed[("zoo", "build")].startswith("incomplete build (interrupted)")
    assert "pixel5.onnx: sha256 differs from the manifest (incomplete build (interrupted))" in \
        failed[("pixel5/onnx", "checksum")]
    assert "edited" not in " ".join(failed.values())
    r = cli_inproc("check", str(copy))
    assert r.returncode == 1 and "incomplete build (interrupted)" in " ".join(r.stdout.split())


def test_next_build_removes_stale_temps_and_marker(copy: Path) -> None:
    """Hidden temp files and folders a killed build left behind (no chance to clean up) go at the start of the
    next build; its marker goes once the new manifest is written."""
    from slimzoo.exporters.manifest import MARKER_NAME

    stale_dir = copy / "pixel5" / ".pixel5.onnx.k3j2.tmp"
    (stale_dir / "pixel5.onnx").parent.mkdir(parents=True)
    (stale_dir / "pixel5.onnx").write_bytes(b"x" * 1000)
    stale_file = copy / ".manifest.json.a1b2.tmp"
    stale_file.write_text("{")
    (copy / MARKER_NAME).write_text("{}")
    assert not api.check_zoo(copy).passed
    summary = api.build_zoo(copy, PLATFORMS, FORMATS, measure=False)
    assert summary["reused"] == len(PLATFORMS) * len(FORMATS)
    assert not stale_dir.exists() and not stale_file.exists() and not (copy / MARKER_NAME).exists()
    assert api.check_zoo(copy).passed


def test_sigterm_mid_build_is_one_line_and_leaves_it_detectable(tmp_path: Path) -> None:
    """SIGTERM (CI cancellation, `timeout`) during build-zoo: one line, exit 143, no temp files; `check` then
    reports an incomplete build."""
    import signal
    import time

    from slimzoo.exporters.manifest import MARKER_NAME

    out = tmp_path / "z"
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "slimzoo.cli", "build-zoo", "--platforms", "host-cpu,pixel5",
                             "--formats", "onnx", "--no-measure", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not (out / MARKER_NAME).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    time.sleep(1.0)  # into the search or the first export
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stdout + stderr
    assert "interrupted (SIGTERM)" in stderr and "Traceback" not in stderr
    assert [p for p in out.rglob("*.tmp")] == []
    assert (out / MARKER_NAME).is_file()
    r = cli_inproc("check", str(out))
    assert r.returncode == 2 and "incomplete build (interrupted)" in " ".join(r.stderr.split())


def _unwritable_out(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """An --out that cannot be written, and the words the refusal must use."""
    if kind == "file":
        path = tmp_path / "zoo.txt"
        path.write_text("a file")
        return path, "is a file, not a folder"
    if kind == "under-a-file":
        (tmp_path / "f").write_text("a file")
        return tmp_path / "f" / "zoo", "is a file, not a folder"
    if kind == "read-only-mount":  # /sys: read-only even for root
        return Path("/sys/slimzoo-zoo"), "cannot write to /sys"
    if os.geteuid() == 0:
        pytest.skip("root ignores permission bits")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    return locked / "zoo", "cannot write to"


@pytest.mark.parametrize("command", ["build-zoo", "export"])
@pytest.mark.parametrize("kind", ["file", "under-a-file", "read-only-mount", "no-permission"])
def test_unwritable_out_is_refused_before_any_work(tmp_path: Path, command: str, kind: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """--out at a file, under a file, or in a place that cannot be written: one line, exit 2, and no search or
    export first (the search is made to fail loudly if reached)."""
    out, fragment = _unwritable_out(kind, tmp_path)
    from slimzoo.pipeline import building, exporting, workspace

    for module in (building, exporting):
        monkeypatch.setattr(module, "search", lambda *a, **k: pytest.fail("searched before checking --out"))
    monkeypatch.setattr(workspace, "read_checkpoint_header",
                        lambda *a, **k: pytest.fail("loaded before checking --out"))
    args = ["--platforms", "pixel5", "--formats", "onnx"] if command == "build-zoo" else ["--platform", "pixel5"]
    r = cli_inproc(command, *args, "--out", str(out))
    assert r.returncode == 2, r.stdout + r.stderr
    message = " ".join(r.stderr.split())
    assert message.startswith(f"error: --out {out}") and fragment in message, message
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_export_budget_that_is_no_number_is_bad_input() -> None:
    r = cli_inproc("export", "--platform", "pixel5", "--budget", "nan", "--out", "/nonexistent/never")
    assert r.returncode == 2 and "budget must be a finite number of ms > 0, got nan" in " ".join(r.stderr.split())


def test_zoo_list_and_show(zoo: tuple[Path, dict]) -> None:
    out, _ = zoo
    r = cli_inproc("zoo", "list", str(out))
    assert r.returncode == 0 and "pixel5" in r.stdout and "host-cpu" in r.stdout
    r = cli_inproc("zoo", "list", str(out), "--json")
    assert {x["platform"] for x in json.loads(r.stdout)} == set(PLATFORMS)
    r = cli_inproc("zoo", "show", str(out), "pixel5", "--json")
    data = json.loads(r.stdout)
    assert r.returncode == 0 and data["platform"] == "pixel5" and data["models"][0]["format"] == "onnx"
    r = cli_inproc("zoo", "show", str(out), "pixel6")
    assert r.returncode == 2 and "pixel5" in r.stderr


class _Cells(html.parser.HTMLParser):
    """Collect (row attrs, cell data-field, data-value) and image sources."""

    def __init__(self) -> None:
        super().__init__()
        self.row: dict[str, str | None] = {}
        self.section: str | None = None
        self.cells: list[tuple[str | None, str | None, str | None, str, str]] = []
        self.images: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.section = a.get("data-platform")
        if tag == "tr":
            self.row = a
        if tag == "td" and "data-value" in a:
            self.cells.append((self.section, self.row.get("data-platform"), self.row.get("data-format"),
                               a["data-field"] or "", a["data-value"] or ""))
        if tag == "img":
            self.images.append(a.get("src") or "")
        for key in ("src", "href"):
            if a.get(key) and not str(a[key]).startswith("data:"):
                self.external.append(str(a[key]))


def test_report_matches_manifest(zoo: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = zoo
    page = tmp_path / "report.html"
    r = cli_inproc("report", str(out), "--out", str(page))
    assert r.returncode == 0, r.stderr
    parser = _Cells()
    parser.feed(page.read_text())
    assert parser.external == []  # self-contained
    assert len(parser.images) == len(PLATFORMS) and all(s.startswith("data:image/png;base64,") for s in parser.images)
    m = read_manifest(out)
    summary = {(p, f, k): v for s, p, f, k, v in parser.cells if s is None}
    for x in m["models"]:
        for key in ("predicted_latency_ms", "budget_ms", "accuracy", "parameters", "macs", "size_bytes"):
            assert float(summary[(x["platform"], x["format"], key)]) == pytest.approx(x[key], rel=1e-12), key
    for name, info in m["platforms"].items():
        chosen = {k: float(v) for s, _, f, k, v in parser.cells if s == name and f is None}
        assert chosen["predicted_latency_ms"] == pytest.approx(info["chosen"]["predicted_latency_ms"])
        assert chosen["loss_proxy"] == pytest.approx(info["chosen"]["loss_proxy"])
        sizes = {f: float(v) for s, _, f, k, v in parser.cells if s == name and k == "size_bytes" and f}
        assert sizes == {x["format"]: x["size_bytes"] for x in m["models"] if x["platform"] == name}


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                    reason="headless Chromium render check: /usr/bin/chromium is not installed on this machine")
def test_report_renders_in_chromium(zoo: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = zoo
    page = api.zoo_report(out, tmp_path / "report.html")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-quic", f"--user-data-dir={tmp_path / 'ud'}"]
    r = subprocess.run(["/usr/bin/chromium", *flags, "--dump-dom", page.resolve().as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "slimzoo zoo" in r.stdout and "pixel5" in r.stdout
    shot = tmp_path / "shot.png"
    r = subprocess.run(["/usr/bin/chromium", *flags, "--window-size=1200,2000", f"--screenshot={shot}",
                        page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.is_file() and shot.stat().st_size > 20_000  # a rendered page, not a blank
