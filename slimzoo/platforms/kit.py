"""A profiling kit for devices slimzoo cannot run on, and the import of the timings it brings back.

``write_kit`` writes, for one architecture and platform, every probe the fitted table needs (the identity model,
every layer at every width choice, whole networks at random and uniform configs, some of them held out, some
measured twice for the noise) in the platform's format, a ``manifest.json`` saying what each probe is, the
round orders, the scripts that time them with the vendor's own tool, and a README with the exact commands.
``import_results`` reads the timings back (a CSV: probe id and time), checks them against the manifest, fits the
table exactly as ``slimzoo profile`` does (:func:`slimzoo.platforms.fit.fit_from_samples`) and installs it as
``measured``, atomically, only once everything succeeded.

Probe ids start with the kit id (the first 8 hex digits of the architecture key, followed by ``i8`` for an int8
kit), so timings of another architecture's kit, or of the same architecture's kit of another precision, are
recognised as such instead of silently fitted.

``precision="int8"`` writes int8 probes (:mod:`slimzoo.platforms.probes`: QDQ ONNX models quantized by ONNX
Runtime's ``quantize_static``, full-integer TFLite models) and the manifest records the precision; its timings
import as the platform's int8 table, stored beside the fp32 one. fp16 kits are refused in one line.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from slimzoo.errors import ExportError, LatencyTableError, suggest
from slimzoo.platforms.latency import (DEFAULT_PRECISION, LATENCY_STATISTIC, PRECISIONS, LatencyTable,
                                      check_precision, layer_cells, layer_grid)
from slimzoo.platforms.probes import PROBE_PRECISIONS, identity_probe, layer_probe, network_probe
from slimzoo.platforms.profile import MIN_TERM_MS, repeat_configs, sample_configs
from slimzoo.platforms.registry import Platform, measured_table_path, user_registry_dir
from slimzoo.platforms.timing import DEFAULT_QUANTILE, litert_available, statistic, statistic_name, time_file_runs
from slimzoo.zoo.spec import ArchSpec

__all__ = ["KIT_FORMAT", "KIT_FORMATS", "KIT_VERSION", "import_results", "kit_id", "load_manifest", "read_results",
           "time_kit", "write_kit"]

KIT_FORMAT = "slimzoo-latency-kit"
KIT_VERSION = 1
KIT_FORMATS = {"tflite": ".tflite", "onnx": ".onnx"}
FORMAT_RUNTIME = {"tflite": "tflite", "onnx": "onnxruntime"}
RUNTIME_FORMAT = {runtime: fmt for fmt, runtime in FORMAT_RUNTIME.items()}
ORDER_FILES = 5
DEFAULT_KIT_SAMPLES = 110  # 60 fit + 50 held out (+ uniform): a phone run stays well under an hour per round


PRECISION_TAGS = {"fp32": "", "fp16": "h", "int8": "i8"}  # appended to the kit id (never a '-': ids split there)


def kit_id(spec: ArchSpec, precision: str = DEFAULT_PRECISION) -> str:
    """The prefix of every probe id: the architecture key's hash, shortened, and a tag for a precision other
    than fp32 (``i8``)."""
    return spec.key().rsplit("-", 1)[-1][:8] + PRECISION_TAGS[check_precision(precision)]


# -- writing ------------------------------------------------------------------------------------------------
def write_kit(spec: ArchSpec, platform: Platform, fmt: str, out: Path, samples: int = DEFAULT_KIT_SAMPLES,
              holdout: int | None = None, seed: int = 0, noise_configs: int = 4, noise_copies: int = 2,
              progress: Callable[[int, int], None] | None = None,
              precision: str = DEFAULT_PRECISION) -> dict[str, Any]:
    """Write the kit of ``precision`` probes into ``out`` (created; replaced as a whole only once complete) and
    return a summary."""
    from slimzoo import __version__
    from slimzoo.fileio import atomic_tree

    if fmt == "coreml" or platform.runtime == "coreml":
        raise ExportError(f"Core ML probe kits are not built yet ({platform.name} runs {platform.runtime}, "
                          f"--format {fmt}): time single exported .mlpackage files with Xcode's performance report "
                          "(docs/platforms.md), or make a kit for a tflite or onnxruntime platform")
    if fmt not in KIT_FORMATS:
        raise ExportError(f"unknown kit format '{fmt}'; valid: {', '.join(KIT_FORMATS)}{suggest(fmt, KIT_FORMATS)}")
    if FORMAT_RUNTIME[fmt] != platform.runtime:  # its timings could never be imported for this platform
        raise ExportError(f"{platform.name} runs {platform.runtime}: {fmt} probes would time the wrong runtime; "
                          f"use --format {RUNTIME_FORMAT.get(platform.runtime, platform.runtime)}")
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision '{precision}'; valid: {', '.join(PRECISIONS)}"
                          f"{suggest(precision, PRECISIONS)}")
    if precision not in PROBE_PRECISIONS[fmt]:
        raise ExportError(f"{precision} {fmt} probe kits are not built (kit precisions: "
                          f"{', '.join(PROBE_PRECISIONS[fmt])}); {platform.name}'s {precision} table stays the "
                          f"estimate")
    if fmt == "tflite" and not litert_available():
        raise ExportError("tflite kits need the TFLite schema from ai-edge-litert (pip install ai-edge-litert)")
    out = Path(out)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / "manifest.json").is_file())):
        raise ExportError(f"{out}: exists and is not an empty folder or an earlier kit; choose another --out")
    holdout = samples // 3 if holdout is None else holdout
    fit_configs, heldout_configs = sample_configs(spec, samples, holdout, seed)
    repeats = repeat_configs(heldout_configs, noise_configs, noise_copies)
    kid, suffix = kit_id(spec, precision), KIT_FORMATS[fmt]
    cells = layer_cells(spec)
    total = 1 + len(cells) + len(fit_configs) + len(heldout_configs)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    probes: list[dict[str, Any]] = []
    with atomic_tree(out) as tmp:
        (tmp / "probes").mkdir(parents=True)

        def write(pid: str, data: bytes) -> str:
            name = f"probes/{pid}{suffix}"
            (tmp / name).write_bytes(data)
            tick()
            return name

        pid = f"{kid}-I0000"
        probes.append({"id": pid, "kind": "identity", "file": write(pid, identity_probe(fmt, seed))})
        for i, (layer, index, c_in, c_out) in enumerate(cells, start=1):
            pid = f"{kid}-L{i:04d}"
            data = layer_probe(fmt, layer, c_in, c_out, seed, precision)
            probes.append({"id": pid, "kind": "layer", "file": write(pid, data),
                           "layer": layer.name, "index": list(index), "c_in": c_in, "c_out": c_out})
        network_file: dict[int, str] = {}
        for i, (config, split) in enumerate([*((c, "fit") for c in fit_configs),
                                             *((c, "heldout") for c in heldout_configs)], start=1):
            pid = f"{kid}-N{i:04d}"
            probes.append({"id": pid, "kind": "network",
                           "file": write(pid, network_probe(fmt, spec, config, seed, precision)),
                           "split": split, "config": config.to_json()})
            if split == "heldout":
                network_file[len(network_file)] = pid
        by_id = {p["id"]: p for p in probes}
        for i, (group, config) in enumerate(repeats, start=1):
            source = by_id[network_file[group]]
            probes.append({"id": f"{kid}-R{i:04d}", "kind": "network", "file": source["file"], "split": "repeat",
                           "group": group, "repeat_of": source["id"], "config": config.to_json()})
        manifest = {
            "format": KIT_FORMAT, "version": KIT_VERSION, "kit_id": kid, "arch_key": spec.key(),
            "spec": spec.to_json(), "platform": platform.name, "platform_runtime": platform.runtime,
            "probe_format": fmt, "precision": precision,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "slimzoo_version": __version__, "seed": seed,
            "counts": {"identity": 1, "layer": len(cells), "fit": len(fit_configs), "heldout": len(heldout_configs),
                       "repeat": len(repeats)},
            "probes": probes,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        rng = random.Random(seed)
        for r in range(1, ORDER_FILES + 1):
            order = list(probes)
            rng.shuffle(order)
            (tmp / f"order_{r}.txt").write_text("".join(f"{p['id']} {p['file']}\n" for p in order), encoding="utf-8")
        _write_scripts(tmp, fmt, platform)
        (tmp / "README.md").write_text(_readme(manifest, platform, out.name), encoding="utf-8")
    for script in ("device_run.sh", "run_tflite.sh"):  # atomic_tree gave every file plain 0o666 & ~umask
        if (out / script).is_file():
            (out / script).chmod((out / script).stat().st_mode | 0o111)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"kit": str(out), "kit_id": kid, "arch_key": spec.key(), "platform": platform.name, "format": fmt,
            "precision": precision, "probes": len(probes), "files": len(probes) - len(repeats), "size_bytes": size,
            "counts": manifest["counts"], "readme": str(out / "README.md")}


DEVICE_SCRIPT = r"""#!/system/bin/sh
# Runs ON the phone (started by run_tflite.sh through adb): times every probe with TFLite's benchmark_model,
# ROUNDS passes, each in its own shuffled order, and prints CSV: probe id, mean run time (us), round.
# benchmark_model reports no median; slimzoo import-latency takes the median over rounds of these means.
# Settings come from the environment: BM (benchmark_model path), THREADS, MASK (taskset CPU mask, empty = none),
# ROUNDS, RUNS (timed runs per probe and round).
BM=${BM:-/data/local/tmp/benchmark_model}
THREADS=${THREADS:-1}
MASK=${MASK:-}
ROUNDS=${ROUNDS:-3}
RUNS=${RUNS:-100}
cd "$(dirname "$0")" || exit 1
echo "probe,us,round"
r=1
while [ "$r" -le "$ROUNDS" ]; do
  o=$(( (r - 1) % 5 + 1 ))
  while read -r id file; do
    if [ -n "$MASK" ]; then
      out=$(taskset "$MASK" "$BM" --graph="$file" --num_threads="$THREADS" --warmup_runs=10 --warmup_min_secs=0 \
            --num_runs="$RUNS" --min_secs=0 --max_secs=30 --use_xnnpack=true 2>&1)
    else
      out=$("$BM" --graph="$file" --num_threads="$THREADS" --warmup_runs=10 --warmup_min_secs=0 \
            --num_runs="$RUNS" --min_secs=0 --max_secs=30 --use_xnnpack=true 2>&1)
    fi
    stat=$(echo "$out" | grep 'count=' | tail -n 1)
    us=$(echo "$stat" | sed -n 's/.* avg=\([0-9.e+]*\).*/\1/p')
    [ -z "$us" ] && us=$(echo "$stat" | sed -n 's/.* curr=\([0-9.e+]*\).*/\1/p')
    echo "$id,${us:-FAILED},$r"
  done < "order_$o.txt"
  r=$((r + 1))
