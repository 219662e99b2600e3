"""How well latency predictions match measurements: ``slimzoo latency-report``.

For the held-out configs of a fitted measured table (whole networks measured but never shown to the fit), three
predictors side by side: the per-layer sum alone (the table before the fit), the fitted table, and the roofline
estimate of the same platform (the ``estimated`` table a platform gets when nobody has measured it). For each:
acc5 / acc10 (share of configs predicted within 5% / 10%), MAPE, Spearman rank correlation and mean bias; plus
the noise left in repeated measurements of one config, which bounds what any predictor can show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimzoo.errors import LatencyTableError
from slimzoo.platforms.fit import accuracy
from slimzoo.platforms.latency import DEFAULT_PRECISION, LatencyTable
from slimzoo.platforms.registry import Platform, Registry
from slimzoo.platforms.roofline import estimate_table
from slimzoo.zoo.spec import ArchSpec

__all__ = ["PREDICTORS", "LatencyReport", "build_report", "latency_report", "write_scatter"]

PREDICTORS = ("per-layer sum", "fitted table", "roofline estimate")


@dataclass
class LatencyReport:
    platform: str
    arch_key: str
    table_path: str
    provenance: dict[str, Any]
    measured: list[float]
    predictions: dict[str, list[float]]
    metrics: dict[str, dict[str, Any]]
    noise: dict[str, Any] | None
    plot: str | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        prov = self.provenance
        return {
            "platform": self.platform,
            "arch_key": self.arch_key,
            "precision": self.provenance.get("precision", DEFAULT_PRECISION),
            "table": self.table_path,
            "heldout_configs": len(self.measured),
            "predictors": {name: {**self.metrics[name], "source": _source(name)} for name in PREDICTORS},
            "noise": self.noise,
            "measurement": {k: prov.get(k) for k in ("cpu_model", "cores", "threads", "runtime", "runtime_version",
                                                     "date", "statistic", "networks", "device", "kit")
                            if prov.get(k) is not None},
            "fit": {k: prov.get("fit", {}).get(k) for k in ("ridge", "smooth", "monotone", "fit_samples",
                                                            "monotone_violations", "terms_at_zero")},
            "plot": self.plot,
        }


def _source(name: str) -> str:
    return {"per-layer sum": "measured (layers timed one by one, before the fit)",
            "fitted table": "measured (fitted to whole networks)",
            "roofline estimate": "estimated (spec-based roofline)"}[name]


def build_report(spec: ArchSpec, platform: Platform, table: LatencyTable, table_path: str = "") -> LatencyReport:
    """The report of ``table`` (a fitted measured table of ``platform``) on its held-out configs."""
    table.check_matches(spec)
    prior = table.prior_table()
    heldout = table.samples_of("heldout")
    if prior is None or not heldout:
        raise LatencyTableError(
            f"{table_path or 'the measured table'} of {platform.name} has no held-out whole-network measurements "
            f"(made before fitting existed, or with --holdout 0): profile again (slimzoo profile / import-latency)")
    measured = [float(s["measured_ms"]) for s in heldout]
    estimate = estimate_table(platform, spec, table.precision)  # the estimate of the same precision
    tables = {"per-layer sum": prior, "fitted table": table, "roofline estimate": estimate}
    predictions = {name: [t.predict(spec, s["config"]) for s in heldout] for name, t in tables.items()}
    metrics = {name: accuracy(predictions[name], measured) for name in PREDICTORS}
    return LatencyReport(platform=platform.name, arch_key=table.arch_key, table_path=table_path,
                         provenance=table.provenance, measured=measured, predictions=predictions, metrics=metrics,
                         noise=table.provenance.get("noise"))


def latency_report(spec: ArchSpec, platform: str, registry: Registry, plot: Path | None = None,
                   precision: str = DEFAULT_PRECISION) -> LatencyReport:
    """Load ``platform``'s measured table of ``precision`` for ``spec`` from the registry and report on it (and
    plot it)."""
    plat = registry.get(platform)
    table = registry.measured_table(plat, spec, precision)  # the platform's runtime's table, as search reads it
    path = registry.find_table(plat, spec, precision)
    if table is None or path is None:
        flag = "" if precision == DEFAULT_PRECISION else f" --precision {precision}"
        how = (f"slimzoo profile{flag}" if plat.this_machine
               else f"slimzoo profile-kit{flag}, then slimzoo import-latency")
        what = "" if precision == DEFAULT_PRECISION else f" {precision}"
        raise LatencyTableError(f"no measured{what} latency table for {plat.name} ({plat.runtime}) and {spec.key()} "
                                f"(expected {registry.table_path(plat, spec, precision)}): measure it first ({how})")
    report = build_report(spec, plat, table, str(path))
    if plot is not None:
        report.plot = str(write_scatter(report, plot))
    return report


def write_scatter(report: LatencyReport, path: Path) -> Path:
    """Predicted vs measured for the three predictors on the held-out configs, as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from slimzoo.fileio import atomic_path

    styles = {"per-layer sum": ("#4c72b0", "o"), "fitted table": ("#dd8452", "s"),
              "roofline estimate": ("#55a868", "^")}
    fig, ax = plt.subplots(figsize=(6.5, 6), dpi=110)
    try:
        values = list(report.measured) + [v for p in report.predictions.values() for v in p]
        lo, hi = min(values) * 0.9, max(values) * 1.1
        ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="prediction = measurement")
        ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="grey", alpha=0.15,
                        label="within 10%")
        for name in PREDICTORS:
            color, marker = styles[name]
            m = report.metrics[name]
            label = (f"{name}: acc10 {m['acc10']:.0%}, MAPE {m['mape_pct']:.1f}%"
                     if m["n"] else name)
            ax.scatter(report.measured, report.predictions[name], s=18, color=color, marker=marker, alpha=0.8,
                       label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2g"))
            axis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.2g"))
        prov = report.provenance
        threads = prov.get("threads")
        where = prov.get("device") or prov.get("cpu_model", "")
        ax.set_title(f"{report.platform}: {len(report.measured)} held-out configs\n{where}"
                     + (f", {threads} thread(s)" if threads else "") + f", {prov.get('runtime', '')}"
                     + (f", {prov['precision']}" if prov.get("precision", DEFAULT_PRECISION) != DEFAULT_PRECISION
                        else ""), fontsize=9)
        ax.set_xlabel("measured latency (ms)")
        ax.set_ylabel("predicted latency (ms)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)
