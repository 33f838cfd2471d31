"""Documents: PDF rendering cold and warm, throughput, worker pool, batch, size and memory, vs WeasyPrint defaults.

Documents. Two issued documents with a verification code, QR code and seal, as
``archive.document_issuing`` issues them (fixed date and creation time):

- 1 page: the ``sealed_query_reply`` example (a GB/T 9704 letter). The
  ``referral_notice`` example is two pages, and so is every trimmed referral
  notice tried: the sign-off, verification block, seal and 版记 take the rest.
- 4 pages: the ``referral_notice`` example with its narrative (基本情况)
  written out six times as six paragraphs (359 of the 1,500 characters allowed):
  three pages of letter and the 回执 page.

The page counts are checked with pypdf in every run; a count that differs is
printed in the row's note.

Ours is the service's path: one ``doc_templates.render.Renderer`` (one
``FontConfiguration`` and the stylesheet parsed once) and ``Renderer.pdf``:
Jinja2 template and glyph check, layout, PDF/A-2b output. The baseline is
WeasyPrint with its defaults on the same HTML: per render ``renderer.html(...)``
(the same template work), then ``HTML(string=html, base_url=...).write_pdf(
stylesheets=[CSS(string=stylesheet)])``: the same stylesheet text passed the
same way (a separate user stylesheet), but parsed anew each time, no shared
``FontConfiguration`` (WeasyPrint makes a fresh one per render) and no
``pdf_variant``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import io
import json
import logging
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bench import Meter, Result, rate
from doc_templates import signing
from doc_templates.kinds import KINDS, DocKind
from doc_templates.pool import RenderPool
from doc_templates.render import HERE, DocumentMeta, Renderer, _stylesheet_text

ROOT = Path(__file__).resolve().parents[1]
KB = 1000
MB = 1000 * 1000
ISSUED_ON = date(2026, 11, 28)
CREATED_AT = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
CODE = "7K3M-Q9TX-R2WD"
VERIFY_URL = "http://127.0.0.1:8000/api/v1/verify/7K3MQ9TXR2WD"
OURS = "ours: Renderer.pdf"
BASE = "WeasyPrint defaults"
SIGNED = "ours: Renderer.pdf(signer=) (an issue: PAdES signature in the one write)"
SIGNED_AFTER = "ours: Renderer.pdf, then signing.sign (incremental update; issues before 2026-12-07-documents-3)"

NOTES = [
    "ratio = time per document ÷ the baseline's (>1: slower); for sizes, size ÷ the baseline's size.",
    f"{BASE} (baseline) = renderer.html(...) then HTML(string=html, base_url).write_pdf(stylesheets="
    "[CSS(string=the same stylesheet text)]) per render: the same HTML and stylesheet, but the CSS "
    "parsed anew, a fresh FontConfiguration per render and no pdf_variant (plain PDF, not PDF/A-2b).",
    f"{OURS} = one Renderer per process (FontConfiguration and CSS made once), Jinja2 + glyph check + "
    "layout + write_pdf(pdf_variant='pdf/a-2b'), as the service renders.",
    "cold = wall time from spawning `python -c …` to its exit: interpreter start, import WeasyPrint, "
    "set up, render one document (median of the runs; the note splits the child's own timings); "
    "the cold baseline child gets the HTML and stylesheet text ready-made (no Jinja2, pydantic or "
    "glyph check imported). Ours: setup = importing doc_templates and Renderer(); first html() = the "
    "template compiled and the glyph coverage read from the fonts (fc-list, fc-match, fontTools cmaps), "
    "once per process; render = Renderer.pdf (which makes the HTML again, a few ms). One untimed child "
    "runs first (page cache). Peak RSS of cold rows = the child's VmHWM.",
    "warm = median of single renders, ours and baseline alternating (ABBA), after warm-up renders; the "
    "note splits a warm render into its steps (medians of up to 5 more renders of each variant, timed "
    "step by step: Renderer.pdf is html() + HTML.render(shared CSS, FontConfiguration) + write_pdf).",
    "throughput = distinct 1-page documents (different numbers), sequential in this process with one "
    "warm Renderer vs RenderPool workers (spawned and warmed beforehand, not timed) with all documents "
    "submitted at once; pool peak RSS = the highest worker's VmHWM. Rounds alternate. 'cores busy' = CPU "
    "time used (this process, or all workers) ÷ wall time: on a host loaded by other jobs two workers may "
    "get much less than two cores; the host rows measure what 1 and N plain busy loops got, at the end.",
    "batch = Renderer.batch: every document laid out, pages joined, one PDF/A-2b written; its ratio is "
    "against sequential throughput; the size row compares with the same documents as separate PDFs.",
    f"{SIGNED} = what an issue costs in its render worker: Renderer.pdf(signer=, at=) lays out and writes the "
    "PDF/A-2b with the signature dictionary, field and widget in it, then puts pyHanko's CMS (PAdES B-B, ECDSA "
    "P-256 key of a CA made for the run) over the written bytes; its ratio is against the baseline (goal <= 0.6x). "
    f"{SIGNED_AFTER} = the same document rendered unsigned, then signed by pyHanko as an incremental update (how "
    "issues were signed before; still how stamped releases are); the unsigned render is timed in the same rotation. "
    "'issued batch' = shouhu print --issue's rendering: each document laid out and written on its own and signed "
    "in that write, as stored: in one process (Renderer.render_set parts, signed) and as shouhu print --issue does "
    "it (RenderPool.issue_many: chunks of documents over the workers, each rendered and signed in its worker; "
    "workers spawned and warmed untimed); its ratio is its documents/s against the signed single render's "
    "(goal >= 3x).",
    "KB = 1,000 bytes, MB = 10^6 bytes. Peak RSS in-process = getrusage after freeing heap (gc, malloc_trim) "
    "and resetting the kernel's high-water mark before each timed block; the bench process also holds "
    "the Renderer, the baseline's objects and earlier PDFs, so the workers' and cold children's peaks are "
    "the cleaner per-process figures. 'RSS +N MiB' = how far the block's peak rose above its start.",
]


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--doc-warm", type=int, default=None,
                       help="warm renders per document and variant (default 15, 2 with --quick)")
    group.add_argument("--doc-cold", type=int, default=None,
                       help="cold-process renders per document and variant (default 3, 1 with --quick)")
    group.add_argument("--doc-throughput", type=int, default=None,
                       help="documents per throughput measurement (default 24, 4 with --quick)")
    group.add_argument("--doc-batch", type=int, default=None,
                       help="documents in the batch PDF (default 100, 5 with --quick)")
    group.add_argument("--doc-workers", type=int, default=2, help="RenderPool workers (default 2)")


# Documents ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Doc:
    label: str  # "1-page", "4-page"
    kind: str
    fields: dict[str, Any]
    issuer: str
    prefix: str  # document-number prefix, e.g. 海民发
    pages: int  # pages expected

    @property
    def k(self) -> DocKind:
        return KINDS[self.kind]

    def model(self) -> BaseModel:
        return self.k.validate(self.fields)

    def meta(self, number: int = 12) -> DocumentMeta:
        return DocumentMeta(kind=self.kind, kind_title=self.k.title, issuer=self.issuer,
                            doc_number=f"{self.prefix}〔2026〕{number}号", issued_on=ISSUED_ON,
                            created_at=CREATED_AT, verification_code=CODE, verify_url=VERIFY_URL)

    def meta_json(self, number: int = 12) -> dict[str, Any]:
        m = self.meta(number)
        return {"kind": m.kind, "kind_title": m.kind_title, "issuer": m.issuer, "doc_number": m.doc_number,
                "issued_on": m.issued_on.isoformat(), "created_at": m.created_at.isoformat(),
                "verification_code": m.verification_code, "verify_url": m.verify_url}


def documents() -> tuple[Doc, Doc]:
    reply = KINDS["sealed_query_reply"].example
    referral = KINDS["referral_notice"].example
    long_referral = {**referral, "situation": "\n".join([referral["situation"]] * 6)}
    return (
        Doc("1-page", "sealed_query_reply", dict(reply), "连云港市人民检察院", "连检", 1),
        Doc("4-page", "referral_notice", long_referral, "连云港市海州区民政局", "海民发", 4),
    )


def page_texts(pdf: bytes) -> list[str]:
    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # WeasyPrint's valid xref layout draws warnings
    return [page.extract_text() or "" for page in PdfReader(io.BytesIO(pdf)).pages]


def case(doc: Doc, what: str) -> str:
    return f"{what} · {doc.label} ({doc.kind})"


def pages_note(doc: Doc, pages: int) -> str:
    return "" if pages == doc.pages else f"PAGES: {pages}, expected {doc.pages}"


class Baseline:
    """WeasyPrint with its defaults on the Renderer's HTML (see the module docstring)."""

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        self.css_text = _stylesheet_text()

    def pdf(self, kind: DocKind, fields: BaseModel, meta: DocumentMeta) -> bytes:
        from weasyprint import CSS, HTML

        html = self.renderer.html(kind, fields, meta)
        out: bytes = HTML(string=html, base_url=str(HERE)).write_pdf(stylesheets=[CSS(string=self.css_text)])
        return out


