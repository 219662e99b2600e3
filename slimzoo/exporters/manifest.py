"""The zoo manifest (``zoo/manifest.json``): what a zoo holds, and the checks that decide whether to trust it.

The manifest is written with key-sorted JSON and holds nothing that varies between builds of the same inputs (no
timestamps, no timings: those go to the unhashed ``build-log.json``), so the same inputs give the same bytes. It
lists every file of the zoo with its sha256 (a Core ML package is a directory: each of its files is listed, and
the model's own sha256 is :func:`slimzoo.fileio.tree_sha256` of the directory, i.e. its files in sorted
relative-path order). The manifest's own hash (``manifest_sha256``: the canonical JSON of everything else in
it) is recorded in it, so a hand edit that does not also recompute the hash is caught. It also holds the
architecture spec (``arch``), so the gate can recompute each model's predicted latency from its width config
on today's latency table without the checkpoint. This module knows nothing of search or export: it reads,
writes and verifies.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimzoo.errors import SlimzooError
from slimzoo.fileio import tree_sha256, write_json

FORMAT_VERSION = 2  # 2: the manifest's own sha256 and the architecture spec, for the recomputing gate
KIND = "slimzoo-zoo-manifest"
MANIFEST_NAME = "manifest.json"
BUILD_LOG_NAME = "build-log.json"  # timings and measured latencies: varies run to run, never checksummed
LOCK_NAME = ".build-zoo.lock"  # held by the one build-zoo writing into the folder (filelock)
MARKER_NAME = ".build-in-progress"  # written when a build starts, removed once its manifest is written
UNHASHED = (MANIFEST_NAME, BUILD_LOG_NAME, LOCK_NAME, MARKER_NAME)


class ManifestError(SlimzooError):
    """The zoo or its manifest cannot be read (missing, truncated, another format version): exit 2."""

    exit_code = 2


class ZooBusyError(SlimzooError):
    """Another build-zoo is writing into the same folder: refused rather than interleaved (exit 2)."""

    exit_code = 2


@contextmanager
def zoo_build_session(zoo: Path) -> Iterator[None]:
    """Hold ``zoo``'s build lock for the duration of a build.

    Two builds into one folder would delete each other's files and the last manifest would win, so the second
    is refused at once (in one line) instead of waiting behind or racing the first. The lock is an OS file lock
    (``filelock``): a build that dies, however it dies, releases it with its process.
    """
    from filelock import FileLock, Timeout

    zoo = Path(zoo)
    zoo.mkdir(parents=True, exist_ok=True)
    lock = FileLock(zoo / LOCK_NAME, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ZooBusyError(f"{zoo}: another `slimzoo build-zoo` is writing into this folder; wait for it to "
                           f"finish, or build into another --out") from None
    try:
        remove_stale_temps(zoo)
        write_json(zoo / MARKER_NAME, {"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                       "note": "build-zoo writes this when it starts and removes it once the new "
                                               "manifest is written: if it is here, that build did not finish"})
        yield
        (zoo / MARKER_NAME).unlink(missing_ok=True)  # only a build that wrote its manifest gets here
    finally:
        lock.release()


def remove_stale_temps(zoo: Path) -> list[Path]:
    """Remove the hidden ``.<name>.*.tmp`` files and folders an earlier build left when it was killed
    (SIGKILL, power cut: no chance to clean up), in the zoo folder and its platform folders. Safe only under
    the build lock: another build's temps are live. Returns what was removed."""
    import shutil

    zoo = Path(zoo)
    removed = []
    for folder in [zoo, *(d for d in sorted(zoo.iterdir()) if d.is_dir() and not d.name.startswith("."))]:
        for p in sorted(folder.glob(".*.tmp")):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def build_state(zoo: Path) -> str | None:
    """None when the last build of ``zoo`` finished; else why it did not, in the gate's words: a build still
    running (it holds the lock) or one that was interrupted (its marker is there, nobody holds the lock)."""
    zoo = Path(zoo)
    marker = zoo / MARKER_NAME
    if not marker.exists():
        return None
    try:
        started = json.loads(marker.read_text()).get("started", "?")
    except (OSError, ValueError, AttributeError):
        started = "?"
    if (zoo / LOCK_NAME).exists():
        from filelock import FileLock, Timeout

        try:
            with FileLock(zoo / LOCK_NAME, timeout=0):
                pass
        except Timeout:
            return f"build in progress (a build-zoo started {started} holds the folder's lock)"
        except OSError:
            pass  # a read-only zoo: the lock cannot be tried, and a running build could not write there anyway
    return f"incomplete build (interrupted): the build-zoo started {started} did not finish; run it again"


