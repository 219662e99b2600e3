"""The ``slimzoo`` console entry point: ``search --problem`` answered without typer or torch, the rest by the CLI.

Solving a problem file needs numpy and nothing else, yet going through :mod:`slimzoo.cli` costs about 0.5 s
before any work: typer and rich at import, then typer builds every command and validates options with pydantic.
(Going through :mod:`slimzoo.api`, as it once did, cost 2 s more: torch.) So the entry point recognises the one
command line shape that needs none of that, ``slimzoo search --problem FILE [--budget MS] [--solver NAME]
[--time-limit S] [--json]``, and runs it directly with the same functions and output as the full command
(:mod:`slimzoo.search.files`). Any other argument, ``--help`` included, goes to the full CLI unchanged, so the
quick path can never accept or reject something the real command would not.
"""

from __future__ import annotations

import os
import sys

#: Options of ``search`` the quick path understands: option -> whether it takes a value.
QUICK_OPTIONS = {"--problem": True, "--budget": True, "--solver": True, "--time-limit": True, "--json": False}


def quick_search_args(argv: list[str]) -> dict[str, str | bool] | None:
    """The options of a ``search --problem`` command line the quick path can run, or None for anything else."""
    if not argv or argv[0] != "search":
        return None
    found: dict[str, str | bool] = {}
    i = 1
    while i < len(argv):
        token = argv[i]
        name, eq, inline = token.partition("=")
        if name not in QUICK_OPTIONS or name in found or (eq and not QUICK_OPTIONS[name]):
            return None
        if not QUICK_OPTIONS[name]:
            found[name] = True
        elif eq:
            found[name] = inline
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            found[name] = argv[i + 1]
            i += 1
        else:
            return None  # a missing value: the full CLI says so in its own words
        i += 1
    return found if isinstance(found.get("--problem"), str) and found["--problem"] else None


def _error(message: str, code: int) -> int:
    """One line on stderr, as :func:`slimzoo.cli.fail` prints it."""
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return code


def run_quick_search(args: dict[str, str | bool]) -> int:
    """Solve and print a problem file as ``slimzoo search --problem`` does; returns the exit code."""
    from pathlib import Path

    from slimzoo.errors import SlimzooError
    from slimzoo.search.files import parse_budget, parse_time_limit, print_problem_result, solve_problem_file

    try:
        budget = parse_budget(args.get("--budget"))  # type: ignore[arg-type]
        limit = parse_time_limit(args.get("--time-limit"))  # type: ignore[arg-type]
        found = solve_problem_file(Path(str(args["--problem"])), budget, str(args.get("--solver", "exact")), limit)
        print_problem_result(found, bool(args.get("--json", False)))
    except SlimzooError as exc:
        return _error(str(exc), exc.exit_code)
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return _error(f"{where}{exc.strerror or exc}", 2)
    except KeyboardInterrupt:
        return _error("interrupted", 130)
    return 0


def main() -> None:
    """Entry point of the ``slimzoo`` script."""
    from slimzoo.threads import prepare_process

    prepare_process()  # before anything can import torch (slimzoo.threads explains why)
    args = quick_search_args(sys.argv[1:])
    if args is None:
        from slimzoo.cli import main as full_main

        full_main()
        return
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(run_quick_search(args))


if __name__ == "__main__":
    main()
