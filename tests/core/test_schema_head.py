"""The schema check every start makes: a database at the migrations' head is left alone (no migration
script loaded), one behind is migrated, and `shouhu doctor`'s check names both revisions."""

from __future__ import annotations

from core import health
from runtime import Runtime, at_head, current_revisions, head_revisions, migrate_database, upgrade_database


def test_a_schema_behind_head_is_reported_and_migrated_one_at_head_is_left_alone(rt: Runtime) -> None:
    assert at_head(rt.db) and current_revisions(rt.db) == head_revisions()
    assert health.schema(rt).ok

    (head,) = head_revisions()
    migrate_database(rt.db, "0015", down=True)
    assert current_revisions(rt.db) == {"0015"} and not at_head(rt.db)
    check = health.schema(rt)
    assert not check.ok and check.reason == "outdated" and "0015" in check.detail and head in check.detail

    upgrade_database(rt.db)  # not at head: migrates
    assert at_head(rt.db) and health.schema(rt).ok
