"""Random search problems with known structure, for tests and benchmarks.

Real problems come from a trained network and a profiled device, which tests cannot afford; these generators
reproduce what matters to the solvers: the graph shape (chains, random trees, stars, forests, and the
MobileNetV2 layout of a stage chain with leaf variables hanging off it), parallel factors that must be merged,
factors listed in either variable order, unary latency terms, and either realistic costs (wider = lower loss
and higher latency, so everything is a trade-off and Pareto fronts are large) or arbitrary ones (no monotonicity,
so solvers cannot get lucky). The module is named ``synthetic`` rather than ``random`` so it never shadows the
standard library module.
"""

from __future__ import annotations

import numpy as np

from slimzoo.errors import ProblemError
from slimzoo.search.problem import LatencyFactor, SearchProblem

SHAPES = ("chain", "tree", "star", "forest", "mobilenet")


def _edges(rng: np.random.Generator, n: int, shape: str) -> tuple[list[str], list[tuple[int, int, str]]]:
    """Variable names and (a, b, kind) pairwise edges; kind "pair" is one merged cost, "block" a MobileNet leaf."""
    names = [f"v{i}" for i in range(n)]
    if shape == "chain":
        return names, [(i - 1, i, "pair") for i in range(1, n)]
    if shape == "tree":
        return names, [(int(rng.integers(0, i)), i, "pair") for i in range(1, n)]
    if shape == "star":
        return names, [(0, i, "pair") for i in range(1, n)]
    if shape == "forest":
        return names, [(int(rng.integers(0, i)), i, "pair") for i in range(1, n) if rng.random() < 0.75]
    if shape == "mobilenet":
        stages = max(1, round((n - 1) / 4))
        while stages > 0 and 1 + 2 * stages > n:
            stages -= 1
        if stages == 0:
            return _edges(rng, n, "chain")
        names = ["stem"]
        edges: list[tuple[int, int, str]] = []
        stage_ids = [0]
        for s in range(1, stages + 1):
            link = len(names)
            names.append(f"s{s}.link")  # the first block's expansion: between the previous stage and this one
            names.append(f"stage{s}")
            stage_ids.append(link + 1)
            edges += [(stage_ids[s - 1], link, "pair"), (link, link + 1, "pair")]
        for k in range(n - len(names)):
            stage = stage_ids[int(rng.integers(1, len(stage_ids)))]
            names.append(f"b{k}.expand")  # a later block's expansion: expand and project both touch the stage
            edges.append((stage, len(names) - 1, "block"))
        return names, edges
    raise ProblemError(f"unknown shape '{shape}'; known: {', '.join(SHAPES)}")


