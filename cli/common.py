"""What every ``shouhu`` command shares: the consoles, the settings, the runtime, failing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

from access_control.operator import Operator, OperatorRefused
from core.errors import AuditUnavailable
from core.settings import ConfigError, Settings
from runtime import Runtime

# Never print local variables in tracebacks: they may hold decrypted case data.
TYPER_OPTIONS = {"no_args_is_help": True, "pretty_exceptions_show_locals": False}

console = Console()
err = Console(stderr=True)


class State:
    """Set by the app's callback; ``settings`` is a whole settings object a test passes in."""

    data_dir: Path = Path("./var")
    settings: Settings | None = None


state = State()


def settings() -> Settings:
    return state.settings if state.settings is not None else Settings(data_dir=state.data_dir)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]错误：[/red]{message}")
    return typer.Exit(code)


def operator(rt: Runtime) -> Operator:
    """The command's audit helper; a failure it cannot log is said on stderr."""
    return Operator(rt, warn=lambda message: err.print(f"[red]警告：[/red]{message}"))


@contextmanager
def runtime(require_schema: bool = True) -> Iterator[Runtime]:
    try:
        rt = Runtime.open(settings(), require_schema=require_schema)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    try:
        yield rt
    except OperatorRefused as exc:  # already logged 'denied'
        raise fail(exc.message) from None
    except AuditUnavailable:
        # Only raised where an event could not be written with its change, which was then
        # rolled back: nothing happened that the log does not show.
        raise fail("访问日志暂时无法写入，操作未执行（没有记录的更改均已撤销）。请检查数据库后重试。") from None
    finally:
        rt.close()
