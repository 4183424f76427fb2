"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half of one."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8",
                 newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside `path`; when the block succeeds, fsync it and rename it over `path`.

    The temporary file is a new inode, so a hard-linked copy of `path` elsewhere keeps its old contents.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # not mkstemp: keep the umask's permissions
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_text_atomic(path: str | Path, text: str) -> None:
    """`Path.write_text`, atomically (UTF-8)."""
    with atomic_write(path) as f:
        f.write(text)
