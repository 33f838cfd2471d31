#!/usr/bin/env python3
"""Verify a Shouhu access-log export against a signed checkpoint, without Shouhu.

Needs only the Python standard library and the `cryptography` package (for
Ed25519). The format is specified in docs/audit-format.md.

    python3 verify_audit_export.py export.jsonl checkpoint.json [--public-key HEX]

checkpoint.json is one object from GET /api/v1/audit/checkpoints (or the output
of `shouhu audit checkpoint`): size, root, head_hash, hash_alg, at, signature,
and optionally public_key. The public key should come from a channel you trust
(e.g. printed on the auditor's signed report), not only from the same file.

Exit status 0 when everything verifies; 1 with the first problem otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64
KEYS = ("v", "seq", "at", "actor_id", "actor", "org_id", "roles", "action", "resource_kind", "resource_id",
        "outcome", "reason", "request_id", "subjects", "details", "prev_hash")
# Format version 2: an event that names the user an operator acted for carries one more key.
KEYS_BY_VERSION = {1: set(KEYS), 2: {*KEYS, "on_behalf_of"}}


def hash_function(alg: str):  # type: ignore[no-untyped-def]
    if alg == "sha256":
        return lambda data: hashlib.sha256(data).digest()
    if alg == "sm3":
        return lambda data: hashlib.new("sm3", data).digest()
    raise SystemExit(f"unknown hash algorithm {alg}")


def merkle_root(h, leaves: list[bytes]) -> bytes:  # type: ignore[no-untyped-def]
    """RFC 6962 MTH: split at the largest power of two below n."""
    if not leaves:
        return h(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return h(b"\x01" + merkle_root(h, leaves[:k]) + merkle_root(h, leaves[k:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", help="JSONL export (GET /api/v1/audit/export?format=jsonl)")
    parser.add_argument("checkpoint", help="signed checkpoint JSON")
    parser.add_argument("--public-key", help="Ed25519 public key, 64 hex digits (default: from the checkpoint)")
    args = parser.parse_args()

    with open(args.checkpoint, encoding="utf-8") as fh:
        cp = json.load(fh)
    alg = cp.get("hash_alg", "sha256")
    h = hash_function(alg)
    public_key = args.public_key or cp.get("public_key")
    if not public_key:
        return fail("no public key: pass --public-key")

    message = "shouhu-audit-checkpoint/v1\n{}\n{}\n{}\n{}\n{}\n".format(
        alg, cp["size"], cp["root"], cp["head_hash"], cp["at"]).encode("ascii")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key)).verify(bytes.fromhex(cp["signature"]), message)
    except (InvalidSignature, ValueError):
        return fail("the checkpoint's signature does not verify with this public key")

    leaves: list[bytes] = []
    prev = GENESIS
    with open(args.export, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.endswith(b"\n"):
                return fail(f"line {number}: not terminated by a newline")
            body = line[:-1]
            try:
                event = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                return fail(f"line {number}: not UTF-8 JSON")
            expected = KEYS_BY_VERSION.get(event.get("v")) if isinstance(event, dict) else None
            if expected is None:
                return fail(f"line {number}: unknown format version")
            if set(event) != expected:
                return fail(f"line {number}: unexpected fields")
            canonical = json.dumps(event, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
            if canonical != body:
                return fail(f"line {number}: not in canonical form")
            if event["seq"] != number:
                return fail(f"line {number}: seq {event['seq']} where {number} was expected")
            if event["prev_hash"] != prev:
                return fail(f"event {number}: prev_hash does not match the previous event's hash")
            leaf = h(b"\x00" + body)
            leaves.append(leaf)
            prev = leaf.hex()
            if number == cp["size"]:
                break

    if len(leaves) < cp["size"]:
        return fail(f"the export holds {len(leaves)} events but the checkpoint covers {cp['size']}")
    if prev != cp["head_hash"]:
        return fail(f"the hash of event {cp['size']} differs from the checkpoint's head_hash")
    root = merkle_root(h, leaves).hex()
    if root != cp["root"]:
        return fail("the Merkle root of the export differs from the checkpoint's root")
    print(f"OK: {len(leaves)} events, root {root}, signed at {cp['at']} ({alg}, Ed25519)")
    return 0


def fail(message: str) -> int:
    print(f"FAILED: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
