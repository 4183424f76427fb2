"""The process's memory allocator: run `asr` under tcmalloc when it is installed.

Training allocates tensors of a new shape at every batch. glibc's malloc fragments under that: on a
2-core AVX-512 CPU the default recipe's training fell from 160 to 130 audio-s/s within 300 steps (the
same 50 batches repeated, learning rate 0: not the data, not the weights) while its memory grew by 1 GB;
under tcmalloc it held 187 audio-s/s at constant memory, with identical losses, and the whole default
recipe ran in 16.5 minutes instead of 23.5 (benchmarks/allocator.py measures both). A process cannot change
its allocator once it runs, so the command executes itself again with tcmalloc in LD_PRELOAD, as
PyTorch's own CPU launcher does (`python -m torch.backends.xeon.run_cpu --enable-tcmalloc`).
ASR_ALLOCATOR=system keeps glibc's malloc.
"""
from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

LIBRARIES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")  # Debian: libtcmalloc-minimal4, libgoogle-perftools4
_REEXECUTED = "ASR_ALLOCATOR_REEXEC"  # set in the re-executed process, so that a failed preload cannot loop


def find_tcmalloc() -> Path | None:
    """tcmalloc's shared library, from the usual library folders and this Python's own prefix (conda)."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    folders = [Path(sys.prefix) / "lib", Path("/usr/lib") / multiarch, Path("/lib") / multiarch,
               Path("/usr/lib64"), Path("/usr/lib"), Path("/usr/local/lib")]
    for folder in folders:
        for name in LIBRARIES:
            if (folder / name).is_file():
                return folder / name
    return None


def current() -> str:
    """The allocator this process runs with: "tcmalloc" or "glibc"."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "glibc"
    return "tcmalloc" if "libtcmalloc" in maps else "glibc"


def reexec_under_tcmalloc() -> None:
    """Replace this process by the same command under tcmalloc, when tcmalloc is installed and not yet loaded.

    Returns (doing nothing) on other systems, with ASR_ALLOCATOR=system, or when tcmalloc is not found.
    Call it before anything else runs: the process, its PID included, continues as the new command.
    """
    if (not sys.platform.startswith("linux") or not sys.executable
            or os.environ.get("ASR_ALLOCATOR", "tcmalloc") == "system"
            or os.environ.get(_REEXECUTED) or current() == "tcmalloc"):
        return
    lib = find_tcmalloc()
    if lib is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(p for p in (str(lib), env.get("LD_PRELOAD", "")) if p)
    env[_REEXECUTED] = "1"
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(2**40))  # no stderr report per allocation > 1 GB
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def describe() -> str:
    """One line for the training log: the allocator, and how to get tcmalloc where it is missing."""
    if current() == "tcmalloc":
        return "memory allocator: tcmalloc"
    if os.environ.get("ASR_ALLOCATOR") == "system":
        return "memory allocator: glibc malloc (ASR_ALLOCATOR=system)"
    return ("memory allocator: glibc malloc; CPU training runs 1.3-1.5x faster under tcmalloc "
            "(Debian/Ubuntu: apt-get install libtcmalloc-minimal4; scripts/setup.sh installs it)")
