"""Stage 5, the gate and the report: ``slimzoo check`` recomputes what a zoo promises (checksums, the manifest's
own hash, predicted latency on the current tables against the current budgets, optionally measured latency)
instead of trusting the manifest; ``slimzoo report`` renders it as one HTML page. Neither needs torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimzoo.errors import ProblemError
from slimzoo.platforms.registry import load_registry


def check_zoo(zoo: Path, measure: bool = False, tolerance: float = 0.10, registry_dir: Path | None = None) -> Any:
    """The CI gate: checksums of every file, the manifest against its own recorded sha256, each model's predicted
    latency recomputed from its width config on the platform's *current* latency table against its *current*
    budget (drift since the build reported), and with ``measure`` the measured latency (median) on this machine
    within that budget x (1 + tolerance) where the platform's runtime runs here. Nothing the manifest says about
    latency or budget is trusted. Returns a :class:`slimzoo.exporters.manifest.CheckReport`; raises
    ManifestError (exit 2) when the zoo is unreadable."""
    from slimzoo.exporters.manifest import (MANIFEST_NAME, CheckReport, Case, ManifestError, build_state,
                                            measured_case, model_id, read_manifest, recompute, verify_budgets,
                                            verify_files, verify_manifest)
    from slimzoo.platforms.timing import time_onnx_file

    if not tolerance >= 0:
        raise ProblemError(f"--tolerance must be >= 0, got {tolerance:g}")
    incomplete = build_state(zoo) if Path(zoo).is_dir() else None  # a build that did not finish: not "edited"
    if incomplete and not (Path(zoo) / MANIFEST_NAME).is_file():
        raise ManifestError(f"{zoo}: {incomplete} (it stopped before writing a manifest)")
    manifest = read_manifest(zoo)
    registry = load_registry(registry_dir)
    report = CheckReport(str(zoo))
    if incomplete:
        report.cases.append(Case("zoo", "build", "fail", incomplete))
    report.cases += verify_files(zoo, manifest, incomplete)
    report.cases.append(verify_manifest(manifest))
    report.cases += verify_budgets(manifest, registry)
    if measure:
        checksum_ok = {c.model for c in report.cases if c.gate == "checksum" and c.status == "pass"}
        for m in manifest["models"]:
            if m["status"] != "ok":
                continue
            mid = model_id(m)
            runs_here = (m.get("measured_latency") or {}).get("runs_here", False)
            now = recompute(manifest, m, registry)
            current = {**m, "budget_ms": now.budget_ms}  # the budget as it stands now, not as it was built
            if not runs_here:
                report.cases.append(measured_case(current, None, tolerance))
            elif now.budget_ms is None:
                report.cases.append(measured_case(current, None, tolerance, f"not timed: {now.error}"))
                report.cases[-1].status = "fail"
            elif mid not in checksum_ok:
                report.cases.append(measured_case(current, None, tolerance, "not timed: the file fails its checksum"))
                report.cases[-1].status = "fail"
            else:
                median, _ = time_onnx_file(Path(zoo) / m["path"])
                report.measured[mid] = median
                report.cases.append(measured_case(current, median, tolerance))
    return report


def zoo_report(zoo: Path, out: Path) -> Path:
    """Write the zoo's self-contained HTML report (plots inlined) to ``out``."""
    from slimzoo.exporters.manifest import read_manifest
    from slimzoo.report import render_report

    html = render_report(read_manifest(zoo), str(zoo))
    from slimzoo.fileio import atomic_path

    with atomic_path(out) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return Path(out)
