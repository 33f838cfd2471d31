"""Encrypt what earlier versions kept in plain text about sealed records (after migration 0013).

Before 0013 a sealed-record application kept its case number and its free-text
legal basis in plain columns, and so did each sealed record's register entry
(plus the free-text basis of an unsealing); before 0009 a decision reason too.
A migration has no master key and cannot encrypt them; this step has the key
ring. ``Runtime.initialize`` (``shouhu init``) runs it after the migrations.

For each such row it moves the plain values into the row's encrypted envelope
(the application's payload or reasons; a new ``case_note`` under a data key of
the register entry's own), stores the case number's keyed hash, replaces a
free-text basis by its code (or ``legacy``, keeping the text in the envelope)
and empties the plain column. Each batch commits on its own; a row is only ever
changed from plain to encrypted, so a rerun (or a second process) finds nothing
left to do. A row whose data key was shredded keeps nothing: its plain values
are dropped, its hash kept.

The access log is append-only and hash-chained: events written before 0013 keep
the case numbers and bases they were written with (docs/sealed-records.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from access_control import legal_bases
from access_control.sealed import SealedRequest, SealedRequestService, case_number_hash
from archive.models import SealedRecord
from core.crypto import KeyRing
from core.db import Database
from core.errors import Gone
from core.keys import Vault

BATCH = 200


@dataclass
class Upgraded:
    requests: int = 0
    records: int = 0

    def __bool__(self) -> bool:
        return bool(self.requests or self.records)


def _code(text: str | None) -> tuple[str | None, str | None]:
    """A stored basis as (code, free text to keep encrypted): a known code stays as it is."""
    if text is None or text in legal_bases.BY_CODE:
        return text, None
    return legal_bases.LEGACY.code, text


def _upgrade_request(session: Session, vault: Vault, ring: KeyRing, desk: SealedRequestService,
                     req: SealedRequest) -> None:
    if req.case_number == "":  # what a downgrade past 0013 put in place of an encrypted number
        req.case_number = None
    if req.decision_reason is not None:  # pre-0009: the envelope takes it
        try:
            if req.reasons is None:
                desk.store_reasons(session, req, {"decision": req.decision_reason, "revocation": None})
        except Gone:
            pass
        req.decision_reason = None
    if req.case_number is None and req.legal_basis in legal_bases.BY_CODE:
        return
    code, text = _code(req.legal_basis)
    if req.case_number is not None:
        req.case_number_hash = case_number_hash(ring, req.case_number)
    try:
        data = vault.open_json(session, req.payload, req.dek_id, kind="sealed_request", record_id=req.id, version=1)
        if req.case_number is not None:
            data["case_number"] = req.case_number
        if text is not None:
            data["legal_basis_text"] = text
        req.payload = vault.seal_json(vault.data_key(session, req.dek_id), req.dek_id, data, kind="sealed_request",
                                      record_id=req.id, version=1)
    except Gone:
        pass  # shredded: nothing can be kept, and nothing stays in plain text
    req.case_number, req.legal_basis = None, code or legal_bases.LEGACY.code


def _upgrade_record(session: Session, vault: Vault, ring: KeyRing, reg: SealedRecord) -> None:
    if reg.case_number == "":  # as above
        reg.case_number = None
    basis, basis_text = _code(reg.legal_basis)
    unseal, unseal_text = _code(reg.unseal_basis)
    note: dict[str, str] = {}
    if reg.case_note is not None and reg.case_dek_id is not None:
        note = dict(vault.open_json(session, reg.case_note, reg.case_dek_id, kind="seal_case",
                                    record_id=reg.record_id, version=1))
    if reg.case_number is not None:
        note["case_number"] = reg.case_number
        reg.case_number_hash = case_number_hash(ring, reg.case_number)
    if basis_text is not None:
        note["legal_basis_text"] = basis_text
    if unseal_text is not None:
        note["unseal_basis_text"] = unseal_text
    if reg.case_dek_id is None:
        reg.case_dek_id, dek = vault.new_data_key(session, owner_kind="sealed_record", owner_id=reg.record_id)
    else:
        dek = vault.data_key(session, reg.case_dek_id)
    reg.case_note = vault.seal_json(dek, reg.case_dek_id, note, kind="seal_case", record_id=reg.record_id, version=1)
    reg.case_number, reg.legal_basis, reg.unseal_basis = None, basis or legal_bases.LEGACY.code, unseal


def run(db: Database, vault: Vault, ring: KeyRing, desk: SealedRequestService) -> Upgraded:
    """Encrypt every plain case number, free-text basis and pre-0009 reason left; idempotent."""
    done = Upgraded()
    known = list(legal_bases.BY_CODE)
    while True:
        with db.session() as s:
            rows = s.scalars(
                select(SealedRequest).where(or_(
                    SealedRequest.case_number.is_not(None), SealedRequest.legal_basis.not_in(known),
                    SealedRequest.decision_reason.is_not(None)))
                .order_by(SealedRequest.id).limit(BATCH).with_for_update()).all()
            for req in rows:
                _upgrade_request(s, vault, ring, desk, req)
            s.commit()
        done.requests += len(rows)
        if len(rows) < BATCH:
            break
    while True:
        with db.session() as s:
            regs = s.scalars(
                select(SealedRecord).where(or_(
                    SealedRecord.case_number.is_not(None), SealedRecord.legal_basis.not_in(known),
                    SealedRecord.unseal_basis.not_in(known)))
                .order_by(SealedRecord.record_id).limit(BATCH).with_for_update()).all()
            for reg in regs:
                _upgrade_record(s, vault, ring, reg)
            s.commit()
        done.records += len(regs)
        if len(regs) < BATCH:
            break
    return done
