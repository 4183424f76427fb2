import os
import pickle
import threading

import pytest

from asr.fork_pool import fork_map


def _use(shared, item):
    lock, offset = shared
    with lock:  # the worker's inherited copy of an object no pickle can carry
        return item + offset, os.getpid()


def test_workers_inherit_what_cannot_be_pickled_and_keep_order():
    shared = (threading.Lock(), 100)
    with pytest.raises(TypeError):
        pickle.dumps(shared)
    items = list(range(40))
    here = fork_map(_use, shared, items, processes=1)
    forked = fork_map(_use, shared, items, processes=2, chunksize=5)
    assert [v for v, _ in forked] == [v for v, _ in here] == [i + 100 for i in items]
    assert {pid for _, pid in here} == {os.getpid()} and os.getpid() not in {pid for _, pid in forked}
