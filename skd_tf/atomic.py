"""Files written whole or not at all: write to a temporary name beside the target, then rename (a crash or
Ctrl-C never leaves half a checkpoint, .tflite file or JSON record). One mechanism for every writer."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` with the same suffixes (``x.incoming.keras`` for ``x.keras``,
    as Keras checks them); when the block ends it is renamed to ``path`` (a file or a directory, which
    replaces the old one), and removed if the block raised."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name, dot, suffixes = path.name.partition(".")
    tmp = path.with_name(f"{name}.incoming{dot}{suffixes}")
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir():
            _remove(path)
        elif tmp.is_file():
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # writers that create private files would ship them private
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def write_bytes(path: str | os.PathLike, content: bytes) -> None:
    """``path`` holds exactly ``content`` afterwards, or is untouched."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(content)


def write_text(path: str | os.PathLike, text: str) -> None:
    """``path`` holds exactly ``text`` afterwards, or is untouched."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
