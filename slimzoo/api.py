"""slimzoo's Python API: one function per CLI command, each returning plain results (dataclasses with
``to_json``, dicts) that the CLI renders and tests assert on. See docs/python-api.md for a worked example.

The work lives in :mod:`slimzoo.pipeline`, one module per stage in the order data flows::

    workspace (checkpoint + registry + dataset + objective, loaded once)
      -> searching (width config per platform) -> exporting (sliced module -> validated model + sidecar)
      -> building (every platform x format, the manifest) -> gate (``check``, ``report``)

plus training, evaluation (accuracy), platforms (registry listing, markets) and profiling (latency tables).
Names are resolved on first use, so ``import slimzoo.api`` is cheap and a command that needs no torch (search,
list-platforms, check, report) never imports it.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the stage module that defines it
_WHERE: dict[str, str] = {
    # the context
    "Workspace": "workspace", "PlatformProblem": "workspace", "checkpoint_dataset": "workspace",
    # training
    "train": "training", "train_state_path": "training",
    # platforms and markets
    "list_platforms": "platforms", "resolve_market": "platforms", "market_crp": "platforms",
    # search
    "PlatformSearch": "searching", "AllPlatformsSearch": "searching", "search_platform": "searching",
    "search_all_platforms": "searching", "platform_problem": "searching", "dump_problem": "searching",
    "build_problem": "searching", "uniform_baseline": "searching", "budget_note": "searching",
    "duplicate_notes": "searching", "write_pareto_plots": "searching",
    # latency tables
    "profile": "profiling", "latency_report": "profiling", "profile_kit": "profiling",
    "import_latency": "profiling", "time_kit": "profiling",
    # accuracy
    "evaluate": "evaluation", "Evaluation": "evaluation", "PlatformAccuracy": "evaluation",
    "fit_accuracy": "evaluation",
    # export
    "export_platform": "exporting", "export_found": "exporting", "ExportResult": "exporting",
    "EXPORT_STAGES": "exporting", "N_RANDOM_VALIDATION_INPUTS": "exporting",
    # the zoo
    "build_zoo": "building", "zoo_export_key": "building", "zoo_platform_info": "building",
    "FRONT_POINTS": "building", "check_zoo": "gate", "zoo_report": "gate",
}
# problem files are the search package's own (torch-free) business; re-exported for one import path
_ELSEWHERE: dict[str, str] = {"ProblemSearch": "slimzoo.search.files", "solve_problem_file": "slimzoo.search.files"}

__all__ = sorted([*_WHERE, *_ELSEWHERE])


def __getattr__(name: str) -> Any:
    module = f"slimzoo.pipeline.{_WHERE[name]}" if name in _WHERE else _ELSEWHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'slimzoo.api' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return __all__
