"""The documents bench runs end to end in quick mode and prints its table (figures are not checked).

The bench runs in a subprocess without ``-W error``: WeasyPrint 70 opens its sRGB
ICC profile for PDF/A output and leaves the file to the garbage collector, so a
ResourceWarning would be printed (as an ignored exception) from the bench process
and from every pool worker, which inherits the parent's warning options.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_documents_bench_quick_prints_table_and_exits_0():
    done = subprocess.run(
        [sys.executable, "-m", "bench", "documents", "--quick", "--doc-batch", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "documents: Documents" in out
    for case in ("cold render · 1-page", "cold render · 4-page", "warm render · 1-page", "warm render · 4-page",
                 "PDF size · 1-page", "PDF size · 4-page", "throughput · 1-page", "batch of 3 · 1-page",
                 "warm issue (render + sign)", "issued batch of 3"):
        assert case in out, case
    for variant in ("WeasyPrint defaults", "ours: Renderer.pdf", "sequential, 1 Renderer", "RenderPool, 2 workers",
                    "Renderer.batch", "RenderPool.issue_many", "CPU for 2 busy processes"):
        assert variant in out, variant
    assert "×" in out  # ratios against the baselines
    assert "PAGES:" not in out and "TEXT DIFFERS" not in out  # page counts as designed, same text as baseline
    assert "Traceback" not in done.stderr


def test_bench_documents_are_valid_and_within_limits():
    from bench.bench_documents import documents

    one, three = documents()
    assert (one.pages, three.pages) == (1, 4)  # the referral letter's three pages and its 回执
    for doc in (one, three):
        doc.model()  # validates against the kind's schema (limits included)
        assert doc.meta().kind == doc.kind
    assert len(three.fields["situation"]) <= 1500
