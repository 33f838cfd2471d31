"""Generate the parts of docs/ that the code defines: the CLI reference and the error table.

    python docs/gen_reference.py           # rewrite docs/cli.md and docs/api.md between their markers
    python docs/gen_reference.py --check   # exit 1 and name the files that differ

The output depends only on the code: commands and codes are sorted, and help text is
taken from the Click parameters, never from a terminal-width formatter.
``tests/docs/test_docs_current.py`` fails when a generated section differs from the file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REGENERATE = "python docs/gen_reference.py"

# Typer's own shell-completion options: the same in every Typer app, not Shouhu's.
_SKIPPED_OPTIONS = {"install_completion", "show_completion"}

# When each error code is answered. The status, code and message come from
# core/errors.py; a code missing here stops the generator (and fails the docs test).
WHEN: dict[str, str] = {
    "unauthorized": "no token, or an unknown, expired or revoked token",
    "invalid_credentials": "wrong username or password (the same answer for both)",
    "too_many_attempts": (
        "the username or the client address is locked after too many failures; "
        "`Retry-After` and `details.retry_after` give the seconds to wait"
    ),
    "rate_limited": (
        "too many public verifications from one address (`SHOUHU_VERIFY_RATE_LIMIT` per "
        "`SHOUHU_VERIFY_RATE_WINDOW_SECONDS`); header `Retry-After` and "
        "`details.retry_after_seconds` say when to try again"
    ),
    "login_busy": "too many password checks at once; `Retry-After` says when to try again",
    "password_sign_in_disabled": (
        "the right password, for a role whose local passwords are switched off "
        "(`password_login_disabled_roles`): sign in through the unified identity platform (OIDC)"
    ),
    "oidc_sign_in_failed": (
        "an OIDC sign-in refused: the id_token's issuer, audience, expiry, signature or nonce, a refused code "
        "exchange (a replayed code, a missing PKCE verifier), or an identity linked to no account"
    ),
    "second_factor_enrolment_required": (
        "a user whose role needs a second factor (setting `mfa_required_roles`) has none yet: only `/me`, "
        "sign-out, the password change and `/me/mfa/totp` (enrolment) answer (docs/identity.md)"
    ),
    "second_factor_invalid": (
        "the second sign-in step: a wrong, reused (its 30-second step already used) or stale one-time code, "
        "a used or unknown recovery code, or an expired or used challenge"
    ),
    "password_change_required": (
        "the caller's password is temporary: change it first (`POST /me/password`)"
    ),
    "forbidden": (
        "the caller's role never allows this action, or a rule refuses it "
        "(`two_person:own_request`, …); `details.rule` names the rule"
    ),
    "not_found": (
        "the record does not exist, or lies outside the caller's jurisdiction (indistinguishable)"
    ),
    "conflict": (
        'duplicate ID number (`details.field = "id_number"`, `details.existing_id` when the '
        "caller may read a record that has it), a stale `expected_version`, a record changed "
        'while a document about it was rendered (`details.field = "subject_id"`), or unsealing '
        'a document a sealed person still holds (`details.field = "record_id"`)'
    ),
    "record_shredded": "the record's data key was destroyed",
    "payload_too_large": 'body over `SHOUHU_MAX_BODY_BYTES` (`details.field = "body"`)',
    "invalid_input": (
        "`details.fields` lists each bad field with a Chinese message; the value sent is never "
        "echoed. A document's field that contradicts the subject's record (its name, sex, age, "
        "ID number, address; a household file's members and minors) is one "
        "([documents.md](documents.md#particulars))"
    ),
    "internal_error": "an unexpected failure; the answer says nothing more, the server log has the request id",
    "decryption_failed": "a stored ciphertext failed authentication; no data is returned",
    "audit_unavailable": (
        "the access log could not be written (in time); no content is returned; `Retry-After`"
    ),
    "busy": (
        "a database lock or connection could not be had within "
        "`SHOUHU_DATABASE_LOCK_TIMEOUT_SECONDS`, or too many public verifications are waiting; "
        "nothing was changed; `Retry-After`"
    ),
    "unavailable": (
        "a part the request needs is not usable: the search index (until `shouhu reindex`), "
        "or signing a checkpoint over a log that fails verification; the message says what to do"
    ),
}


@dataclass(frozen=True)
class Section:
    """A generated part of a file: the text between ``<!-- BEGIN GENERATED: name -->`` and its END."""

    path: str  # relative to the repository root
    name: str
    build: Callable[[], str]

    @property
    def begin(self) -> str:
        return f"<!-- BEGIN GENERATED: {self.name} (edit {Path(__file__).name}, then run {REGENERATE}) -->"

    @property
    def end(self) -> str:
        return f"<!-- END GENERATED: {self.name} -->"


def _text(text: str) -> str:
    """Help text as Markdown: angle brackets shown, not taken for HTML tags."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _walk(cmd: Any, path: str, parent: Any = None) -> Iterator[tuple[str, Any, Any]]:
    ctx = cmd.make_context(path.rsplit(" ", 1)[-1], [], parent=parent, resilient_parsing=True)
    yield path, cmd, ctx
    for name in sorted(getattr(cmd, "commands", {}) or {}):
        sub = cmd.commands[name]
        if not getattr(sub, "hidden", False):
            yield from _walk(sub, f"{path} {name}", ctx)


