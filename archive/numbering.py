"""Official document numbers (发文字号): ``连民发〔2026〕12号``, gapless per issuer and year.

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

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from access_control.identity import Org
from archive.models import NumberCounter


def format_number(prefix: str, year: int, serial: int) -> str:
    """GB/T 9704-2012 7.2.4: agency code, year in hexagonal brackets 〔〕, serial without leading zeros."""
    return f"{prefix}〔{year}〕{serial}号"


def peek(session: Session, *, issuer: Org, year: int) -> tuple[int, str]:
    """The serial ``allocate`` would give now, without locking or taking it."""
    if not issuer.doc_prefix:
        raise ValueError("the issuer has no document number prefix")
    last = session.scalar(
        select(NumberCounter.last_serial).where(NumberCounter.issuer_org_id == issuer.id, NumberCounter.year == year)
    )
    serial = (last or 0) + 1
    return serial, format_number(issuer.doc_prefix, year, serial)


def allocate(session: Session, *, issuer: Org, year: int) -> tuple[int, str]:
    """The next serial for ``issuer`` in ``year``, locked until the caller commits or rolls back."""
    if not issuer.doc_prefix:
        raise ValueError("the issuer has no document number prefix")
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(NumberCounter)
        .values(issuer_org_id=issuer.id, year=year, last_serial=0)
        .on_conflict_do_nothing(index_elements=["issuer_org_id", "year"])
    )
    counter = session.scalars(
        select(NumberCounter)
        .where(NumberCounter.issuer_org_id == issuer.id, NumberCounter.year == year)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    counter.last_serial += 1
    session.flush()
    return counter.last_serial, format_number(issuer.doc_prefix, year, counter.last_serial)
