"""A GRU layer over packed sequences with a hand-written backward, for training on CPUs.

`torch.nn.GRU` on a CPU runs one small cell per time step and lets autograd differentiate each of
them: every step adds its own weight gradient into the running sum, which is most of the time of a
DeepSpeech2 training step. Here only the recurrence itself is sequential: each time step is one
matrix product (PyTorch) and one pass of C over the gates (asr/gru_kernel.c). The forward saves the
gates; the backward walks back through time with one product and one pass a step, summing the bias
gradients as it goes, and forms the weight gradients with one matrix product over all steps.

Same parameters, gate order (r, z, n) and results as `nn.GRU` (to float tolerance), so models move
freely between the two: `DeepSpeech2` uses this for CPU training and `nn.GRU` everywhere else.
Under autocast the matrix products run in the autocast dtype (bf16), over rows padded to shapes oneDNN has
built (asr.row_padding), and the gates and states in float32.
The C kernels are built on first use with the system C compiler (`cc`, or $CC) into ~/.cache/asr/;
`kernels_ready()` says whether that worked, and training falls back to `nn.GRU` when it did not.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .row_padding import pad_rows, product_dtype

KERNEL_SOURCE = Path(__file__).with_name("gru_kernel.c")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "asr"
# the kernels' vector ISA follows the one PyTorch's own kernels use (ATEN_CPU_CAPABILITY emulates an AVX2 CPU)
ISA_FLAGS = {"AVX2": ["-mavx2", "-mfma"], "AVX512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mfma"]}
# (state dtype, product dtype) -> kernel name in gru_kernel.c
KERNEL_NAMES = {(torch.float32, torch.float32): "f32", (torch.float32, torch.bfloat16): "bf16",
                (torch.float64, torch.float64): "f64"}


def gru_packed(rnn: nn.GRU, x: PackedSequence, sum_directions: bool = False) -> PackedSequence:
    """`rnn(x)[0]` for a single-layer `rnn` and no initial state; with `sum_directions` a bidirectional
    GRU's two directions are added instead of concatenated."""
    if rnn.num_layers != 1 or not rnn.bias:
        raise ValueError("gru_packed supports single-layer GRUs with biases")
    sd = torch.promote_types(rnn.weight_hh_l0.dtype, torch.float32)
    cd = product_dtype(x.data, sd)
    if (sd, cd) not in KERNEL_NAMES or x.data.device.type != "cpu":
        raise ValueError(f"gru_packed runs on the CPU with float32, float64 or bf16 autocast, not {sd} with "
                         f"{cd} products on {x.data.device.type}")
    steps = x.batch_sizes.tolist()
    rows = pad_rows(x.data.to(cd), cd)
    outs = []
    for suffix in (["", "_reverse"] if rnn.bidirectional else [""]):
        weights = [getattr(rnn, f"{name}_l0{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        outs.append(_GRUDirection.apply(rows, steps, bool(suffix), cd, sd, *weights))
    if len(outs) == 1:
        return x._replace(data=outs[0])
    return x._replace(data=outs[0] + outs[1] if sum_directions else torch.cat(outs, dim=1))


@functools.cache
def kernels() -> ctypes.CDLL:
    """The gate kernels, compiled for this CPU on first use (cached by source and flags; about 0.3 s)."""
    isa = torch.backends.cpu.get_cpu_capability()
    flags = ["-O3", "-ffast-math", "-fopenmp-simd", "-fPIC", *ISA_FLAGS.get(isa, [])]
    compiler = os.environ.get("CC", "cc")
    source = KERNEL_SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([compiler, *flags]).encode()).hexdigest()[:16]
    lib = CACHE / f"gru_kernel-{isa.lower()}-{key}.so"
    if not lib.exists():
        try:
            CACHE.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=CACHE, suffix=".so")
            os.close(fd)
        except OSError as err:
            raise RuntimeError(f"cannot write the compiled kernels into {CACHE}: {err}") from err
        try:
            # compile and link apart: linking with -ffast-math adds crtfastmath.o, which would flush subnormals
            # to zero in the whole process as soon as the library loads
            for args in ([*flags, "-c", str(KERNEL_SOURCE), "-o", f"{tmp}.o"], ["-shared", f"{tmp}.o", "-o", tmp, "-lm"]):
                done = subprocess.run([compiler, *args], capture_output=True, text=True)
                if done.returncode:
                    raise RuntimeError(f"building {KERNEL_SOURCE.name} with {compiler} failed: {done.stderr.strip()}")
            os.replace(tmp, lib)
        except OSError as err:  # no compiler at all
            raise RuntimeError(f"building {KERNEL_SOURCE.name} needs a C compiler ({compiler}): {err}") from err
        finally:
            Path(tmp).unlink(missing_ok=True)
            Path(f"{tmp}.o").unlink(missing_ok=True)
    dll = ctypes.CDLL(str(lib))
    ptr, n = ctypes.c_void_p, ctypes.c_long
    for name in KERNEL_NAMES.values():
        getattr(dll, f"{name}_forward").argtypes = [n, n, n] + [ptr] * 8
        getattr(dll, f"{name}_backward").argtypes = [n, n, n] + [ptr] * 7
        getattr(dll, f"{name}_forward").restype = getattr(dll, f"{name}_backward").restype = None
    return dll


