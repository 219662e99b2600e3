"""Which sub-networks get gradient: the sampling strategies of ``slimzoo train --strategy NAME``.

Every step trains the largest config on the labels and some sampled configs on the largest's soft predictions
(in-place distillation, :mod:`slimzoo.zoo.train`). A strategy decides the sampled configs:

* ``uniform``: the slimmable / US-Nets sandwich rule: the smallest config plus ``n_random`` configs with every
  variable drawn uniformly. The baseline.
* ``aows``: AOWS (Berman et al., CVPR 2020) for one platform: ``n_random + 1`` configs with each variable drawn
  from its marginal under the Gibbs distribution ``p(c) ~ exp(-(proxy(c) + lam * latency(c)) / T)``, computed by
  sum-product on the factor tree (:mod:`slimzoo.search.gibbs`).
* ``platforms``: for several platforms at once: each sampled config first draws a platform ``p`` with
  probability ``w_p`` (its market weight), then a whole config from ``p``'s Gibbs distribution by exact joint
  sampling (forward filtering, backward sampling).
* ``platforms-marginal``: the same with AOWS's independent per-variable marginals, so a benchmark can tell
  whether exact joint sampling matters.

The adaptive strategies train ``n_random + 1`` sampled configs where ``uniform`` trains the smallest plus
``n_random``, so every strategy costs the same per step. The temperature is 1 during a warm-up (a fraction of the
steps), then falls log-linearly to ``t_end`` (AOWS: 5e-4) at the last step, so training first spreads over many
configs (and fills in the loss proxy), then concentrates on the configs each platform's search will pick. Each
platform's multiplier ``lam`` is re-solved from the current loss proxy (:func:`solve_lagrangian` at the platform's
budget) at the start, at the end of the warm-up and every ``lambda_every`` steps, so it follows the budget as
the proxy changes. Only sampled configs update the loss proxy: the smallest config of ``uniform`` is trained every
step, and counting it would credit the smallest choice of every variable with the smallest net's extra training.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from slimzoo.errors import BudgetError, ConfigError, suggest
from slimzoo.search import SearchProblem, min_latency, solve_lagrangian, within_budget
from slimzoo.search.gibbs import GibbsTree
from slimzoo.zoo.spec import ArchSpec, WidthConfig

STRATEGIES: dict[str, str] = {
    "uniform": "sandwich rule: largest + smallest + n uniform random configs (US-Nets)",
    "aows": "AOWS: per-variable Gibbs marginals for one platform (--platform), annealed temperature",
    "platforms": "draw a platform by market weight, then a whole config from its Gibbs distribution (FFBS)",
    "platforms-marginal": "as 'platforms', but each variable drawn independently from its Gibbs marginal",
}


def check_strategy(name: str) -> str:
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{name}'{suggest(name, STRATEGIES)}; valid: {', '.join(STRATEGIES)}")
    return name


@dataclass(frozen=True)
class Target:
    """A platform training aims at: its name, market weight and search problem (latency factors + budget;
    the problem's unary terms are replaced by the loss proxy as training goes)."""

    name: str
    weight: float
    problem: SearchProblem

    @property
    def budget(self) -> float:
        assert self.problem.budget is not None
        return float(self.problem.budget)


def check_targets(targets: Sequence[Target]) -> None:
    """BudgetError naming the platform when even its fastest config misses its budget (fail before training)."""
    for t in targets:
        fastest = min_latency(t.problem).latency
        if not within_budget(fastest, t.budget):
            raise BudgetError(f"{t.name}: budget {t.budget:g} ms is infeasible for this architecture: the fastest "
                              f"configuration takes {fastest:.4g} ms")


def temperature(step: int, total: int, warmup: int, t_start: float = 1.0, t_end: float = 5e-4) -> float:
    """``t_start`` for the first ``warmup`` steps, then log-linear down to ``t_end`` at step ``total - 1``."""
    if step < warmup:
        return t_start
    frac = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
    return float(t_start * (t_end / t_start) ** frac)


def _random_state(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _set_random_state(rng: random.Random, state: Sequence[Any]) -> None:
    rng.setstate((int(state[0]), tuple(int(v) for v in state[1]), state[2]))


class Sampler(Protocol):
    name: str

    def draw(self, step: int, proxy: dict[str, np.ndarray]) -> list[tuple[WidthConfig, bool]]:
        """The configs to train this step besides the largest, each with whether it feeds the loss proxy."""

    def status(self) -> dict[str, Any]:
        """JSON-able state worth logging (temperature, multipliers)."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state to resume from."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class UniformSampler:
    """The sandwich rule: smallest (not fed to the proxy) + ``n_random`` uniform configs (fed to it)."""

    name = "uniform"

    def __init__(self, spec: ArchSpec, n_random: int, seed: int) -> None:
        self.spec, self.n_random = spec, n_random
        self.rng = random.Random(seed)
        self.smallest = spec.smallest()

    def draw(self, step: int, proxy: dict[str, np.ndarray]) -> list[tuple[WidthConfig, bool]]:
        randoms = [self.spec.random(self.rng) for _ in range(self.n_random)]
        return [(self.smallest, False)] + [(c, True) for c in randoms]

    def status(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"python_rng": _random_state(self.rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _set_random_state(self.rng, state["python_rng"])


class GibbsSampler:
    """AOWS-style sampling from per-platform Gibbs distributions (``aows``, ``platforms``, ``platforms-marginal``).

    ``joint`` selects exact joint sampling (FFBS) over independent marginals. Platforms are drawn by weight
    for each sampled config (with one target, always that one).
    """

    def __init__(self, name: str, spec: ArchSpec, targets: Sequence[Target], n_samples: int, total_steps: int,
                 seed: int, joint: bool, warmup_fraction: float = 0.25, t_end: float = 5e-4,
                 lambda_every: int = 100, train_smallest: bool = False) -> None:
        if not targets:
            raise ConfigError(f"strategy '{name}' needs at least one platform with a positive weight")
        self.name, self.spec, self.joint = name, spec, joint
        self.targets = [t for t in targets if t.weight > 0] or list(targets[:1])
        weights = np.array([t.weight for t in self.targets], dtype=np.float64)
        self.weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(weights), 1 / len(weights))
        self.models = [GibbsTree(t.problem) for t in self.targets]
        self.n_samples = n_samples
        self.total = total_steps
        self.warmup = int(round(warmup_fraction * total_steps))
        self.t_end = t_end
        self.lambda_every = max(1, lambda_every)
        self.lambdas = [0.0] * len(self.targets)
        self.rng = np.random.default_rng([seed, 0x5A11])
        self.temperature = 1.0
        self.lambda_step = -1  # step of the last multiplier update
        self.smallest = spec.smallest() if train_smallest else None

    def _unary(self, proxy: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(proxy[name], dtype=np.float64) for name in self.spec.variable_names]

    def _update_lambdas(self, unary: list[np.ndarray]) -> None:
        for k, t in enumerate(self.targets):
            problem = dataclasses.replace(t.problem, unary=unary)
            lam = solve_lagrangian(problem, t.budget).lam
            self.lambdas[k] = float(lam or 0.0)

    def draw(self, step: int, proxy: dict[str, np.ndarray]) -> list[tuple[WidthConfig, bool]]:
        unary = self._unary(proxy)
        if step == 0 or step == self.warmup or (step > self.warmup and step % self.lambda_every == 0):
            if step != self.lambda_step:
                self._update_lambdas(unary)
                self.lambda_step = step
        self.temperature = temperature(step, self.total, self.warmup, 1.0, self.t_end)
        picks = self.rng.choice(len(self.targets), size=self.n_samples, p=self.weights)
        rows: list[np.ndarray] = [np.empty(0)] * self.n_samples
        for k in sorted(set(int(p) for p in picks)):
            slots = [i for i, p in enumerate(picks) if p == k]
            model = self.models[k]
            model.set_unary(unary)
            if self.joint:
                x = model.sample(self.lambdas[k], self.temperature, len(slots), self.rng)
            else:
                x = model.sample_marginals(self.lambdas[k], self.temperature, len(slots), self.rng)
            for i, row in zip(slots, x):
                rows[i] = row
        variables = self.spec.variables
        sampled = [(WidthConfig({v.name: v.choices[int(i)] for v, i in zip(variables, row)}), True) for row in rows]
        return ([(self.smallest, False)] if self.smallest is not None else []) + sampled

    def status(self) -> dict[str, Any]:
        return {"temperature": self.temperature,
                "lambda": {t.name: round(lam, 6) for t, lam in zip(self.targets, self.lambdas)}}

    def state_dict(self) -> dict[str, Any]:
        return {"numpy_rng": self.rng.bit_generator.state, "lambdas": list(self.lambdas),
                "lambda_step": self.lambda_step, "temperature": self.temperature}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["numpy_rng"]
        self.lambdas = [float(v) for v in state["lambdas"]]
        self.lambda_step = int(state["lambda_step"])
        self.temperature = float(state["temperature"])


def make_sampler(strategy: str, spec: ArchSpec, targets: Sequence[Target], n_random: int, total_steps: int,
                 seed: int, warmup_fraction: float = 0.25, t_end: float = 5e-4,
                 lambda_every: int = 100, train_smallest: bool = False) -> Sampler:
    """The sampler for ``strategy`` (see the module docstring); ``targets`` are ignored by ``uniform``."""
    check_strategy(strategy)
    if strategy == "uniform":
        return UniformSampler(spec, n_random, seed)
    if strategy == "aows" and len(targets) != 1:
        raise ConfigError(f"strategy 'aows' trains for one platform, got {len(targets)}: give --platform")
    if not 0 <= warmup_fraction <= 1 or not math.isfinite(warmup_fraction):
        raise ConfigError(f"sampling warm-up must be a fraction in [0, 1], got {warmup_fraction!r}")
    if not 0 < t_end <= 1:
        raise ConfigError(f"final temperature must be in (0, 1], got {t_end!r}")
    return GibbsSampler(strategy, spec, targets, n_random + 1, total_steps, seed, joint=strategy == "platforms",
                        warmup_fraction=warmup_fraction, t_end=t_end, lambda_every=lambda_every,
                        train_smallest=train_smallest)
