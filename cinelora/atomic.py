"""Atomic writes, the one implementation every writer uses: a file or folder is written under a hidden
temporary name beside its target, then renamed over it, so a killed process leaves the old version or the new
one (and at most a stray hidden temporary), never a half-written file. Temporary names start with "." and
never match a target's own glob (`step_*`, `*.csv`)."""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


def _sibling(path: Path, kind: str) -> Path:
    """A hidden, unique sibling name that keeps the suffix (ffmpeg picks its container by it)."""
    return path.with_name(f".{path.stem}.{kind}-{secrets.token_hex(4)}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path for a writer that needs a file name (ffmpeg, safetensors); on success it
    replaces `path` (its folder is created first); on error it is removed."""
    path = Path(path)
    tmp = _sibling(path, "tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as err:  # name the file the caller asked for, not the temporary
        raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically, fsynced before the rename."""
    with atomic_path(path) as tmp:
        # os.open with 0o666 keeps the usual umask-derived mode (mkstemp would leave results at 0600)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text, newlines kept as given."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(folder: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder to write into; on success it replaces `folder` in two renames."""
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} exists; pass overwrite=True (the CLI's --force) to replace it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(folder, "tmp")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = _sibling(folder, "old")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def remove_temporaries(folder: str | Path) -> None:
    """Remove what killed writers left in `folder` and below: hidden temporaries of `atomic_path` and
    `atomic_directory` (`.<stem>.tmp-<hex><suffix>`, `.<name>.old-<hex>`)."""
    for stray in sorted(Path(folder).rglob(".*.tmp-*")) + sorted(Path(folder).rglob(".*.old-*")):
        if stray.is_dir():
            shutil.rmtree(stray, ignore_errors=True)
        else:
            stray.unlink(missing_ok=True)


__all__ = ["remove_temporaries", "atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_directory"]
