"""``shouhu pki``: the document-signing CA, org certificates (rotate, revoke), the CRL, seal images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from access_control.actions import Action
from access_control.identity import Org
from archive.pki import NoCertificate
from cli.common import TYPER_OPTIONS, console, fail, operator, runtime
from core.crypto import pem
from core.errors import InvalidInput

pki_app = typer.Typer(help="Document signatures: the CA, org certificates, the CRL, seal images.",
                      **TYPER_OPTIONS)  # type: ignore[arg-type]

REASONS = ("key_compromise", "affiliation_changed", "superseded", "cessation_of_operation")


@pki_app.command("ca")
def pki_ca(out: Annotated[Path | None, typer.Option("--out", help="Write the PEM here.")] = None) -> None:
    """Print (or write) the CA certificate a verifier trusts (`pyhanko sign validate --trust`)."""
    with runtime() as rt:
        text = pem(rt.pki.ca_certificate())
    if out is None:
        console.print(text, end="", markup=False, highlight=False)
    else:
        out.write_text(text, encoding="ascii")
        console.print(f"根证书已写入 {out}")


@pki_app.command("crl")
def pki_crl(out: Annotated[Path, typer.Option("--out", help="Write the CRL (DER) here.")]) -> None:
    """Write the CA's current revocation list (DER), as `GET /api/v1/pki/crl` serves it."""
    with runtime() as rt:
        out.write_bytes(rt.pki.crl(now=rt.clock()))
    console.print(f"证书吊销列表已写入 {out}")


@pki_app.command("list")
def pki_list() -> None:
    """Every certificate: the CA and each org's, current, replaced or revoked."""
    with runtime() as rt:
        table = Table()
        for col in ("序列号", "类型", "单位", "有效期至", "状态"):
            table.add_column(col)
        for c in rt.pki.listing():
            state = "已吊销" if c.revoked_at else ("当前" if c.current else "已更换")
            table.add_row(c.serial, c.role, c.org_name, c.not_after.date().isoformat(), state)
        console.print(table)


@pki_app.command("rotate")
def pki_rotate(org_id: str) -> None:
    """Give an org a new signing key and certificate; what the old one signed stays valid."""
    with runtime() as rt:
        op = operator(rt)
        with op.change() as g:
            if g.session.get(Org, org_id) is None:
                raise op.deny(g, Action.PKI_ROTATE, f"没有单位 {org_id}", kind="org", rid=org_id,
                              reason="org:not_found")
            row = rt.pki.rotate(g.session, org_id, now=rt.clock())
            g.record(op.draft(Action.PKI_ROTATE, kind="org", rid=org_id, details={"serial": row.serial}))
            g.commit()
    console.print(f"单位 {org_id} 的新签名证书：{row.serial}。此前签署的公文仍然有效。")


@pki_app.command("revoke")
def pki_revoke(
    serial: str,
    reason: Annotated[str, typer.Option("--reason", help="One of: " + ", ".join(REASONS))] = "key_compromise",
) -> None:
    """Revoke an org certificate: /verify says `revoked` for what it signed; the CRL lists it."""
    if reason not in REASONS:
        raise fail("吊销原因应为：" + "、".join(REASONS))
    with runtime() as rt:
        op = operator(rt)
        with op.change() as g:
            try:
                row = rt.pki.revoke(g.session, serial, reason=reason, now=rt.clock())
            except NoCertificate:
                raise op.deny(g, Action.PKI_REVOKE, f"没有可吊销的单位证书 {serial}", kind="certificate",
                              rid=serial[:64], reason="certificate:not_found_or_revoked") from None
            g.record(op.draft(Action.PKI_REVOKE, kind="certificate", rid=row.serial,
                              details={"org_id": row.org_id, "reason": reason}))
            g.commit()
    console.print(f"证书 {serial} 已吊销；该单位下一份公文将使用新证书签署。")


@pki_app.command("seal-image")
def pki_seal_image(
    org_id: str,
    image: Annotated[Path | None, typer.Argument(help="PNG of the org's seal")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Stop printing the org's seal image.")] = False,
) -> None:
    """Register an org's seal image (PNG), printed only on signed documents; or remove it."""
    if (image is None) == (not remove):
        raise fail("请给出 PNG 文件，或使用 --remove")
    action = Action.ORG_SEAL_REMOVE if remove else Action.ORG_SEAL_SET
    with runtime() as rt:
        op = operator(rt)
        with op.change() as g:
            if g.session.get(Org, org_id) is None:
                raise op.deny(g, action, f"没有单位 {org_id}", kind="org", rid=org_id, reason="org:not_found")
            if remove or image is None:
                rt.seal_images.remove(g.session, org_id)
            else:
                try:
                    row = rt.seal_images.register(g.session, org_id, image.read_bytes(), now=rt.clock(),
                                                  by=op.actor.username)
                except InvalidInput as exc:
                    raise op.deny(g, action, "；".join(f["message"] for f in exc.details["fields"]), kind="org",
                                  rid=org_id, reason="seal_image:invalid") from None
                g.on_rollback(lambda: rt.blobs.delete(row.blob_key))
            g.record(op.draft(action, kind="org", rid=org_id))
            g.commit()
    console.print("印章图片已移除。" if remove else "印章图片已登记，仅印在经数字签名的公文上。")