def kernels_ready() -> str | None:
    """None when the gate kernels build and load here, else why not (training then uses nn.GRU)."""
    try:
        kernels()
    except RuntimeError as err:
        return str(err)
    return None


def _chunks(steps: list[int], reverse: bool) -> list[tuple[int, int]]:
    """(first row, rows) of each time step of the packed data, in the order the direction runs."""
    chunks, pos = [], 0
    for n in steps:
        chunks.append((pos, n))
        pos += n
    return chunks[::-1] if reverse else chunks


class _Rows:
    """The address of row `i` of a contiguous 2-D tensor, for the kernels."""

    def __init__(self, t: torch.Tensor):
        self.base, self.stride = t.data_ptr(), t.stride(0) * t.element_size()

    def __getitem__(self, i: int) -> int:
        return self.base + i * self.stride


class _GRUDirection(torch.autograd.Function):
    """One direction over packed rows (N, D) -> hidden states (N, H)."""

    @staticmethod
    def forward(ctx, x, steps, reverse, cd, sd, w_ih, w_hh, b_ih, b_hh):
        """`x`: the packed rows in the products' dtype, perhaps followed by zero rows (gru_packed)."""
        hidden, n_rows = w_hh.shape[1], sum(steps)
        step = getattr(kernels(), f"{KERNEL_NAMES[(sd, cd)]}_forward")
        w_hh_t, b_hh_c = w_hh.to(cd).t().contiguous(), b_hh.to(cd).contiguous()
        gi = torch.addmm(b_ih.to(cd), x, w_ih.to(cd).t()).to(sd).contiguous()
        out = x.new_empty(n_rows, hidden, dtype=sd)
        out_c = out if cd == sd else torch.empty(n_rows, hidden, dtype=cd)  # the states in the products' dtype
        h_prev_c = x.new_empty(x.shape[0], hidden)  # each row's previous state, for the weight gradient
        h_prev_c[n_rows:] = 0  # gru_packed's padding rows, zero as in d_gh (backward)
        saved = out.new_empty(n_rows, 5 * hidden)  # r, z, n, W_hn h + b_hn, h_prev - n
        gh = out_c.new_empty(max(steps), 3 * hidden)
        rows = [_Rows(t) for t in (gi, out, out_c, h_prev_c, saved)]
        gi_r, out_r, out_c_r, h_prev_c_r, saved_r = rows
        prev, n_prev = 0, 0
        for start, n in _chunks(steps, reverse):
            m = min(n, n_prev)  # rows whose previous state is not zero (backwards, sequences begin)
            if m:
                torch.addmm(b_hh_c, out_c[prev:prev + m], w_hh_t, out=gh[:m])
            step(n, n_prev, hidden, gi_r[start], gh.data_ptr(), b_hh_c.data_ptr(), out_r[prev], out_r[start],
                 out_c_r[start], h_prev_c_r[start], saved_r[start])
            prev, n_prev = start, n
        ctx.save_for_backward(x, saved, h_prev_c, w_ih, w_hh)
        ctx.steps, ctx.reverse, ctx.cd, ctx.sd = steps, reverse, cd, sd
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, saved, h_prev_c, w_ih, w_hh = ctx.saved_tensors
        steps, reverse, cd, sd = ctx.steps, ctx.reverse, ctx.cd, ctx.sd
        hidden, n_rows = w_hh.shape[1], sum(steps)
        two = 2 * hidden
        step = getattr(kernels(), f"{KERNEL_NAMES[(sd, cd)]}_backward")
        grad_out = grad_out.to(sd).contiguous()
        d_gh = x.new_empty(x.shape[0], 3 * hidden)  # d loss / d(W_hh h + b_hh): r, z thirds = d gi's
        d_n = x.new_empty(x.shape[0], hidden)  # the n third of d loss / d gi
        d_gh[n_rows:], d_n[n_rows:] = 0, 0  # gru_packed's padding rows: garbage (NaN) would reach the weights
        grad_b = x.new_zeros(4 * hidden, dtype=sd)  # d b_hh, then d b_ih's n third
        # d loss / d(state) from the later step outside its product; rows of sequences that end later stay zero
        carry = grad_out.new_zeros(max(steps), hidden)
        w_hh_c = w_hh.to(cd)
        go_r, saved_r, d_gh_r, d_n_r = (_Rows(t) for t in (grad_out, saved, d_gh, d_n))
        later, n_later = 0, 0
        for start, n in _chunks(steps, reverse)[::-1]:
            m = min(n, n_later)
            mm = torch.mm(d_gh[later:later + m], w_hh_c) if m else None
            step(n, m, hidden, None if mm is None else mm.data_ptr(), go_r[start], saved_r[start], carry.data_ptr(),
                 d_gh_r[start], d_n_r[start], grad_b.data_ptr())
            later, n_later = start, n
        w_ih_c = w_ih.to(cd)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.addmm(d_gh[:, :two] @ w_ih_c[:two], d_n, w_ih_c[two:])
        grad_w_ih = torch.cat([d_gh[:, :two].t() @ x, d_n.t() @ x]).to(w_ih.dtype)
        grad_w_hh = (d_gh.t() @ h_prev_c).to(w_hh.dtype)
        grad_b_ih = torch.cat([grad_b[:two], grad_b[3 * hidden:]]).to(w_ih.dtype)
        return grad_x, None, None, None, None, grad_w_ih, grad_w_hh, grad_b_ih, grad_b[:3 * hidden].to(w_hh.dtype)
