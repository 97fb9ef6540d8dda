"""Writing files so that a crash, a full disk or a bad path never leaves half a file behind."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def replace_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """`write(tmp)` beside `path`, then rename it into place: `path` holds the old file or the new
    one, never part of one. A failed write removes its temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    replace_atomically(path, lambda tmp: tmp.write_text(text))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    replace_atomically(path, lambda tmp: tmp.write_bytes(data))
