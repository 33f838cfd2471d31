"""Render page 1 of every document kind's example as a PNG next to this file.

    .venv/bin/python docs/samples/make_samples.py

Runs the Renderer directly (no database, no server) on fixed inputs, so the
images change only when a template, the stylesheet, an example or the fonts
change: issuer 连云港市海州区民政局, number 海民发〔2026〕12号, dated
2026-11-28, a fixed verification code and verify URL. Needs pdftoppm
(poppler-utils). Writes <kind>.png (80 dpi, page 1 only).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository, when not installed

from doc_templates.kinds import KINDS  # noqa: E402
from doc_templates.render import DocumentMeta, Renderer  # noqa: E402

ISSUER = "连云港市海州区民政局"
NUMBER = "海民发〔2026〕12号"
ISSUED_ON = date(2026, 11, 28)
CREATED_AT = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
CODE = "7K3M-Q9TX-R2WD"
VERIFY_URL = "http://127.0.0.1:8000/api/v1/verify/7K3MQ9TXR2WD"
DPI = 80


def meta(kind: str) -> DocumentMeta:
    return DocumentMeta(kind=kind, kind_title=KINDS[kind].title, issuer=ISSUER, doc_number=NUMBER,
                        issued_on=ISSUED_ON, created_at=CREATED_AT, verification_code=CODE, verify_url=VERIFY_URL)


def main() -> None:
    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        sys.exit("pdftoppm not found: install poppler-utils")
    renderer = Renderer()
    with tempfile.TemporaryDirectory() as tmp:
        for kind, k in KINDS.items():
            pdf = Path(tmp) / f"{kind}.pdf"
            pdf.write_bytes(renderer.pdf(k, k.validate(k.example), meta(kind)))
            subprocess.run([pdftoppm, "-r", str(DPI), "-png", "-f", "1", "-l", "1", "-singlefile",  # noqa: S603
                            str(pdf), str(HERE / kind)], check=True)
            png = HERE / f"{kind}.png"
            print(f"{png.relative_to(HERE.parents[1])}  {png.stat().st_size // 1024} KB  {k.title}")


if __name__ == "__main__":
    main()
