"""A GRU layer over packed sequences with a hand-written backward, for training on CPUs.

`torch.nn.GRU` on a CPU runs one small cell per time step and lets autograd differentiate each of
them: every step adds its own weight gradient into the running sum, which is most of the time of a
DeepSpeech2 training step. Here only the recurrence itself is sequential. The forward keeps the
hidden states; the backward recomputes every gate at once from them, walks back through time with
one matrix product per step, and forms the weight gradients with one matrix product over all steps.

Same parameters, gate order (r, z, n) and results as `nn.GRU` (to float tolerance), so models move
freely between the two: `DeepSpeech2` uses this for CPU training and `nn.GRU` everywhere else.
Under autocast the matrix products run in the autocast dtype and the gates and states in float32.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence


def gru_packed(rnn: nn.GRU, x: PackedSequence, sum_directions: bool = False) -> PackedSequence:
    """`rnn(x)[0]` for a single-layer `rnn` and no initial state; with `sum_directions` a bidirectional
    GRU's two directions are added instead of concatenated."""
    if rnn.num_layers != 1 or not rnn.bias:
        raise ValueError("gru_packed supports single-layer GRUs with biases")
    sd = torch.promote_types(rnn.weight_hh_l0.dtype, torch.float32)
    cd = torch.get_autocast_dtype(x.data.device.type) if torch.is_autocast_enabled(x.data.device.type) else sd
    steps = x.batch_sizes.tolist()
    outs = []
    for suffix in (["", "_reverse"] if rnn.bidirectional else [""]):
        weights = [getattr(rnn, f"{name}_l0{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        outs.append(_GRUDirection.apply(x.data, steps, bool(suffix), cd, sd, *weights))
    if len(outs) == 1:
        return x._replace(data=outs[0])
    return x._replace(data=outs[0] + outs[1] if sum_directions else torch.cat(outs, dim=1))


def _chunks(steps: list[int], reverse: bool) -> list[tuple[int, int]]:
    """(first row, rows) of each time step of the packed data, in the order the direction runs."""
    chunks, pos = [], 0
    for n in steps:
        chunks.append((pos, n))
        pos += n
    return chunks[::-1] if reverse else chunks


def _previous_rows(steps: list[int], reverse: bool) -> torch.Tensor:
    """For each packed row, the row holding its previous hidden state (len(rows) for a zero state)."""
    sizes = torch.tensor(steps)
    total = int(sizes.sum())
    offsets = torch.cumsum(sizes, 0) - sizes
    t = torch.repeat_interleave(torch.arange(len(steps)), sizes)
    i = torch.arange(total) - offsets[t]
    if not reverse:
        return torch.where(t > 0, offsets[(t - 1).clamp(min=0)] + i, total)
    nxt = (t + 1).clamp(max=len(steps) - 1)
    return torch.where((t + 1 < len(steps)) & (i < sizes[nxt]), offsets[nxt] + i, total)


class _GRUDirection(torch.autograd.Function):
    """One direction over packed rows (N, D) -> hidden states (N, H)."""

    @staticmethod
    def forward(ctx, x, steps, reverse, cd, sd, w_ih, w_hh, b_ih, b_hh):
        hidden = w_hh.shape[1]
        w_hh_t, b_hh_c = w_hh.to(cd).t().contiguous(), b_hh.to(cd)
        gi = torch.addmm(b_ih.to(cd), x.to(cd), w_ih.to(cd).t()).to(sd)
        out = x.new_empty(x.shape[0], hidden, dtype=sd)
        # forwards, sequences only end, so a step's state is the head of the previous step's output rows;
        # backwards they also begin, from zero rows of `state`
        state = h = out.new_zeros(max(steps), hidden)
        for start, n in _chunks(steps, reverse):
            h = state[:n] if reverse else h[:n]
            gh = torch.addmm(b_hh_c, h.to(cd), w_hh_t)
            g = gi[start:start + n]
            rz = torch.sigmoid_(g[:, : 2 * hidden] + gh[:, : 2 * hidden])
            n_gate = torch.tanh_(torch.addcmul(g[:, 2 * hidden:], rz[:, :hidden], gh[:, 2 * hidden:]))
            if reverse:
                torch.lerp(n_gate, h, rz[:, hidden:], out=h)
                out[start:start + n] = h
            else:
                h = torch.lerp(n_gate, h, rz[:, hidden:], out=out[start:start + n])
        ctx.save_for_backward(x, out, gi, w_ih, w_hh, b_hh)
        ctx.steps, ctx.reverse, ctx.cd, ctx.sd = steps, reverse, cd, sd
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, out, gi, w_ih, w_hh, b_hh = ctx.saved_tensors
        steps, reverse, cd, sd = ctx.steps, ctx.reverse, ctx.cd, ctx.sd
        hidden = w_hh.shape[1]
        two = 2 * hidden
        grad_out = grad_out.to(sd)
        prev = _previous_rows(steps, reverse).to(x.device)
        h_prev = torch.cat([out, out.new_zeros(1, hidden)])[prev]
        gh = torch.addmm(b_hh.to(cd), h_prev.to(cd), w_hh.to(cd).t()).to(sd)
        rz = torch.sigmoid(gi[:, :two] + gh[:, :two])
        r, z = rz[:, :hidden], rz[:, hidden:]
        n_gate = torch.tanh(torch.addcmul(gi[:, two:], r, gh[:, two:]))
        # d(pre-activation)/d(new state) of the r and z gates and of the n third of W_hh h, all steps at once
        k_n = (1 - z) * (1 - n_gate * n_gate)
        k_rz = torch.stack([gh[:, two:] * r * (1 - r) * k_n, (h_prev - n_gate) * z * (1 - z)], dim=1)
        k_hn = k_n * r
        d_gh = torch.empty_like(gh)  # d loss / d(W_hh h + b_hh); its r and z thirds are also d loss / d gi's
        d_h = torch.empty_like(out)  # d loss / d(new state)
        w_hh_c = w_hh.to(cd)
        # d loss / d(state) passed back from the later step; rows of sequences that end later stay zero
        carry = grad_out.new_zeros(max(steps), hidden)
        for start, n in _chunks(steps, reverse)[::-1]:
            rows = slice(start, start + n)
            dh = torch.add(carry[:n], grad_out[rows], out=d_h[rows])
            dg = d_gh[rows]
            torch.mul(dh[:, None], k_rz[rows], out=dg[:, :two].unflatten(1, (2, hidden)))
            torch.mul(dh, k_hn[rows], out=dg[:, two:])
            torch.addcmul(torch.mm(dg.to(cd), w_hh_c), dh, z[rows], out=carry[:n])
        d_n = d_h * k_n  # the n third of d loss / d gi
        d_rz, d_n_c = d_gh[:, :two].to(cd), d_n.to(cd)
        w_ih_c = w_ih.to(cd)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.addmm(d_rz @ w_ih_c[:two], d_n_c, w_ih_c[two:]).to(x.dtype)
        x_c = x.to(cd)
        grad_w_ih = torch.cat([d_rz.t() @ x_c, d_n_c.t() @ x_c]).to(w_ih.dtype)
        grad_w_hh = (d_gh.to(cd).t() @ h_prev.to(cd)).to(w_hh.dtype)
        grad_b_ih = torch.cat([d_gh[:, :two].sum(0), d_n.sum(0)]).to(w_ih.dtype)
        return grad_x, None, None, None, None, grad_w_ih, grad_w_hh, grad_b_ih, d_gh.sum(0).to(w_hh.dtype)
