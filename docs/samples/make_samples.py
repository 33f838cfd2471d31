"""Render every page of every document kind's example as PNGs next to this file, and write README.md.

    .venv/bin/python docs/samples/make_samples.py

Runs the Renderer directly (no database, no server) on fixed inputs, so the
images change only when a template, the stylesheet, an example or the fonts
change. Each kind is issued by the demo organisation that issues it in
practice (archive.demo.ORGS; the school issues the dropout notice), under a
fixed number of that organisation (a 发文字号, or a form's 档案编号), dated
2026-11-28, with a fixed verification code. No public address is configured,
so every sample is a specimen (样本), as the demo prints it. Besides each
kind's example, the sealed-query reply's refusal letter (an entitled requester
refused, with reasons) is rendered too. Needs pdftoppm (poppler-utils).
Writes <name>-<page>.png (80 dpi) for every page and README.md listing them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # the repository, when not installed

from archive.demo import ORGS  # noqa: E402
from doc_templates.kinds import KINDS  # noqa: E402
from doc_templates.render import DocumentMeta, Renderer  # noqa: E402

ISSUED_ON = date(2026, 11, 28)
CREATED_AT = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
CODE = "7K3M-Q9TX-R2WD"
SERIAL = 12
DPI = 80
ORG_BY_KEY = {org["key"]: org for org in ORGS}
# The demo organisation that issues each kind (access_control.policy.KIND_ISSUER_ORG_TYPES).
ISSUER_KEY = {
    "household_file": "haizhou_ca", "minor_file": "haizhou_ca", "rescue_escort_record": "haizhou_ca",
    "referral_notice": "haizhou_ca", "guardianship_designation": "village", "dropout_notice": "school",
    "sealed_query_reply": "procuratorate", "inspection_report": "city_ca", "access_audit_report": "leading",
}
FILE_ORG_CODE = {"haizhou_ca": "MZ"}  # archive.numbering.ORG_TYPE_CODES of the form issuer's type


@dataclass(frozen=True)
class Sample:
    name: str  # file name stem
    kind: str
    caption: str
    changes: dict[str, Any] = field(default_factory=dict)  # over the kind's example

    def fields(self, issuer: str) -> dict[str, Any]:
        fields = {**KINDS[self.kind].example, **self.changes}
        if self.kind == "dropout_notice":
            fields["school"] = issuer  # the school issues it about itself (the prefill names it so)
        return fields


REFUSAL = {"result": "refused", "recipient": "连云港市海州区人民法院", "case_number": "（2026）苏0706刑初123号",
           "reasons": "申请未说明所查询记录与所办案件的关联，"
                      "不符合《人民检察院刑事诉讼规则》第四百八十四条规定的查询条件。"}
SAMPLES = [*(Sample(kind, kind, k.title) for kind, k in KINDS.items()),
           Sample("sealed_query_reply-refused", "sealed_query_reply", "不予批准查询申请的告知函（拒绝函）", REFUSAL)]


def number(kind: str, key: str) -> str:
    """The sample's 发文字号, or a form's 档案编号 (archive.numbering)."""
    org = ORG_BY_KEY[key]
    file_code = KINDS[kind].file_code
    if file_code:
        return f"{org['region']}{FILE_ORG_CODE[key]}-{file_code}-{ISSUED_ON.year}-{SERIAL:06d}"
    return f"{org['prefix']}〔{ISSUED_ON.year}〕{SERIAL}号"


def meta(kind: str) -> DocumentMeta:
    key = ISSUER_KEY[kind]
    return DocumentMeta(kind=kind, kind_title=KINDS[kind].title, issuer=ORG_BY_KEY[key]["name"],
                        doc_number=number(kind, key), issued_on=ISSUED_ON, created_at=CREATED_AT,
                        verification_code=CODE, mark="specimen")


def render_pages(pdftoppm: str, pdf: Path, stem: str) -> list[Path]:
    """Every page of ``pdf`` as ``<stem>-<n>.png`` here (pdftoppm pads n when there are ten pages or more)."""
    for old in [HERE / f"{stem}.png", *HERE.glob(f"{stem}-[0-9]*.png")]:
        old.unlink(missing_ok=True)
    subprocess.run([pdftoppm, "-r", str(DPI), "-png", str(pdf), str(HERE / stem)], check=True)  # noqa: S603
    return sorted(HERE.glob(f"{stem}-[0-9]*.png"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))


README_HEAD = """# Sample documents

Every page of each kind of document Shouhu issues, rendered from the kind's
synthetic example (`doc_templates/kinds.py`) by `make_samples.py`, in the
layout of GB/T 9704-2012 that the kind takes (`file`, `letter`, `certificate`
or `form`; see [documents.md](../documents.md#layouts-per-kind)). The
referral letter's last page is its 回执 (receipt) to cut off and return; the
sealed-query reply is shown twice, as the kind's example (no record) and as
the refusal letter an entitled requester gets, with reasons.

Each kind is issued by the demo organisation that issues it in practice (the
school issues the dropout notice), under number 12 of that organisation's
series, dated 2026年11月28日, verification code {code}. No public address is
configured, so every page is a specimen: 样本 across the page, and no
verification URL or QR code (documents.md, "Specimens"). All names, ID
numbers and addresses are synthetic. Regenerate after changing a template,
the stylesheet, an example or the fonts:

```sh
.venv/bin/python docs/samples/make_samples.py   # needs pdftoppm (poppler-utils)
```

| sample | title printed | issuer | number | layout | pages |
|---|---|---|---|---|---|
"""


def main() -> None:
    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        sys.exit("pdftoppm not found: install poppler-utils")
    from doc_templates import words

    renderer = Renderer()
    rows, sections = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for sample in SAMPLES:
            k, m = KINDS[sample.kind], meta(sample.kind)
            fields = k.validate(sample.fields(m.issuer))
            pdf = Path(tmp) / f"{sample.name}.pdf"
            pdf.write_bytes(renderer.pdf(k, fields, m))
            pngs = render_pages(pdftoppm, pdf, sample.name)
            title = words.heading(fields, m.issuer, k.title)
            links = ", ".join(f"[{i}]({p.name})" for i, p in enumerate(pngs, start=1))
            rows.append(f"| `{sample.name}` | {title} | {m.issuer} | {m.doc_number} | {k.layout} | {links} |")
            sections.append(f"## {sample.caption} (`{sample.name}`)\n\n"
                            + "\n\n".join(f"![{sample.name} page {i}]({p.name})" for i, p in enumerate(pngs, 1)))
            for p in pngs:
                print(f"{p.relative_to(ROOT)}  {p.stat().st_size // 1024} KB")
    readme = README_HEAD.format(code=CODE) + "\n".join(rows) + "\n\n" + "\n\n".join(sections) + "\n"
    (HERE / "README.md").write_text(readme, encoding="utf-8")


if __name__ == "__main__":
    main()
