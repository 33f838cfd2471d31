"""The transactional outbox: records changed in a transaction, for the search indexer.

A service that writes a household, minor or document adds an outbox row in the
same transaction. The indexer drains the rows after they commit and deletes
each only once the index has taken it, so a crash at any point leaves the index
at worst behind, never missing a committed record for good.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.clock import utcnow
from core.db import Base, UTCDateTime


class SearchOutbox(Base):
    __tablename__ = "search_outbox"

    # INTEGER on SQLite, where only that type aliases the rowid and autoincrements.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    record_kind: Mapped[str] = mapped_column(String(20))
    record_id: Mapped[str] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


def enqueue(session: Session, record_kind: str, record_id: str) -> None:
    """Ask for ``record_id`` to be (re)indexed once this transaction commits."""
    session.add(SearchOutbox(record_kind=record_kind, record_id=record_id, created_at=utcnow()))
    session.info["outbox"] = True  # after the commit, the indexer is woken (runtime.py)
