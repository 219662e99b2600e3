"""The ``slimzoo`` command line: parse, call one library function, render with rich.

No logic lives here that a test would want to call; every command maps to a function in :mod:`slimzoo.api`.
Library errors (:class:`slimzoo.errors.SlimzooError`) become one line on stderr and their exit code.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from slimzoo.errors import SlimzooError
from slimzoo.fileio import strict_json
from slimzoo.zoo.accuracy import OBJECTIVES

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn one slimmable checkpoint into a zoo of standalone per-device models.")
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

CheckpointOpt = Annotated[Path | None, typer.Option("--checkpoint", help="Checkpoint (default: $SLIMZOO_CHECKPOINT, "
                                                   "else the shipped one).")]
RegistryOpt = Annotated[Path | None, typer.Option("--registry", envvar="SLIMZOO_REGISTRY",
                                                  help="Directory of user platform files and measured tables.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
TablePrecisionOpt = Annotated[str, typer.Option(
    "--precision", help="Latency table of this precision: fp32 (default) or int8 (measured, or estimated with a "
                        "stated, assumed speed-up).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", help="Show every detail (the default view fits 100 "
                                          "columns).")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="The checkpoint's dataset directory (default: "
                                                 "the one its training recorded; fashion-mnist: Debian's package, "
                                                 "else the subset shipped in slimzoo).")]


@app.callback()
def _root(threads: Annotated[str | None, typer.Option(
        "--threads", metavar="N", help="CPU threads for torch work (training, BN re-estimation, validation); default: "
                                 "every core this process may use, or $SLIMZOO_THREADS. Latency tables are "
                                 "measured at `profile --threads` instead.")] = None,
          family_module: Annotated[list[str] | None, typer.Option(
        "--family-module", metavar="MODULE", help="Import this module (dotted name or .py file) for the network "
                                                  "families it registers; repeatable; added to "
                                                  "$SLIMZOO_FAMILY_MODULES (docs/families.md).")] = None) -> None:
    """Turn one slimmable checkpoint into a zoo of standalone per-device models."""
    if family_module:
        from slimzoo.zoo.registry import ENV_VAR as FAMILY_ENV_VAR

        # through the environment, so the processes a command starts (build workers, the gate) see them too
        known = [m for m in os.environ.get(FAMILY_ENV_VAR, "").split(",") if m]
        os.environ[FAMILY_ENV_VAR] = ",".join(dict.fromkeys(known + [str(m) for m in family_module]))
    if threads is not None:
        from slimzoo.threads import ENV_VAR, compute_threads

        try:
            n = int(threads)
        except ValueError:
            raise fail(f"--threads must be a whole number of threads >= 1, got {threads!r}") from None
        try:
            os.environ[ENV_VAR] = str(compute_threads(n))
        except SlimzooError as exc:
            raise fail(str(exc), exc.exit_code) from None


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn library errors into one stderr line and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SlimzooError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except OSError as exc:
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            raise fail(f"{where}{exc.strerror or exc}", 2) from None
        except KeyboardInterrupt as exc:
            import signal

            signum = getattr(exc, "signum", signal.SIGINT)
            raise fail(f"interrupted ({signal.Signals(signum).name})", 128 + signum) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM handled like Ctrl-C for the duration: the library unwinds (temp files removed, the build marker
    left for `check` to report) and :func:`handle_errors` prints one line and exits 143."""
    import signal

    from slimzoo.errors import Interrupted

    def terminate(signum: int, _frame: Any) -> None:
        raise Interrupted(signum)

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread (an embedding application): leave its handling alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int, str], None]]:
    """A rich progress bar on stderr, handed to the library as a ``progress(done, total, status)`` callback."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=err_console, transient=False) as bar:
        task = bar.add_task(description, total=None, status="")

        def update(done: int, total: int, status: str = "") -> None:
            bar.update(task, completed=done, total=total, status=status)

        yield update


def print_json(data: Any) -> None:
    """Strict JSON on stdout: never NaN or Infinity (:func:`slimzoo.fileio.strict_json`)."""
    sys.stdout.write(strict_json(data) + "\n")


def table_(title: str, columns: list[str], rows: list[list[Any]], wrap: tuple[str, ...] = ()) -> Table:
    """A table for an 80-100 column terminal. Columns named in ``wrap`` (long text: a device, a detail, a path)
    wrap at spaces and fold a longer word; every other column (names, figures) never wraps, so no platform name or
    figure is cut short when the view fits. A header may hold a line break ("budget\nms") to stay narrow."""
    out = Table(title=title, title_justify="left")
    for column in columns:
        if column in wrap:
            out.add_column(column, overflow="fold")
        else:
            out.add_column(column, no_wrap=True)
    for row in rows:
        out.add_row(*[str(x) for x in row])
    return out


def _name_list(text: str | None) -> list[str] | None:
    """``a,b,c`` -> ["a", "b", "c"] (None stays None)."""
    if text is None:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def _float_list(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise fail(f"{option}: expected comma-separated numbers, got {text!r}") from None


@app.command()
@handle_errors
def train(
    out: Annotated[Path, typer.Option("--out", help="Checkpoint file to write (.safetensors).")],
    family: Annotated[str, typer.Option(help="Network family: mobilenetv2, mobilenetv3, or one a plugin "
                                        "registers (slimzoo --family-module M; docs/families.md).")]
    = "mobilenetv2",
    dataset: Annotated[str, typer.Option(help="fashion-mnist (Debian's dataset-fashion-mnist, or --data-dir), "
                                         "digits (embedded), cifar100 or imagefolder (need --data-dir).")]
    = "fashion-mnist",
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Dataset directory (cifar100: the folder "
                                                  "with cifar-100-python/; imagefolder: DIR/<class>/<image>). "
                                                  "Nothing is downloaded.")] = None,
    strategy: Annotated[str, typer.Option(help="Sampling strategy: uniform (sandwich rule), aows (one "
                                          "--platform), platforms (market-weighted joint Gibbs sampling), "
                                          "platforms-marginal.")] = "uniform",
    platform: Annotated[str | None, typer.Option("--platform", help="aows: the platform to train for.")] = None,
    platforms: Annotated[str | None, typer.Option("--platforms", help="Comma-separated platforms (default: "
                                                  "all with a market share).")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="JSON {platform: weight} (or `slimzoo "
                                                 "market crp --json` output); default: market shares.")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    steps: Annotated[int | None, typer.Option(min=1, help="Train exactly this many steps instead of --epochs "
                                              "epochs.")] = None,
    batch_size: Annotated[int, typer.Option(min=2, help="Global batch (split across torchrun processes).")] = 64,
    lr: Annotated[float, typer.Option(min=0.0)] = 0.05,
    n_random: Annotated[int, typer.Option(help="Sampled configs per step besides largest and smallest (adaptive "
                                          "strategies sample one more instead of the smallest).", min=0)] = 2,
    seed: int = 0,
    width_mult: Annotated[float | None, typer.Option(min=0.05, help="Width of the supernet's largest config "
                                                     "(default: the family's, 1).")] = None,
    multipliers: Annotated[str | None, typer.Option(help="Comma-separated width multipliers each variable may "
                                                    "take (default: 8 steps from 0.25 to 1).")] = None,
    input_size: Annotated[int | None, typer.Option(min=8, help="Input resolution (default: the dataset's "
                                                   "own, 28 for fashion-mnist, else 32).")] = None,
    stem_stride: Annotated[int | None, typer.Option(min=1, max=2, help="Stride of the first conv (default: 1 "
                                                    "below 64x64 inputs, else 2).")] = None,
    train_smallest: Annotated[bool, typer.Option("--train-smallest", help="Adaptive strategies: also train the "
                                                 "smallest config every step (sandwich rule).")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run from <out>.train-state (written at "
                                         "every epoch's end).")] = False,
    init: Annotated[Path | None, typer.Option("--init", help="Start from this checkpoint's weights and loss proxy "
                                              "(same architecture).")] = None,
    log: Annotated[Path | None, typer.Option("--log", help="Write a JSON-lines training log here.")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu, cuda.")] = "auto",
    registry: RegistryOpt = None,
    weights_dtype: Annotated[str, typer.Option(help="Storage dtype: float32 or float16.")] = "float32",
    as_json: JsonOpt = False,
) -> None:
    """Train a slimmable supernet (largest config + sampled configs by in-place distillation), recording its
    loss proxy and each platform's searched config. Data-parallel under torchrun."""
    from slimzoo import api
    from slimzoo.zoo.distributed import is_main_process
    from slimzoo.zoo.strategies import check_strategy
    from slimzoo.zoo.train import TrainSettings

    if weights_dtype not in ("float32", "float16"):
        raise typer.BadParameter("must be float32 or float16", param_hint="--weights-dtype")
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise fail(f"--device must be auto, cpu or cuda, got {device!r}")
    check_strategy(strategy)
    spec_params: dict[str, Any] = {}  # only what was given: a plugin family need not take every parameter
    if width_mult is not None:
        spec_params["width_mult"] = width_mult
    if stem_stride is not None:
        spec_params["stem_stride"] = stem_stride
    mults = _float_list(multipliers, "--multipliers")
    if mults is not None:
        if not mults or any(not 0 < m <= 1 for m in mults):
            raise fail(f"--multipliers: expected numbers in (0, 1], got {multipliers!r}")
        spec_params["multipliers"] = tuple(sorted(set(mults)))
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, n_random=n_random, seed=seed,
                             strategy=strategy, steps=steps, train_smallest=train_smallest)
    command = shlex.join(["slimzoo", "train", *sys.argv[2:]]) if len(sys.argv) > 1 else None
    main_rank = is_main_process()
    with (_lazy_bar(f"training ({strategy})") if main_rank and not as_json else _no_bar()) as progress:
        summary = api.train(out, dataset, family, settings=settings, weights_dtype=weights_dtype, progress=progress,
                            command=command, data_dir=data_dir, spec_params=spec_params, input_size=input_size,
                            registry_dir=registry, platform=platform, platforms=_name_list(platforms),
                            weights_file=weights, resume=resume, log_path=log, device=device, init=init)
    if not main_rank:
        return None
    if as_json:
        return print_json(summary)
    acc = summary["val_accuracy"]
    console.print(f"wrote {out}: val accuracy largest {acc['largest']:.2%}, smallest {acc['smallest']:.2%} "
                  f"({summary['steps']} steps, {summary['seconds']} s, {summary['images_per_second']:.0f} img/s)")
    rows = [[name, f"{c['market_weight']:.1%}", f"{c['budget_ms']:g}", f"{c['predicted_latency_ms']:.4f}",
             f"{c['loss_proxy']:.4f}", f"{c['macs'] / 1e6:.2f}"] for name, c in summary["platform_configs"].items()]
    if rows:
        console.print(table_("Searched configs on the final loss proxy (widths: --json, or the checkpoint)",
                             ["platform", "weight", "budget\nms", "predicted\nms", "loss\nproxy", "MMACs"], rows))
    return None


