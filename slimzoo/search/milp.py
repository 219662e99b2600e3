"""The search problem as a mixed-integer program, solved by HiGHS (``scipy.optimize.milp``).

The exact solver's front DP is fast on the problems slimzoo makes (MobileNetV2 on a device: milliseconds) but
its fronts can grow without bound on adversarial ones: a strongly correlated multiple-choice knapsack (loss close
to minus latency) makes nearly every partial configuration Pareto-optimal. A branch-and-bound MILP solver has
the opposite profile (a fixed overhead of milliseconds, then robust), so it is the exact fallback when the DP
exceeds its work budget (:mod:`slimzoo.search.exact`), and a solver of its own for benchmarks.

The formulation is the standard integer program of a pairwise MRF (local polytope + integrality):

* ``x[v, i]`` binary, one per choice, ``sum_i x[v, i] = 1`` per variable;
* ``y[e, i, j]`` continuous in [0, 1] per pair of variables with a latency table (parallel factors merged),
  tied to ``x`` by ``sum_j y[e, i, j] = x[a, i]`` and ``sum_i y[e, i, j] = x[b, j]``: with ``x`` integral,
  ``y`` is the product ``x[a, i] * x[b, j]``, so it needs no integrality of its own;
* one budget row: ``sum node_lat * x + sum edge_lat * y <= budget - constant`` (offset and 0-variable factors
  in ``constant``);
* minimise ``sum unary * x``.

It needs no tree: cycles are fine. Everything is assembled with a few vectorised numpy calls (sparse, linear in
the size of the tables), so a 20,000-variable chain builds in milliseconds.

HiGHS works to tolerances (a row may be violated by ~1e-7, the gap closed to a relative 1e-4 by default), so
nothing it returns is trusted as is: the configuration is read off ``x``, its latency recomputed canonically, and
if round-off put it over the budget the row is tightened by the excess and the solve repeated. The optimality
gap is closed explicitly (``mip_rel_gap = 0`` and an absolute gap far below the loss's round-off), and the
answer is claimed optimal only when its recomputed loss equals HiGHS's dual bound within
:func:`slimzoo.search.problem.loss_tolerance` at HiGHS's own precision (:data:`CERTIFY_RTOL`); otherwise (a time limit) the dual bound is reported as the lower
bound and the difference as the gap.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slimzoo.errors import BudgetError
from slimzoo.search.problem import (
    SearchProblem,
    Solution,
    budget_slack,
    infeasible,
    loss_tolerance,
    make_solution,
    resolve_budget,
)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Re-solves allowed when HiGHS's answer is over the budget by round-off (each tightens the budget row).
MAX_TIGHTEN = 3
#: How exactly HiGHS's dual bound can match the optimum, relative to the loss's term scale (see
#: :func:`slimzoo.search.problem.loss_tolerance`): its LPs are solved to a dual feasibility tolerance of 1e-7.
CERTIFY_RTOL = 1e-7


@dataclass
class MilpOutcome:
    """What one HiGHS run established: a configuration (or None), its dual bound, and whether it finished."""

    config: list[int] | None
    bound: float  # proven lower bound on the loss (HiGHS's dual bound; -inf when it has none)
    finished: bool  # HiGHS proved optimality (status 0) rather than stopping at a limit
    infeasible: bool  # HiGHS proved there is no feasible configuration
    nodes: int
    seconds: float


class MilpModel:
    """The MILP of a validated problem, built once and solvable for several budgets (see the module docstring)."""

    def __init__(self, problem: SearchProblem) -> None:
        sizes = np.array(problem.sizes, dtype=np.int64)
        n = problem.n_vars
        x_start = np.concatenate([[0], np.cumsum(sizes)])
        n_x = int(x_start[-1])
        node_lat = np.zeros(n_x)
        constant = float(problem.offset)
        pairs: dict[tuple[int, int], FloatArray] = {}
        for f in problem.factors:
            vs = f.variables
            table = np.asarray(f.table, dtype=np.float64)
            if len(vs) == 0:
                constant += float(table)
            elif len(vs) == 1:
                node_lat[x_start[vs[0]]: x_start[vs[0] + 1]] += table
            else:
                a, b = vs
                key, t = ((a, b), table) if a < b else ((b, a), table.T)
                pairs[key] = pairs[key] + t if key in pairs else t.copy()
        # y blocks, one per merged pair, laid out after x.
        edges = list(pairs)
        ka = np.array([sizes[a] for a, _ in edges], dtype=np.int64)
        kb = np.array([sizes[b] for _, b in edges], dtype=np.int64)
        y_len = ka * kb
        y_start = n_x + np.concatenate([[0], np.cumsum(y_len)])
        n_y = int(y_start[-1] - n_x)
        edge_lat = np.concatenate([pairs[e].ravel() for e in edges]) if edges else np.zeros(0)
        self.problem = problem
        self.n_x, self.n_y = n_x, n_y
        self.x_start = x_start
        self.constant = constant
        self.cost = np.concatenate([np.concatenate([np.asarray(u, dtype=np.float64) for u in problem.unary]),
                                    np.zeros(n_y)])
        self.latency_row = np.concatenate([node_lat, edge_lat])
        # Equality rows: one "choose one" per variable; then, per edge, k_a rows (sum over j of y = x[a, i]) and,
        # after all of those, k_b rows per edge (sum over i of y = x[b, j]).
        rows = [np.repeat(np.arange(n), sizes)]
        cols = [np.arange(n_x)]
        vals = [np.ones(n_x)]
        row0 = n
        if edges:
            a_of = np.array([a for a, _ in edges], dtype=np.int64)
            b_of = np.array([b for _, b in edges], dtype=np.int64)
            a_off = np.concatenate([[0], np.cumsum(ka)[:-1]])
            b_off = int(ka.sum()) + np.concatenate([[0], np.cumsum(kb)[:-1]])
            e_of_y = np.repeat(np.arange(len(edges)), y_len)
            local = np.arange(n_y) - np.repeat(y_start[:-1] - n_x, y_len)
            i_of_y, j_of_y = local // kb[e_of_y], local % kb[e_of_y]
            y_cols = n_x + np.arange(n_y)
            rep_a = np.repeat(np.arange(len(edges)), ka)
            rep_b = np.repeat(np.arange(len(edges)), kb)
            i_loc = np.arange(int(ka.sum())) - a_off[rep_a]
            j_loc = np.arange(int(kb.sum())) - (b_off[rep_b] - int(ka.sum()))
            rows += [row0 + a_off[e_of_y] + i_of_y, row0 + np.arange(int(ka.sum())),
                     row0 + b_off[e_of_y] + j_of_y, row0 + int(ka.sum()) + np.arange(int(kb.sum()))]
            cols += [y_cols, x_start[a_of[rep_a]] + i_loc, y_cols, x_start[b_of[rep_b]] + j_loc]
            vals += [np.ones(n_y), -np.ones(int(ka.sum())), np.ones(n_y), -np.ones(int(kb.sum()))]
            row0 += int(ka.sum() + kb.sum())
        self.n_eq = row0
        self.eq = (np.concatenate(rows), np.concatenate(cols), np.concatenate(vals))

    def decode(self, x: FloatArray) -> list[int]:
        """Choice indices read off the binary part of a solution vector (the largest x of each variable)."""
        sizes = np.diff(self.x_start)
        owner = np.repeat(np.arange(sizes.size), sizes)
        order = np.lexsort((-x[: self.n_x], owner))
        first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        return [int(i) for i in order[first] - self.x_start[:-1]]

    def solve(self, budget: float, time_limit: float | None = None) -> MilpOutcome:
        """Run HiGHS once for ``budget`` (with the feasibility slack every solver uses)."""
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import coo_matrix, vstack

        start = time.perf_counter()
        n_var = self.n_x + self.n_y
        r, c, v = self.eq
        eq = coo_matrix((v, (r, c)), shape=(self.n_eq, n_var)).tocsr()
        rhs_eq = np.zeros(self.n_eq)
        rhs_eq[: self.problem.n_vars] = 1.0
        room = budget + budget_slack(budget) - self.constant
        scale = max(1.0, float(np.max(np.abs(self.latency_row))) if self.latency_row.size else 1.0)
        row = self.latency_row / scale
        row[np.abs(row) < 1e-12] = 0.0  # HiGHS drops such entries anyway (with a warning); the re-check decides
        lat_row = coo_matrix(row[None, :])
        a = vstack([eq, lat_row]).tocsr()
        # A room below HiGHS's primal feasibility tolerance (1e-7) is indistinguishable from none to HiGHS, and
        # HiGHS 1.x's presolve has been seen to cut the true optimum for such a tiny positive right-hand side
        # (a 5e-5 coefficient against 5e-10 of room): it gets exactly 0, HiGHS's tolerance still admits the rest.
        row_room = room / scale
        if 0.0 < row_room < 1e-7:
            row_room = 0.0
        lower = np.concatenate([rhs_eq, [-np.inf]])
        upper = np.concatenate([rhs_eq, [row_room]])
        integrality = np.concatenate([np.ones(self.n_x), np.zeros(self.n_y)])
        # Close the gap completely (HiGHS stops at a relative 1e-4 by default), to well below the loss's own
        # round-off. Feasibility tolerances stay HiGHS's own: tightening them made it slower and, on tables with
        # subnormal entries, wrong; the canonical re-check in milp_search catches what they let through.
        options: dict[str, object] = {"mip_rel_gap": 0.0, "mip_abs_gap": 0.1 * loss_tolerance(self.problem)}
        if time_limit is not None:
            options["time_limit"] = float(max(time_limit, 1e-3))
        # Costs scaled to a largest magnitude of 1: HiGHS's tolerances are absolute (1e-7 on reduced costs), so a
        # loss proxy of tiny numbers would otherwise be optimised only to its first digit.
        c_scale = float(np.max(np.abs(self.cost))) if self.cost.size and np.max(np.abs(self.cost)) > 0 else 1.0
        options["mip_abs_gap"] = float(options["mip_abs_gap"]) / c_scale  # type: ignore[arg-type]
        with warnings.catch_warnings(), _quiet_fds():  # scipy warns that extra options are passed on verbatim
            warnings.simplefilter("ignore", RuntimeWarning)
            res = milp(self.cost / c_scale, integrality=integrality, bounds=Bounds(0.0, 1.0),
                       constraints=LinearConstraint(a, lower, upper), options=options)
        seconds = time.perf_counter() - start
        bound = res.get("mip_dual_bound")
        bound = float(bound) * c_scale if bound is not None and np.isfinite(bound) else -np.inf
        nodes = int(res.get("mip_node_count") or 0)
        if res.status == 2:  # infeasible
            return MilpOutcome(None, np.inf, True, True, nodes, seconds)
        config = self.decode(res.x) if res.x is not None else None
        finished = res.status == 0
        if finished and config is not None:
            fun = float(res.fun) * c_scale
            bound = min(bound, fun) if np.isfinite(bound) else fun
        return MilpOutcome(config, bound, finished, False, nodes, seconds)


@contextmanager
def _quiet_fds() -> Iterator[None]:
    """File descriptors 1 and 2 sent to /dev/null for the duration: HiGHS can print diagnostics from C++
    straight to them (whatever ``log_to_console`` says), which would corrupt ``slimzoo search --json``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def milp_search(problem: SearchProblem, budget: float, time_limit: float | None = None,
                model: MilpModel | None = None) -> tuple[list[int] | None, float, bool, dict[str, object]]:
    """Best configuration HiGHS finds within ``budget`` (canonically re-checked), the proven lower bound, whether
    HiGHS proved optimality, and stats. None as configuration when there is none (infeasible, or a time limit hit
    before any was found). Over-budget answers from round-off are re-solved with the budget row tightened."""
    model = model or MilpModel(problem)
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    target = budget
    best: list[int] | None = None
    bound = -np.inf
    finished = False
    nodes, runs, seconds = 0, 0, 0.0
    for _ in range(1 + MAX_TIGHTEN):
        left = None if deadline is None else max(1e-3, deadline - time.perf_counter())
        out = model.solve(target, left)
        runs += 1
        nodes += out.nodes
        seconds += out.seconds
        if runs == 1:
            bound = out.bound  # the first run's bound is for the budget itself
        if out.infeasible or out.config is None:
            finished = out.finished and runs == 1
            break
        lat = problem.latency(out.config)
        if lat <= budget + budget_slack(budget):
            best, finished = out.config, out.finished
            break
        target = target - (lat - (budget + budget_slack(budget))) - 1e-9 * max(1.0, abs(budget))
    return best, bound, finished, {"milp_runs": runs, "milp_nodes": nodes, "milp_seconds": seconds}


