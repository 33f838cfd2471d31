"""Every id and verification code Shouhu hands out survives the log's redaction.

The log keeps a marker instead of any value holding ten digits in a row (an ID or phone number,
``core.redact``). A random id or code with such a run (about 1 in 100,000 ids) once made an audit
event lose which household it was about (``hh_qmurd8786732746wwdwp``, a flaky page test). Both are
drawn again instead.
"""

from __future__ import annotations

import itertools

import pytest

import archive.documents
import core.db
from core.redact import REDACTED, loggable, safe_identifier


def test_an_id_with_ten_digits_in_a_row_would_be_redacted():
    assert safe_identifier("hh_qmurd8786732746wwdwp") == REDACTED
    assert not loggable("hh_qmurd8786732746wwdwp")


@pytest.mark.parametrize("module, make, bad, then", [
    (core.db, lambda: core.db.new_id("hh"), "qmurd8786732746wwdwp", "a"),
    (archive.documents, archive.documents.new_code, "K77777777777", "M"),
])
def test_a_draw_with_a_long_run_of_digits_is_drawn_again(monkeypatch, module, make, bad, then):
    draws = itertools.chain(bad, itertools.repeat(then))
    monkeypatch.setattr(module.secrets, "choice", lambda alphabet: next(draws))
    value = make()
    assert bad not in value
    assert value.endswith(then * 10)
    assert loggable(value)


def test_real_ids_and_codes_are_loggable():
    for _ in range(2000):
        assert loggable(core.db.new_id("mn"))
        assert loggable(archive.documents.new_code())