@contextmanager
def _no_bar() -> Iterator[Callable[[int, int, str], None]]:
    yield lambda done, total, status="": None


@contextmanager
def _lazy_bar(description: str) -> Iterator[Callable[[int, int, str], None]]:
    """A :func:`progress_bar` that appears on the first update, so input errors are not preceded by a bar."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        bar: list[Callable[[int, int, str], None]] = []

        def update(done: int, total: int, status: str = "") -> None:
            if not bar:
                bar.append(stack.enter_context(progress_bar(description)))
            bar[0](done, total, status)

        yield update


@app.command("fit-accuracy")
@handle_errors
def fit_accuracy(
    configs: Annotated[int, typer.Option("--configs", min=8, help="Sub-networks to measure (spread over the "
                                         "latency range).")] = 120,
    holdout: Annotated[float, typer.Option(min=0.05, max=0.5, help="Fraction of them held out to report on.")]
    = 0.25,
    seed: int = 0,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also write predicted vs measured accuracy (PNG).")]
    = None,
    checkpoint: CheckpointOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure sub-networks on the validation split and fit the additive accuracy model the search then uses
    (stored beside the checkpoint as <name>.accuracy.json)."""
    from slimzoo import api

    with progress_bar("measuring sub-networks") as progress:
        report = api.fit_accuracy(checkpoint, configs, holdout, seed, data_dir, plot, progress)
    if as_json:
        return print_json(report)
    figs = report["held_out_figures"]

    def cell(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    rows = [[name, cell(f["spearman"], ".3f"), cell(f["kendall"], ".3f"), cell(f["mae_points"], ".2f")]
            for name, f in (("fitted additive model", figs["fitted"]), ("training-time loss proxy",
                                                                         figs["training_proxy"]))]
    split = report["split"]
    console.print(table_(f"Held-out configs: {report['held_out']} of {report['configs']} (fitted on "
                         f"{report['fit']}); {split['dataset']} {split['split']} split, {split['images']:,} images",
                         ["objective", "Spearman", "Kendall", "MAE (points)"], rows))
    console.print(f"wrote {report['model_file']} ({'monotone' if report['chosen']['monotone'] else 'free'}, "
                  f"alpha {report['chosen']['alpha']:g}, {report['seconds']} s)")
    if "plot" in report:
        console.print(f"wrote {report['plot']}")
    return None


@app.command("list-platforms")
@handle_errors
def list_platforms(registry: RegistryOpt = None, checkpoint: CheckpointOpt = None, as_json: JsonOpt = False,
                   verbose: VerboseOpt = False) -> None:
    """Show the target platforms: runtime, market share, latency budget, latency-table source, device (--verbose:
    also vendor, SoC and the platform file)."""
    from slimzoo import api

    rows = api.list_platforms(registry, checkpoint)
    if as_json:
        return print_json(rows)
    console.print(table_("Platforms" + ("" if verbose else " (vendor, SoC, platform file: --verbose)"),
                         ["name", "runtime", "market\nshare", "budget\nms", "latency\ntable", "device"],
                         [[r["name"] + (" *" if r["shadows"] else "") + (" !" if r["problem"] else ""), r["runtime"],
                           f"{r['market_share']:.1%}" + (" (assumed)" if r["market_share_assumed"] else ""),
                           "-" if r["latency_budget_ms"] is None else f"{r['latency_budget_ms']:g}",
                           r["latency_table"], r["device"]] for r in rows], wrap=("market\nshare", "device")))
    if verbose:
        for r in rows:
            console.print(f"{r['name']}: vendor {r['vendor']}; SoC {r['soc']}; file {r['file']}",
                          highlight=False)
    for r in rows:
        if r["shadows"]:
            console.print(f"* {r['name']}: your file {r['file']} replaces the built-in {r['shadows']}",
                          highlight=False, soft_wrap=True)
    for r in rows:
        if r["problem"]:
            err_console.print(f"[yellow]! {r['name']}:[/] {r['problem']}", highlight=False, soft_wrap=True)
    return None


def _config_rows(config: dict[str, int], order: list[str] | None = None) -> str:
    """``stem=24 stage1=16 ...`` in network order: the order given (the spec's variables, for a config read from
    a file an older slimzoo wrote with sorted keys), else the config's own (a WidthConfig's is the network's)."""
    names = [n for n in order or [] if n in config] + [n for n in config if n not in set(order or [])]
    return " ".join(f"{k}={config[k]}" for k in names)


@app.command()
@handle_errors
def search(
    platform: Annotated[str | None, typer.Option("--platform", help="Platform name (see list-platforms).")] = None,
    problem: Annotated[Path | None, typer.Option("--problem", help="Solve a problem file "
                                                 "(docs/search-problem.md) instead of a platform.")] = None,
    all_platforms: Annotated[bool, typer.Option("--all-platforms", help="Search every platform at once, with "
                                                "the market-weighted objective.")] = False,
    budget: Annotated[str | None, typer.Option(metavar="MS", help="Latency budget in ms (default: the "
                                               "platform's, or the problem file's).")] = None,
    solver: Annotated[str, typer.Option(help="exact (default), lagrangian (AOWS) or milp (HiGHS).")] = "exact",
    time_limit: Annotated[str | None, typer.Option("--time-limit", metavar="S", help="With --problem: stop the "
                                                   "exact or milp solver after S seconds and report the gap.")]
    = None,
    precision: TablePrecisionOpt = "fp32",
    dump_problem: Annotated[Path | None, typer.Option("--dump-problem", help="With --platform: write the search "
                                                      "problem to this JSON file instead of solving it.")] = None,
    pareto: Annotated[Path | None, typer.Option("--pareto", help="Also write each platform's Pareto front "
                                                "(latency vs loss proxy) as DIR/<platform>.png.")] = None,
    objective: Annotated[str, typer.Option(help="What the search minimises: auto (the fitted accuracy model when "
                                           "the checkpoint has one, else the loss proxy), fitted, proxy.")]
    = "auto",
    checkpoint: CheckpointOpt = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="--all-platforms: also print each platform's width "
                                          "config (the default view is one row per platform).")] = False,
) -> None:
    """Find the width config with the lowest objective (fitted accuracy model, or the training-time loss proxy)
    under a latency budget: one platform, every platform, or a problem file."""
    from slimzoo.search.files import parse_budget, parse_time_limit, print_problem_result, solve_problem_file

    budget_ms = parse_budget(budget)
    limit_s = parse_time_limit(time_limit)
    modes = [flag for flag, on in (("--platform", platform is not None), ("--problem", problem is not None),
                                   ("--all-platforms", all_platforms)) if on]
    if len(modes) != 1:
        given = f"got {' and '.join(modes)}" if modes else "got none"
        raise fail(f"give exactly one of --platform, --problem, --all-platforms ({given})")
    if dump_problem is not None and platform is None:
        raise fail("--dump-problem needs --platform (it writes the problem built for one platform)")
    if dump_problem is not None and pareto is not None:
        raise fail("--dump-problem writes the problem without solving it; it cannot be combined with --pareto")
    if problem is not None and (pareto is not None or checkpoint is not None or registry is not None):
        extra = "--pareto" if pareto is not None else "--checkpoint" if checkpoint is not None else "--registry"
        raise fail(f"--problem solves the file as it is; {extra} does not apply to it")
    if problem is not None:
        return print_problem_result(solve_problem_file(problem, budget_ms, solver, limit_s), as_json)
    if limit_s is not None:
        raise fail("--time-limit applies to --problem only")
    if precision != "fp32" and platform is None:
        raise fail("--precision applies to --platform (one platform's table of that precision)")
    from slimzoo import api

    if dump_problem is not None:
        summary = api.dump_problem(platform, dump_problem, budget_ms, checkpoint, registry)  # type: ignore[arg-type]
        if as_json:
            return print_json(summary)
        console.print(f"wrote {summary['problem_file']}: {summary['platform']} ({summary['latency_table_source']} "
                      f"table), {summary['variables']} variables, {summary['factors']} latency factors, budget "
                      f"{summary['budget_ms']:g} ms")
        return None
    if all_platforms:
        everything = api.search_all_platforms(budget_ms, checkpoint, registry, solver, objective=objective)
        plots = api.write_pareto_plots(everything, pareto) if pareto is not None else []
        if as_json:
            data = everything.to_json()
            if pareto is not None:
                data["pareto_plots"] = [str(p) for p in plots]
            return print_json(data)
        _print_all_platforms(everything, plots, verbose)
        return None
    result = api.search_platform(platform, budget_ms, checkpoint, registry, solver,  # type: ignore[arg-type]
                                 objective=objective, precision=precision)
    plots = api.write_pareto_plots(result, pareto) if pareto is not None else []
    if as_json:
        data = result.to_json()
        if pareto is not None:
            data["pareto_plots"] = [str(p) for p in plots]
        return print_json(data)
    s, base = result.solution, result.baseline
    rows = [["searched (" + s.solver + ")", f"{s.latency:.4f}", f"{s.loss:.4f}", _config_rows(result.config)]]
    if base is not None:
        rows.append([f"uniform x{base['multiplier']:g}", f"{base['predicted_latency_ms']:.4f}",
                     f"{base['loss_proxy']:.4f}", "all variables at the same multiplier"])
    console.print(table_(f"{result.platform}: budget {result.budget_ms:g} ms, latency table "
                        f"{result.table_source}, objective: {OBJECTIVES[result.problem.meta['objective']]}",
                        ["config", "predicted\nms", "objective", "widths"], rows, wrap=("widths",)))
    for note in result.to_json()["notes"]:
        console.print(f"note: {note}")
    for path in plots:
        console.print(f"wrote {path}")
    return None


