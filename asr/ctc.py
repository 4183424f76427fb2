"""Our CTC loss: forward-backward over the blank-extended label sequence with the exact gradient.

Semantics are those of `torch.nn.functional.ctc_loss` (shapes, reductions, zero_infinity), but
the gradient is the true one with respect to `log_probs`: minus the state occupancy gamma.
(PyTorch's returns exp(log_probs) - gamma, which equals ours only after a log_softmax.)

Two engines compute the same thing:
- CPU: a numba kernel in probability space with per-frame rescaling (Graves 2012, sec. 7.3.1):
  each frame's label probabilities are shifted by their maximum before exp, alpha is renormalised
  every frame and the log of the scale factors is summed, so nothing underflows and each lattice
  cell costs a few multiply-adds instead of three exp and a log. Gradient fused: beta is run
  backwards in two rows and multiplied into alpha as it goes; parallel over the batch.
- Any device (CUDA): the same recursions in log space, vectorised over batch and label states with
  torch operations, one step per frame.
"""
from __future__ import annotations

import math

import numpy as np
import torch

try:
    import numba

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a core dependency; this keeps CUDA-only installs working
    _HAVE_NUMBA = False


# ------------------------------------------------------------------ CPU kernel (numba)
if _HAVE_NUMBA:

    @numba.njit(parallel=True, fastmath={"contract", "arcp"}, cache=True)
    def _ctc_cpu(lp, targets, tgt_offsets, in_lens, tgt_lens, blank, want_grad, losses, grad):  # pragma: no cover
        """lp (T, N, C) float; losses (N,) float64; grad (T, N, C) written with -gamma where want_grad."""
        n_batch = lp.shape[1]
        for n in numba.prange(n_batch):
            T = in_lens[n]
            S = tgt_lens[n]
            L = 2 * S + 1
            off = tgt_offsets[n]
            # distinct emitters: 0 is the blank, 1..S the labels; state s emits emitter (s + 1) // 2 * (s % 2)
            cls = np.empty(S + 1, np.int64)
            cls[0] = blank
            for k in range(S):
                cls[k + 1] = targets[off + k]
            em = np.empty(L, np.int64)
            for s in range(L):
                em[s] = (s + 1) // 2 if s % 2 == 1 else 0
            skip = np.zeros(L + 2, np.bool_)  # state s may be reached from s-2
            need = S
            for s in range(3, L, 2):
                skip[s] = cls[em[s]] != cls[em[s - 2]]
                if not skip[s]:
                    need += 1
            if T == 0:
                losses[n] = 0.0 if S == 0 else np.inf
                continue
            if T < need:
                losses[n] = np.inf
                continue
            alpha = np.zeros((T, L), np.float64)
            y = np.empty((T, S + 1), np.float64)  # exp(lp - frame max), kept for the backward pass
            log_p = 0.0
            for t in range(T):
                m = -np.inf
                for k in range(S + 1):
                    v = lp[t, n, cls[k]]
                    if v > m:
                        m = v
                if m == -np.inf:
                    log_p = -np.inf
                    break
                for k in range(S + 1):
                    y[t, k] = math.exp(lp[t, n, cls[k]] - m)
                # reachable states: from the start s <= 2t + 1; to the end in time s >= L - 2(T - t)
                lo = max(0, L - 2 * (T - t))
                hi = min(L, 2 * t + 2)
                total = 0.0
                if t == 0:
                    for s in range(lo, hi):
                        a = y[0, em[s]]
                        alpha[0, s] = a
                        total += a
                else:
                    prev = alpha[t - 1]
                    for s in range(lo, hi):
                        a = prev[s]
                        if s >= 1:
                            a += prev[s - 1]
                        if skip[s]:
                            a += prev[s - 2]
                        a *= y[t, em[s]]
                        alpha[t, s] = a
                        total += a
                if total <= 0.0:
                    log_p = -np.inf
                    break
                inv = 1.0 / total
                for s in range(lo, hi):
                    alpha[t, s] *= inv
                log_p += m + math.log(total)
            if log_p == -np.inf:
                losses[n] = np.inf
                continue
            end = alpha[T - 1, L - 1] + (alpha[T - 1, L - 2] if L >= 2 else 0.0)
            if end <= 0.0:
                losses[n] = np.inf
                continue
            losses[n] = -(log_p + math.log(end))
            if not want_grad:
                continue
            # beta' (excluding frame t's own emission), two rows, renormalised every frame;
            # gamma_t(s) = alpha_t(s) beta'_t(s) / sum_s alpha_t(s) beta'_t(s), whatever the scalings
            beta = np.zeros(L + 2, np.float64)
            nxt = np.zeros(L + 2, np.float64)
            beta[L - 1] = 1.0
            if L >= 2:
                beta[L - 2] = 1.0
            for t in range(T - 1, -1, -1):
                lo = max(0, L - 2 * (T - t))
                hi = min(L, 2 * t + 2)
                norm = 0.0
                for s in range(lo, hi):
                    norm += alpha[t, s] * beta[s]
                if norm <= 0.0:
                    break
                inv = 1.0 / norm
                for s in range(lo, hi):
                    g = alpha[t, s] * beta[s]
                    if g != 0.0:
                        grad[t, n, cls[em[s]]] -= g * inv
                if t == 0:
                    break
                # beta'_{t-1}(s) = sum over successors r in {s, s+1, s+2} of y_t(r) beta'_t(r)
                lo_prev = max(0, L - 2 * (T - t + 1))
                total = 0.0
                for s in range(lo, hi):
                    beta[s] *= y[t, em[s]]
                for s in range(lo_prev, min(L, 2 * t)):
                    b = beta[s] + beta[s + 1]
                    if skip[s + 2]:
                        b += beta[s + 2]
                    nxt[s] = b
                    total += b
                if total <= 0.0:
                    break
                inv = 1.0 / total
                for s in range(L + 2):
                    beta[s] = 0.0
                for s in range(lo_prev, min(L, 2 * t)):
                    beta[s] = nxt[s] * inv


