"""Target platforms: the registry of devices, their market shares and budgets, and per-layer latency tables.

``load_registry()`` gives the built-in and user platforms; ``Registry.latency_table(platform, spec, precision)``
gives the table the search uses for a model of that precision (``fp32`` by default, ``int8``; measured on this
machine if profiled, else a roofline estimate, whose int8 figure is an assumption it states). The profiling functions
are exported lazily (module ``__getattr__``): importing this package never imports ONNX Runtime, ONNX, LiteRT or
PyTorch, so the CLI starts fast (``tests/test_import_cost.py``).
"""

from __future__ import annotations

from typing import Any

from slimzoo.platforms.latency import LatencyTable
from slimzoo.platforms.registry import (
    Fact,
    LatencySettings,
    MarketShare,
    Platform,
    PlatformSpecs,
    Registry,
    load_platform_file,
    load_registry,
    market_weights,
    user_registry_dir,
)
from slimzoo.platforms.roofline import estimate_table

__all__ = [
    "Fact",
    "LatencySettings",
    "LatencyTable",
    "MarketShare",
    "Platform",
    "PlatformSpecs",
    "Registry",
    "estimate_table",
    "load_platform_file",
    "load_registry",
    "market_weights",
    "measure_network",
    "profile_platform",
    "save_measured_table",
    "user_registry_dir",
]

_LAZY = {"measure_network", "profile_platform", "save_measured_table"}  # from slimzoo.platforms.profile


def __getattr__(name: str) -> Any:
    """The profiling functions, imported on first use: :mod:`slimzoo.platforms.profile` pulls in the timing code."""
    if name in _LAZY:
        from slimzoo.platforms import profile

        return getattr(profile, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