def random_problem(
    rng: np.random.Generator | int,
    n_vars: int,
    n_choices: int | tuple[int, int] = 8,
    shape: str = "tree",
    *,
    correlated: bool = True,
    split_factors: bool = True,
    budget_fraction: float | None = None,
) -> SearchProblem:
    """A random problem whose pairwise factor graph has ``shape`` (see SHAPES).

    ``n_choices`` is a count, or an inclusive (low, high) range drawn per variable. ``correlated`` gives
    realistic costs (monotone trade-off), otherwise costs are arbitrary non-negative numbers. ``split_factors``
    splits some pairwise tables into two factors (one listing its variables in reverse order), adds unary
    latency terms and moves some or all of the offset into 0-variable factors, as a real latency table does.
    ``budget_fraction`` sets ``budget`` that fraction of the way
    from the fastest configuration's latency to that of the lowest-loss one (0 = tightest feasible budget).
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    if n_vars < 1:
        raise ProblemError(f"n_vars must be >= 1, got {n_vars}")
    names, edges = _edges(rng, n_vars, shape)
    lo, hi = (n_choices, n_choices) if isinstance(n_choices, int) else n_choices
    sizes = [int(rng.integers(lo, hi + 1)) for _ in range(n_vars)]
    choices = [sorted(int(8 * c) for c in rng.choice(np.arange(1, 8 * k + 1), size=k, replace=False))
               for k in sizes]
    widths = [np.asarray(c, dtype=float) / max(c) for c in choices]

    unary = []
    factors: list[LatencyFactor] = []
    for v, (k, w) in enumerate(zip(sizes, widths)):
        if correlated:
            scale = rng.uniform(0.05, 1.0)
            unary.append(scale * (1.0 - w ** rng.uniform(0.4, 1.5)) + 0.03 * scale * rng.random(k))
        else:
            unary.append(rng.random(k))
        if split_factors and rng.random() < 0.5:
            table = rng.uniform(0.005, 0.05) * w if correlated else 0.3 * rng.random(k)
            factors.append(LatencyFactor((v,), table, f"{names[v]}.unary"))

    def pair_table(a: int, b: int) -> np.ndarray:
        if correlated:
            base = rng.uniform(0.02, 0.3) * (0.1 + np.outer(widths[a], widths[b]))
            return base * (1.0 + 0.15 * rng.random((sizes[a], sizes[b])))
        return rng.random((sizes[a], sizes[b]))

    for a, b, kind in edges:
        if kind == "block":
            # expand (stage -> leaf), depthwise (leaf only) and project (leaf -> stage), as in MobileNetV2.
            factors.append(LatencyFactor((a, b), pair_table(a, b), f"{names[b]}.expand_conv"))
            factors.append(LatencyFactor((b,), 0.2 * pair_table(b, b).diagonal().copy(), f"{names[b]}.dw"))
            factors.append(LatencyFactor((b, a), pair_table(b, a), f"{names[b]}.project"))
            continue
        table = pair_table(a, b)
        if split_factors and rng.random() < 0.4:
            part = rng.uniform(0.2, 0.8)
            factors.append(LatencyFactor((a, b), part * table, f"{names[a]}-{names[b]}.a"))
            factors.append(LatencyFactor((b, a), ((1 - part) * table).T.copy(), f"{names[a]}-{names[b]}.b"))
        elif rng.random() < 0.5:
            factors.append(LatencyFactor((b, a), table.T.copy(), f"{names[b]}-{names[a]}"))
        else:
            factors.append(LatencyFactor((a, b), table, f"{names[a]}-{names[b]}"))
    rng.shuffle(factors)  # type: ignore[arg-type]
    offset = float(rng.uniform(0.05, 0.5))
    if split_factors and rng.random() < 0.5:
        # Fixed latency (layers with fixed channels) as 0-variable factors, all of it or part, anywhere in the
        # list, as a real latency table has it: issue 11's bug hid exactly there, where no test looked.
        keep = offset * float(rng.choice([0.0, 0.5]))
        for share in rng.dirichlet(np.ones(int(rng.integers(1, 3)))):
            factors.insert(int(rng.integers(0, len(factors) + 1)),
                           LatencyFactor((), np.array((offset - keep) * float(share)), "fixed"))
        offset = keep
    problem = SearchProblem(names, choices, unary, factors, offset, None,
                            {"unit": "ms", "source": f"random_problem(shape={shape!r}, correlated={correlated})"})
    problem.validate()
    if budget_fraction is not None:
        from slimzoo.search.lagrangian import fastest_config
        from slimzoo.search.tree import compile_tree, decode, min_sum

        tree = compile_tree(problem)
        _, fastest = fastest_config(problem, tree)
        unconstrained = problem.latency(decode(tree, min_sum(tree, [1.0], [0.0])))
        problem.budget = fastest + budget_fraction * (unconstrained - fastest)
    return problem


def knapsack_problem(rng: np.random.Generator | int, n_vars: int, n_choices: int, *, noise: float = 0.01,
                     budget_fraction: float = 0.5) -> SearchProblem:
    """A strongly correlated multiple-choice knapsack: independent variables, loss close to minus latency.

    The classic hard case for Pareto-front dynamic programming (and for Lagrangian bounds): every choice trades
    loss for latency at almost the same rate, so almost every partial configuration is Pareto-optimal and the
    fronts grow multiplicatively. Latencies are drawn in [0.01, 1), each loss is ``-(latency + noise * u)`` with
    ``u`` uniform in [0, 1); the budget lies ``budget_fraction`` of the way from the fastest to the slowest
    configuration, with a 0-variable factor holding a fixed latency.
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    names = [f"k{i}" for i in range(n_vars)]
    choices = [[8 * (c + 1) for c in range(n_choices)] for _ in range(n_vars)]
    lat = np.sort(rng.uniform(0.01, 1.0, size=(n_vars, n_choices)), axis=1)
    loss = -(lat + noise * rng.random((n_vars, n_choices)))
    factors = [LatencyFactor((v,), lat[v], f"{names[v]}.conv") for v in range(n_vars)]
    factors.append(LatencyFactor((), np.array(0.5), "fixed"))
    problem = SearchProblem(names, choices, list(loss), factors, 0.0, None,
                            {"unit": "ms", "source": f"knapsack_problem(n_vars={n_vars}, n_choices={n_choices})"})
    problem.validate()
    low, high = float(lat[:, 0].sum()), float(lat[:, -1].sum())
    problem.budget = 0.5 + low + budget_fraction * (high - low)
    return problem