def _print_all_platforms(found: Any, plots: list[Path], verbose: bool = False) -> None:
    """One row per platform (the width configs: ``verbose``, or --json), then the market-weighted summary."""
    sources = {r.table_source for r in found.results}
    one_source = len(sources) == 1
    rows = []
    for r in found.results:
        base = r.baseline
        rows.append([r.platform, f"{found.weights[r.platform]:.1%}", f"{r.budget_ms:g}", f"{r.solution.latency:.4f}",
                     *([] if one_source else [r.table_source]), f"{r.solution.loss:.4f}",
                     "-" if base is None else f"x{base['multiplier']:g}: {base['loss_proxy']:.4f}"])
    tables = f"; latency tables: {next(iter(sources))}" if one_source else ""
    console.print(table_(f"All platforms ({found.solver} solver: {found.solve_ms:.1f} ms for all platforms; "
                         f"{found.time_ms:.0f} ms with loading{tables}){'' if verbose else '; widths: --verbose'}",
                         ["platform", "weight", "budget\nms", "predicted\nms", *([] if one_source else ["table"]),
                          "objective", "uniform\nbaseline"], rows, wrap=("table", "uniform\nbaseline")))
    if verbose:
        for r in found.results:
            console.print(f"{r.platform}: {_config_rows(r.config)}", highlight=False)
    objective = found.results[0].problem.meta["objective"] if found.results else "proxy"
    base = found.weighted_baseline
    line = f"objective: {OBJECTIVES[objective]}; market-weighted: {found.weighted_loss:.4f}"
    if base is not None:
        line += f" (uniform widths: {base:.4f}, improvement {base - found.weighted_loss:.4f})"
    else:
        line += " (uniform baseline: none meets the budget on some platform)"
    console.print(line)
    notes = found.notes()
    loose = [r.platform for r in found.results if r.notes]  # each such platform's own note says it at length
    if loose and not verbose:
        own = {n for r in found.results for n in r.notes}
        notes = [n for n in notes if n not in own]
        console.print(f"note: the budget does not bind on {', '.join(loose)}: the least-objective configuration "
                      f"already fits (figures: --verbose)")
    for note in notes:
        console.print(f"note: {note}")
    for path in plots:
        console.print(f"wrote {path}")


