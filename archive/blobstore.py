"""Where encrypted blobs (issued documents) live: a small protocol, one filesystem
implementation. Blobs are already ciphertext when they arrive here.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Protocol


class BlobNotFound(KeyError):
    """No blob under that key (backends translate their own errors into this)."""


class InvalidBlobKey(ValueError):
    """A key that is not one Shouhu makes, or that would lead out of the store."""


class BlobStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def check(self) -> None: ...


_KEY = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,80}(/[a-z0-9][a-z0-9_\-.]{0,80}){0,3}$")


class FilesystemBlobStore:
    """Blobs as files under one folder; writes are atomic and durable.

    A blob is written to a temporary file in the same folder, fsynced, renamed
    over its final name, and the folder is fsynced: a crash leaves either the
    old state or the whole new blob, never a torn file.
    """

    def __init__(self, root: Path):
        self.root = root

    def _path(self, key: str) -> Path:
        # The pattern admits no absolute path and no empty, '.' or '..' segment; a symlink
        # placed in the folder could still lead out of it, so the resolved path must stay inside.
        if not _KEY.fullmatch(key):
            raise InvalidBlobKey("invalid blob key")
        path = self.root / key
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise InvalidBlobKey("invalid blob key")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def check(self) -> None:
        """Raise OSError unless the store can be written and read back."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = "healthcheck/probe"
        self.put(probe, b"ok")
        if self.get(probe) != b"ok":
            raise OSError("blob store read-back mismatch")
        self.delete(probe)
