"""RFC 6962 Merkle trees: published known answers, every corruption refused, random trees.

The vectors in ``tests/vectors/merkle_rfc6962.json`` come from transparency-dev/merkle
(the same as google/certificate-transparency's); the file names the source files and
commits. Corruptions follow transparency-dev's ``corruptInclusionProof`` and
``corruptConsistencyProof``. A small recursive MTH written here from RFC 6962 2.1
is the independent reference for random trees, in SHA-256 and SM3.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from access_control import merkle

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "merkle_rfc6962.json").read_text())
SHA = merkle.hasher("sha256")


def _load_verifier() -> Any:
    """docs/verify_audit_export.py, the standalone verifier that must not import the app."""
    path = Path(__file__).resolve().parents[2] / "docs" / "verify_audit_export.py"
    spec = importlib.util.spec_from_file_location("verify_audit_export", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VERIFIER = _load_verifier()
SM3 = merkle.hasher("sm3")
LEAVES = [merkle.leaf_hash(SHA, bytes.fromhex(x)) for x in VECTORS["leaves_hex"]]
ROOTS = [bytes.fromhex(r) for r in VECTORS["roots"]]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
EMPTY_ROOT = bytes.fromhex(VECTORS["empty_root"])


def hx(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def flip(proof: list[bytes], i: int, mask: int) -> list[bytes]:
    out = list(proof)
    out[i] = bytes([out[i][0] ^ mask]) + out[i][1:]
    return out


# Known answers ------------------------------------------------------------------------


def test_vector_file_names_its_source():
    sources = VECTORS["sources"]
    assert {s["repository"] for s in sources} == {"transparency-dev/merkle"}
    assert all(len(s["commit"]) == 40 and s["path"] and s["license"] for s in sources)


@pytest.mark.parametrize("answer", VECTORS["hash_answers"], ids=lambda a: a["desc"])
def test_hash_known_answers(answer):
    want = bytes.fromhex(answer["want"])
    if answer["kind"] == "empty":
        assert merkle.root_from_leaf_hashes(SHA, []) == want
        assert merkle.CompactRange(SHA).root() == want
    elif answer["kind"] == "leaf":
        assert merkle.leaf_hash(SHA, bytes.fromhex(answer["data_hex"])) == want
    else:
        left, right = bytes.fromhex(answer["left_hex"]), bytes.fromhex(answer["right_hex"])
        assert merkle.node_hash(SHA, left, right) == want
        assert merkle.node_hash(SHA, right, left) != want  # order matters


def test_empty_tree_root_is_not_the_empty_leaf():
    assert merkle.root_from_leaf_hashes(SHA, []) == EMPTY_ROOT
    assert merkle.leaf_hash(SHA, b"") != EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_of_the_eight_standard_leaves(size):
    assert merkle.root_from_leaf_hashes(SHA, LEAVES[:size]) == ROOTS[size - 1]
    compact = merkle.CompactRange(SHA)
    for leaf in LEAVES[:size]:
        compact.append(leaf)
    assert compact.size == size and compact.root() == ROOTS[size - 1]
    assert len(compact.frontier) == bin(size).count("1")


def test_root_of_size_one_is_the_leaf_hash():
    assert ROOTS[0] == LEAVES[0]


# Inclusion proofs -------------------------------------------------------------------------


def root_of(size: int) -> bytes:
    return ROOTS[size - 1] if 1 <= size <= 8 else SOME_HASH


def inclusion_probes(index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
                     ) -> list[tuple[str, dict[str, Any]]]:
    """transparency-dev's corruptInclusionProof, plus size +-1 and out-of-range indexes.

    A size off by one is paired with the root of that size: the RFC 9162 algorithm
    computes a root from the proof and compares it, and where the trees of size n
    and n+1 give the leaf the same path shape, the claimed size is not bound by the
    proof at all. The size is bound by the checkpoint signature, which covers it
    (tests/access_control/test_audit_export.py changes a checkpoint's size and sees it refused).
    """
    base = {"index": index, "size": size, "leaf": leaf, "proof": proof, "root": root}
    probes: list[tuple[str, dict[str, Any]]] = [
        ("index - 1", {**base, "index": index - 1}),
        ("index + 1", {**base, "index": index + 1}),
        ("index ^ 2", {**base, "index": index ^ 2}),
        ("index = size", {**base, "index": size}),
        ("index > size", {**base, "index": size + 3}),
        ("size - 1", {**base, "size": size - 1, "root": root_of(size - 1)}),
        ("size + 1", {**base, "size": size + 1, "root": root_of(size + 1)}),
        ("size * 2", {**base, "size": size * 2}),
        ("size // 2", {**base, "size": size // 2}),
        ("size 0", {**base, "size": 0}),
        ("wrong leaf", {**base, "leaf": b"WrongLeaf"}),
        ("another leaf", {**base, "leaf": merkle.leaf_hash(SHA, b"another")}),
        ("empty root", {**base, "root": EMPTY_ROOT}),
        ("random root", {**base, "root": SOME_HASH}),
        ("trailing garbage", {**base, "proof": [*proof, b""]}),
        ("trailing root", {**base, "proof": [*proof, root]}),
        ("trailing hash", {**base, "proof": [*proof, SOME_HASH]}),
        ("preceding garbage", {**base, "proof": [b"", *proof]}),
        ("preceding root", {**base, "proof": [root, *proof]}),
    ]
    for i in range(len(proof)):
        for mask in (8, 1, 0x80):
            probes.append((f"proof[{i}] bit {mask:#x}", {**base, "proof": flip(proof, i, mask)}))
        last = bytes(proof[i][:-1]) + bytes([proof[i][-1] ^ 1])
        probes.append((f"proof[{i}] last bit", {**base, "proof": [*proof[:i], last, *proof[i + 1:]]}))
    if proof:
        probes.append(("removed last", {**base, "proof": proof[:-1]}))
        probes.append(("removed first", {**base, "proof": proof[1:]}))
        probes.append(("empty proof", {**base, "proof": []}))
    if len(proof) > 1:
        probes.append(("inserted", {**base, "proof": [proof[0], SOME_HASH, *proof[1:]]}))
        probes.append(("swapped", {**base, "proof": [proof[1], proof[0], *proof[2:]]}))
    else:
        probes.append(("element added", {**base, "proof": [*proof, SOME_HASH]}))
    return probes


def verify_inc(h: merkle.Hasher, p: dict[str, Any]) -> bool:
    return merkle.verify_inclusion(h, index=p["index"], size=p["size"], leaf=p["leaf"],
                                   proof=p["proof"], root=p["root"])


@pytest.mark.parametrize("vector", VECTORS["inclusion_proofs"],
                         ids=lambda v: f"{v['leaf_index']}-of-{v['tree_size']}")
def test_published_inclusion_proof(vector):
    index, size, proof = vector["leaf_index"], vector["tree_size"], hx(vector["proof"])
    leaf, root = LEAVES[index], ROOTS[size - 1]
    assert merkle.verify_inclusion(SHA, index=index, size=size, leaf=leaf, proof=proof, root=root)
    # Our generator produces exactly the published proof.
    assert merkle.inclusion_proof(SHA, LEAVES[:size], index) == proof
    wrongly_accepted = [desc for desc, p in inclusion_probes(index, size, proof, root, leaf) if verify_inc(SHA, p)]
    assert wrongly_accepted == []


def test_every_inclusion_proof_in_the_standard_trees():
    """All 36 (index, size) pairs of sizes 1..8 verify against the published roots."""
    for size in range(1, 9):
        for index in range(size):
            proof = merkle.inclusion_proof(SHA, LEAVES[:size], index)
            assert merkle.verify_inclusion(SHA, index=index, size=size, leaf=LEAVES[index], proof=proof,
                                           root=ROOTS[size - 1])
            for other in range(size):
                if other != index and LEAVES[other] != LEAVES[index]:
                    assert not merkle.verify_inclusion(SHA, index=index, size=size, leaf=LEAVES[other],
                                                       proof=proof, root=ROOTS[size - 1])
            # Never against the tree of another size (with that tree's root).
            for other_size in range(1, 9):
                if other_size != size:
                    assert not merkle.verify_inclusion(SHA, index=index, size=other_size, leaf=LEAVES[index],
                                                       proof=proof, root=ROOTS[other_size - 1])


@pytest.mark.parametrize("index,size", [(0, 0), (0, 1), (1, 0), (2, 1), (1, 1), (8, 8), (9, 8)])
def test_inclusion_with_bad_index_or_size_fails(index, size):
    # transparency-dev TestVerifyInclusion's probes, plus index == size.
    cases = [(SOME_HASH, b""), (b"", EMPTY_ROOT), (SOME_HASH, EMPTY_ROOT)]
    if (index, size) != (0, 1):  # in a tree of one leaf, the root is that leaf
        cases.append((SOME_HASH, SOME_HASH))
    for leaf, root in cases:
        assert not merkle.verify_inclusion(SHA, index=index, size=size, leaf=leaf, proof=[], root=root)


def test_single_entry_inclusion():
    leaf = merkle.leaf_hash(SHA, b"data")
    assert merkle.verify_inclusion(SHA, index=0, size=1, leaf=leaf, proof=[], root=leaf)
    assert not merkle.verify_inclusion(SHA, index=0, size=1, leaf=b"", proof=[], root=leaf)
    assert not merkle.verify_inclusion(SHA, index=0, size=1, leaf=leaf, proof=[], root=b"")
    assert not merkle.verify_inclusion(SHA, index=0, size=1, leaf=leaf, proof=[leaf], root=leaf)


# Proof generators refuse arguments out of range: (generator, tree size, the vector's bad argument, another).
REFUSED = [
    *(pytest.param(merkle.inclusion_proof, v["tree_size"], v["leaf_index"], -1,
                   id=f"inclusion-{v['leaf_index']}-of-{v['tree_size']}") for v in VECTORS["inclusion_errors"]),
    *(pytest.param(merkle.consistency_proof, v["size2"], v["size1"], 0,
                   id=f"consistency-{v['size1']}-to-{v['size2']}") for v in VECTORS["consistency_errors"]),
]


@pytest.mark.parametrize(("generator", "size", "bad", "also_bad"), REFUSED)
def test_proof_generators_refuse_out_of_range(generator, size, bad, also_bad):
    leaves = [merkle.leaf_hash(SHA, b"%d" % i) for i in range(size)]
    for argument in (bad, also_bad):
        with pytest.raises(ValueError):
            generator(SHA, leaves, argument)


# Consistency proofs -------------------------------------------------------------------------


def consistency_probes(size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
                       ) -> list[tuple[str, dict[str, Any]]]:
    """transparency-dev's corruptConsistencyProof, plus size2 +-1 and size1 > size2.

    As for inclusion, a size2 off by one is paired with the root of that size.
    """
    base = {"size1": size1, "size2": size2, "root1": root1, "root2": root2, "proof": proof}
    probes: list[tuple[str, dict[str, Any]]] = [
        ("size1 - 1", {**base, "size1": size1 - 1}),
        ("size1 + 1", {**base, "size1": size1 + 1}),
        ("size1 ^ 2", {**base, "size1": size1 ^ 2}),
        ("size2 - 1", {**base, "size2": size2 - 1, "root2": root_of(size2 - 1)}),
        ("size2 + 1", {**base, "size2": size2 + 1, "root2": root_of(size2 + 1)}),
        ("size2 * 2", {**base, "size2": size2 * 2}),
        ("size2 // 2", {**base, "size2": size2 // 2}),
        ("size1 > size2", {**base, "size1": size2, "size2": size1}),
        ("size1 = size2 + 1", {**base, "size1": size2 + 1}),
        ("wrong root1", {**base, "root1": b"WrongRoot"}),
        ("wrong root2", {**base, "root2": b"WrongRoot"}),
        ("random root1", {**base, "root1": SOME_HASH}),
        ("random root2", {**base, "root2": SOME_HASH}),
        ("swapped roots", {**base, "root1": root2, "root2": root1}),
        ("empty proof", {**base, "proof": []}),
        ("trailing garbage", {**base, "proof": [*proof, b""]}),
        ("trailing root1", {**base, "proof": [*proof, root1]}),
        ("trailing root2", {**base, "proof": [*proof, root2]}),
        ("preceding garbage", {**base, "proof": [b"", *proof]}),
        ("preceding root1", {**base, "proof": [root1, *proof]}),
        ("preceding root2", {**base, "proof": [root2, *proof]}),
        ("preceding proof[0]", {**base, "proof": [proof[0], *proof]}),
        ("truncated proof", {**base, "proof": proof[:-1]}),
        ("removed first", {**base, "proof": proof[1:]}),
        ("inserted", {**base, "proof": [proof[0], SOME_HASH, *proof[1:]]}),
    ]
    for i in range(len(proof)):
        for mask in (16, 1, 0x80):
            probes.append((f"proof[{i}] bit {mask:#x}", {**base, "proof": flip(proof, i, mask)}))
    if len(proof) > 1:
        probes.append(("swapped elements", {**base, "proof": [proof[1], proof[0], *proof[2:]]}))
    return probes


def verify_con(h: merkle.Hasher, p: dict[str, Any]) -> bool:
    return merkle.verify_consistency(h, size1=p["size1"], size2=p["size2"], root1=p["root1"],
                                     root2=p["root2"], proof=p["proof"])


@pytest.mark.parametrize("vector", VECTORS["consistency_proofs"], ids=lambda v: f"{v['size1']}-to-{v['size2']}")
def test_published_consistency_proof(vector):
    size1, size2, proof = vector["size1"], vector["size2"], hx(vector["proof"])
    root1, root2 = ROOTS[size1 - 1], ROOTS[size2 - 1]
    assert merkle.verify_consistency(SHA, size1=size1, size2=size2, root1=root1, root2=root2, proof=proof)
    assert merkle.consistency_proof(SHA, LEAVES[:size2], size1) == proof
    if not proof:  # size1 == size2: only the identical root passes, and only with no proof
        assert not merkle.verify_consistency(SHA, size1=size1, size2=size2, root1=root1, root2=SOME_HASH,
                                             proof=proof)
        assert not merkle.verify_consistency(SHA, size1=size1, size2=size2, root1=root1, root2=root2,
                                             proof=[root1])
        return
    wrongly_accepted = [desc for desc, p in consistency_probes(size1, size2, root1, root2, proof)
                        if verify_con(SHA, p)]
    assert wrongly_accepted == []


def test_every_consistency_proof_in_the_standard_trees():
    for size2 in range(1, 9):
        for size1 in range(1, size2 + 1):
            proof = merkle.consistency_proof(SHA, LEAVES[:size2], size1)
            assert merkle.verify_consistency(SHA, size1=size1, size2=size2, root1=ROOTS[size1 - 1],
                                             root2=ROOTS[size2 - 1], proof=proof)
            if size1 < size2:
                assert proof, "a proof is needed between different sizes"
                assert not merkle.verify_consistency(SHA, size1=size1, size2=size2, root1=ROOTS[size1 - 1],
                                                     root2=ROOTS[size2 - 1], proof=[])


@pytest.mark.parametrize(
    "size1,size2,root1,root2,proof,ok",
    [
        # transparency-dev TestVerifyConsistency's table.
        (0, 0, b"don't care 1", b"don't care 2", [], False),
        (1, 1, b"don't care 1", b"don't care 2", [], False),
        (0, 0, b"don't care 1", b"don't care 1", [], True),
        (0, 1, b"don't care 1", b"don't care 2", [], True),
        (1, 1, b"don't care 2", b"don't care 2", [], True),
        (1, 0, b"don't care 1", b"don't care 2", [], False),
        (2, 1, b"don't care 1", b"don't care 2", [], False),
        (1, 2, b"don't care 1", b"don't care 2", [], False),
        (0, 0, EMPTY_ROOT, b"don't care 2", [], False),
        (1, 1, EMPTY_ROOT, b"don't care 2", [], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        # And: negative sizes, size1 > size2 with a real proof.
        (-1, 8, EMPTY_ROOT, EMPTY_ROOT, [], False),
        (8, 6, bytes.fromhex(VECTORS["roots"][7]), bytes.fromhex(VECTORS["roots"][5]),
         hx(VECTORS["consistency_proofs"][2]["proof"]), False),
    ],
)
def test_consistency_edge_cases(size1, size2, root1, root2, proof, ok):
    assert merkle.verify_consistency(SHA, size1=size1, size2=size2, root1=root1, root2=root2, proof=proof) is ok


# Proof layout in larger trees (transparency-dev proof_test.go node ids) ----------------------


def node_at(h: merkle.Hasher, leaves: list[bytes], level: int, index: int) -> bytes:
    lo = index << level
    return reference_root(h, leaves[lo:lo + (1 << level)])


def expected_from_nodes(h: merkle.Hasher, leaves: list[bytes], nodes: list[list[int]],
                        rehash: list[int] | None) -> list[bytes]:
    hashes = [node_at(h, leaves, level, index) for level, index in nodes]
    if rehash is None:
        return hashes
    begin, end = rehash
    acc = hashes[begin]
    for k in range(begin + 1, end):
        acc = merkle.node_hash(h, hashes[k], acc)
    return [*hashes[:begin], acc, *hashes[end:]]


def many_leaves(h: merkle.Hasher, n: int) -> list[bytes]:
    return [merkle.leaf_hash(h, b"leaf %d" % i) for i in range(n)]


@pytest.mark.parametrize("vector", VECTORS["inclusion_nodes"], ids=lambda v: f"{v['leaf_index']}-of-{v['tree_size']}")
def test_inclusion_proof_layout(vector):
    leaves = many_leaves(SHA, vector["tree_size"])
    want = expected_from_nodes(SHA, leaves, vector["nodes"], vector["rehash"])
    assert merkle.inclusion_proof(SHA, leaves, vector["leaf_index"]) == want


@pytest.mark.parametrize("vector", VECTORS["consistency_nodes"], ids=lambda v: f"{v['size1']}-to-{v['size2']}")
def test_consistency_proof_layout(vector):
    leaves = many_leaves(SHA, vector["size2"])
    want = expected_from_nodes(SHA, leaves, vector["nodes"], vector["rehash"])
    assert merkle.consistency_proof(SHA, leaves, vector["size1"]) == want


# Random trees, SHA-256 and SM3 -------------------------------------------------------------


# MTH straight from RFC 6962 2.1, as the standalone verifier computes it (no code of the app).
reference_root = VERIFIER.merkle_root


def check_tree(h: merkle.Hasher, size: int, size1: int, salt: bytes) -> None:
    leaves = [merkle.leaf_hash(h, salt + b"%d" % i) for i in range(size)]
    root = reference_root(h, leaves)
    assert merkle.root_from_leaf_hashes(h, leaves) == root
    # Every inclusion proof verifies; with a wrong index or leaf it does not.
    for index in range(size):
        proof = merkle.inclusion_proof(h, leaves, index)
        assert merkle.verify_inclusion(h, index=index, size=size, leaf=leaves[index], proof=proof, root=root)
        if size > 1:
            other = (index + 1) % size
            assert not merkle.verify_inclusion(h, index=other, size=size, leaf=leaves[index], proof=proof,
                                               root=root)
            assert not merkle.verify_inclusion(h, index=index, size=size, leaf=leaves[other], proof=proof,
                                               root=root)
    # Every consistency proof verifies against the reference roots.
    for m in range(1, size + 1):
        proof = merkle.consistency_proof(h, leaves, m)
        root1 = reference_root(h, leaves[:m])
        assert merkle.verify_consistency(h, size1=m, size2=size, root1=root1, root2=root, proof=proof)
        if m < size:
            assert not merkle.verify_consistency(h, size1=m, size2=size, root1=root1, root2=root,
                                                 proof=flip(proof, len(proof) - 1, 1))
    # A compact range continued from a frontier gives the same root as a fresh one.
    head = merkle.CompactRange(h)
    for leaf in leaves[:size1]:
        head.append(leaf)
    assert head.root() == reference_root(h, leaves[:size1])
    resumed = merkle.CompactRange(h, size=size1, frontier=head.frontier)
    for leaf in leaves[size1:]:
        resumed.append(leaf)
    assert resumed.size == size and resumed.root() == root
    if size1:
        with pytest.raises(ValueError):
            merkle.CompactRange(h, size=size1, frontier=[*head.frontier, leaves[0]])
        with pytest.raises(ValueError):
            merkle.CompactRange(h, size=size1 * 2 + 1, frontier=head.frontier)


@st.composite
def tree_sizes(draw: Callable[..., Any]) -> tuple[int, int]:
    size = draw(st.integers(min_value=1, max_value=300))
    return size, draw(st.integers(min_value=0, max_value=size))


@settings(max_examples=25, deadline=None)
@given(tree_sizes(), st.binary(max_size=8))
def test_random_sha256_trees(sizes, salt):
    check_tree(SHA, *sizes, salt)


@settings(max_examples=10, deadline=None)
@given(tree_sizes(), st.binary(max_size=8))
def test_random_sm3_trees(sizes, salt):
    check_tree(SM3, *sizes, salt)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 255, 256, 257, 300])
def test_edge_sizes(size):
    check_tree(SHA, size, size // 2, b"edge")


def test_sm3_is_really_sm3_and_differs_from_sha256():
    # GB/T 32905-2016 Appendix A.1.
    assert merkle.hasher("sm3")(b"abc").hex() == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0")
    assert SM3(b"x") == hashlib.new("sm3", b"x").digest()
    sm_leaves = [merkle.leaf_hash(SM3, bytes.fromhex(x)) for x in VECTORS["leaves_hex"]]
    assert sm_leaves[0] == hashlib.new("sm3", b"\x00").digest()
    for size in range(1, 9):
        sm_root = merkle.root_from_leaf_hashes(SM3, sm_leaves[:size])
        assert sm_root == reference_root(SM3, sm_leaves[:size]) != ROOTS[size - 1]
    # A proof made with one algorithm does not verify with the other.
    proof = merkle.inclusion_proof(SM3, sm_leaves, 5)
    sm_root = merkle.root_from_leaf_hashes(SM3, sm_leaves)
    assert merkle.verify_inclusion(SM3, index=5, size=8, leaf=sm_leaves[5], proof=proof, root=sm_root)
    assert not merkle.verify_inclusion(SHA, index=5, size=8, leaf=sm_leaves[5], proof=proof, root=sm_root)
    assert merkle.root_from_leaf_hashes(SM3, []) == hashlib.new("sm3", b"").digest()


def test_unknown_hash_algorithm_is_refused():
    with pytest.raises(ValueError):
        merkle.hasher("md5")
