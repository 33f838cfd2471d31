"""The bench runs end to end in quick mode and prints its table (figures are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "bench", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )


@pytest.mark.slow
def test_archive_bench_quick_prints_table_and_exits_0():
    done = run_bench("archive", "--quick", "--minors", "4")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "archive: Archive" in out
    for case in ("create minor · sqlite", "read minor · sqlite", "create minor · postgres",
                 "seal 1 KiB", "open 1 MiB", "keyed_hash"):
        assert case in out, case
    for variant in ("plain", "encrypted (aes)", "crypto only (aes)", "sm4gcm-sm3"):
        assert variant in out, variant
    assert "×" in out  # ratios against the baselines
    assert "Traceback" not in done.stderr


def test_unknown_benchmark_name_is_refused():
    done = run_bench("no-such-area")
    assert done.returncode == 2
    assert "unknown benchmark" in done.stderr and "archive" in done.stderr
