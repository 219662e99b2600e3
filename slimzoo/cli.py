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

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn one slimmable checkpoint into a zoo of standalone per-device models.")
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

CheckpointOpt = Annotated[Path | None, typer.Option("--checkpoint", help="Checkpoint (default: the shipped one).")]
RegistryOpt = Annotated[Path | None, typer.Option("--registry", envvar="SLIMZOO_REGISTRY",
                                                  help="Directory of user platform files and measured tables.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.callback()
def _root() -> None:
    """Turn one slimmable checkpoint into a zoo of standalone per-device models."""


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
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper  # type: ignore[return-value]


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
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def table_(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    out = Table(title=title, title_justify="left")
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*[str(x) for x in row])
    return out


@app.command()
@handle_errors
def train(
    out: Annotated[Path, typer.Option("--out", help="Checkpoint file to write (.safetensors).")],
    dataset: Annotated[str, typer.Option(help="Dataset name (embedded: digits).")] = "digits",
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    batch_size: Annotated[int, typer.Option(min=2)] = 64,
    lr: Annotated[float, typer.Option(min=0.0)] = 0.05,
    n_random: Annotated[int, typer.Option(help="Random configs per step besides largest and smallest.", min=0)] = 2,
    seed: int = 0,
    weights_dtype: Annotated[str, typer.Option(help="Storage dtype: float32 or float16.")] = "float32",
) -> None:
    """Train a slimmable supernet (sandwich rule + in-place distillation) and record its loss proxy."""
    from slimzoo import api
    from slimzoo.zoo.train import TrainSettings

    if weights_dtype not in ("float32", "float16"):
        raise typer.BadParameter("must be float32 or float16", param_hint="--weights-dtype")
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, n_random=n_random, seed=seed)
    command = shlex.join(["slimzoo", "train", *sys.argv[2:]]) if len(sys.argv) > 1 else None
    with progress_bar("training") as progress:
        summary = api.train(out, dataset, settings=settings, weights_dtype=weights_dtype, progress=progress,
                            command=command)
    acc = summary["val_accuracy"]
    console.print(f"wrote {out}: val accuracy largest {acc['largest']:.2%}, smallest {acc['smallest']:.2%} "
                  f"({summary['seconds']} s)")


@app.command("list-platforms")
@handle_errors
def list_platforms(registry: RegistryOpt = None, checkpoint: CheckpointOpt = None, as_json: JsonOpt = False) -> None:
    """Show the target platforms: device, runtime, market share, latency budget, latency-table source."""
    from slimzoo import api

    rows = api.list_platforms(registry, checkpoint)
    if as_json:
        return print_json(rows)
    console.print(table_("Platforms", ["name", "vendor", "device", "SoC", "runtime", "market share", "budget (ms)",
                                      "latency table"],
                        [[r["name"], r["vendor"], r["device"], r["soc"], r["runtime"],
                          f"{r['market_share']:.1%}" + (" (assumed)" if r["market_share_assumed"] else ""),
                          f"{r['latency_budget_ms']:g}", r["latency_table"]] for r in rows]))


def _config_rows(config: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items())


@app.command()
@handle_errors
def search(
    platform: Annotated[str, typer.Option("--platform", help="Platform name (see list-platforms).")],
    budget: Annotated[float | None, typer.Option(help="Latency budget in ms (default: the platform's).")] = None,
    solver: Annotated[str, typer.Option(help="exact (default) or lagrangian (AOWS).")] = "exact",
    checkpoint: CheckpointOpt = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find the width config with the lowest loss proxy under a platform's latency budget."""
    from slimzoo import api

    result = api.search_platform(platform, budget, checkpoint, registry, solver)
    if as_json:
        return print_json(result.to_json())
    s, base = result.solution, result.baseline
    rows = [["searched (" + s.solver + ")", f"{s.latency:.4f}", f"{s.loss:.4f}", _config_rows(result.config)]]
    if base is not None:
        rows.append([f"uniform x{base['multiplier']:g}", f"{base['predicted_latency_ms']:.4f}",
                     f"{base['loss_proxy']:.4f}", "all variables at the same multiplier"])
    console.print(table_(f"{result.platform}: budget {result.budget_ms:g} ms, latency table "
                        f"{result.table_source}", ["config", "predicted ms", "loss proxy", "widths"], rows))


@app.command()
@handle_errors
def export(
    platform: Annotated[str, typer.Option("--platform", help="Platform name (see list-platforms).")],
    fmt: Annotated[str, typer.Option("--format", help="onnx, coreml or tflite.")] = "onnx",
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("zoo"),
    budget: Annotated[float | None, typer.Option(help="Latency budget in ms (default: the platform's).")] = None,
    precision: Annotated[str, typer.Option(help="Weight precision (format-dependent).")] = "fp32",
    layout: Annotated[str, typer.Option(help="Input layout (format-dependent).")] = "nchw",
    checkpoint: CheckpointOpt = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search, slice and export one platform's model, validated against PyTorch, with a JSON sidecar."""
    from slimzoo import api

    with err_console.status(f"exporting {platform} as {fmt}"):
        result = api.export_platform(platform, fmt, out, budget, checkpoint, registry, precision, layout)
    if as_json:
        return print_json(result.sidecar)
    side, val = result.sidecar, result.sidecar["validation"]
    console.print(table_(f"{result.model_path}", ["field", "value"], [
        ["platform", side["platform"]], ["format", side["format"]],
        ["predicted latency", f"{side['predicted_latency_ms']:.4f} ms ({side['latency_table_source']}); "
                              f"budget {side['budget_ms']:g} ms"],
        ["parameters", f"{side['parameters']:,}"], ["MACs", f"{side['macs']:,}"],
        ["max |diff| vs PyTorch", f"{val['max_abs_diff']:.2e} (atol {val['atol']:g})"],
        ["top-1 agreement", f"{val['top1_agreement']:.2%} of {val['n_val']} validation images"],
        ["validation accuracy", f"{val['accuracy_exported']:.2%}"],
        ["size", f"{side['size_bytes']:,} bytes"], ["sidecar", str(result.sidecar_path)],
    ]))


@app.command()
@handle_errors
def profile(
    platform: Annotated[str, typer.Option("--platform", help="A platform this machine is (host-cpu).")],
    threads: Annotated[int, typer.Option(min=1, help="ONNX Runtime intra-op threads.")] = 1,
    repeats: Annotated[int | None, typer.Option(min=5, help="Timed runs per layer variant.")] = None,
    checkpoint: CheckpointOpt = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure a per-layer latency table on this machine with ONNX Runtime and install it as `measured`."""
    from slimzoo import api

    with progress_bar(f"profiling {platform}") as progress:
        table, path = api.profile(platform, checkpoint, registry, threads, repeats, progress)
    prov = table.provenance
    summary = {"platform": table.platform, "path": str(path), "source": table.source, "arch_key": table.arch_key,
               **{k: prov.get(k) for k in ("cpu_model", "cores", "threads", "runtime", "runtime_version", "date",
                                          "repetitions", "cells", "wall_s", "network_check")}}
    if as_json:
        return print_json(summary)
    rows = [[k, json.dumps(v) if isinstance(v, dict) else v] for k, v in summary.items()]
    console.print(table_("Measured latency table", ["field", "value"], rows))


def main() -> None:
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    app()


if __name__ == "__main__":
    main()
