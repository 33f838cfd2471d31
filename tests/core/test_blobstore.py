"""The filesystem BlobStore: atomic writes, the missing-blob error, keys that stay inside the root.

A put that fails midway (the write, the fsync or the rename raising) must leave
the old blob as it was and no partial or temporary file behind.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from archive.blobstore import BlobNotFound, FilesystemBlobStore, InvalidBlobKey

KEY = "doc_abc/v1"
OLD = b"old ciphertext " * 100
NEW = b"new ciphertext " * 1000


@pytest.fixture
def store(tmp_path: Path) -> FilesystemBlobStore:
    return FilesystemBlobStore(tmp_path / "blobs")


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_put_get_overwrite_delete(store):
    store.put(KEY, OLD)
    assert store.get(KEY) == OLD and store.exists(KEY)
    store.put(KEY, NEW)
    assert store.get(KEY) == NEW
    assert files_under(store.root) == {KEY: NEW}  # no temporary file left behind
    store.delete(KEY)
    assert not store.exists(KEY)
    store.delete(KEY)  # deleting what is gone is fine
    store.check()
    assert files_under(store.root) == {}


def test_get_of_a_missing_key_is_blob_not_found(store):
    with pytest.raises(BlobNotFound):
        store.get("doc_none/v1")
    store.put(KEY, OLD)
    store.delete(KEY)
    with pytest.raises(BlobNotFound):
        store.get(KEY)


class Boom(OSError):
    pass


def _failing_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # a file's fsync (before the rename), not the folder's
            raise Boom("fsync failed")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _failing_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    def replace(src: Any, dst: Any) -> None:
        raise Boom("rename failed")

    monkeypatch.setattr(os, "replace", replace)


def _failing_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up halfway through the data."""
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, fh: Any):
            self.fh = fh

        def __enter__(self) -> HalfWriter:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.fh.close()

        def write(self, data: bytes) -> int:
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            raise Boom("no space left on device")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.fh, name)

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))


@pytest.mark.parametrize("break_it", [_failing_write, _failing_fsync, _failing_replace],
                         ids=["write", "fsync", "rename"])
def test_a_put_that_fails_midway_leaves_the_old_blob_and_no_partial_file(store, monkeypatch, break_it):
    store.put(KEY, OLD)
    other = "doc_xyz/v2"
    with monkeypatch.context() as m:
        break_it(m)
        with pytest.raises(Boom):
            store.put(KEY, NEW)
        with pytest.raises(Boom):
            store.put(other, NEW)  # a new key: nothing appears under it
    assert store.get(KEY) == OLD
    assert not store.exists(other)
    assert files_under(store.root) == {KEY: OLD}  # no temporary or torn file anywhere
    store.put(KEY, NEW)  # and the store still works
    assert store.get(KEY) == NEW


BAD_KEYS = [
    "../escape", "doc_abc/../../escape", "doc_abc/..", "/etc/passwd", "doc_abc//v1", "doc_abc/./v1",
    "./doc_abc", "doc_abc/.hidden", "", "doc_abc/v1/", "DOC_ABC/v1", "doc abc/v1", "doc_abc\\..\\x",
    "doc_abc/v1\n", "doc_abc/v1\x00", "a/b/c/d/e", "~/x", "doc_abc/%2e%2e",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_keys_cannot_leave_the_root(store, tmp_path, key):
    for call in (lambda: store.put(key, b"x"), lambda: store.get(key), lambda: store.exists(key),
                 lambda: store.delete(key)):
        with pytest.raises(InvalidBlobKey):
            call()
        with pytest.raises(ValueError):  # still a ValueError, as callers expect
            call()
    assert not (tmp_path / "escape").exists()
    assert not store.root.exists() or files_under(store.root) == {}


def test_a_symlink_in_the_store_cannot_lead_out_of_it(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "v1").write_bytes(b"secret elsewhere")
    store.root.mkdir(parents=True)
    (store.root / "doc_evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidBlobKey):
        store.get("doc_evil/v1")
    with pytest.raises(InvalidBlobKey):
        store.put("doc_evil/v2", b"x")
    assert sorted(p.name for p in outside.iterdir()) == ["v1"]
