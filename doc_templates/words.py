"""What the per-kind templates say beyond the fields: printed titles, labels, and values a person can type.

Registered on the renderer's Jinja environment (``FILTERS``, ``GLOBALS``); pure functions.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from pydantic import BaseModel

from core import categories as category_words
from doc_templates import kinds as doc_kinds

GROUP = 4  # characters per group of a value printed for a person to type or compare


def heading(fields: BaseModel, issuer: str, kind_title: str) -> str:
    """The printed title: 发文机关 + 事由 + 文种 from the kind's fields and the issuing org's own name."""
    method = getattr(fields, "heading", None)
    made = method(issuer) if callable(method) else None
    return made or kind_title


def groups(text: str, size: int = GROUP) -> str:
    """``ABCDEFGH`` -> ``ABCD EFGH``."""
    return " ".join(text[i:i + size] for i in range(0, len(text), size))


def base32_groups(hex_value: str) -> str:
    """A hash printed for typing: RFC 4648 base32 (A-Z, 2-7, no padding), in groups of four."""
    return groups(base64.b32encode(bytes.fromhex(hex_value)).decode("ascii").rstrip("="))


def hex_groups(hex_value: str) -> str:
    return groups(hex_value.upper())


def key_fingerprint(public_key_hex: str) -> str:
    """SHA-256 of the raw public key, in groups (its first 16 hex digits are the key id)."""
    return hex_groups(hashlib.sha256(bytes.fromhex(public_key_hex)).hexdigest())


HASH_NAMES = {"sha256": "SHA-256", "sm3": "SM3"}


def category_label(row: dict[str, Any]) -> str:
    return category_words.label(row["category"], row.get("subtype"))


def household_minor_tags(row: dict[str, Any]) -> list[str]:
    """A household file's minor row: the short label of each category (category 5's by sub-type)."""
    return [category_words.short(c, row.get("category5_subtype")) for c in row["categories"]]


FILTERS = {"base32_groups": base32_groups, "hex_groups": hex_groups, "key_fingerprint": key_fingerprint,
           "category_label": category_label, "household_minor_tags": household_minor_tags}
GLOBALS = {"hash_names": HASH_NAMES, "parent_status": doc_kinds.PARENT_STATUS,
           "dropout_meaning": doc_kinds.DROPOUT_MEANING, "category_words": category_words}