# ------------------------------------------------------------------ any device (torch, log space)
_NEG = -1e30


def _logsumexp3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    m = torch.maximum(torch.maximum(a, b), c)
    m_safe = torch.where(m <= _NEG / 2, torch.zeros_like(m), m)
    out = m_safe + torch.log(torch.exp(a - m_safe) + torch.exp(b - m_safe) + torch.exp(c - m_safe))
    return torch.where(m <= _NEG / 2, torch.full_like(m, _NEG), out)


def _ctc_torch(lp: torch.Tensor, targets: torch.Tensor, in_lens: torch.Tensor, tgt_lens: torch.Tensor,
               blank: int, want_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Vectorised log-space forward-backward; returns (losses (N,), -gamma (T, N, C) or None)."""
    T, N, C = lp.shape
    S = targets.shape[1]
    L = 2 * S + 1
    dev = lp.device
    work = lp.double() if lp.dtype == torch.float64 else lp.float()
    lab = torch.full((N, L), blank, dtype=torch.long, device=dev)
    if S:
        lab[:, 1::2] = targets
    s_idx = torch.arange(L, device=dev)
    valid_state = s_idx[None, :] < (2 * tgt_lens[:, None] + 1)
    skip = torch.zeros(N, L, dtype=torch.bool, device=dev)
    if L > 2:
        skip[:, 2:] = (lab[:, 2:] != lab[:, :-2]) & (lab[:, 2:] != blank)
    emit = work.gather(2, lab[None].expand(T, N, L)).clamp(min=_NEG)  # (T, N, L); -inf kept finite
    emit = emit.masked_fill(~valid_state[None], _NEG)
    neg = torch.full((N, 1), _NEG, dtype=work.dtype, device=dev)

    alphas = torch.empty(T, N, L, dtype=work.dtype, device=dev)
    a = torch.full((N, L), _NEG, dtype=work.dtype, device=dev)
    a[:, 0] = emit[0, :, 0]
    if L > 1:
        a[:, 1] = emit[0, :, 1]
    alphas[0] = a
    for t in range(1, T):
        prev1 = torch.cat([neg, a[:, :-1]], dim=1)
        prev2 = torch.cat([neg, neg, a[:, :-2]], dim=1)[:, :L].masked_fill(~skip, _NEG)
        a_new = _logsumexp3(a, prev1, prev2) + emit[t]
        a = torch.where((t < in_lens)[:, None], a_new, a)
        alphas[t] = a
    last = 2 * tgt_lens
    a_end = a.gather(1, last[:, None]).squeeze(1)
    a_end2 = a.gather(1, (last - 1).clamp(min=0)[:, None]).squeeze(1)
    a_end2 = torch.where(tgt_lens > 0, a_end2, torch.full_like(a_end2, _NEG))
    log_p = torch.logaddexp(a_end, a_end2)
    losses = torch.where(log_p <= _NEG / 2, torch.full_like(log_p, math.inf), -log_p)
    no_frames = torch.where(tgt_lens == 0, torch.zeros_like(losses), torch.full_like(losses, math.inf))
    losses = torch.where(in_lens == 0, no_frames, losses)  # nothing to emit: P(empty) = 1
    if not want_grad:
        return losses, None

    # beta (including frame t's emission), run from each sequence's own last frame
    b = torch.full((N, L), _NEG, dtype=work.dtype, device=dev)
    grad = torch.zeros(T, N, C, dtype=work.dtype, device=dev)
    end_mask = (s_idx[None, :] == last[:, None]) | ((s_idx[None, :] == last[:, None] - 1) & (tgt_lens[:, None] > 0))
    skip_next = torch.cat([skip[:, 2:], torch.zeros(N, 2, dtype=torch.bool, device=dev)], dim=1)[:, :L]
    for t in range(T - 1, -1, -1):
        is_last = (t == in_lens - 1)[:, None]
        active = (t < in_lens)[:, None]
        nxt1 = torch.cat([b[:, 1:], neg], dim=1)
        nxt2 = torch.cat([b[:, 2:], neg, neg], dim=1)[:, :L].masked_fill(~skip_next, _NEG)
        b_step = _logsumexp3(b, nxt1, nxt2) + emit[t]
        b_init = torch.where(end_mask, emit[t], torch.full_like(b, _NEG))
        b = torch.where(is_last, b_init, torch.where(active, b_step, b))
        log_gamma = alphas[t] + b - emit[t] - log_p[:, None]
        gamma = torch.where(active & valid_state & (log_gamma > _NEG / 2), log_gamma.exp(), torch.zeros_like(b))
        grad[t].scatter_add_(1, lab, -gamma)
    grad = torch.where(torch.isfinite(losses)[None, :, None], grad, torch.zeros_like(grad))
    return losses, grad


# ------------------------------------------------------------------ autograd glue
def _as_padded(targets: torch.Tensor, tgt_lens: torch.Tensor) -> torch.Tensor:
    if targets.dim() == 2:
        return targets
    width = int(tgt_lens.max()) if tgt_lens.numel() else 0
    mask = torch.arange(width, device=targets.device)[None, :] < tgt_lens.to(targets.device)[:, None]
    out = torch.zeros(mask.shape, dtype=torch.long, device=targets.device)
    out[mask] = targets  # row-major fill: the concatenation order
    return out


class _CTCFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_probs, targets, input_lengths, target_lengths, blank, engine):
        want_grad = log_probs.requires_grad
        if engine == "numba":
            lp = log_probs.detach().contiguous().numpy()
            tl = target_lengths.cpu().numpy().astype(np.int64)
            if targets.dim() == 2:
                width = torch.arange(targets.shape[1], device=targets.device)
                flat = targets[width[None, :] < target_lengths.to(targets.device)[:, None]]
            else:
                flat = targets
            flat = flat.cpu().numpy().astype(np.int64)
            offsets = (np.cumsum(tl) - tl).astype(np.int64)
            losses = np.zeros(lp.shape[1], np.float64)
            grad = np.zeros(lp.shape, np.float64 if lp.dtype == np.float64 else np.float32) if want_grad else np.zeros((1, 1, 1), lp.dtype)
            _ctc_cpu(lp, flat, offsets, input_lengths.cpu().numpy().astype(np.int64), tl, blank, want_grad, losses, grad)
            loss_t = torch.from_numpy(losses).to(log_probs.dtype)
            grad_t = torch.from_numpy(grad) if want_grad else None
        else:
            padded = _as_padded(targets.to(log_probs.device).long(), target_lengths)
            loss_t, grad_t = _ctc_torch(log_probs.detach(), padded, input_lengths.to(log_probs.device),
                                        target_lengths.to(log_probs.device), blank, want_grad)
            loss_t = loss_t.to(log_probs.dtype)
        if grad_t is not None:
            grad_t = grad_t.to(log_probs.dtype)
            ctx.save_for_backward(grad_t)
        return loss_t

    @staticmethod
    def backward(ctx, grad_losses):
        (grad,) = ctx.saved_tensors
        return grad * grad_losses[None, :, None].to(grad.dtype), None, None, None, None, None


def _lengths(x, n: int, device) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.long)
    if t.dim() == 0:
        t = t.expand(n)
    return t.to(device)


def ctc_loss(log_probs: torch.Tensor, targets: torch.Tensor, input_lengths, target_lengths, blank: int = 0,
             reduction: str = "mean", zero_infinity: bool = False, engine: str = "auto") -> torch.Tensor:
    """CTC loss with the semantics of `torch.nn.functional.ctc_loss` and the exact gradient.

    log_probs (T, N, C) or (T, C); targets padded (N, S) or concatenated 1-D; lengths as tensors or
    sequences. `engine`: "numba" (CPU kernel), "torch" (vectorised, any device) or "auto".
    """
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', not {reduction!r}")
    unbatched = log_probs.dim() == 2
    if unbatched:
        log_probs = log_probs.unsqueeze(1)
        targets = targets.reshape(1, -1)
    T, N, C = log_probs.shape
    in_lens = _lengths(input_lengths, N, "cpu")
    tgt_lens = _lengths(target_lengths, N, "cpu")
    if in_lens.numel() != N or tgt_lens.numel() != N:
        raise ValueError(f"expected {N} input and target lengths, got {in_lens.numel()} and {tgt_lens.numel()}")
    if (in_lens > T).any():
        raise ValueError(f"input_lengths must be at most the {T} frames of log_probs")
    if not 0 <= blank < C:
        raise ValueError(f"blank index {blank} is out of range for {C} classes")
    if engine == "auto":
        engine = "numba" if _HAVE_NUMBA and log_probs.device.type == "cpu" else "torch"
    if engine == "numba" and log_probs.device.type != "cpu":
        raise ValueError("the numba engine runs on the CPU; use engine='torch' for CUDA tensors")
    if targets.dim() == 1 and targets.numel() != int(tgt_lens.sum()):
        raise ValueError("concatenated targets must have sum(target_lengths) elements")
    losses = _CTCFunction.apply(log_probs, targets, in_lens, tgt_lens, blank, engine)
    if zero_infinity:
        losses = torch.where(torch.isinf(losses), torch.zeros_like(losses), losses)
    if reduction == "none":
        return losses.squeeze(0) if unbatched else losses
    if reduction == "sum":
        return losses.sum()
    return (losses / tgt_lens.to(losses.device).clamp(min=1).to(losses.dtype)).mean()
