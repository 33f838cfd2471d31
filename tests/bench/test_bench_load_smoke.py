"""The load bench runs end to end with its smallest options and prints its table (figures are not checked)."""

from __future__ import annotations

import pytest

from tests.bench import run_bench_clean


@pytest.mark.slow
def test_load_bench_quick_prints_table_and_exits_0():
    done = run_bench_clean("load", "--quick", "--load-backends", "sqlite", "--readers", "4", "--reads", "2",
                           "--flooders", "1", timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = " ".join(done.stdout.split())
    assert "load: Load" in out and "Traceback" not in done.stdout + done.stderr
    for case in ("/healthz · sqlite", "read · sqlite", "verify (no token) · sqlite"):
        assert case in out, case
    for variant in ("idle", "1 reader", "4 readers + verification flood"):
        assert variant in out, variant
    assert "5xx or failed: 0" in out and "ms p99" in out and "ms p95" in out
