"""``python -m cli``: the ``shouhu`` command."""

from cli import app

app()