def content_hash(data: Any) -> str:
    """sha256 of ``data`` as canonical JSON (sorted keys, no whitespace): the build's cache key."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def file_hash(path: Path) -> str:
    return tree_sha256(path)


def zoo_files(zoo: Path) -> dict[str, Path]:
    """Every regular file under ``zoo`` by posix relative path, except the manifest and the build log."""
    zoo = Path(zoo)
    out = {}
    for p in sorted(zoo.rglob("*")):
        if p.is_file() or p.is_symlink():
            rel = p.relative_to(zoo).as_posix()
            if rel not in UNHASHED:
                out[rel] = p
    return out


def file_entries(zoo: Path, paths: list[str]) -> list[dict[str, Any]]:
    """``{path, sha256, size_bytes}`` of each file under the given zoo-relative paths (directories expanded)."""
    zoo = Path(zoo)
    entries = []
    for rel in paths:
        p = zoo / rel
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for q in files:
            entries.append({"path": q.relative_to(zoo).as_posix(), "sha256": tree_sha256(q),
                            "size_bytes": q.stat().st_size})
    return sorted(entries, key=lambda e: e["path"])


HASH_FIELD = "manifest_sha256"


def manifest_hash(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON without its own hash field: what a reader of the file sees
    (through a JSON round trip, so tuples and lists, and ints written as floats, hash the same)."""
    data = json.loads(json.dumps({k: v for k, v in manifest.items() if k != HASH_FIELD}))
    return content_hash(data)


