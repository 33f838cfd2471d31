"""The ``shouhu`` command: init, demo, serve, doctor, reindex, print, users, keys, audit, pki.

One module per area; this one builds the Typer app (``shouhu = "cli:app"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.archive import demo, init, print_documents
from cli.audit import audit_app
from cli.common import TYPER_OPTIONS, state
from cli.doctor import doctor
from cli.keys import keys_app
from cli.pki import pki_app
from cli.search import reindex
from cli.serve import serve
from cli.users import users_app

app = typer.Typer(help="Shouhu 守护: encrypted juvenile-protection records.", **TYPER_OPTIONS)  # type: ignore[arg-type]
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(pki_app, name="pki")
for command in (init, demo, serve, reindex, doctor):
    app.command()(command)
app.command("print")(print_documents)


@app.callback()
def main(
    data_dir: Annotated[Path, typer.Option(envvar="SHOUHU_DATA_DIR", help="Archive folder.")] = Path("./var"),
) -> None:
    state.data_dir = data_dir


__all__ = ["app"]