done
"""

HOST_SCRIPT = r"""#!/bin/sh
# Runs on your computer: pushes the kit to the phone over adb, times every probe there with benchmark_model
# (device_run.sh), and pulls the timings back as results.csv next to this script.
# Usage: sh run_tflite.sh [ROUNDS] [THREADS] [MASK]      e.g.  sh run_tflite.sh 3 1 80
set -eu
ROUNDS=${1:-3}
THREADS=${2:-1}
MASK=${3:-}
DIR=/data/local/tmp/slimzoo-kit
cd "$(dirname "$0")"
adb shell "test -x /data/local/tmp/benchmark_model" || {
  echo "push benchmark_model first (README.md, step 1)" >&2; exit 1; }
adb shell "rm -rf $DIR && mkdir -p $DIR"
adb push probes order_1.txt order_2.txt order_3.txt order_4.txt order_5.txt device_run.sh $DIR/ >/dev/null
adb shell "cd $DIR && ROUNDS=$ROUNDS THREADS=$THREADS MASK=$MASK sh device_run.sh > results.csv"
adb pull $DIR/results.csv results.csv
echo "wrote $(pwd)/results.csv"
"""


def _write_scripts(root: Path, fmt: str, platform: Platform) -> None:
    if fmt == "tflite":
        for name, text in (("device_run.sh", DEVICE_SCRIPT), ("run_tflite.sh", HOST_SCRIPT)):
            (root / name).write_text(text, encoding="utf-8")


def _readme(manifest: Mapping[str, Any], platform: Platform, folder: str) -> str:
    counts, fmt, kid = manifest["counts"], manifest["probe_format"], manifest["kit_id"]
    precision = manifest.get("precision", DEFAULT_PRECISION)
    n_probes = len(manifest["probes"])
    quantized = ("" if precision == DEFAULT_PRECISION else f"""