@app.command()
@handle_errors
def export(
    platform: Annotated[str, typer.Option("--platform", help="Platform name (see list-platforms).")],
    fmt: Annotated[str, typer.Option("--format", help="onnx, coreml or tflite.")] = "onnx",
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("zoo"),
    budget: Annotated[float | None, typer.Option(help="Latency budget in ms (default: the platform's).")] = None,
    precision: Annotated[str | None, typer.Option(
        help="fp32, fp16 or int8 where the format offers it (default: the format's own: coreml fp16, others "
             "fp32). int8 is calibrated on training images and refused if top-1 drops > 1 point.")] = None,
    io: Annotated[str | None, typer.Option(
        "--io", help="tflite int8 only: float (default; quantize/dequantize inside the model) or int8 input "
                     "and output.")] = None,
    layout: Annotated[str | None, typer.Option(
        help="Input layout, nchw or nhwc where the format offers it (default: tflite nhwc, others nchw).")] = None,
    input_type: Annotated[str | None, typer.Option(
        "--input-type", help="coreml only: tensor (default) or image (8-bit pixels, mean/std built in).")] = None,
    checkpoint: CheckpointOpt = None,
    registry: RegistryOpt = None,
    data_dir: DataDirOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show the converters' own logging.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Search, slice and export one platform's model, validated against PyTorch, with a JSON sidecar."""
    from slimzoo import api

    # the bar names each stage as it starts (search, slice + recalibrate BN, convert + validate, write); it
    # appears with the first stage, so a refused option is not preceded by one
    with _lazy_bar(f"exporting {platform} as {fmt}") as progress:
        result = api.export_platform(platform, fmt, out, budget, checkpoint, registry, precision, layout,
                                     input_type=input_type, verbose=verbose, data_dir=data_dir, progress=progress,
                                     io=io)
    if as_json:
        return print_json(result.sidecar)
    side, val = result.sidecar, result.sidecar["validation"]
    rows = [
        ["platform", side["platform"]],
        ["format", f"{side['format']} ({side['precision']}, {side['input_type']} input, {side['layout']})"
                   + (f", target {side['minimum_deployment_target']}" if "minimum_deployment_target" in side else "")],
        ["predicted latency", f"{side['predicted_latency_ms']:.4f} ms ({side['latency_table_source']}); "
                              f"budget {side['budget_ms']:g} ms"],
        ["parameters", f"{side['parameters']:,}"], ["MACs", f"{side['macs']:,}"],
    ]
    if val["numerics_run"]:
        atol = f"atol {val['atol']:g}" if val["atol"] is not None else "not enforced"
        psnr = f", logits PSNR {val['psnr_db']:.1f} dB" if val.get("psnr_db") is not None else ""
        rows += [["max |diff| vs PyTorch", f"{val['max_abs_diff']:.2e} ({atol}){psnr}"]]
        if val["top1_agreement"] is not None:
            rows += [["top-1 agreement", f"{val['top1_agreement']:.2%} of {val['n_val']} "
                                         f"{side['accuracy_split']['split']}-split images "
                                         f"(need {val['min_top1_agreement']:.0%})"],
                     [f"accuracy ({side['accuracy_split']['split']} split)",
                      f"{val['accuracy_exported']:.2%} of {side['accuracy_split']['images']:,} images"
                      + (f" ({side['accuracy_split']['note']})" if side['accuracy_split'].get('note') else "")]]
    else:
        rows += [["numerics", val["note"] or "not run"]]
    rows += [["checks", "; ".join(val["checks"])],
             ["size", f"{side['size_bytes']:,} bytes"], ["sidecar", str(result.sidecar_path)]]
    console.print(table_(f"{result.model_path}", ["field", "value"], rows, wrap=("value",)))


@app.command()
@handle_errors
def profile(
    platform: Annotated[str, typer.Option("--platform", help="A platform this machine is.")] = "host-cpu",
    runtime: Annotated[str, typer.Option(help="onnxruntime, or litert (needs ai-edge-litert).")] = "onnxruntime",
    threads: Annotated[int, typer.Option(min=1, help="Intra-op threads of the runtime.")] = 1,
    samples: Annotated[int | None, typer.Option(min=2, help="Random whole-network configs (default 150).")] = None,
    holdout: Annotated[int | None, typer.Option(min=1, help="How many of them the fit never sees "
                                                "(default a third).")] = None,
    repeats: Annotated[int | None, typer.Option(min=5, help="Timed runs per layer variant.")] = None,
    precision: TablePrecisionOpt = "fp32",
    spin: Annotated[bool, typer.Option("--spin/--no-spin", help="onnxruntime: idle pool threads spin (default, "
                                       "as deployed) or sleep (steadier on an oversubscribed machine).")] = True,
    seed: int = 0,
    checkpoint: CheckpointOpt = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure every layer variant and whole networks on this machine, fit the latency table to them and
    install it as `measured`, with its held-out accuracy."""
    from slimzoo import api

    if runtime not in ("onnxruntime", "litert"):
        raise typer.BadParameter("must be onnxruntime or litert", param_hint="--runtime")
    with progress_bar(f"profiling {platform} ({runtime}, {threads} thread(s))") as progress:
        table, path = api.profile(platform, checkpoint, registry, threads, repeats, progress, runtime=runtime,
                                  samples=samples, holdout=holdout, seed=seed, spinning=spin, precision=precision)
    prov = table.provenance
    fit = prov.get("fit", {})
    summary = {"platform": table.platform, "path": str(path), "source": table.source, "arch_key": table.arch_key,
               **{k: prov.get(k) for k in ("cpu_model", "cores", "threads", "runtime", "runtime_version", "date",
                                          "statistic", "repetitions", "cells", "networks", "wall_s")},
               "heldout": fit.get("heldout"), "noise": prov.get("noise")}
    if as_json:
        return print_json(summary)
    rows = [[k, json.dumps(v) if isinstance(v, dict) else v] for k, v in summary.items()
            if k not in ("heldout", "noise")]
    console.print(table_("Measured latency table", ["field", "value"], rows, wrap=("value",)))
    _print_accuracy({"per-layer sum": fit["heldout"]["per_layer_sum"], "fitted table": fit["heldout"]["fitted"]},
                    f"Held-out whole networks ({fit['heldout']['fitted']['n']} configs the fit never saw)",
                    prov.get("noise"))
    return None


def _print_accuracy(metrics: dict[str, dict[str, Any]], title: str, noise: dict[str, Any] | None) -> None:
    def pct(v: Any) -> str:
        return "-" if v is None else f"{v:.0%}"

    rows = [[name, pct(m["acc5"]), pct(m["acc10"]),
             "-" if m["mape_pct"] is None else f"{m['mape_pct']:.2f}%",
             "-" if m["spearman"] is None else f"{m['spearman']:.3f}",
             "-" if m["bias_pct"] is None else f"{m['bias_pct']:+.1f}%"] for name, m in metrics.items()]
    console.print(table_(title, ["predictor", "acc5", "acc10", "MAPE", "Spearman", "bias"], rows))
    if noise:
        console.print(f"noise: {noise['configs']} configs measured {noise['measurements'] // noise['configs']} times "
                      f"each: {noise['cv_pct']:.2f}% relative std (a perfect predictor would show "
                      f"MAPE {noise['mape_floor_pct']:.2f}%)")


@app.command()
@handle_errors
def evaluate(
    checkpoint: CheckpointOpt = None,
    platforms: Annotated[str | None, typer.Option("--platforms", help="Comma-separated platforms (default: all "
                                                  "with a positive weight).")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="JSON {platform: weight}; default: market "
                                                 "shares.")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Dataset directory (default: the one the "
                                                  "checkpoint was trained from).")] = None,
    solver: Annotated[str, typer.Option(help="exact (default) or lagrangian.")] = "exact",
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Per platform: search the config, slice, recalibrate BN, score on the validation split; and the
    market-weighted accuracy sum_p w_p Acc(c_p)."""
    from slimzoo import api

    if as_json:
        result = api.evaluate(checkpoint, _name_list(platforms), weights, registry_dir=registry, solver=solver,
                              data_dir=data_dir)
        return print_json(result.to_json())
    with _lazy_bar("evaluating") as progress:
        result = api.evaluate(checkpoint, _name_list(platforms), weights, registry_dir=registry, solver=solver,
                              data_dir=data_dir, progress=progress)
    rows = [[r.platform, f"{r.weight:.1%}", f"{r.budget_ms:g}", f"{r.predicted_latency_ms:.4f}", r.table_source,
             f"{r.macs / 1e6:.2f}", f"{r.accuracy:.2%}"] for r in result.results]
    title = (f"{result.checkpoint} ({result.strategy or 'unknown'} strategy), {result.dataset} validation "
             f"({result.val_size} images); widths: --json")
    console.print(table_(title, ["platform", "weight", "budget\nms", "predicted\nms", "table", "MMACs", "accuracy"],
                         rows))
    console.print(f"weighted accuracy sum_p w_p Acc(c_p): {result.weighted_accuracy:.2%} "
                  f"(largest config: {result.reference['largest']:.2%})")
    return None


market_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                         help="Market regimes: platform weights for training and evaluation.")
app.add_typer(market_app, name="market")


@market_app.command("crp")
@handle_errors
def market_crp(
    platforms: Annotated[str, typer.Option("--platforms", help="N (the N platforms with the largest market "
                                           "shares) or comma-separated names.")],
    alpha: Annotated[float, typer.Option("--alpha", help="CRP concentration: small = one dominant platform, "
                                         "large = fragmented market.")],
    seed: Annotated[int, typer.Option("--seed")] = 0,
    customers: Annotated[int, typer.Option("--customers", min=1, help="Customers seated (weights are table "
                                           "sizes over this).")] = 100,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Draw platform weights from a Chinese restaurant process (save the --json output as a --weights file)."""
    from slimzoo import api

    which: int | list[str] = int(platforms) if platforms.strip().isdigit() else (_name_list(platforms) or [])
    market = api.market_crp(which, alpha, seed, customers, registry)
    if as_json:
        return print_json(market.to_json())
    rows = [[name, f"{w:.1%}", sum(1 for p in market.table_platforms if p == name)]
            for name, w in sorted(market.weights.items(), key=lambda kv: (-kv[1], kv[0]))]
    console.print(table_(f"CRP market: alpha {market.alpha:g}, seed {market.seed}, {market.customers} customers, "
                         f"{len(market.tables)} tables", ["platform", "weight", "tables"], rows))
    return None


@app.command("latency-report")
@handle_errors
def latency_report(
    platform: Annotated[str, typer.Option("--platform", help="A platform with a measured table.")],
    precision: TablePrecisionOpt = "fp32",
    plot: Annotated[Path | None, typer.Option("--plot", help="Also write the predicted-vs-measured scatter "
                                              "(PNG).")] = None,
    checkpoint: CheckpointOpt = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """How well latency is predicted on held-out configs: per-layer sum, fitted table, roofline estimate."""
    from slimzoo import api

    report = api.latency_report(platform, checkpoint, registry, plot, precision)
    if as_json:
        return print_json(report.to_json())
    data = report.to_json()
    where = data["measurement"]
    parts = [where.get("device") or where.get("cpu_model"),
             " ".join(str(x) for x in (where.get("runtime"), where.get("runtime_version")) if x),
             f"{where['threads']} thread(s)" if where.get("threads") else None, where.get("date"),
             f"{where['statistic']} of the runs" if where.get("statistic") else None]
    console.print(f"{report.platform}: {report.table_path}\nmeasured on {', '.join(str(p) for p in parts if p)}",
                  highlight=False)
    _print_accuracy({f"{name} ({'estimated' if name == 'roofline estimate' else 'measured'})": report.metrics[name]
                     for name in report.metrics},
                    f"Prediction accuracy on {len(report.measured)} held-out configs", report.noise)
    if report.plot:
        console.print(f"wrote {report.plot}")
    return None


@app.command("profile-kit")
@handle_errors
def profile_kit(
    platform: Annotated[str, typer.Option("--platform", help="The device the kit is for (see list-platforms).")],
    out: Annotated[Path, typer.Option("--out", help="Kit folder to write.")],
    fmt: Annotated[str, typer.Option("--format", help="tflite (Android, benchmark_model) or onnx.")] = "tflite",
    precision: TablePrecisionOpt = "fp32",
    samples: Annotated[int | None, typer.Option(min=2, help="Random whole-network probes (default 110).")] = None,
    holdout: Annotated[int | None, typer.Option(min=1, help="How many of them the fit never sees "
                                                "(default a third).")] = None,
    seed: int = 0,
    checkpoint: CheckpointOpt = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write probe models, a manifest and a README for timing a device with its vendor's own tools."""
    from slimzoo import api

    with progress_bar(f"writing {fmt} kit for {platform}") as progress:
        summary = api.profile_kit(platform, fmt, out, checkpoint, registry, samples, holdout, seed, progress,
                                  precision)
    if as_json:
        return print_json(summary)
    counts = summary["counts"]
    console.print(f"wrote {summary['kit']}: {summary['probes']} probes ({counts['layer']} layer variants, "
                  f"{counts['fit']} fit + {counts['heldout']} held-out networks, {counts['repeat']} repeats), "
                  f"{summary['size_bytes'] / 1e6:.0f} MB; next: {summary['readme']}", highlight=False)
    return None


@app.command("import-latency")
@handle_errors
def import_latency(
    results: Annotated[Path, typer.Argument(help="Timings: CSV with probe,us (or probe,ms) rows.")],
    platform: Annotated[str, typer.Option("--platform", help="The platform the timings are from.")],
    kit: Annotated[Path | None, typer.Option("--kit", help="The kit folder (default: the results file's).")] = None,
    checkpoint: CheckpointOpt = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fit a latency table to a kit's device timings and install it as `measured` (all or nothing)."""
    from slimzoo import api

    table, path = api.import_latency(platform, results, kit, checkpoint, registry)
    held = table.provenance["fit"]["heldout"]
    if as_json:
        return print_json({"platform": table.platform, "path": str(path), "source": table.source,
                           "arch_key": table.arch_key, "heldout": held, "noise": table.provenance.get("noise")})
    console.print(f"installed {path} ({table.source})", highlight=False)
    _print_accuracy({"per-layer sum": held["per_layer_sum"], "fitted table": held["fitted"]},
                    f"Held-out whole networks ({held['fitted']['n']} configs the fit never saw)",
                    table.provenance.get("noise"))
    return None


@app.command("time-kit")
@handle_errors
def time_kit(
    kit: Annotated[Path, typer.Argument(help="A kit folder written by profile-kit.")],
    out: Annotated[Path, typer.Option("--out", help="Results CSV to write.")],
    threads: Annotated[int, typer.Option(min=1)] = 1,
    rounds: Annotated[int, typer.Option(min=1)] = 3,
    runs: Annotated[int, typer.Option(min=1, help="Timed runs per probe and round.")] = 100,
) -> None:
    """Time a kit's probes on this machine (ONNX Runtime / LiteRT): for boards where slimzoo runs."""
    from slimzoo import api

    with progress_bar(f"timing {kit}") as progress:
        summary = api.time_kit(kit, out, threads, rounds, runs, progress)
    console.print(f"wrote {summary['results']}: {summary['probes']} probes x {summary['rounds']} rounds "
                  f"({summary['statistic']} of {runs} runs each)", highlight=False)


# -- the zoo: build-zoo, check (the CI gate), zoo list/show, report -------------------------------------------
def _print_check(report: Any) -> None:
    marks = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]", "skip": "[dim]skip[/]"}
    out = Table(title=f"slimzoo check {report.zoo}", title_justify="left")
    for column in ("model", "gate", "verdict", "detail"):
        out.add_column(column, overflow="fold")
    for c in report.cases:
        detail = c.message + (f" [yellow](warning: {c.warning})[/]" if c.warning else "")
        out.add_row(c.model, c.gate, marks.get(c.status, c.status), detail)
    console.print(out)
    counts = report.to_json()["counts"]
    verdict = "[green]PASS[/]" if report.passed else "[bold red]FAIL[/]"
    console.print(f"{verdict}: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped")


@app.command("build-zoo")
@handle_errors
def build_zoo(
    out: Annotated[Path, typer.Option("--out", help="Zoo directory (manifest.json is written there).")] = Path("zoo"),
    platforms: Annotated[str, typer.Option(help="all, or comma-separated platform names.")] = "all",
    formats: Annotated[str | None, typer.Option(help="Comma-separated formats (default: every built format: "
                                                "onnx,coreml,tflite).")] = None,
    budgets: Annotated[str | None, typer.Option(help="Per-platform budget overrides: name=ms,name=ms.")] = None,
    precisions: Annotated[str | None, typer.Option(help="Comma-separated precisions to build for every format, e.g. "
                                                   "fp32,int8 (default: each format's own; an int8 model is "
                                                   "searched on the int8 latency table).")] = None,
    no_measure: Annotated[bool, typer.Option("--no-measure", help="Do not time the models whose runtime runs "
                                             "here (the timings go to build-log.json, never to the manifest).")]
    = False,
    checkpoint: CheckpointOpt = None,
    registry: RegistryOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search, slice and export every platform x format into one zoo with a manifest (exit 1 if a pair failed)."""
    from slimzoo import api

    budget_map: dict[str, float] = {}
    for part in _name_list(budgets) or []:
        name, _, value = part.partition("=")
        try:
            budget_map[name.strip()] = float(value)
        except ValueError:
            raise fail(f"--budgets: expected name=ms pairs, got {part!r}") from None
    names = None if platforms.strip() == "all" else _name_list(platforms)
    with _terminate_as_interrupt(), _lazy_bar(f"building {out}") as progress:  # no bar before the request is checked
        summary = api.build_zoo(out, names, _name_list(formats), checkpoint, registry, budget_map,
                                not no_measure, progress, data_dir=data_dir, precisions=_name_list(precisions))
    if as_json:
        print_json(summary)
    else:
        console.print(f"wrote {summary['manifest']}: {summary['models']} models ({summary['built']} built, "
                      f"{summary['reused']} unchanged, {summary['failed']} failed) in {summary['seconds']:.1f} s",
                      highlight=False)
        for note in summary["notes"]:
            console.print(f"note: {note}", highlight=False, soft_wrap=True)
        for line in summary["failures"]:
            err_console.print(f"[bold red]failed:[/] {line}", highlight=False, soft_wrap=True)
    if summary["failed"]:
        raise typer.Exit(1)


@app.command()
@handle_errors
def check(
    zoo: Annotated[Path, typer.Argument(help="Zoo directory written by build-zoo.")],
    measure: Annotated[bool, typer.Option("--measure", help="Also time the models whose runtime runs here.")]
    = False,
    tolerance: Annotated[float, typer.Option(help="Measured latency may exceed the budget by this fraction.")]
    = 0.10,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML (one test case per model and "
                                               "gate).")] = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The CI gate: checksums, the manifest's own hash, predicted latency recomputed on today's tables against
    today's budgets (and --measure: measured latency). Exit 0 pass, 1 a model fails a gate, 2 the zoo or manifest
    is unreadable."""
    from slimzoo import api
    from slimzoo.exporters.manifest import CheckReport, ManifestError, junit_xml

    try:
        report = api.check_zoo(zoo, measure, tolerance, registry)
    except ManifestError as exc:
        if junit is not None:
            junit_xml(CheckReport(str(zoo)), junit, error=str(exc))
        if as_json:
            print_json({"zoo": str(zoo), "passed": False, "exit_code": exc.exit_code, "error": str(exc)})
        raise
    if junit is not None:
        junit_xml(report, junit)
    if as_json:
        print_json(report.to_json())
    else:
        _print_check(report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


zoo_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                      help="Look inside a zoo built by build-zoo.")
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("list")
@handle_errors
def zoo_list(zoo: Annotated[Path, typer.Argument(help="Zoo directory.")], as_json: JsonOpt = False,
             verbose: Annotated[bool, typer.Option("--verbose", help="Also each model's file, size in bytes and "
                                                   "sha256.")] = False) -> None:
    """Every model of the zoo: platform, format, status, latency, budget, accuracy, size (files: --verbose, or
    `zoo show`)."""
    from slimzoo.exporters.manifest import model_id, read_manifest

    manifest = read_manifest(zoo)
    if as_json:
        return print_json(manifest["models"])

    def fmt(m: dict[str, Any]) -> str:  # a non-default precision is part of the model's name (pixel5/tflite/int8)
        return m["format"] if "id" not in m else f"{m['format']} {model_id(m).rsplit('/', 1)[1]}"

    sources = {m["latency_table"]["source"] for m in manifest["models"] if m["status"] == "ok"}
    one_source = len(sources) <= 1  # then named once in the title, not in a column
    rows = []
    for m in manifest["models"]:
        if m["status"] == "ok":
            rows.append([m["platform"], fmt(m), "ok", f"{m['predicted_latency_ms']:.4f}", f"{m['budget_ms']:g}",
                         *([] if one_source else [m["latency_table"]["source"]]),
                         "-" if m.get("accuracy") is None else f"{m['accuracy']:.2%}", _size(m["size_bytes"])])
        else:
            rows.append([m["platform"], fmt(m), "FAILED", "", "", *([] if one_source else [""]), "", ""])
    ck = manifest.get("checkpoint", {})
    console.print(table_(f"{zoo} (checkpoint {ck.get('file', '?')} {str(ck.get('sha256', ''))[:12]}"
                         + (f"; latency tables: {next(iter(sources))}" if len(sources) == 1 else "") + ")"
                         + ("" if verbose else "; files: --verbose"),
                         ["platform", "format", "status", "predicted\nms", "budget\nms",
                          *([] if one_source else ["table"]), "accuracy", "size"], rows, wrap=("table",)))
    for m in manifest["models"]:
        if m["status"] != "ok":
            console.print(f"FAILED {model_id(m)}: {m.get('reason', '')}", highlight=False)
        elif verbose:
            console.print(f"{m['platform']}/{m['format']}: {m['path']} ({m['size_bytes']:,} bytes, sha256 "
                          f"{m['sha256']})", highlight=False)
    return None


def _size(n_bytes: int) -> str:
    """A file size for a table cell: 1.17 MB, 580 kB (exact bytes: --verbose, --json)."""
    return f"{n_bytes / 1e6:.2f} MB" if n_bytes >= 1e6 else f"{n_bytes / 1e3:.0f} kB"


@zoo_app.command("show")
@handle_errors
def zoo_show(zoo: Annotated[Path, typer.Argument(help="Zoo directory.")],
             platform: Annotated[str, typer.Argument(help="Platform name.")], as_json: JsonOpt = False) -> None:
    """One platform's search result and its models in every format."""
    from slimzoo.errors import RegistryError, suggest
    from slimzoo.exporters.manifest import read_manifest

    manifest = read_manifest(zoo)
    models = [m for m in manifest["models"] if m["platform"] == platform]
    info = manifest["platforms"].get(platform)
    if not models and info is None:
        known = sorted({m["platform"] for m in manifest["models"]})
        raise RegistryError(f"{zoo}: no platform '{platform}' in the zoo{suggest(platform, known)}; "
                            f"it has: {', '.join(known)}")
    if as_json:
        return print_json({"platform": platform, "search": {k: v for k, v in (info or {}).items() if k != "front"},
                           "models": models})
    if info is not None:
        chosen = info["chosen"]
        order = [v["name"] for v in manifest.get("arch", {}).get("variables", [])]
        rows = [["runtime", info["runtime"]], ["budget", f"{info['budget_ms']:g} ms"],
                ["latency table", info["latency_table"]["source"]],
                ["predicted latency", f"{chosen['predicted_latency_ms']:.4f} ms"],
                ["loss proxy", f"{chosen['loss_proxy']:.4f}"], ["MACs", f"{chosen['macs']:,}"],
                ["width config", _config_rows(chosen["config"], order)]]
        console.print(table_(f"{platform}: search", ["field", "value"], rows, wrap=("value",)))
    rows = []
    for m in models:
        if m["status"] == "ok":
            val = m["validation"]
            rows.append([m["format"], "ok", m.get("precision", ""),
                         "-" if m.get("accuracy") is None else f"{m['accuracy']:.2%}",
                         "-" if val.get("max_abs_diff") is None else f"{val['max_abs_diff']:.2e}",
                         f"{m['parameters']:,}", f"{m['size_bytes']:,}"])
        else:
            rows.append([m["format"], "FAILED", "", "", "", "", ""])
    console.print(table_(f"{platform}: models", ["format", "status", "precision", "accuracy", "max\n|diff|",
                                                 "parameters", "bytes"], rows))
    for m in models:
        if m["status"] == "ok":
            console.print(f"{m['format']}: {m['path']}\n  sha256 {m['sha256']}", highlight=False)
        else:
            console.print(f"{m['format']}: FAILED: {m.get('reason', '')}", highlight=False)
    return None


@app.command()
@handle_errors
def report(
    zoo: Annotated[Path, typer.Argument(help="Zoo directory.")],
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path("report.html"),
) -> None:
    """One self-contained HTML page about the zoo: per platform the front, budget, chosen model and formats."""
    from slimzoo import api

    path = api.zoo_report(zoo, out)
    console.print(f"wrote {path}", highlight=False)


def main() -> None:
    from slimzoo.threads import prepare_process

    prepare_process()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    app()


if __name__ == "__main__":
    main()
