"""The region tree: city > county/district > township/street > village/community.

Each node stores its materialized ``path`` (``/320700/320706/.../``), so "is this
record in my subtree" is a prefix test in Python and a ``LIKE 'prefix%'`` join
in SQL.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import Base


class Level(StrEnum):
    CITY = "city"
    COUNTY = "county"
    TOWNSHIP = "township"
    VILLAGE = "village"


LEVEL_ORDER = [Level.CITY, Level.COUNTY, Level.TOWNSHIP, Level.VILLAGE]


class Region(Base):
    __tablename__ = "regions"

    code: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(16))
    parent_code: Mapped[str | None] = mapped_column(ForeignKey("regions.code"))
    path: Mapped[str] = mapped_column(String(255), index=True)
    demo: Mapped[bool] = mapped_column(Boolean, default=False)


@dataclass(frozen=True)
class RegionNode:
    code: str
    name: str
    level: str
    parent_code: str | None
    path: str
    demo: bool


def path_for(parent_path: str | None, code: str) -> str:
    return (parent_path or "/") + code + "/"


def add_region(
    session: Session, *, code: str, name: str, level: Level, parent: Region | None, demo: bool = False
) -> Region:
    if parent is not None and LEVEL_ORDER.index(level) != LEVEL_ORDER.index(Level(parent.level)) + 1:
        raise ValueError(f"{level} cannot sit under {parent.level}")
    region = Region(
        code=code,
        name=name,
        level=level,
        parent_code=parent.code if parent else None,
        path=path_for(parent.path if parent else None, code),
        demo=demo,
    )
    session.add(region)
    return region


class RegionTree:
    """An in-memory copy of the tree. Regions change rarely; ``reload`` after edits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, RegionNode] = {}

    def load(self, session: Session) -> None:
        nodes = {
            r.code: RegionNode(r.code, r.name, r.level, r.parent_code, r.path, r.demo)
            for r in session.scalars(select(Region))
        }
        with self._lock:
            self._nodes = nodes

    def get(self, code: str) -> RegionNode | None:
        return self._nodes.get(code)

    def __contains__(self, code: object) -> bool:
        return code in self._nodes

    def is_within(self, code: str, ancestor_code: str) -> bool:
        """True when ``code`` is ``ancestor_code`` or below it."""
        node, anc = self._nodes.get(code), self._nodes.get(ancestor_code)
        return node is not None and anc is not None and node.path.startswith(anc.path)

    def subtree(self, code: str) -> list[RegionNode]:
        root = self._nodes.get(code)
        if root is None:
            return []
        return sorted(
            (n for n in self._nodes.values() if n.path.startswith(root.path)), key=lambda n: n.path
        )

    def children(self, code: str | None) -> list[RegionNode]:
        return sorted((n for n in self._nodes.values() if n.parent_code == code), key=lambda n: n.code)

    def roots(self) -> list[RegionNode]:
        return self.children(None)

    def as_tree(self, code: str) -> dict[str, object]:
        node = self._nodes[code]
        return {
            "code": node.code,
            "name": node.name,
            "level": node.level,
            "demo": node.demo,
            "children": [self.as_tree(c.code) for c in self.children(code)],
        }

    def full_name(self, code: str) -> str:
        """``连云港市海州区新浦街道…`` from the root down."""
        node = self._nodes.get(code)
        parts: list[str] = []
        while node is not None:
            parts.append(node.name)
            node = self._nodes.get(node.parent_code) if node.parent_code else None
        return "".join(reversed(parts))
