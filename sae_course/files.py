"""Atomic file writes: a temporary file in the same folder, then a rename.

A reader (or a crash in the middle of a write) never sees half a file: either the old file
or the new one is there. Weights are always safetensors, never pickles.

`write_folder_atomic` does the same for a folder of files that belong together (an SAE's
cfg.json and weights): it builds the new folder beside the old one and swaps them.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()
"""The process's umask, read once: temporary files get the mode a plain open() would give."""


def _temporary_beside(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes it private (0600)
    return tmp


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    tmp = _temporary_beside(path)
    try:
        Path(tmp).write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def save_safetensors_atomic(
    tensors: dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Save tensors (moved to the CPU, made contiguous) as safetensors at `path` atomically."""
    tmp = _temporary_beside(path)
    try:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata
        )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


NEW_FOLDER_TAG = ".new-"
OLD_FOLDER_TAG = ".old-"


def temporary_files(folder: Path) -> list[Path]:
    """The temporary files that interrupted atomic writes left in `folder`."""
    return sorted(folder.glob(".*.tmp")) if folder.is_dir() else []


def stale_folders(folder: Path) -> list[Path]:
    """Siblings of `folder` left by an interrupted `write_folder_atomic` (new or old copies)."""
    parent = folder.parent
    if not parent.is_dir():
        return []
    return sorted(
        p for tag in (NEW_FOLDER_TAG, OLD_FOLDER_TAG)
        for p in parent.glob(f".{folder.name}{tag}*") if p.is_dir()
    )


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this file system cannot swap
        return False
    raise OSError(errno, os.strerror(errno), str(b))


def write_folder_atomic(folder: Path, write: Callable[[Path], None]) -> None:
    """Replace `folder` as a whole with what `write(tmp)` puts in a fresh sibling folder.

    Readers see the old folder or the new one, never a mix. On Linux the two folders are
    swapped in one step; elsewhere the old folder is renamed aside first, so a crash between
    the two renames leaves it as `.<name>.old-*` beside `folder`. Copies that earlier
    interrupted writes left beside `folder` are removed first (one writer per folder).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_folders(folder):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}{NEW_FOLDER_TAG}"))
    os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes it private (0700)
    try:
        write(tmp)
        if not folder.exists():
            os.rename(tmp, folder)
            return
        if not _exchange(tmp, folder):
            old = tmp.with_name(tmp.name.replace(NEW_FOLDER_TAG, OLD_FOLDER_TAG, 1))
            os.rename(folder, old)
            os.rename(tmp, folder)
            tmp = old
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