def write_manifest(zoo: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` with its own hash (:func:`manifest_hash`) recorded in it."""
    manifest = {"format_version": FORMAT_VERSION, "kind": KIND, **manifest}
    manifest[HASH_FIELD] = manifest_hash(manifest)
    return write_json(Path(zoo) / MANIFEST_NAME, manifest)


def manifest_intact(manifest: dict[str, Any]) -> bool:
    """Whether the manifest still hashes to the sha256 recorded in it (False: edited after the build)."""
    return manifest.get(HASH_FIELD) == manifest_hash(manifest)


def read_manifest(zoo: Path) -> dict[str, Any]:
    """The manifest of ``zoo``, or :class:`ManifestError` naming the file and what is wrong with it."""
    zoo = Path(zoo)
    path = zoo / MANIFEST_NAME
    if not zoo.is_dir():
        raise ManifestError(f"{zoo}: not a directory (no zoo here)")
    if not path.is_file():
        raise ManifestError(f"{path}: missing (not a zoo built by `slimzoo build-zoo`?)")
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text (corrupted)") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON (truncated or edited?): {exc.msg} at line {exc.lineno}") \
            from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ManifestError(f"{path}: not a slimzoo zoo manifest (field 'kind' should be '{KIND}')")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ManifestError(f"{path}: format_version {version!r}, this slimzoo reads version {FORMAT_VERSION}; "
                            f"rebuild the zoo with this slimzoo (`slimzoo build-zoo`)")
    for key, kind in (("models", list), ("files", list), ("platforms", dict), ("arch", dict)):
        if not isinstance(data.get(key), kind):
            raise ManifestError(f"{path}: field '{key}' missing or not a {kind.__name__}")
    for i, model in enumerate(data["models"]):
        if not isinstance(model, dict) or not {"platform", "format", "status"} <= set(model):
            raise ManifestError(f"{path}: models[{i}] lacks platform/format/status")
        if model["status"] == "ok" and not (isinstance(model.get("path"), str) and isinstance(model.get("sha256"), str)):
            raise ManifestError(f"{path}: models[{i}] is 'ok' but lacks its path or sha256")
    for i, entry in enumerate(data["files"]):
        if not isinstance(entry, dict) or not (isinstance(entry.get("path"), str)
                                               and isinstance(entry.get("sha256"), str)):
            raise ManifestError(f"{path}: files[{i}] lacks path or sha256")
    return data


# -- verification ---------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One test case of the gate: a model (``platform/format``, or ``zoo``) and one gate."""

    model: str
    gate: str
    status: str  # pass | fail | skip
    message: str = ""
    warning: str = ""

    def to_json(self) -> dict[str, Any]:
        out = {"model": self.model, "gate": self.gate, "status": self.status, "message": self.message}
        if self.warning:
            out["warning"] = self.warning
        return out


@dataclass
class CheckReport:
    zoo: str
    cases: list[Case] = field(default_factory=list)
    measured: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.status != "fail" for c in self.cases)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_json(self) -> dict[str, Any]:
        counts = {s: sum(c.status == s for c in self.cases) for s in ("pass", "fail", "skip")}
        return {"zoo": self.zoo, "passed": self.passed, "exit_code": self.exit_code, "counts": counts,
                "warnings": [f"{c.model}: {c.warning}" for c in self.cases if c.warning],
                "cases": [c.to_json() for c in self.cases], "measured_latency_ms": self.measured}


def model_id(model: dict[str, Any]) -> str:
    """``platform/format`` for a format's default precision, ``platform/format/precision`` for another (the
    build records it as ``id``)."""
    return str(model.get("id") or f"{model['platform']}/{model['format']}")


def verify_files(zoo: Path, manifest: dict[str, Any], incomplete: str | None = None) -> list[Case]:
    """One case per model (its files' checksums) and one for the zoo as a whole (files removed/added/edited).
    ``incomplete`` (:func:`build_state`): a build did not finish, so a file that differs was written by it, not
    edited: each such difference names that cause instead."""
    zoo = Path(zoo)
    cause = "edited" if incomplete is None else incomplete.partition(")")[0] + ")"  # "incomplete build (interrupted)"
    edited = f"({cause})"
    added = "added (not in the manifest)" if incomplete is None else f"added (not in the manifest: {cause})"
    listed = {e["path"]: e for e in manifest["files"]}
    present = zoo_files(zoo)
    cases = []
    owned: set[str] = set()
    for model in manifest["models"]:
        if model["status"] != "ok":
            continue
        rel = model["path"]
        own = sorted(p for p in listed if p == rel or p.startswith(rel + "/"))
        sidecar = model.get("sidecar")
        if sidecar:
            own.append(sidecar)
        owned.update(own)
        problems = []
        target = zoo / rel
        if not target.exists():
            problems.append(f"{target}: removed")
        for p in own:
            entry = listed.get(p)
            if entry is None:
                problems.append(f"{zoo / p}: not in the manifest's file list")
            elif p not in present:
                if target.exists():
                    problems.append(f"{zoo / p}: removed")
            elif tree_sha256(present[p]) != entry["sha256"]:
                problems.append(f"{zoo / p}: sha256 differs from the manifest {edited}")
        if target.is_dir():
            for p in present:
                if p.startswith(rel + "/") and p not in listed:
                    problems.append(f"{zoo / p}: {added}")
        if not problems and target.exists() and tree_sha256(target) != model.get("sha256"):
            problems.append(f"{target}: sha256 differs from the manifest {edited}")
        cases.append(Case(model_id(model), "checksum", "fail" if problems else "pass", "; ".join(problems)))
    problems = []
    for p in sorted(set(present) - set(listed)):
        problems.append(f"{zoo / p}: {added}")
    for p in sorted(set(listed) - set(present) - owned):
        problems.append(f"{zoo / p}: removed")
    for p in sorted(set(listed) & set(present) - owned):
        if tree_sha256(present[p]) != listed[p]["sha256"]:
            problems.append(f"{zoo / p}: sha256 differs from the manifest {edited}")
    cases.append(Case("zoo", "files", "fail" if problems else "pass", "; ".join(problems)))
    return cases


def verify_manifest(manifest: dict[str, Any]) -> Case:
    """The manifest against its own recorded sha256: a budget, latency or checksum edited into the manifest by
    hand (without recomputing the hash) fails here, whatever the other gates say."""
    if manifest_intact(manifest):
        return Case("zoo", "manifest", "pass", f"{MANIFEST_NAME} matches its recorded sha256")
    return Case("zoo", "manifest", "fail", f"{MANIFEST_NAME}: sha256 differs from the one recorded in it (edited "
                                            f"after the build): rebuild the zoo with `slimzoo build-zoo`")


@dataclass
class Recomputed:
    """A model's predicted latency and budget as they stand now (on today's registry and latency table), or why
    they cannot be recomputed (``error``)."""

    latency_ms: float | None = None
    budget_ms: float | None = None
    budget_origin: str = "registry"  # registry | --budgets (a build-time override, recorded in the manifest)
    table_source: str = "unknown"
    table_sha256: str = ""
    error: str = ""


def recompute(manifest: dict[str, Any], model: dict[str, Any], registry: Any) -> Recomputed:
    """Predicted latency of ``model``'s width config on the platform's *current* latency table, and the platform's
    *current* budget (:meth:`slimzoo.platforms.registry.Registry.budget_ms`; a budget given to build-zoo with
    ``--budgets`` stays that number). Nothing is taken from the model's own latency or budget fields."""
    from slimzoo.errors import SlimzooError
    from slimzoo.zoo.spec import ArchSpec

    try:
        spec = ArchSpec.from_json(manifest["arch"])
        plat = registry.get(model["platform"])
        # the table the model was searched on (int8 models: the int8 table); budgets are ms on the fp32 table
        table = registry.latency_table(plat, spec, model.get("latency_precision", "fp32"))
        latency = table.predict(spec, model.get("width_config") or {})
        override = ((manifest.get("requested") or {}).get("budgets") or {}).get(plat.name)
        if isinstance(override, (int, float)) and not isinstance(override, bool):
            budget, origin = float(override), "--budgets"
        else:
            budget, origin = registry.budget_ms(plat, spec), "registry"
    except SlimzooError as exc:
        return Recomputed(error=f"cannot recompute the predicted latency: {exc}")
    return Recomputed(latency, budget, origin, table.source, content_hash(table.to_json()))


def _close(a: Any, b: float) -> bool:
    return isinstance(a, (int, float)) and abs(float(a) - b) <= 1e-9 * max(abs(b), 1e-12)


def budget_case(model: dict[str, Any], now: Recomputed) -> Case:
    """The predicted-latency gate on recomputed figures, with drift since the build named in the message: the
    latency table changed (another measurement, edited platform settings) or the budget changed (the registry's
    rule, or the table a relative budget is a fraction of). Drift that still passes is a warning."""
    mid = model_id(model)
    if now.error or now.latency_ms is None or now.budget_ms is None:
        return Case(mid, "predicted-latency", "fail", now.error or "predicted latency or budget missing")
    drift = []
    built_table = (model.get("latency_table") or {})
    if built_table.get("sha256") != now.table_sha256:
        drift.append(f"latency table changed since the build ({built_table.get('source', 'unknown')} -> "
                     f"{now.table_source}; predicted {_num(model.get('predicted_latency_ms'))} ms at build time)")
    elif not _close(model.get("predicted_latency_ms"), now.latency_ms):
        drift.append(f"the manifest says {_num(model.get('predicted_latency_ms'))} ms for this config on this table")
    if not _close(model.get("budget_ms"), now.budget_ms):
        drift.append(f"budget changed since the build ({_num(model.get('budget_ms'))} ms at build time)")
    ok = now.latency_ms <= now.budget_ms * (1 + 1e-9)
    notes = list(drift) if ok else []  # a failing case names the drift in its message instead
    if now.table_source != "measured":
        notes.append(f"latency table is only '{now.table_source}' (not measured on the device): the prediction "
                     f"is an estimate")
    warning = "; ".join(notes)
    where = f"{now.table_source} table" + (", budget from --budgets at build time" if now.budget_origin != "registry"
                                           else "")
    message = (f"predicted {now.latency_ms:.4f} ms {'<=' if ok else '>'} budget {now.budget_ms:g} ms ({where}; "
               f"recomputed from the width config)")
    if not ok and drift:
        message += ": " + "; ".join(drift)
    return Case(mid, "predicted-latency", "pass" if ok else "fail", message, warning)


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "?"


def verify_budgets(manifest: dict[str, Any], registry: Any) -> list[Case]:
    """Per model: a failed build fails its own case; a built one is held to its predicted latency recomputed on
    today's table against today's budget (:func:`recompute`, :func:`budget_case`)."""
    cases = []
    for model in manifest["models"]:
        if model["status"] != "ok":
            cases.append(Case(model_id(model), "build", "fail", f"not built: {model.get('reason', 'unknown reason')}"))
            continue
        cases.append(budget_case(model, recompute(manifest, model, registry)))
    return cases


def measured_case(model: dict[str, Any], measured_ms: float | None, tolerance: float, why: str = "") -> Case:
    """The measured-latency gate: ``measured_ms`` (the median of the runs, :data:`LATENCY_STATISTIC`) against the
    budget with ``tolerance``. A table fitted to another statistic is flagged: its predictions and this
    measurement would not describe the same number."""
    from slimzoo.platforms.latency import LATENCY_STATISTIC

    mid = model_id(model)
    if measured_ms is None:
        return Case(mid, "measured-latency", "skip", why or "runtime does not run on this machine")
    limit = model["budget_ms"] * (1 + tolerance)
    ok = measured_ms <= limit
    table_stat = ((model.get("latency_table") or {}).get("provenance") or {}).get("statistic")
    warning = (f"the latency table was fitted to {table_stat} latencies, the gate measures the {LATENCY_STATISTIC}: "
               f"profile the platform again" if isinstance(table_stat, str) and table_stat != LATENCY_STATISTIC
               else "")
    return Case(mid, "measured-latency", "pass" if ok else "fail",
                f"measured {LATENCY_STATISTIC} {measured_ms:.4f} ms {'<=' if ok else '>'} budget "
                f"{model['budget_ms']:g} ms x (1 + {tolerance:g}) = {limit:.4f} ms", warning)


def junit_xml(report: CheckReport, path: Path | None = None, error: str | None = None) -> str:
    """JUnit XML: one ``testsuite`` (slimzoo.check), one ``testcase`` per model and gate. ``error``: the zoo
    could not be read at all, written as one errored test case so CI shows a red build, not an empty one."""
    import xml.etree.ElementTree as ET

    cases = report.cases
    suite = ET.Element("testsuite", name="slimzoo.check", tests=str(max(len(cases), 1) if error else len(cases)),
                       failures=str(sum(c.status == "fail" for c in cases)),
                       errors="1" if error else "0", skipped=str(sum(c.status == "skip" for c in cases)))
    if error:
        case = ET.SubElement(suite, "testcase", classname="zoo", name="manifest")
        ET.SubElement(case, "error", message=error, type="ManifestError").text = error
    for c in cases:
        case = ET.SubElement(suite, "testcase", classname=c.model, name=c.gate)
        if c.status == "fail":
            ET.SubElement(case, "failure", message=c.message, type=c.gate).text = c.message
        elif c.status == "skip":
            ET.SubElement(case, "skipped", message=c.message)
        out = "\n".join(x for x in (c.message if c.status == "pass" else "",
                                    f"WARNING: {c.warning}" if c.warning else "") if x)
        if out:
            ET.SubElement(case, "system-out").text = out
    root = ET.Element("testsuites", name="slimzoo", tests=suite.get("tests", "0"),
                      failures=suite.get("failures", "0"), errors=suite.get("errors", "0"))
    root.append(suite)
    ET.indent(root)
    text = '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
    if path is not None:
        from slimzoo.fileio import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return text
