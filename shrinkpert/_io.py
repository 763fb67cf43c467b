"""Atomic writes, checksums and provenance records.

Outputs are first written to a temporary file in the destination folder and then moved into
place with :func:`os.replace`, so a reader never sees a half-written file and an interrupted
run leaves the previous file untouched.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError, OutputExistsError

__all__ = ["atomic_path", "sha256_file", "provenance", "prepare_out_dir"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``force`` is false.
    """
    target = Path(path)
    if target.exists() and not force:
        raise OutputExistsError(
            f"{str(target)!r} already exists; pass force=True (CLI: --force) to overwrite it."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def sha256_file(path: str | os.PathLike, *, block: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def provenance(**fields) -> dict:
    """A provenance record: package version, UTC creation time and the given fields."""
    from . import __version__

    record = {
        "shrinkpert_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(fields)
    return record


def prepare_out_dir(out: str | os.PathLike, *, force: bool) -> Path:
    """Create ``out`` (a folder) or refuse, before any work: it holds files and ``force`` is false,
    it is a file, or it cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {str(out)!r} exists and is not a folder; choose another path.")
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(
            f"Output folder {str(out)!r} is not empty; pass --force to overwrite its files."
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise OutputError(f"--out {str(out)!r} cannot be written ({exc.strerror or exc}); choose a folder you can "
                          "write to.") from None
    return out