# Cold: a fresh process per render -------------------------------------------------------------

_COLD_PRELUDE = """
import json, resource, sys, time
def peak_kib():
    # VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec and so counts the parent's RSS at spawn.
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
import weasyprint
t1 = time.perf_counter()
spec = json.loads(open(sys.argv[1], encoding="utf-8").read())
"""

COLD_OURS = _COLD_PRELUDE + """
from datetime import date, datetime
from doc_templates.kinds import KINDS
from doc_templates.render import DocumentMeta, Renderer
m = spec["meta"]
meta = DocumentMeta(**{**m, "issued_on": date.fromisoformat(m["issued_on"]),
                       "created_at": datetime.fromisoformat(m["created_at"])})
kind = KINDS[m["kind"]]
renderer = Renderer()
t2 = time.perf_counter()
fields = kind.validate(spec["fields"])
renderer.html(kind, fields, meta)  # the first call compiles the template and loads the glyph coverage
t3 = time.perf_counter()
pdf = renderer.pdf(kind, fields, meta)
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "setup": t2 - t1, "first_html": t3 - t2, "render": t4 - t3, "bytes": len(pdf),
                  "maxrss_kib": peak_kib()}))
"""

COLD_BASE = _COLD_PRELUDE + """
from weasyprint import CSS, HTML
t2 = time.perf_counter()
pdf = HTML(string=spec["html"], base_url=spec["base_url"]).write_pdf(stylesheets=[CSS(string=spec["css"])])
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "setup": t2 - t1, "render": t3 - t2, "bytes": len(pdf),
                  "maxrss_kib": peak_kib()}))
"""


