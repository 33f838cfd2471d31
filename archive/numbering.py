"""Numbers of issued documents, gapless per issuer, series and year.

Two kinds of number (docs/documents.md, "Numbers"):

- 发文字号 (series ``doc``), ``连民发〔2026〕12号`` (GB/T 9704-2012 7.2.4), for
  every official document: files, letters and notices to a person. It needs the
  issuer's prefix (``Org.doc_prefix``).
- 档案编号 for forms (household file, minor file, escort record), a series per
  form kind: ``<org code>-<kind code>-<year>-<serial, six digits>``, e.g.
  ``320706MZ-JT-2026-000123``. The org code is the issuer's region code and a
  two-letter code of its type (one civil affairs bureau per county, one
  committee per village); the kind code is ``DocKind.file_code``. Forms need no
  prefix, and printing them never uses up the issuer's 发文字号.

The serial is taken from a counter row locked in the issuing transaction
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's write lock serializes
anyway). If the issue fails, the transaction rolls back and the number was
never used: two issues never share a number and a failed issue never burns one.

The PDF carries its number, but is rendered before that transaction, with the
number ``peek`` predicts (``archive.document_issuing`` queues one issuer's issues in the
process, so the prediction holds there); only if another process took it
meanwhile is the document rendered again, under the lock.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from access_control.identity import Org
from archive.models import NumberCounter
from doc_templates.kinds import DocKind

DOCUMENT_SERIES = "doc"

# The issuer's type in a form's org code (its letters are the pinyin initials of the Chinese name).
ORG_TYPE_CODES = {
    "civil_affairs": "MZ", "village_committee": "CJ", "township_office": "XZ", "rescue_centre": "JZ",
    "leading_group_office": "WB", "court": "FY", "procuratorate": "JC", "police": "GA", "justice": "SF",
    "discipline_inspection": "JW", "education": "JY", "school": "XX", "hospital": "YY", "it": "XT",
}


def format_number(prefix: str, year: int, serial: int) -> str:
    """GB/T 9704-2012 7.2.4: agency code, year in hexagonal brackets 〔〕, serial without leading zeros."""
    return f"{prefix}〔{year}〕{serial}号"


def format_file_number(issuer: Org, kind: DocKind, year: int, serial: int) -> str:
    """A form's 档案编号: ``<region code><type code>-<kind code>-<year>-<serial:06d>``."""
    return f"{issuer.region_code}{ORG_TYPE_CODES.get(issuer.type, 'QT')}-{kind.file_code}-{year}-{serial:06d}"


def series(kind: DocKind) -> str:
    """The counter a kind's numbers come from: its own for a form, the issuer's 发文字号 otherwise."""
    return kind.kind if kind.numbered_as_file else DOCUMENT_SERIES


def can_number(issuer: Org, kind: DocKind) -> bool:
    """Whether ``issuer`` can number ``kind``: a 发文字号 needs the issuer's prefix, a file number nothing."""
    return kind.numbered_as_file or bool(issuer.doc_prefix)


def number(issuer: Org, kind: DocKind, year: int, serial: int) -> str:
    """The printed number of serial ``serial`` of ``kind``'s series."""
    if kind.numbered_as_file:
        return format_file_number(issuer, kind, year, serial)
    if not issuer.doc_prefix:
        raise ValueError("the issuer has no document number prefix")
    return format_number(issuer.doc_prefix, year, serial)


def _counter(issuer: Org, kind: DocKind, year: int) -> ColumnElement[bool]:
    return and_(NumberCounter.issuer_org_id == issuer.id, NumberCounter.series == series(kind),
                NumberCounter.year == year)


def peek(session: Session, *, issuer: Org, kind: DocKind, year: int) -> tuple[int, str]:
    """The serial ``allocate`` would give now, without locking or taking it."""
    last = session.scalar(select(NumberCounter.last_serial).where(_counter(issuer, kind, year)))
    serial = (last or 0) + 1
    return serial, number(issuer, kind, year, serial)


def allocate(session: Session, *, issuer: Org, kind: DocKind, year: int) -> tuple[int, str]:
    """The next serial of ``kind``'s series for ``issuer`` in ``year``, locked until the caller ends the transaction."""
    number(issuer, kind, year, 1)  # refuses an issuer that cannot number the kind, before any write
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(NumberCounter)
        .values(issuer_org_id=issuer.id, series=series(kind), year=year, last_serial=0)
        .on_conflict_do_nothing(index_elements=["issuer_org_id", "series", "year"])
    )
    counter = session.scalars(
        select(NumberCounter).where(_counter(issuer, kind, year))
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    counter.last_serial += 1
    session.flush()
    return counter.last_serial, number(issuer, kind, year, counter.last_serial)
