"""The `asr` program runs under tcmalloc where it is installed (asr.allocator), in real subprocesses."""
import os
import subprocess
import sys

import pytest

from asr.allocator import find_tcmalloc
from conftest import ROOT

needs_tcmalloc = pytest.mark.skipif(find_tcmalloc() is None,
                                    reason="tcmalloc not installed (scripts/setup.sh installs libtcmalloc-minimal4)")
PROBE = ("import os, sys; from asr.allocator import reexec_under_tcmalloc, current; reexec_under_tcmalloc(); "
         "print(os.getpid(), current(), sys.argv[1:])")


def _probe(**env: str) -> tuple[subprocess.Popen, list[str]]:
    clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASR_ALLOCATOR", "ASR_ALLOCATOR_REEXEC")}
    proc = subprocess.Popen([sys.executable, "-c", PROBE, "a b", "--flag"], stdout=subprocess.PIPE, text=True,
                            env={**clean, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    return proc, out.split(maxsplit=2)


@needs_tcmalloc
def test_reexecutes_itself_under_tcmalloc_keeping_pid_and_arguments():
    proc, (pid, allocator, args) = _probe()
    assert allocator == "tcmalloc"
    assert int(pid) == proc.pid  # the same process: torchrun and kill -9 still see the PID they started
    assert args.strip() == "['a b', '--flag']"


def test_system_allocator_on_request_and_no_loop_after_a_failed_preload():
    _, (_, allocator, _) = _probe(ASR_ALLOCATOR="system")
    assert allocator == "glibc"
    # the re-executed process found no tcmalloc loaded (a library ld.so could not preload): it runs on, once
    _, (_, allocator, _) = _probe(ASR_ALLOCATOR_REEXEC="1")
    assert allocator == "glibc"