#: Racing on a machine without a free core (a busy laptop, a shared server): once the DP has run for a window of
#: RACE_WINDOW_S and HiGHS got less than RACE_FREE_CORE of a CPU meanwhile, the DP's CPU time since HiGHS started
#: may not exceed RACE_SHARE of HiGHS's own (plus an optional grace), so HiGHS is delayed by at most that first
#: window and RACE_SHARE of its time whatever the load. With a free core nothing is paced: the race costs the
#: minimum of the two solvers.
RACE_SHARE = 0.02
RACE_FREE_CORE = 0.8
RACE_WINDOW_S = 0.1
#: Longest single pause of the DP while it waits for HiGHS to use its share (the pause ends early when HiGHS
#: answers).
RACE_MAX_PAUSE_S = 0.5


def race_available() -> bool:
    """Whether :class:`MilpRace` can run: a ``fork`` start method (Linux; a spawned child would spend longer
    importing numpy and scipy than most solves take). Whether a race pays off on a busy machine is decided per
    solve (:class:`IdleProbe`, and the pacing in :meth:`MilpRace.pace`)."""
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


class IdleProbe:
    """Whether a CPU sat idle between the probe's creation and :meth:`free_core` (Linux ``/proc/stat``, the whole
    machine's idle and iowait time): the exact solver races HiGHS only then, since on a busy machine the two would
    only split one core. Unknown (no ``/proc``) counts as free, as the pacing still bounds the race's cost."""

    def __init__(self) -> None:
        self._start = _idle_jiffies()

    def free_core(self) -> bool:
        end = _idle_jiffies()
        if self._start is None or end is None or end[1] <= self._start[1]:
            return True
        try:
            usable = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            usable = os.cpu_count() or 1
        idle = (end[0] - self._start[0]) / (end[1] - self._start[1]) * (os.cpu_count() or 1)
        return usable >= 2 and idle >= RACE_FREE_CORE


