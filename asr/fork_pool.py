"""Work shared out to forked processes that inherit what cannot be pickled (a loaded KenLM model).

The shared object is set in a module global just before the pool forks, so each worker finds it in its copy of
the parent's memory; only the function's items travel through pickles. Without fork (or with one process) the
same calls run in this process.
"""
from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from typing import Any

_SHARED: tuple[Callable, Any] | None = None


def fork_map(fn: Callable[[Any, Any], Any], shared: Any, items: Sequence, processes: int, chunksize: int = 1) -> list:
    """`[fn(shared, item) for item in items]`, over `processes` forked workers when more than one."""
    global _SHARED
    if processes <= 1 or "fork" not in mp.get_all_start_methods():
        return [fn(shared, item) for item in items]
    _SHARED = (fn, shared)
    try:
        with mp.get_context("fork").Pool(processes) as pool:
            return pool.map(_call, items, chunksize=chunksize)
    finally:
        _SHARED = None


def _call(item: Any) -> Any:
    fn, shared = _SHARED
    return fn(shared, item)
