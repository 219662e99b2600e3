"""Target platforms: the registry of devices, their market shares and budgets, and per-layer latency tables.

``load_registry()`` gives the built-in and user platforms; ``Registry.latency_table(platform, spec)`` gives the
table the search uses (measured on this machine if profiled, else a roofline estimate). Profiling imports ONNX
Runtime only when called, so importing this package stays cheap for the CLI.
"""

from __future__ import annotations

from slimzoo.platforms.latency import LatencyTable
from slimzoo.platforms.profile import measure_network, profile_platform, save_measured_table
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
