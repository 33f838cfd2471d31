"""Benchmarks that print figures and ratios: ``python -m bench [names...] [--quick]``.

Each area lives in its own module ``bench/bench_<area>.py`` and registers itself
just by existing. A module provides

- ``run(args) -> list[Result]``: measure and return rows (required);
- ``add_arguments(parser)``: extra command-line options (optional);
- ``NOTES``: sentences printed under the area's table, e.g. what a baseline
  includes (optional).

The module docstring's first line is the table title. Every ratio compares
against a baseline measured in the same run, on the same machine, so the
ratios mean more than the absolute figures on a shared, noisy host. Speed and
memory are measured here and never asserted in tests.
"""

from __future__ import annotations

import importlib
import pkgutil
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

PREFIX = "bench_"


@dataclass(frozen=True)
class Result:
    """One measured figure: a rate (higher is better) over ``count`` operations."""

    case: str  # what was measured: "create minor · sqlite", "seal 1 KiB"
    variant: str  # how: "plain", "encrypted (aes)", "sm4gcm-sm3"
    value: float  # the figure, in ``unit``
    unit: str  # "minors/s", "MB/s", "ops/s"
    count: int = 0  # operations measured
    seconds: float = 0.0  # wall time of those operations
    ratio: float | None = None  # time per operation ÷ the baseline's (>1: slower)
    baseline: str | None = None  # variant the ratio is taken against
    peak_rss_mib: float | None = None  # process peak RSS while this ran
    note: str = ""

    @property
    def seconds_per_op(self) -> float | None:
        return self.seconds / self.count if self.count else None

    def against(self, base: Result) -> Result:
        """This row with its time-per-operation ratio to ``base`` (same case and unit)."""
        if base.unit != self.unit:
            raise ValueError(f"cannot compare {self.unit} with {base.unit}")
        ratio = base.value / self.value if self.value else None
        return replace(self, ratio=ratio, baseline=base.variant)


def rate(*, case: str, variant: str, unit: str, count: int, seconds: float,
         per_op: float = 1.0, **extra: Any) -> Result:
    """A Result for ``count`` operations of ``per_op`` units each done in ``seconds``."""
    value = count * per_op / seconds if seconds > 0 else float("inf")
    return Result(case=case, variant=variant, value=value, unit=unit, count=count,
                  seconds=seconds, **extra)


def skipped(*, case: str, variant: str, why: str) -> Result:
    """A row saying a measurement was not made, and why."""
    return Result(case=case, variant=variant, value=float("nan"), unit="", note=f"skipped: {why}")


# Peak resident memory -------------------------------------------------------------

_CLEAR_REFS = Path("/proc/self/clear_refs")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Terminate ``proc`` and wait for it; kill it if it does not end within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux); False if unsupported.

    ``getrusage`` only ever reports the process-wide peak; resetting it before a
    measurement makes the next reading the peak of that measurement alone.
    """
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    """Peak resident set size of this process since start or the last reset, in MiB."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024 if sys.platform != "darwin" else kib / (1024 * 1024)


def rss_mib() -> float | None:
    """Current resident set size in MiB (Linux), else None."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * resource.getpagesize() / (1024 * 1024)


class Meter:
    """Wall time and peak RSS summed over several blocks: ``with meter: ...``.

    ``seconds`` adds up; ``peak_rss_mib`` is the highest process peak seen in any
    block; ``growth_mib`` the most any block's peak rose above the RSS at its start.
    Without a resettable peak (not Linux), the peak is the process's since start.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.peak_rss_mib = 0.0
        self.growth_mib = 0.0
        self.resettable = True
        self._started = 0.0
        self._rss_at_start: float | None = None

    def __enter__(self) -> Meter:
        self.resettable = reset_peak_rss() and self.resettable
        self._rss_at_start = rss_mib()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter() - self._started
        peak = peak_rss_mib()
        self.peak_rss_mib = max(self.peak_rss_mib, peak)
        if self._rss_at_start is not None:
            self.growth_mib = max(self.growth_mib, peak - self._rss_at_start)


# Registry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Benchmark:
    name: str
    module: ModuleType

    @property
    def title(self) -> str:
        doc = (self.module.__doc__ or self.name).strip()
        return doc.splitlines()[0].rstrip(".")

    @property
    def notes(self) -> list[str]:
        return list(getattr(self.module, "NOTES", []))

    def run(self, args: Any) -> list[Result]:
        rows: list[Result] = self.module.run(args)
        return rows


def discover() -> dict[str, Benchmark]:
    """Every ``bench/bench_<area>.py`` module, by area name."""
    found: dict[str, Benchmark] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith(PREFIX):
            module = importlib.import_module(f"{__name__}.{info.name}")
            if not callable(getattr(module, "run", None)):
                raise TypeError(f"{module.__name__} has no run(args) function")
            found[info.name[len(PREFIX):]] = Benchmark(info.name[len(PREFIX):], module)
    return found


__all__ = ["Benchmark", "Meter", "Result", "discover", "peak_rss_mib", "rate",
           "reset_peak_rss", "rss_mib", "skipped"]
