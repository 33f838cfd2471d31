"""``shouhu doctor``: check what the archive needs and say how to fix each problem."""

from __future__ import annotations

import typer
from rich.table import Table

from cli.common import console, settings
from core.health import diagnose


def doctor() -> None:
    """Check the database, keys, fonts and folders, and say how to fix each problem."""
    checks = diagnose(settings())  # the same checks as /readyz, where they overlap (core/health.py)
    table = Table(title="Shouhu doctor")
    table.add_column("检查项")
    table.add_column("结果")
    table.add_column("说明 / 修复方法")
    for check in checks:
        table.add_row(check.label, "[green]正常[/green]" if check.ok else "[red]有问题[/red]", check.detail)
    console.print(table)
    if not all(check.ok for check in checks):
        raise typer.Exit(1)