def _idle_jiffies() -> tuple[int, int] | None:
    """(idle + iowait, total) CPU time of the whole machine from ``/proc/stat``, in clock ticks."""
    try:
        with open("/proc/stat", "rb") as fh:
            fields = [int(x) for x in fh.readline().split()[1:9]]
        return fields[3] + fields[4], sum(fields)
    except (OSError, ValueError, IndexError):
        return None


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) of process ``pid`` from ``/proc`` (Linux), or None where that is not available."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, IndexError, ValueError):
        return None


try:
    _TICKS = float(os.sysconf("SC_CLK_TCK"))
except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
    _TICKS = 100.0


def _race_child(conn: Any, problem: SearchProblem, budget: float, time_limit: float | None) -> None:
    """Body of the forked HiGHS process: solve, send the outcome, exit. Its output is discarded (HiGHS can print
    diagnostics straight to file descriptor 1, which would corrupt the parent's ``--json``)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        conn.send(milp_search(problem, budget, time_limit))
    except BaseException as exc:  # reported to the parent, which then finishes with the DP alone
        conn.send(exc)
    finally:
        conn.close()


class Pacer:
    """The DP's side of a race on one machine: decides, each time the DP polls, whether it may go on.

    ``child_cpu()`` is the CPU time HiGHS has had (None: unknown, then nothing is paced), ``wait(seconds)``
    sleeps until HiGHS answers (True) or the time is up (False). Over windows of RACE_WINDOW_S of the DP's
    running time it checks whether HiGHS got a CPU of its own meanwhile (at least RACE_FREE_CORE of one). If
    not, the machine is busy, and on a busy machine the DP's CPU time since the race began may not exceed
    ``grace + RACE_SHARE * child_cpu()``: past that the DP waits. The first window runs unpaced (a free core
    shows at once; on a busy machine it costs HiGHS at most a window) unless ``contended`` says to assume a busy
    machine until a window shows otherwise (the DP then runs in short bursts, so that takes longer to show). The
    clocks are parameters for tests.
    """

    def __init__(self, child_cpu: Callable[[], float | None], wait: Callable[[float], bool], grace: float = 0.0,
                 contended: bool = False, own_cpu: Callable[[], float] = time.process_time,
                 wall: Callable[[], float] = time.perf_counter) -> None:
        self._child_cpu, self._wait, self._own_cpu, self._wall = child_cpu, wait, own_cpu, wall
        self.grace = grace
        self._cpu0 = own_cpu()
        self._last_wall, self._last_child = wall(), 0.0
        self._window_wall = self._window_child = 0.0
        self.contended = contended  # HiGHS got less than RACE_FREE_CORE of a CPU while the DP ran (last window)
        self.paused = 0.0  # seconds the DP spent waiting for HiGHS to use its share

    def __call__(self) -> bool:
        """True when HiGHS answered while the DP waited (the DP should stop); False: go on."""
        now = self._wall()
        child = self._child_cpu()
        if child is None:  # no measurement, no pacing
            return False
        # Since the last call the DP was running: did HiGHS have a CPU of its own meanwhile?
        self._window_wall += now - self._last_wall
        self._window_child += child - self._last_child
        if self._window_wall >= RACE_WINDOW_S:
            self.contended = self._window_child < RACE_FREE_CORE * self._window_wall
            self._window_wall = self._window_child = 0.0
        if self.contended:
            while True:
                used = self._own_cpu() - self._cpu0
                owed = (used - self.grace) / RACE_SHARE - child  # HiGHS CPU time still due before the DP runs
                if owed <= 0:
                    break
                wait = min(max(owed, 0.01), RACE_MAX_PAUSE_S)
                if self._wait(wait):
                    return True
                self.paused += wait
                now_child = self._child_cpu()
                if now_child is None:
                    break
                child = now_child
        self._last_wall, self._last_child = self._wall(), child
        return False


class MilpRace:
    """HiGHS on one problem in a forked process, racing the front DP in the parent (:mod:`slimzoo.search.exact`).

    Neither solver dominates: on strongly correlated knapsacks the DP wins at 30 x 12 (1.8 s against 7.5 s) and
    loses at 40 x 12 (8 s against 2.4 s), and nothing cheap predicts which. Running both and keeping the first
    proof costs the minimum of the two on two free cores. Without a free core the DP is paced (:meth:`pace`), so
    HiGHS is never delayed by more than a window of RACE_WINDOW_S plus RACE_SHARE of its own time. A process, not a
    thread, because HiGHS holds the GIL and cannot be interrupted through scipy; a process can be killed the
    moment the DP wins.
    """

    def __init__(self, problem: SearchProblem, budget: float, time_limit: float | None, grace: float = 0.0,
                 contended: bool = False) -> None:
        import multiprocessing

        import scipy.optimize  # noqa: F401 - imported once here, so no forked child pays for it again

        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_race_child, args=(child, problem, budget, time_limit), daemon=True)
        self._proc.start()
        child.close()
        self._outcome: Any = None
        pid = self._proc.pid
        self.pacer = Pacer(lambda: _cpu_seconds(pid), self._conn.poll, grace, contended)

    def done(self) -> bool:
        """HiGHS has finished (or failed): :meth:`result` will not block."""
        return self._outcome is not None or self._conn.closed or self._conn.poll()

    def pace(self) -> bool:
        """Called by the DP between pieces of work: True when HiGHS has finished (the DP should stop).

        With a free core it returns at once; on a busy machine it may first pause the DP (see :class:`Pacer`).
        """
        return self.done() or self.pacer()

    def result(self) -> tuple[list[int] | None, float, bool, dict[str, object]] | None:
        """Wait for HiGHS's outcome (as :func:`milp_search` returns it), or None if the child failed."""
        if self._outcome is None:
            try:
                self._outcome = self._conn.recv() if not self._conn.closed else RuntimeError("cancelled")
            except (EOFError, OSError):
                self._outcome = RuntimeError("HiGHS process ended without an answer")
            self.cancel()
        return None if isinstance(self._outcome, BaseException) else self._outcome  # type: ignore[no-any-return]

    def cancel(self) -> None:
        """Stop the HiGHS process (if still running) and release it."""
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join()
        if not self._conn.closed:
            self._conn.close()


