"""``shouhu audit``: verify, checkpoint and export the access log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from access_control.actions import Action
from cli.common import TYPER_OPTIONS, console, err, fail, operator, runtime

audit_app = typer.Typer(help="The access log: verify, checkpoint, export.", **TYPER_OPTIONS)  # type: ignore[arg-type]


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[Path | None, typer.Option(help="A checkpoint JSON saved earlier, to verify against.")] = None,
) -> None:
    """Re-hash the whole log, follow the chain, check every stored (and the given) checkpoint."""
    import json

    extra = []
    if checkpoint is not None:
        try:
            extra.append(json.loads(checkpoint.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise fail(f"无法读取检查点文件 {checkpoint}：{type(exc).__name__}") from None
    with runtime() as rt:
        op = operator(rt)
        size = extra[0].get("size") if extra and isinstance(extra[0], dict) else None
        details: dict[str, object] = {"against_checkpoint": size if isinstance(size, int) else None}
        # A check of the log, not a change: its event follows the check, so that it is not
        # part of what was checked (the first bad position reported is the log's, not moved
        # by the check's own entry), and it carries the result.
        try:
            with rt.db.read_session() as s:
                result = rt.audit.verify(s, checkpoints=extra)
        except BaseException as exc:
            op.failed(Action.AUDIT_VERIFY, exc, kind="audit_log", details=details)
            raise
        op.record(Action.AUDIT_VERIFY, kind="audit_log", details={**details, "ok": result.ok, "length": result.length})
    if result.ok:
        console.print(f"访问日志完整：{result.length} 条事件，校验了 {result.checkpoints_checked} 个检查点；"
                      f"末条哈希 {result.head_hash}")
        return
    err.print(f"[red]访问日志校验失败[/red]：第 {result.first_bad_seq} 条起有问题（{result.problem}）。")
    raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint(
    out: Annotated[Path | None, typer.Option(help="Also write the signed checkpoint to this file.")] = None,
) -> None:
    """Sign a checkpoint of the log now and print it (JSON)."""
    import json

    from access_control.audit import AuditTampered

    action = Action.AUDIT_CHECKPOINT_CREATE
    with runtime() as rt:
        op = operator(rt)
        # As in the API: the request is logged and committed first, so the checkpoint it asks
        # for covers it; signing re-hashes the log outside the write lock (appends are not held
        # up), so it cannot share the event's transaction. A refusal to sign (the log does not
        # verify) or any other failure adds an 'error' event.
        op.record(action, kind="audit_log")
        try:
            cp = rt.audit.sign_checkpoint(rt.db, now=rt.clock())
        except AuditTampered as exc:
            op.failed(action, exc, kind="audit_log")
            raise fail(f"日志校验未通过，未签署检查点：{exc}") from None
        except BaseException as exc:
            op.failed(action, exc, kind="audit_log")
            raise
        cp = {**cp, "public_key": rt.audit_desk.public_key()["public_key"]}
    text = json.dumps(cp, ensure_ascii=False, indent=2)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
    console.print_json(text)


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option(help="File to write.")],
    format: Annotated[str, typer.Option(help="jsonl or csv.")] = "jsonl",  # noqa: A002
    upto: Annotated[int | None, typer.Option(help="Last seq to include (e.g. a checkpoint size).")] = None,
) -> None:
    """Write the events in canonical form (docs/audit-format.md)."""
    from access_control.audit import AuditLog, export_csv_header, export_csv_row, export_jsonl_line

    if format not in ("jsonl", "csv"):
        raise fail("--format 只能是 jsonl 或 csv")
    action = Action.AUDIT_EVENTS_EXPORT
    with runtime() as rt:
        op = operator(rt)
        with rt.db.read_session() as s:
            limit = upto if upto is not None else AuditLog.size(s)
        details: dict[str, object] = {"format": format, "upto": limit}
        # A read, logged as the API logs reads: the event is committed before anything is
        # written out (fail closed), an 'error' event follows if the export stops.
        op.record(action, kind="audit_log", details=details)
        count = 0
        try:
            with rt.db.read_session() as s, out.open("wb") as fh:
                if format == "csv":
                    fh.write(export_csv_header())
                for ev in AuditLog.iter_events(s, upto=limit):
                    fh.write(export_csv_row(ev) if format == "csv" else export_jsonl_line(ev))
                    count += 1
        except BaseException as exc:
            op.failed(action, exc, kind="audit_log", details=details)
            raise
    console.print(f"已导出 {count} 条事件到 {out}。")