These are {precision} probes (layers and networks quantized as an {precision} model of this format is; the
identity model is the same at every precision): the timings import as {platform.name}'s {precision} table, beside
its fp32 one, and never replace it.
""")
    head = f"""# slimzoo latency kit {kid}: {manifest['arch_key']} on {platform.name} ({fmt}, {precision})
{quantized}
{n_probes} probes: the identity model (what every run costs), {counts['layer']} layer variants (every layer at
every (c_in, c_out) the architecture allows), {counts['fit'] + counts['heldout']} whole networks ({counts['fit']} for
the fit, the uniform widths included, and {counts['heldout']} held out: never used by the fit, only to measure its
accuracy) and {counts['repeat']} repeats of held-out networks (the same file timed again, to measure the noise).
`manifest.json` says what each probe is; `order_1.txt` ... `order_5.txt` are shuffled orders, one per round, so a
burst of load or heat lands on a few runs of many probes rather than on every run of a few.

Time them on the device with the vendor's tool, then bring the timings back:

    slimzoo import-latency --platform {platform.name} {folder}/results.csv

(`--kit DIR` if results.csv is not in the kit folder; `--checkpoint` if the kit was made for another checkpoint
than the shipped one). The import refuses, with one line naming the problem, a file with missing probes, times
that are not positive numbers, probes of another architecture's kit, or a kit whose architecture is not the
checkpoint's; nothing in the registry changes unless the whole import succeeds.