def cli_reference() -> str:
    """Every ``shouhu`` command with its arguments, options and help, as Markdown."""
    import typer

    from cli import app

    root = typer.main.get_command(app)
    out: list[str] = []
    for path, cmd, ctx in _walk(root, "shouhu"):
        params = [
            p
            for p in cmd.params
            if not getattr(p, "hidden", False) and p.name not in _SKIPPED_OPTIONS
        ]
        args = [p for p in params if getattr(p, "param_type_name", "") == "argument"]
        usage = [path]
        if len(args) < len(params):
            usage.append("[OPTIONS]")
        if getattr(cmd, "commands", None):
            usage.append("COMMAND")
        usage += [p.name.upper() for p in args]
        out += [f"### `{path}`", "", f"`{' '.join(usage)}`", ""]
        help_text = (cmd.help or "").replace("\b\n", "").strip()
        if help_text:
            out += [_text(help_text), ""]
        if getattr(cmd, "commands", None):
            subs = sorted(n for n, c in cmd.commands.items() if not getattr(c, "hidden", False))
            out += ["Commands: " + ", ".join(f"`{path} {n}`" for n in subs) + ".", ""]
        if params:
            out += ["| argument or option | help |", "|---|---|"]
            for p in params:
                record = p.get_help_record(ctx)
                if record is None:
                    continue
                names, text = record
                if getattr(p, "param_type_name", "") == "argument":
                    names = p.name.upper() + names[len(p.name):]
                out.append(f"| `{_cell(names)}` | {_cell(_text(text))} |")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def error_table() -> str:
    """The error codes of core/errors.py with status, message and when they are answered."""
    import core.errors as errors

    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.ShouhuError) and c.__module__ == errors.__name__
    ]
    missing = sorted({c.code for c in classes} - WHEN.keys())
    if missing:
        raise SystemExit(f"docs/gen_reference.py: describe the error codes {missing} in WHEN")
    stale = sorted(WHEN.keys() - {c.code for c in classes})
    if stale:
        raise SystemExit(f"docs/gen_reference.py: WHEN describes codes that no longer exist: {stale}")
    rows = ["| status | code | message (default) | when |", "|---|---|---|---|"]
    codes = {(c.status, c.code, c.message) for c in classes}  # an abstract base shares its parent's code
    for status, code, message in sorted(codes):
        rows.append(f"| {status} | `{code}` | {_cell(message)} | {_cell(WHEN[code])} |")
    return "\n".join(rows) + "\n"


SECTIONS = [
    Section("docs/cli.md", "cli", cli_reference),
    Section("docs/api.md", "errors", error_table),
]


def render(text: str, section: Section) -> str:
    """``text`` with the section's generated part replaced by a fresh one."""
    head, sep, rest = text.partition(section.begin)
    _, sep2, tail = rest.partition(section.end)
    if not sep or not sep2:
        raise SystemExit(f"{section.path}: markers for '{section.name}' not found:\n{section.begin}\n{section.end}")
    return f"{head}{section.begin}\n\n{section.build()}\n{section.end}{tail}"


def expected_files(root: Path = ROOT) -> dict[str, tuple[str, str]]:
    """For each file with generated parts: (its text now, the text it should have)."""
    out: dict[str, tuple[str, str]] = {}
    for section in SECTIONS:
        current, new = out.get(section.path) or ((root / section.path).read_text(encoding="utf-8"),) * 2
        out[section.path] = (current, render(new, section))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ")
    args = parser.parse_args(argv)
    stale = []
    for path, (current, new) in expected_files().items():
        if current != new:
            stale.append(path)
            if not args.check:
                (ROOT / path).write_text(new, encoding="utf-8")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run {REGENERATE}", file=sys.stderr)
        return 1
    for path in stale:
        print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