def solve_milp(problem: SearchProblem, budget: float | None = None, *, time_limit: float | None = None,
               validate: bool = True) -> Solution:
    """The exact optimum by HiGHS (any factor graph, cycles included); ``optimal`` when HiGHS closes the gap.

    With ``time_limit`` (seconds) the best configuration found so far is returned with HiGHS's dual bound as
    ``lower_bound`` (so ``gap`` says how far from optimal it can be); BudgetError when no configuration meets the
    budget, or when the limit hit before HiGHS found any.
    """
    start = time.perf_counter()
    if validate:
        problem.validate()
    b = resolve_budget(problem, budget)
    model = MilpModel(problem)
    config, bound, finished, stats = milp_search(problem, b, time_limit, model)
    if config is None:
        from slimzoo.search.lagrangian import min_latency

        fastest = min_latency(problem) if _is_forest(problem) else None
        if fastest is not None and fastest.latency <= b + budget_slack(b):
            config = fastest.indices  # a time limit before any solution: the fastest configuration is feasible
            finished = False
        else:
            raise infeasible(problem, b, fastest.latency if fastest is not None else _fastest_any(problem))
    loss = problem.loss(config)
    lower = min(bound, loss)
    return make_solution(problem, config, "milp", finished, budget=b, lower_bound=lower,
                         tolerance=loss_tolerance(problem, CERTIFY_RTOL),
                         iterations=int(stats["milp_nodes"]), time_ms=(time.perf_counter() - start) * 1e3,
                         stats=stats)


def _is_forest(problem: SearchProblem) -> bool:
    from slimzoo.errors import ProblemError
    from slimzoo.search.tree import compile_tree

    try:
        compile_tree(problem)
    except ProblemError:
        return False
    return True


def _fastest_any(problem: SearchProblem) -> float:
    """The least latency of any configuration (a MILP on latency alone), for the infeasible-budget message."""
    model = MilpModel(problem)
    saved = model.cost
    model.cost = np.concatenate([model.latency_row])
    try:
        out = model.solve(np.inf)
    finally:
        model.cost = saved
    if out.config is None:  # pragma: no cover - latency alone always has a solution
        raise BudgetError("no configuration meets the budget")
    return problem.latency(out.config)


__all__ = ["MilpModel", "milp_search", "solve_milp"]