## results.csv

A header row, then one row per probe and round: `probe,us[,round]` (microseconds) or `probe,ms[,round]`.
Several rows of one probe (one per round) are combined by their median. slimzoo uses one latency statistic
everywhere, the median (what a user sees in a typical run, and what `slimzoo check --measure` measures): record
each invocation's median where the tool reports one, else its mean (the scripts below write `benchmark_model`'s
`avg=`, as it reports no median), never the minimum, which is a best case no user sees.
"""
    if fmt == "tflite":
        body = """
## Android, TFLite `benchmark_model` over adb

1. Get the benchmark tool for the phone's ABI (arm64 here) and push it:

       curl -LO https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/nightly/latest/android_aarch64_benchmark_model
       adb push android_aarch64_benchmark_model /data/local/tmp/benchmark_model
       adb shell chmod +x /data/local/tmp/benchmark_model

2. Prepare the phone: charged and on the charger, screen on (`adb shell svc power stayon true`), no other apps,
   at room temperature; wait between kits if it gets warm.

3. Run the kit (pushes probes, runs 3 rounds on the phone, pulls `results.csv`):

       sh run_tflite.sh 3 1 80        # rounds, threads, taskset CPU mask

   The mask pins benchmark_model to chosen cores (hex bit mask; `80` = cpu7, the prime core of a Snapdragon 765G
   such as the Pixel 5; `c0` = cpu6 and cpu7 for 2 threads; find yours with
   `adb shell cat /sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq`). Use the thread count your app uses.
   Each probe runs as

       taskset 80 /data/local/tmp/benchmark_model --graph=probes/<id>.tflite --num_threads=1 \\
           --warmup_runs=10 --warmup_min_secs=0 --num_runs=100 --min_secs=0 --max_secs=30 --use_xnnpack=true

   and the `avg=` of its last `count=... min=... avg=...` line (microseconds) is recorded.

