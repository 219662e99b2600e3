"""The platform registry as commands see it: the listing (with what search would refuse, said up front) and
the market weights training and evaluation use. Needs no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimzoo.platforms.registry import load_registry
from slimzoo.zoo.checkpoint import read_checkpoint_header


def list_platforms(registry_dir: Path | None = None, checkpoint: Path | None = None) -> list[dict[str, Any]]:
    """One row per platform, for ``slimzoo list-platforms``. The latency-table source is for the checkpoint's
    architecture: a table measured for one network says nothing about another.

    A user file that replaces a built-in says so (``shadows``: the built-in file), since the replacement is
    otherwise silent. A platform that ``search`` would refuse for this checkpoint (a measured table it asks for
    is missing or belongs to another runtime, a budget no configuration meets) is listed with the reason
    (``problem``) rather than failing the whole listing, so the user sees it here and not later."""
    from slimzoo.errors import SlimzooError
    from slimzoo.platforms.registry import BUILTIN_DIR, load_platform_file

    registry = load_registry(registry_dir)
    spec = read_checkpoint_header(checkpoint).spec
    builtins = {load_platform_file(f).name: f for f in sorted(BUILTIN_DIR.glob("*.toml"))}
    rows = []
    for p in registry.platforms():
        if registry.find_table(p, spec) is not None:
            source = "measured"
        else:
            source = "estimated" if p.latency.source == "estimated" else "missing (run slimzoo profile)"
        budget: float | None = None
        problem = ""
        try:
            table = registry.latency_table(p, spec)
            budget = registry.budget_ms(p, spec, table)
            fastest = table.predict(spec, spec.smallest())
            if budget < fastest:
                problem = (f"search will refuse it: its budget {budget:g} ms is below the smallest config's "
                           f"predicted {fastest:.4g} ms ({p.path})")
        except SlimzooError as exc:
            problem = f"search will refuse it: {exc}"
        shadowed = builtins.get(p.name)
        rows.append({
            "name": p.name, "vendor": p.vendor, "device": p.device, "soc": p.soc, "runtime": p.runtime,
            "market_share": p.market.share, "market_share_assumed": p.market.assumed,
            "market_source": p.market.source, "latency_budget_ms": budget, "budget_rule": p.budget.to_json(),
            "latency_table": source, "file": str(p.path),
            "shadows": str(shadowed) if shadowed is not None and not p.builtin else None, "problem": problem or None,
        })
    return rows


def resolve_market(registry: Any, platforms: list[str] | None = None, weights: dict[str, float] | None = None,
                   weights_file: Path | None = None) -> dict[str, float]:
    """Platform weights summing to 1: ``weights`` or ``weights_file`` ({platform: weight} JSON), else the
    registry's market shares; restricted to ``platforms`` when given (renormalised over them)."""
    from slimzoo.errors import RegistryError
    from slimzoo.platforms.market import load_weights_file, normalise_weights
    from slimzoo.platforms.registry import market_weights

    names = registry.names()
    if weights is not None and weights_file is not None:
        raise RegistryError("give weights or a weights file, not both")
    if platforms is not None:
        if not platforms:
            raise RegistryError("--platforms: no platform names given")
        platforms = [registry.get(p).name for p in platforms]
        if len(set(platforms)) != len(platforms):
            raise RegistryError(f"--platforms: a platform is listed twice in {', '.join(platforms)}")
    if weights_file is not None:
        market = load_weights_file(weights_file, names)
        where = str(weights_file)
    elif weights is not None:
        market = normalise_weights(weights, names)
        where = "weights"
    else:
        plats = [registry.get(p) for p in platforms] if platforms is not None else registry.platforms()
        return market_weights(plats)
    if platforms is not None:
        missing = [p for p in platforms if p not in market]
        if missing:
            raise RegistryError(f"{where}: no weight for {', '.join(missing)}")
        market = normalise_weights({p: market[p] for p in platforms}, names, where)
    return market


def market_crp(platforms: int | list[str], alpha: float, seed: int = 0, customers: int | None = None,
               registry_dir: Path | None = None) -> Any:
    """One Chinese-restaurant-process market (:func:`slimzoo.platforms.market.crp_weights`) over ``platforms``:
    names, or a count N (the N registry platforms with the largest market shares, ties by name)."""
    from slimzoo.errors import RegistryError
    from slimzoo.platforms.market import DEFAULT_CUSTOMERS, crp_weights

    registry = load_registry(registry_dir)
    if isinstance(platforms, int):
        plats = sorted(registry.platforms(), key=lambda p: (-p.market.share, p.name))
        if not 1 <= platforms <= len(plats):
            raise RegistryError(f"--platforms {platforms}: the registry has {len(plats)} platforms "
                                f"({', '.join(registry.names())})")
        names = [p.name for p in plats[:platforms]]
    else:
        names = [registry.get(p).name for p in platforms]
    return crp_weights(names, alpha, seed, customers or DEFAULT_CUSTOMERS)
