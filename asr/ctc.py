"""Our CTC loss: forward-backward over the blank-extended label sequence with the exact gradient.

Semantics are those of `torch.nn.functional.ctc_loss` (shapes, reductions, zero_infinity), but
the gradient is the true one with respect to `log_probs`: minus the state occupancy gamma.
(PyTorch's returns exp(log_probs) - gamma, which equals ours only after a log_softmax.)

Two engines compute the same thing:
- CPU: a numba kernel in probability space with per-frame rescaling (Graves 2012, sec. 7.3.1):
  each frame's label probabilities are shifted by their maximum before exp, alpha is renormalised
  every frame and the log of the scale factors is summed, so nothing underflows and each lattice
  cell costs a few multiply-adds instead of three exp and a log. Blank and label states are held in
  separate rows, so each frame's update is a branch-free, vectorised loop. Gradient fused: beta is
  run backwards and multiplied into alpha as it goes; parallel over the batch.
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

    @numba.njit(parallel=True, fastmath={"contract", "arcp", "reassoc"}, cache=True)
    def _ctc_cpu(lp, targets, tgt_offsets, in_lens, tgt_lens, blank, scale, want_grad, losses, grad):  # pragma: no cover
        """lp (T, N, C) float; losses (N,) float64; grad (T, N, C) written with -gamma * scale[n] where want_grad.

        The 2S+1 lattice states are kept as two rows: blank states (k = 0..S, state 2k) and label
        states (k = 1..S, state 2k-1), so that every step is a branch-free loop over k that the
        compiler vectorises: label k's state is entered from itself, from the blank before it, and
        from label k-1 when `skip[k]` (the two labels differ).
        """
        n_batch, n_classes = lp.shape[1], lp.shape[2]
        for n in numba.prange(n_batch):
            T = in_lens[n]
            S = tgt_lens[n]
            off = tgt_offsets[n]
            cls = np.empty(S + 1, np.int64)  # emitters: 0 is the blank, 1..S the labels
            cls[0] = blank
            for k in range(S):
                cls[k + 1] = targets[off + k]
            skip = np.zeros(S + 2, np.float64)  # 1.0 where label k may follow label k-1 directly
            need = S
            for k in range(2, S + 1):
                if cls[k] != cls[k - 1]:
                    skip[k] = 1.0
                else:
                    need += 1
            if T == 0:
                losses[n] = 0.0 if S == 0 else np.inf
                continue
            if T < need:
                losses[n] = np.inf
                continue
            ab = np.zeros((T, S + 1), np.float64)  # alpha of blank states, renormalised every frame
            al = np.zeros((T, S + 2), np.float64)  # alpha of label states (index 0 and S+1 stay 0)
            y = np.empty((T, S + 2), np.float64)  # exp(lp - frame max), kept for the backward pass
            e = np.empty(n_classes, np.float64)
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
                if 3 * n_classes < 2 * (S + 1):  # fewer exps: each class once, then gathered
                    for c in range(n_classes):
                        e[c] = math.exp(lp[t, n, c] - m)
                    for k in range(S + 1):
                        y[t, k] = e[cls[k]]
                else:
                    for k in range(S + 1):
                        y[t, k] = math.exp(lp[t, n, cls[k]] - m)
                y[t, S + 1] = 0.0
                y0 = y[t, 0]
                if t == 0:
                    ab[0, 0] = y0
                    if S >= 1:
                        al[0, 1] = y[0, 1]
                else:
                    pb = ab[t - 1]
                    pl = al[t - 1]
                    ab[t, 0] = pb[0] * y0
                    for k in range(1, S + 1):
                        ab[t, k] = (pb[k] + pl[k]) * y0
                    for k in range(1, S + 1):
                        al[t, k] = (pl[k] + pb[k - 1] + skip[k] * pl[k - 1]) * y[t, k]
                total = 0.0
                for k in range(S + 1):
                    total += ab[t, k] + al[t, k]
                if total <= 0.0:
                    log_p = -np.inf
                    break
                inv = 1.0 / total
                for k in range(S + 1):
                    ab[t, k] *= inv
                    al[t, k] *= inv
                log_p += m + math.log(total)
            if log_p == -np.inf:
                losses[n] = np.inf
                continue
            end = ab[T - 1, S] + al[T - 1, S]
            if end <= 0.0:
                losses[n] = np.inf
                continue
            losses[n] = -(log_p + math.log(end))
            if not want_grad:
                continue
            # beta' (excluding frame t's own emission), renormalised every frame;
            # gamma_t(state) = alpha_t beta'_t / sum over states of alpha_t beta'_t, whatever the scalings
            bb = np.zeros(S + 1, np.float64)
            bl = np.zeros(S + 2, np.float64)
            ub = np.zeros(S + 1, np.float64)
            ul = np.zeros(S + 2, np.float64)
            bb[S] = 1.0
            if S >= 1:
                bl[S] = 1.0
            for t in range(T - 1, -1, -1):
                norm = 0.0
                for k in range(S + 1):
                    norm += ab[t, k] * bb[k] + al[t, k] * bl[k]
                if norm <= 0.0:
                    break
                inv = scale[n] / norm
                g0 = 0.0
                for k in range(S + 1):
                    g0 += ab[t, k] * bb[k]
                grad[t, n, blank] -= g0 * inv
                for k in range(1, S + 1):
                    grad[t, n, cls[k]] -= al[t, k] * bl[k] * inv
                if t == 0:
                    break
                y0 = y[t, 0]
                for k in range(S + 1):
                    ub[k] = y0 * bb[k]
                for k in range(S + 2):
                    ul[k] = y[t, k] * bl[k]
                total = 0.0
                for k in range(S + 1):
                    b = ub[k] + ul[k + 1]
                    bb[k] = b
                    total += b
                for k in range(1, S + 1):
                    b = ul[k] + ub[k] + skip[k + 1] * ul[k + 1]
                    bl[k] = b
                    total += b
                if total <= 0.0:
                    break
                inv = 1.0 / total
                for k in range(S + 1):
                    bb[k] *= inv
                    bl[k] *= inv


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
    """Losses and the gradient in one pass. With a sum or mean reduction the gradient is saved already scaled by
    the reduction's weights, so the usual `loss.backward()` hands that buffer to autograd as it is, without a
    pass over the (T, N, C) gradient."""

    @staticmethod
    def forward(ctx, log_probs, targets, input_lengths, target_lengths, blank, engine, reduction, zero_infinity):
        want_grad = log_probs.requires_grad
        n = log_probs.shape[1]
        if reduction == "mean":
            weights = 1.0 / (n * target_lengths.clamp(min=1).double())
        else:
            weights = torch.ones(n, dtype=torch.float64)
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
            losses = np.zeros(n, np.float64)
            grad = np.zeros(lp.shape if want_grad else (1, 1, 1), np.float64 if lp.dtype == np.float64 else np.float32)
            scale = weights.numpy() if reduction != "none" else np.ones(n)
            _ctc_cpu(lp, flat, offsets, input_lengths.cpu().numpy().astype(np.int64), tl, blank, scale, want_grad,
                     losses, grad)
            loss_t = torch.from_numpy(losses)
            grad_t = torch.from_numpy(grad) if want_grad else None
        else:
            padded = _as_padded(targets.to(log_probs.device).long(), target_lengths)
            loss_t, grad_t = _ctc_torch(log_probs.detach(), padded, input_lengths.to(log_probs.device),
                                        target_lengths.to(log_probs.device), blank, want_grad)
            weights = weights.to(log_probs.device)
            if grad_t is not None and reduction != "none":
                grad_t = grad_t * weights[None, :, None].to(grad_t.dtype)
        if zero_infinity:
            loss_t = torch.where(torch.isinf(loss_t), torch.zeros_like(loss_t), loss_t)
        if reduction != "none":
            loss_t = (loss_t * weights.to(loss_t.device)).sum()
        if grad_t is not None:
            ctx.save_for_backward(grad_t.to(log_probs.dtype))
        ctx.reduced = reduction != "none"
        return loss_t.to(log_probs.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        if not ctx.reduced:
            grad = grad * grad_out[None, :, None].to(grad.dtype)
        elif grad_out.device.type != "cpu" or float(grad_out) != 1.0:
            grad = grad * grad_out.to(grad.dtype)
        return grad, None, None, None, None, None, None, None


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
    losses = _CTCFunction.apply(log_probs, targets, in_lens, tgt_lens, blank, engine, reduction, zero_infinity)
    return losses.squeeze(0) if unbatched and reduction == "none" else losses