def cold_once(code: str, spec_path: Path) -> tuple[float, dict[str, Any]]:
    # No -W options are passed on: WeasyPrint leaves its ICC profile file to the GC (a ResourceWarning).
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, str(spec_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"cold render child failed ({done.returncode}):\n{done.stderr}")
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


def cold_rows(doc: Doc, renderer: Renderer, baseline: Baseline, runs: int, tmp: Path) -> list[Result]:
    ours_spec = tmp / f"cold-ours-{doc.label}.json"
    base_spec = tmp / f"cold-base-{doc.label}.json"
    ours_spec.write_text(json.dumps({"meta": doc.meta_json(), "fields": doc.fields}), encoding="utf-8")
    base_spec.write_text(json.dumps({"html": renderer.html(doc.k, doc.model(), doc.meta()), "css": baseline.css_text,
                                     "base_url": str(HERE)}), encoding="utf-8")
    cold_once(COLD_OURS, ours_spec)  # untimed: loads what the children read into the page cache
    got: dict[str, list[tuple[float, dict[str, Any]]]] = {OURS: [], BASE: []}
    for i in range(runs):
        order = [(OURS, COLD_OURS, ours_spec), (BASE, COLD_BASE, base_spec)]
        for variant, code, spec in (order if i % 2 == 0 else order[::-1]):
            got[variant].append(cold_once(code, spec))
    rows = {}
    for variant, runs_ in got.items():
        walls = [w for w, _ in runs_]
        mid = sorted(runs_, key=lambda r: r[0])[len(runs_) // 2][1]  # the median run's own timings
        peak = max(info["maxrss_kib"] for _, info in runs_) / 1024
        rows[variant] = rate(
            case=case(doc, "cold render"), variant=variant + (" (baseline)" if variant == BASE else ""),
            unit="docs/s", count=len(walls), seconds=statistics.median(walls) * len(walls), peak_rss_mib=peak,
            note=f"median of {len(walls)}; child: import WeasyPrint {mid['import']:.2f} s + setup "
                 f"{mid['setup']:.2f} s"
                 + (f" + first html() {mid['first_html']:.2f} s" if "first_html" in mid else "")
                 + f" + render {mid['render']:.2f} s; {mid['bytes'] / KB:.0f} KB")
    return [rows[BASE], rows[OURS].against(rows[BASE])]


# Warm: one process, many renders ------------------------------------------------------------


def warm_rows(doc: Doc, renderer: Renderer, baseline: Baseline, n: int) -> tuple[list[Result], dict[str, bytes]]:
    fields, meta = doc.model(), doc.meta()
    variants: dict[str, Callable[[], bytes]] = {
        OURS: lambda: renderer.pdf(doc.k, fields, meta),
        BASE: lambda: baseline.pdf(doc.k, fields, meta),
    }
    pdfs = {v: fn() for v, fn in variants.items()}  # warm-up, and the PDFs to compare
    release_memory()
    times: dict[str, list[float]] = {OURS: [], BASE: []}
    meters = {OURS: Meter(), BASE: Meter()}
    for i in range(n):
        for variant in ((OURS, BASE) if i % 2 == 0 else (BASE, OURS)):
            with meters[variant]:
                started = time.perf_counter()
                variants[variant]()
                times[variant].append(time.perf_counter() - started)
    texts = {v: page_texts(pdf) for v, pdf in pdfs.items()}
    same = "same pages and text as ours" if texts[OURS] == texts[BASE] else "TEXT DIFFERS from ours"
    ours_pages = len(texts[OURS])
    split = phases(renderer, baseline, doc, min(n, 5))
    rows = {}
    for variant in (BASE, OURS):
        ts = times[variant]
        note = (f"median of {n}; mean {statistics.fmean(ts):.3g} s; min {min(ts):.3g} s; "
                f"RSS +{meters[variant].growth_mib:.0f} MiB; {split[variant]}")
        if variant == BASE:
            note += f"; {same}"
        else:
            note = "; ".join(filter(None, [note, pages_note(doc, ours_pages)]))
        rows[variant] = rate(case=case(doc, "warm render"),
                             variant=variant + (" (baseline)" if variant == BASE else ""), unit="docs/s",
                             count=n, seconds=statistics.median(ts) * n, peak_rss_mib=meters[variant].peak_rss_mib,
                             note=note)
    return [rows[BASE], rows[OURS].against(rows[BASE])], pdfs


def phases(renderer: Renderer, baseline: Baseline, doc: Doc, n: int) -> dict[str, str]:
    """Where a warm render's time goes (medians of ``n``), step by step as each variant does it."""
    from weasyprint import CSS, HTML

    fields, meta = doc.model(), doc.meta()
    steps: dict[str, dict[str, list[float]]] = {OURS: {}, BASE: {}}

    def lap(variant: str, step: str, started: float) -> float:
        now = time.perf_counter()
        steps[variant].setdefault(step, []).append(now - started)
        return now

    for _ in range(n):
        t = time.perf_counter()
        html = renderer.html(doc.k, fields, meta)
        t = lap(OURS, "html", t)
        document = HTML(string=html, base_url=str(HERE)).render(stylesheets=[renderer.css],
                                                                font_config=renderer.font_config)
        t = lap(OURS, "layout", t)
        renderer._write(document)
        lap(OURS, "write_pdf", t)

        t = time.perf_counter()
        html = renderer.html(doc.k, fields, meta)
        t = lap(BASE, "html", t)
        css = CSS(string=baseline.css_text)
        t = lap(BASE, "CSS", t)
        document = HTML(string=html, base_url=str(HERE)).render(stylesheets=[css])
        t = lap(BASE, "layout", t)
        document.write_pdf()
        lap(BASE, "write_pdf", t)
    return {v: " + ".join(f"{k} {statistics.median(ts) * 1000:.0f}" for k, ts in laps.items()) + " ms"
            for v, laps in steps.items()}


def release_memory() -> None:
    """Give freed heap back to the OS (glibc), so a block's peak RSS is its own, not an earlier phase's."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def size_rows(doc: Doc, pdfs: dict[str, bytes]) -> list[Result]:
    pages = {v: len(page_texts(pdf)) for v, pdf in pdfs.items()}
    base = Result(case=case(doc, "PDF size"), variant=f"{BASE} (baseline)", value=len(pdfs[BASE]) / KB,
                  unit="KB", note=f"{pages[BASE]} pages; plain PDF")
    ours = Result(case=case(doc, "PDF size"), variant=OURS, value=len(pdfs[OURS]) / KB, unit="KB",
                  ratio=len(pdfs[OURS]) / len(pdfs[BASE]), baseline=base.variant,
                  note="; ".join(filter(None, [f"{pages[OURS]} pages; PDF/A-2b", pages_note(doc, pages[OURS])])))
    return [base, ours]


# Throughput: sequential vs the worker pool --------------------------------------------------------


def vm_hwm_mib(pid: int) -> float | None:
    """Peak RSS (VmHWM) of a live process, in MiB (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput_rows(doc: Doc, renderer: Renderer, n: int, workers: int) -> list[Result]:
    fields = doc.model()
    rounds = 2 if n >= 2 else 1
    per_round = [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]
    numbers = iter(range(100, 100 + 10 * n))
    seq = Meter()
    seq_cpu = pool_seconds = pool_cpu = 0.0
    pool = RenderPool(workers)
    try:
        started = time.perf_counter()
        pool.warm()  # spawn the workers; each builds its Renderer
        spawn_s = time.perf_counter() - started
        started = time.perf_counter()  # first renders load fonts: once per worker, untimed
        wait([pool.submit(doc.kind, doc.fields, doc.meta(next(numbers))) for _ in range(2 * workers)])
        first_s = time.perf_counter() - started

        pids = [p.pid for p in multiprocessing.active_children()]

        def sequential(count: int) -> float:
            release_memory()
            cpu = time.process_time()
            with seq:
                for _ in range(count):
                    renderer.pdf(doc.k, fields, doc.meta(next(numbers)))
            return time.process_time() - cpu

        def pooled(count: int) -> tuple[float, float]:
            cpu = sum(cpu_seconds(pid) for pid in pids)
            started = time.perf_counter()
            futures = [pool.submit(doc.kind, doc.fields, doc.meta(next(numbers))) for _ in range(count)]
            for f in futures:
                f.result(timeout=600)
            return time.perf_counter() - started, sum(cpu_seconds(pid) for pid in pids) - cpu

        for r, count in enumerate(per_round):
            for step in (("seq", "pool") if r % 2 == 0 else ("pool", "seq")):
                if step == "seq":
                    seq_cpu += sequential(count)
                else:
                    wall, cpu = pooled(count)
                    pool_seconds += wall
                    pool_cpu += cpu
        hwm = {p.pid: vm_hwm_mib(p.pid) for p in multiprocessing.active_children()}
    finally:
        pool.shutdown()
    peaks = [v for v in hwm.values() if v is not None]
    seq_row = rate(case=case(doc, "throughput"), variant="sequential, 1 Renderer (baseline)", unit="docs/s",
                   count=n, seconds=seq.seconds, peak_rss_mib=seq.peak_rss_mib,
                   note=f"in this process; CPU {seq_cpu / n:.2f} s per document, "
                        f"{seq_cpu / seq.seconds:.2f} cores busy; RSS +{seq.growth_mib:.0f} MiB")
    pool_row = rate(case=case(doc, "throughput"), variant=f"RenderPool, {workers} workers", unit="docs/s",
                    count=n, seconds=pool_seconds, peak_rss_mib=max(peaks) if peaks else None,
                    note=f"workers' CPU {pool_cpu / n:.2f} s per document, {pool_cpu / pool_seconds:.2f} cores "
                         f"busy; worker peak RSS {', '.join(f'{p:.0f}' for p in sorted(peaks))} MiB; "
                         f"spawn + Renderer() {spawn_s:.1f} s, first renders {first_s:.1f} s (untimed)")
    return [seq_row, pool_row.against(seq_row)]


def _busy_loop(start_at: float, seconds: float) -> float:
    """Spin from ``start_at`` (wall clock) for ``seconds``; return the CPU time this process got."""
    time.sleep(max(0.0, start_at - time.time()))
    cpu, started = time.process_time(), time.perf_counter()
    while time.perf_counter() - started < seconds:
        pass
    return time.process_time() - cpu


def cpu_available(processes: int, seconds: float) -> float:
    """How many cores ``processes`` busy loops get together right now (CPU time ÷ wall time)."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=processes, mp_context=ctx) as ex:
        start_at = time.time() + 1.0 + 0.5 * processes  # after every process has started
        got = list(ex.map(_busy_loop, [start_at] * processes, [seconds] * processes))
    return sum(got) / seconds


# Batch ---------------------------------------------------------------------------------------


def batch_rows(doc: Doc, renderer: Renderer, n: int, sequential: Result) -> list[Result]:
    fields = doc.model()
    items = [(doc.k, fields, doc.meta(1000 + i)) for i in range(n)]
    release_memory()
    meter = Meter()
    with meter:
        pdf = renderer.batch(items)
    pages = len(page_texts(pdf))
    separate = sum(len(renderer.pdf(*item)) for item in items[:min(n, 5)]) * n / min(n, 5)
    what = f"batch of {n}"
    time_row = rate(case=case(doc, what), variant="Renderer.batch", unit="docs/s", count=n, seconds=meter.seconds,
                    peak_rss_mib=meter.peak_rss_mib,
                    note=f"{meter.seconds:.1f} s in all; {pages} pages (expected {n * doc.pages}); "
                         f"RSS +{meter.growth_mib:.0f} MiB").against(sequential)
    base = Result(case=case(doc, what), variant=f"{n} separate PDFs (baseline)", value=separate / MB, unit="MB",
                  note="sum of single Renderer.pdf sizes" + ("" if n <= 5 else " (5 rendered, scaled)"))
    size_row = Result(case=case(doc, what), variant="Renderer.batch size", value=len(pdf) / MB, unit="MB",
                      ratio=len(pdf) / separate, baseline=base.variant,
                      note=f"{len(pdf) / n / KB:.1f} KB per document; one PDF/A-2b")
    return [time_row, base, size_row]


# Signed: what an issue and an issued batch cost -------------------------------------------------------


def bench_signer() -> signing.SignerKey:
    """A signing key under a CA made for this run (the service's keys live in the database); valid for ten
    years from CREATED_AT, so that checks made today, whatever the date, find it in force."""
    from core import crypto

    now = CREATED_AT
    ca_key = crypto.new_signature_key()
    ca = crypto.self_signed_ca(ca_key, common_name="Bench CA", organisation="bench", now=now, days=3650)
    key = crypto.new_signature_key()
    cert = crypto.issue_certificate(ca_key, ca.der, key, common_name="连云港市人民检察院", organisation="bench",
                                    now=now, days=3650)
    return signing.SignerKey(key_der=key, cert_der=cert.der, ca_der=ca.der, serial=cert.serial)


def signed_rows(doc: Doc, renderer: Renderer, baseline: Baseline, n: int, signer: signing.SignerKey
                ) -> list[Result]:
    fields, meta = doc.model(), doc.meta()
    unsigned = "unsigned"
    variants: dict[str, Callable[[], bytes]] = {
        SIGNED: lambda: renderer.pdf(doc.k, fields, meta, signer=signer, at=CREATED_AT),
        BASE: lambda: baseline.pdf(doc.k, fields, meta),
        SIGNED_AFTER: lambda: signing.sign(renderer.pdf(doc.k, fields, meta), signer, at=CREATED_AT),
        unsigned: lambda: renderer.pdf(doc.k, fields, meta),
    }
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {v: [] for v in variants}
    sign_only: list[float] = []
    pdf = renderer.pdf(doc.k, fields, meta)
    order = list(variants)
    for i in range(n):
        for variant in (order if i % 2 == 0 else order[::-1]):
            started = time.perf_counter()
            variants[variant]()
            times[variant].append(time.perf_counter() - started)
        started = time.perf_counter()
        signing.sign(pdf, signer, at=CREATED_AT)
        sign_only.append(time.perf_counter() - started)
    ms = {v: statistics.median(ts) * 1000 for v, ts in times.items()}
    base = rate(case=case(doc, "warm issue (render + sign)"), variant=f"{BASE} (baseline)", unit="docs/s",
                count=n, seconds=statistics.median(times[BASE]) * n, note=f"median of {n}")
    ours = rate(case=case(doc, "warm issue (render + sign)"), variant=SIGNED, unit="docs/s", count=n,
                seconds=statistics.median(times[SIGNED]) * n,
                note=f"median of {n}; the unsigned render {ms[unsigned]:.0f} ms, so signing in the write adds "
                     f"{ms[SIGNED] - ms[unsigned]:.0f} ms").against(base)
    after = rate(case=case(doc, "warm issue (render + sign)"), variant=SIGNED_AFTER, unit="docs/s", count=n,
                 seconds=statistics.median(times[SIGNED_AFTER]) * n,
                 note=f"median of {n}; signing.sign alone {statistics.median(sign_only) * 1000:.0f} ms").against(base)
    return [base, ours, after]


def issued_batch_rows(doc: Doc, renderer: Renderer, n: int, single: Result, signer: signing.SignerKey,
                      workers: int) -> list[Result]:
    fields = doc.model()
    items = [(doc.k, fields, doc.meta(2000 + i)) for i in range(n)]
    release_memory()
    meter = Meter()
    with meter:
        _combined, signed = renderer.render_set(items, signer=signer)
    in_process = rate(case=case(doc, f"issued batch of {n}"), variant="in one process: render_set parts, each signed",
                      unit="docs/s", count=n, seconds=meter.seconds, peak_rss_mib=meter.peak_rss_mib,
                      note=f"{meter.seconds:.1f} s in all; {len(signed)} signed PDFs; RSS +{meter.growth_mib:.0f} MiB "
                           "(shouhu print --issue before 2026-12-07-documents-2)")
    pool = RenderPool(workers)
    try:
        pool.warm()
        pool.issue_many([(doc.kind, doc.fields, doc.meta(2900 + i)) for i in range(2 * workers)], signer=signer)
        pids = [p.pid for p in multiprocessing.active_children()]
        cpu = sum(cpu_seconds(pid) for pid in pids)
        started = time.perf_counter()
        pooled = pool.issue_many([(doc.kind, doc.fields, doc.meta(3000 + i)) for i in range(n)], signer=signer)
        wall = time.perf_counter() - started
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu
    finally:
        pool.shutdown()
    pool_row = rate(case=case(doc, f"issued batch of {n}"),
                    variant=f"RenderPool.issue_many, {workers} workers (shouhu print --issue)", unit="docs/s",
                    count=n, seconds=wall,
                    note=f"{wall:.1f} s in all; {len(pooled)} signed PDFs, each laid out, written and signed on its "
                         f"own, in chunks over the workers; workers' CPU {cpu / n * 1000:.0f} ms per document, "
                         f"{cpu / wall:.2f} cores busy")
    return [in_process.against(single), pool_row.against(single)]


# Run ------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> list[Result]:
    quick = bool(getattr(args, "quick", False))
    warm_n = getattr(args, "doc_warm", None) or (2 if quick else 15)
    cold_n = getattr(args, "doc_cold", None) or (1 if quick else 3)
    through_n = getattr(args, "doc_throughput", None) or (4 if quick else 24)
    batch_n = getattr(args, "doc_batch", None) or (5 if quick else 100)
    workers = getattr(args, "doc_workers", 2) or 2
    load_start = os.getloadavg()
    one, three = documents()
    renderer = Renderer()
    baseline = Baseline(renderer)
    rows: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="shouhu-bench-docs-") as tmp:
        for doc in (one, three):
            rows += cold_rows(doc, renderer, baseline, cold_n, Path(tmp))
    sizes: list[Result] = []
    for doc in (one, three):
        warm, pdfs = warm_rows(doc, renderer, baseline, warm_n)
        rows += warm
        sizes += size_rows(doc, pdfs)
    rows += sizes
    through = throughput_rows(one, renderer, through_n, workers)
    rows += through
    rows += batch_rows(one, renderer, batch_n, through[0])
    signer = bench_signer()
    issue_rows = signed_rows(one, renderer, baseline, warm_n, signer)
    rows += issue_rows
    rows += issued_batch_rows(one, renderer, batch_n, issue_rows[1], signer, workers)
    spin = 0.5 if quick else 2.0
    for n in sorted({1, workers}):
        rows.append(Result(case="host", variant=f"CPU for {n} busy process{'es' if n > 1 else ''}",
                           value=cpu_available(n, spin), unit="cores",
                           note=f"{n} spawned busy loops, {spin:g} s at once: CPU time ÷ wall time"))
    load_end = os.getloadavg()
    rows.append(Result(case="host", variant="load average (1 min)", value=load_end[0], unit="",
                       note=f"at start {load_start[0]:.1f}, at end {load_end[0]:.1f}; "
                            f"{len(os.sched_getaffinity(0))} CPUs usable"))
    return rows