4. Import (on your computer, in this folder's parent):

       slimzoo import-latency --platform {platform} {kit}/results.csv
"""
    else:
        body = """
## ONNX probes

Where Python and ONNX Runtime run on the device (a Linux board, a laptop), install slimzoo there and run

    slimzoo time-kit {kit} --out {kit}/results.csv --threads 1 --rounds 3

Elsewhere, time every probe with your ONNX Runtime build's own tool, one round per order file, e.g.

    onnxruntime_perf_test -I -m times -r 100 -x 1 probes/<id>.onnx

and write its median latency per probe and round as `probe,ms,round` rows (the median, for every probe).
Then:

    slimzoo import-latency --platform {platform} {kit}/results.csv
"""
    coreml = """
## Core ML (iPhone)

This kit is not for Core ML. To check a Core ML model exported by `slimzoo export --format coreml`, open the
`.mlpackage` in Xcode, choose the Performance tab, press +, pick the connected iPhone and the compute units, and
run the report: it shows the median prediction time on the device.
"""
    return head + body.format(platform=platform.name, kit=folder) + coreml


# -- reading back -------------------------------------------------------------------------------------------
def load_manifest(kit: Path) -> dict[str, Any]:
    path = Path(kit) / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LatencyTableError(f"{path}: no kit manifest here (give --kit, the folder profile-kit wrote)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LatencyTableError(f"{path}: not a readable kit manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != KIT_FORMAT:
        raise LatencyTableError(f"{path}: field 'format' must be '{KIT_FORMAT}'")
    if data.get("version") != KIT_VERSION:
        raise LatencyTableError(f"{path}: field 'version' must be {KIT_VERSION}, got {data.get('version')!r}")
    for name in ("kit_id", "arch_key", "spec", "probes", "probe_format", "platform"):
        if name not in data:
            raise LatencyTableError(f"{path}: field '{name}' is missing")
    spec = ArchSpec.from_json(data["spec"])
    if spec.key() != data["arch_key"]:
        raise LatencyTableError(f"{path}: field 'spec' does not match 'arch_key' {data['arch_key']} (edited?)")
    return data


def read_results(path: Path, manifest: Mapping[str, Any]) -> dict[str, float]:
    """Time in ms per probe id (median of its rows), refusing anything that does not fit the manifest."""
    path = Path(path)
    kid = manifest["kit_id"]
    known = {p["id"] for p in manifest["probes"]}
    try:
        handle = path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise LatencyTableError(f"{path}: no such results file") from None
    except OSError as exc:
        raise LatencyTableError(f"{path}: cannot be read ({exc.strerror})") from None
    with handle:
        try:
            lines = [(n, text) for n, text in enumerate(handle.read().splitlines(), start=1)
                     if text.strip() and not text.lstrip().startswith("#")]
        except UnicodeDecodeError:
            raise LatencyTableError(f"{path}: not a text (UTF-8) CSV file") from None
    parsed = [(n, next(csv.reader([text]))) for n, text in lines]
    if not parsed:
        raise LatencyTableError(f"{path}: empty results file")
    header = [h.strip().lower().lstrip("\ufeff") for h in parsed[0][1]]
    if "probe" not in header or not ({"ms", "us"} & set(header)):
        raise LatencyTableError(f"{path}: the header must name a 'probe' column and an 'ms' or 'us' column, "
                                f"got {','.join(header) or 'nothing'}")
    unit = "ms" if "ms" in header else "us"
    at, t_at = header.index("probe"), header.index(unit)
    rows: dict[str, list[float]] = {}
    for line, row in parsed[1:]:
        where = f"{path} line {line}"
        if len(row) <= max(at, t_at):
            raise LatencyTableError(f"{where}: expected {len(header)} columns, got {len(row)}")
        pid, raw = row[at].strip(), row[t_at].strip()
        if pid not in known:
            prefix = pid.split("-", 1)[0]
            if "-" in pid and prefix != kid:
                precision = manifest.get("precision", DEFAULT_PRECISION)
                if prefix[:8] == kid[:8]:  # same architecture, another precision's kit
                    tags = {tag: name for name, tag in PRECISION_TAGS.items()}
                    other = tags.get(prefix[8:], prefix[8:] or DEFAULT_PRECISION)
                    raise LatencyTableError(
                        f"{where}: probe '{pid}' is from this architecture's {other} kit ({prefix}); this kit is "
                        f"{kid}, {precision} probes: time the {precision} kit's probes, or import with that kit")
                raise LatencyTableError(
                    f"{where}: probe '{pid}' is from another architecture's kit ({prefix}); this kit is "
                    f"{kid} ({manifest['arch_key']})")
            raise LatencyTableError(f"{where}: no probe '{pid}' in kit {kid}")
        try:
            value = float(raw)
        except ValueError:
            raise LatencyTableError(f"{where}: time {raw!r} of probe '{pid}' is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise LatencyTableError(f"{where}: time {raw} {unit} of probe '{pid}' must be a finite number > 0")
        rows.setdefault(pid, []).append(value / 1000.0 if unit == "us" else value)
    missing = [p["id"] for p in manifest["probes"] if p["id"] not in rows]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise LatencyTableError(f"{path}: no time for {len(missing)} of {len(known)} probes ({shown}); run the whole "
                                f"kit (every order file)")
    return {pid: float(np.median(values)) for pid, values in rows.items()}


def import_results(results: Path, spec: ArchSpec, platform: Platform, kit: Path | None = None,
                   user_dir: Path | None = None, fit_settings: Any = None) -> tuple[LatencyTable, Path]:
    """Fit the table from a kit's timings and install it as ``measured`` for ``platform`` (atomic, last step)."""
    from slimzoo.platforms.fit import FitSettings, fit_from_samples

    results = Path(results)
    kit = Path(kit) if kit is not None else results.parent
    manifest = load_manifest(kit)
    if manifest["arch_key"] != spec.key():
        raise LatencyTableError(
            f"the kit in {kit} was made for {manifest['arch_key']}, but the checkpoint's architecture is "
            f"{spec.key()}: make a kit for this checkpoint (slimzoo profile-kit --checkpoint ...)")
    fmt = manifest["probe_format"]
    # Timings are only valid for the runtime that made them, whatever the platform name: an onnx kit timed on a
    # phone says nothing about that phone's TFLite latency.
    if FORMAT_RUNTIME.get(fmt) != platform.runtime:
        raise LatencyTableError(
            f"the kit in {kit} has {fmt} probes (timed with {FORMAT_RUNTIME.get(fmt, fmt)}), but {platform.name} "
            f"runs {platform.runtime}: make a {RUNTIME_FORMAT.get(platform.runtime, platform.runtime)} kit "
            f"(slimzoo profile-kit --platform {platform.name})")
    precision = manifest.get("precision", DEFAULT_PRECISION)  # kits from before precisions existed: fp32
    if precision not in PRECISIONS:
        raise LatencyTableError(f"{kit}/manifest.json: field 'precision' must be one of {', '.join(PRECISIONS)}, "
                                f"got {precision!r}")
    times = read_results(results, manifest)
    probes = manifest["probes"]
    identity = next(p for p in probes if p["kind"] == "identity")
    overhead = times[identity["id"]]
    terms = {layer.name: np.zeros(layer_grid(spec, layer)[0]) for layer in spec.layers}
    for p in probes:
        if p["kind"] == "layer":
            if p["layer"] not in terms:
                raise LatencyTableError(f"{kit}/manifest.json: probe {p['id']} names unknown layer '{p['layer']}'")
            terms[p["layer"]][tuple(p["index"])] = max(times[p["id"]] - overhead, MIN_TERM_MS)
    prior = LatencyTable(arch_key=spec.key(), platform=platform.name, source="measured", provenance={
        "method": f"imported device timings of profiling kit {manifest['kit_id']} ({fmt} probes, {precision})",
        "precision": precision,
        "device": platform.device, "soc": platform.soc, "runtime": FORMAT_RUNTIME.get(fmt, fmt),
        "kit": {"kit_id": manifest["kit_id"], "platform": manifest["platform"], "created": manifest.get("created"),
                "probes": len(probes), "results": str(results)},
        "statistic": LATENCY_STATISTIC,
        "statistic_detail": "median over the rounds (rows) of one probe, of each round's time as the results file "
                            "records it (time-kit: the median of its runs; the tflite scripts: benchmark_model's "
                            "mean, as it reports no median)",
        "identity_overhead_ms": overhead,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }, offset_ms=overhead, terms=terms, runtime=platform.runtime, precision=precision)
    samples = []
    for p in probes:
        if p["kind"] == "network":
            sample = {"config": dict(p["config"]), "measured_ms": times[p["id"]], "split": p["split"], "probe": p["id"]}
            if "group" in p:
                sample["group"] = p["group"]
            samples.append(sample)
    if not any(s["split"] == "fit" for s in samples):
        raise LatencyTableError(f"{kit}/manifest.json: the kit has no whole-network probes to fit the table to")
    table = fit_from_samples(spec, prior, samples, fit_settings or FitSettings())
    table.check_matches(spec)
    path = measured_table_path(user_registry_dir(user_dir), platform.name, platform.runtime, spec.key(), precision)
    table.save(path)  # atomic: temp file + os.replace, and only now that everything above succeeded
    return table, path


# -- timing a kit on this machine ---------------------------------------------------------------------------
def time_kit(kit: Path, out: Path, threads: int = 1, rounds: int = 3, runs: int = 100, warmup: int = 10,
             quantile: float | None = DEFAULT_QUANTILE,
             progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Time every probe of a kit here (ONNX Runtime for onnx kits, LiteRT for tflite kits) in the kit's round
    orders and write ``probe,ms,round`` rows to ``out``: what the device scripts do, for machines where slimzoo
    runs, and for testing the round trip."""
    from slimzoo.fileio import atomic_path

    kit = Path(kit)
    manifest = load_manifest(kit)
    by_id = {p["id"]: p for p in manifest["probes"]}
    total, done, lines = rounds * len(by_id), 0, ["probe,ms,round"]
    for r in range(1, rounds + 1):
        order_path = kit / f"order_{(r - 1) % ORDER_FILES + 1}.txt"
        for entry in order_path.read_text(encoding="utf-8").splitlines():
            pid, file = entry.split(" ", 1)
            times = time_file_runs(kit / file, threads, runs, warmup, 0)
            lines.append(f"{pid},{statistic(times, quantile):.6f},{r}")
            done += 1
            if progress is not None:
                progress(done, total)
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"results": str(out), "probes": len(by_id), "rounds": rounds, "statistic": statistic_name(quantile)}


