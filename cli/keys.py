"""``shouhu keys``: rotate, retire, list and shred key-encryption and data keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table
from sqlalchemy.orm import Session

from access_control.actions import Action
from cli.common import TYPER_OPTIONS, console, err, fail, operator, runtime
from core import keys as keystore
from core.outbox import enqueue

keys_app = typer.Typer(help="Key-encryption keys: rotate, retire, status, shred.", **TYPER_OPTIONS)  # type: ignore[arg-type]


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Make a new KEK current and re-wrap every data key under it (payloads untouched)."""
    with runtime() as rt:
        op = operator(rt)
        # Rotation is many transactions: one makes the new KEK current, then batches re-wrap the
        # data keys under it. The 'allowed' event is committed with the first of them, the new
        # KEK (the change that matters: from then on new records are wrapped under it), so the
        # KEK never exists without its event and the event never without the KEK. If the
        # re-wrapping stops midway, an 'error' event says how far it got; every record still
        # reads (stragglers stay under the old KEK, which `keys retire` re-wraps first).
        # An error before the KEK committed leaves the 'error' event alone: nothing changed.
        where = {"kek": "", "rewrapped": 0}

        def started(session: Session, kek_id: str, live: int) -> None:
            where["kek"] = kek_id
            op.append(session, Action.KEY_ROTATE, kind="kek", rid=kek_id, details={"data_keys": live})

        try:
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("重新包裹数据密钥", total=None)

                def rewrapped(done: int, total: int) -> None:
                    where["rewrapped"] = done
                    progress.update(task, completed=done, total=total)

                result = keystore.rotate(rt.db, rt.ring, progress=rewrapped, on_start=started)
        except BaseException as exc:
            op.failed(Action.KEY_ROTATE, exc, kind="kek", rid=str(where["kek"]),
                      details={"rewrapped": where["rewrapped"]})
            err.print(f"[red]密钥轮换未完成[/red]（已重新包裹 {where['rewrapped']} 个数据密钥），所有记录仍可读取。"
                      "运行 `shouhu keys status` 查看，再运行 `shouhu keys rotate` 重试，"
                      "或用 `shouhu keys retire <旧密钥>` 把其余数据密钥重新包裹到当前密钥下。")
            raise
    console.print(f"新的密钥加密密钥 {result.new_kek} 已启用；重新包裹了 {result.rewrapped} 个数据密钥。")
    console.print("运行中的服务会在几秒内使用新密钥；确认无误后可用 `shouhu keys retire <旧密钥>` 销毁旧密钥。")


@keys_app.command("retire")
def keys_retire(kek_id: str) -> None:
    """Destroy an old KEK's material once nothing is wrapped under it."""
    action = Action.KEY_RETIRE
    with runtime() as rt:
        op = operator(rt)

        def retiring(session: Session, moved: int) -> None:  # in the retiring transaction
            op.append(session, action, kind="kek", rid=kek_id, details={"rewrapped": moved})

        try:
            moved = keystore.retire(rt.db, rt.ring, kek_id, on_commit=retiring)
        except keystore.KekInUse:
            raise op.refuse(action, f"{kek_id} 是当前使用的密钥，请先运行 `shouhu keys rotate`。",
                            kind="kek", rid=kek_id, reason="kek:current") from None
        except KeyError:
            raise op.refuse(action, f"没有可退役的密钥 {kek_id}", kind="kek", rid=kek_id,
                            reason="kek:not_found_or_retired") from None
        except BaseException as exc:
            op.failed(action, exc, kind="kek", rid=kek_id)
            raise
    console.print(f"密钥 {kek_id} 已退役并销毁（另重新包裹了 {moved} 个数据密钥）。")


@keys_app.command("status")
def keys_status() -> None:
    """List KEKs and how many data keys each wraps."""
    with runtime() as rt:
        table = Table()
        for col in ("密钥", "版本", "状态", "创建时间", "退役时间", "数据密钥数"):
            table.add_column(col)
        for k in keystore.status(rt.db):
            table.add_row(k["id"], str(k["version"]), k["state"], k["created_at"], k["retired_at"] or "",
                          str(k["data_keys"]))
        console.print(table)
        console.print(f"当前密钥：{rt.ring.current_kek_id}；加密套件：{rt.ring.suite.name}")


@keys_app.command("shred")
def keys_shred(
    record_id: str,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: the record becomes unreadable for good.")] = False,
) -> None:
    """Destroy a record's data key: the live archive can never open it again (older database
    backups still can, until they expire)."""
    if not yes:
        raise fail("销毁不可恢复：确认请加 --yes")
    with runtime() as rt:
        op = operator(rt)
        with op.change() as g:
            count = keystore.Vault.shred(g.session, owner_id=record_id)
            if not count:
                raise op.deny(g, Action.KEY_SHRED, f"没有记录 {record_id} 的可销毁密钥", kind="record",
                              rid=record_id, reason="record:no_live_data_key")
            g.record(op.draft(Action.KEY_SHRED, kind="record", rid=record_id, details={"data_keys": count}))
            kind = {"mn": "minor", "hh": "household", "doc": "document"}.get(record_id.split("_", 1)[0])
            if kind:
                enqueue(g.session, kind, record_id)  # the indexer drops what can no longer be read
            g.commit()
    console.print(f"记录 {record_id} 的数据密钥已销毁，内容不可再读取。")
