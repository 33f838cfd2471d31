"""``python -m bench [names...] [--quick]``: run benchmarks, print figures and ratios."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from bench import Benchmark, Result, discover


def parser_for(benchmarks: dict[str, Benchmark]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run Shouhu's benchmarks and print figures with ratios against baselines "
        "measured in the same run.",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME",
        help=f"benchmarks to run (default: all): {', '.join(benchmarks) or 'none found'}",
    )
    parser.add_argument("--quick", action="store_true",
                        help="small counts, for smoke runs; the figures mean little")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    for bench in benchmarks.values():
        hook = getattr(bench.module, "add_arguments", None)
        if hook is not None:
            hook(parser.add_argument_group(f"{bench.name}: {bench.title}"))
    return parser


def fmt_value(value: float) -> str:
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def table_for(bench: Benchmark, rows: Sequence[Result]) -> Table:
    table = Table(title=f"{bench.name}: {bench.title}", title_justify="left", show_lines=False)
    table.add_column("case")
    table.add_column("variant")
    table.add_column("figure", justify="right")
    table.add_column("unit")
    table.add_column("time/op", justify="right")
    table.add_column("n", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("vs")
    table.add_column("peak RSS", justify="right")
    table.add_column("note")
    previous_case = None
    for row in rows:
        if previous_case is not None and row.case != previous_case:
            table.add_section()
        previous_case = row.case
        table.add_row(
            row.case,
            row.variant,
            fmt_value(row.value),
            row.unit,
            fmt_duration(row.seconds_per_op),
            str(row.count) if row.count else "–",
            f"{row.ratio:.2f}×" if row.ratio is not None else "",
            row.baseline or "",
            f"{row.peak_rss_mib:.0f} MiB" if row.peak_rss_mib is not None else "–",
            row.note,
        )
    return table


def machine_line() -> str:
    cpus = os.cpu_count() or 0
    with contextlib.suppress(AttributeError):  # sched_getaffinity is Linux-only
        cpus = len(os.sched_getaffinity(0))
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{now} · {platform.system()} {platform.machine()} · {cpus} CPUs usable · "
            f"Python {platform.python_version()}")


def main(argv: Sequence[str] | None = None) -> int:
    benchmarks = discover()
    args = parser_for(benchmarks).parse_args(argv)
    out = Console(width=None if sys.stdout.isatty() else 180, highlight=False)
    err = Console(stderr=True, highlight=False)
    if args.list:
        for bench in benchmarks.values():
            out.print(f"{bench.name:12} {bench.title}")
        return 0
    unknown = [n for n in args.names if n not in benchmarks]
    if unknown:
        err.print(f"unknown benchmark(s): {', '.join(unknown)}; "
                  f"available: {', '.join(benchmarks)}")
        return 2
    chosen = [benchmarks[n] for n in (args.names or benchmarks)]
    out.print(machine_line() + (" · QUICK mode: smoke counts, not figures" if args.quick else ""))
    failed = []
    for bench in chosen:
        err.print(f"[dim]running {bench.name} …[/dim]")
        try:
            rows = bench.run(args)
        except Exception:  # report and go on with the other areas
            err.print(f"[red]{bench.name} failed:[/red]")
            err.print(traceback.format_exc(), markup=False)
            failed.append(bench.name)
            continue
        out.print()
        out.print(table_for(bench, rows))
        for note in bench.notes:
            out.print(f"  · {note}", markup=False)
    if failed:
        err.print(f"[red]failed: {', '.join(failed)}[/red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
