"""Smoke tests of the benchmarks, and their shared runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench_clean(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -W error -m bench ARGS`` from the repository root, with no SHOUHU_ variable set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOUHU_")}
    return subprocess.run([sys.executable, "-W", "error", "-m", "bench", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
