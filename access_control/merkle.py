"""RFC 6962 / RFC 9162 Merkle tree hashes, inclusion and consistency proofs.

Leaf hash ``H(0x00 || entry)``, node hash ``H(0x01 || left || right)``, the
tree split at the largest power of two below its size. ``H`` is SHA-256, or
SM3 for archives that use the SM cipher suite. The verification functions
follow RFC 9162 section 2.1.3.2 and 2.1.4.2 and take nothing on trust.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

Hasher = Callable[[bytes], bytes]


def hasher(alg: str) -> Hasher:
    """The hash function of a log: ``sha256`` or ``sm3``."""
    if alg == "sha256":
        return lambda data: hashlib.sha256(data).digest()
    if alg == "sm3":
        return lambda data: hashlib.new("sm3", data).digest()
    raise ValueError(f"unknown hash algorithm {alg}")


def leaf_hash(h: Hasher, entry: bytes) -> bytes:
    return h(b"\x00" + entry)


def node_hash(h: Hasher, left: bytes, right: bytes) -> bytes:
    return h(b"\x01" + left + right)


def _split(n: int) -> int:
    """The largest power of two strictly less than n (n >= 2)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def root_from_leaf_hashes(h: Hasher, leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes; the empty tree's hash is H('')."""
    compact = CompactRange(h)
    for leaf in leaves:
        compact.append(leaf)
    return compact.root()


class CompactRange:
    """Streaming root computation: a stack of perfect subtrees, O(log n) memory."""

    def __init__(self, h: Hasher, *, size: int = 0, frontier: Sequence[bytes] = ()):
        if len(frontier) != bin(size).count("1"):
            raise ValueError("a frontier holds one subtree per set bit of the size")
        self.h = h
        self.size = size
        self._stack: list[bytes] = list(frontier)

    @property
    def frontier(self) -> list[bytes]:
        """The roots of the perfect subtrees, largest first: enough to continue appending."""
        return list(self._stack)

    def append(self, leaf: bytes) -> None:
        self._stack.append(leaf)
        self.size += 1
        n = self.size
        while n % 2 == 0:  # merge completed perfect subtrees
            right = self._stack.pop()
            left = self._stack.pop()
            self._stack.append(node_hash(self.h, left, right))
            n //= 2

    def root(self) -> bytes:
        if not self._stack:
            return self.h(b"")
        acc = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            acc = node_hash(self.h, left, acc)
        return acc


def _subtree(h: Hasher, leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    n = hi - lo
    if n == 1:
        return leaves[lo]
    k = _split(n)
    return node_hash(h, _subtree(h, leaves, lo, lo + k), _subtree(h, leaves, lo + k, hi))


def inclusion_proof(h: Hasher, leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 2.1.1 for leaf ``index`` in the tree of ``leaves``."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError("leaf index out of range")

    def path(m: int, lo: int, hi: int) -> list[bytes]:
        if hi - lo == 1:
            return []
        k = _split(hi - lo)
        if m < k:
            return path(m, lo, lo + k) + [_subtree(h, leaves, lo + k, hi)]
        return path(m - k, lo + k, hi) + [_subtree(h, leaves, lo, lo + k)]

    return path(index, 0, n)


def consistency_proof(h: Hasher, leaves: Sequence[bytes], m: int) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 6962 2.1.2: the tree of ``leaves`` extends its first m."""
    n = len(leaves)
    if not 0 < m <= n:
        raise ValueError("first size out of range")

    def subproof(m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        if m == hi - lo:
            return [] if complete else [_subtree(h, leaves, lo, hi)]
        k = _split(hi - lo)
        if m <= k:
            return subproof(m, lo, lo + k, complete) + [_subtree(h, leaves, lo + k, hi)]
        return subproof(m - k, lo + k, hi, False) + [_subtree(h, leaves, lo, lo + k)]

    return subproof(m, 0, n, True)


def verify_inclusion(
    h: Hasher, *, index: int, size: int, leaf: bytes, proof: Iterable[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: does ``proof`` show leaf ``index`` in the tree of ``size`` with ``root``?"""
    proof = list(proof)
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(h, p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(h, r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    h: Hasher, *, size1: int, size2: int, root1: bytes, root2: bytes, proof: Iterable[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: is the tree (size2, root2) an extension of (size1, root1)?"""
    proof = list(proof)
    if size1 < 0 or size2 < size1:
        return False
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0:
        return not proof  # everything extends the empty tree
    if not proof:
        return False
    if size1 & (size1 - 1) == 0:  # a power of two: root1 is the first node
        proof = [root1, *proof]
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(h, c, fr)
            sr = node_hash(h, c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(h, sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root1 and sr == root2
