"""Our CTC loss against torch.nn.functional.ctc_loss, gradcheck and brute-force enumeration."""
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asr.ctc import ctc_loss
from asr.losses import CTCLoss, get_ctc_loss

ENGINES = ["numba", "torch"]


@st.composite
def ctc_cases(draw):
    T = draw(st.integers(1, 40))
    N = draw(st.integers(1, 5))
    C = draw(st.integers(2, 8))
    S = draw(st.integers(0, 15))
    blank = draw(st.integers(0, C - 1))
    labels = [c for c in range(C) if c != blank]
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    in_lens = rng.integers(0, T + 1, N)
    in_lens[rng.integers(N)] = T
    tgt_lens = rng.integers(0, S + 1, N)
    targets = rng.choice(labels, size=(N, max(S, 1)))
    if draw(st.booleans()):  # many repeats
        targets[:, 1::2] = targets[:, ::2][:, : targets[:, 1::2].shape[1]]
    concat = draw(st.booleans())
    return dict(T=T, N=N, C=C, blank=blank, in_lens=in_lens, tgt_lens=tgt_lens, targets=targets, concat=concat,
                seed=seed, scale=draw(st.sampled_from([1.0, 5.0])))


def run_both(case, dtype, engine, reduction="none", zero_infinity=False):
    g = torch.Generator().manual_seed(case["seed"])
    logits = (torch.randn(case["T"], case["N"], case["C"], generator=g) * case["scale"]).to(dtype)
    in_lens = torch.tensor(case["in_lens"])
    tgt_lens = torch.tensor(case["tgt_lens"])
    targets = torch.tensor(case["targets"])
    if case["concat"]:
        targets = torch.cat([targets[i, : tgt_lens[i]] for i in range(case["N"])])
    out = []
    for fn in (lambda *a, **k: ctc_loss(*a, engine=engine, **k), F.ctc_loss):
        x = logits.clone().requires_grad_(True)
        loss = fn(x.log_softmax(-1), targets, in_lens, tgt_lens, blank=case["blank"], reduction=reduction,
                  zero_infinity=zero_infinity)
        weights = torch.linspace(0.5, 1.5, loss.numel(), dtype=dtype).reshape(loss.shape)
        (loss * weights).sum().backward() if reduction == "none" else loss.backward()
        out.append((loss.detach(), x.grad))
    return out


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=ctc_cases())
def test_matches_torch(engine, dtype, rtol, case):
    (ours, g_ours), (ref, g_ref) = run_both(case, dtype, engine)
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    finite = torch.isfinite(ref)
    torch.testing.assert_close(ours[finite], ref[finite], rtol=rtol, atol=rtol)
    # through log_softmax both gradients are softmax - gamma
    torch.testing.assert_close(g_ours[:, finite], g_ref[:, finite], rtol=rtol, atol=rtol)
    # frames past input_lengths get no gradient
    for n, length in enumerate(case["in_lens"]):
        assert torch.all(g_ours[length:, n] == 0)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@settings(max_examples=25, deadline=None)
@given(case=ctc_cases())
def test_reductions_and_zero_infinity(engine, reduction, case):
    (ours, g_ours), (ref, g_ref) = run_both(case, torch.float64, engine, reduction, zero_infinity=True)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
def test_gradcheck_wrt_log_probs(engine):
    torch.manual_seed(0)
    # unnormalised on purpose: the gradient must be exact for any log_probs, not only log_softmax outputs
    lp = torch.randn(10, 3, 5, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 1, 2], [3, 4, 0], [2, 0, 0]])
    fn = lambda x: ctc_loss(x, targets, torch.tensor([10, 7, 4]), torch.tensor([3, 2, 1]), reduction="sum", engine=engine)
    assert torch.autograd.gradcheck(fn, (lp,))
    fn_mean = lambda x: ctc_loss(x, targets, torch.tensor([10, 7, 4]), torch.tensor([3, 2, 1]), engine=engine)
    assert torch.autograd.gradcheck(fn_mean, (lp,))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradient_buffer_survives_upstream_weights_retained_graphs_and_accumulation(engine, reduction):
    """With a reduction the saved gradient is handed to autograd as it is: a retained graph's second backward,
    an upstream weight and accumulation into an existing .grad must still be exact."""
    torch.manual_seed(2)
    logits = torch.randn(12, 3, 6, dtype=torch.float64)
    targets, lens, tlens = torch.tensor([[1, 2, 2], [3, 4, 0], [5, 0, 0]]), torch.tensor([12, 9, 6]), torch.tensor([3, 2, 1])
    ref = logits.clone().requires_grad_(True)  # through log_softmax the two gradients agree
    F.ctc_loss(ref.log_softmax(-1), targets, lens, tlens, reduction=reduction).sum().backward()
    x = logits.clone().requires_grad_(True)
    loss = ctc_loss(x.log_softmax(-1), targets, lens, tlens, reduction=reduction, engine=engine).sum()
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward(retain_graph=True)  # accumulates a second, identical gradient
    (2.5 * loss).backward()  # and a weighted third
    torch.testing.assert_close(first, ref.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(x.grad, 4.5 * first, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("engine", ENGINES)
def test_frame_gradient_through_log_softmax_sums_to_zero(engine):
    torch.manual_seed(1)
    logits = torch.randn(50, 4, 30, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, 30, (4, 12))
    ctc_loss(logits.log_softmax(-1), targets, torch.tensor([50, 45, 40, 30]), torch.tensor([12, 10, 5, 12]),
             engine=engine).backward()
    assert logits.grad.sum(-1).abs().max() < 1e-12


def brute_force_nll(lp: np.ndarray, target: list[int], blank: int = 0) -> float:
    """-log of the sum over every length-T path that collapses to `target`."""
    T, C = lp.shape
    total = 0.0
    for path in itertools.product(range(C), repeat=T):
        collapsed = [c for i, c in enumerate(path) if c != blank and (i == 0 or path[i - 1] != c)]
        if collapsed == target:
            total += math.exp(sum(lp[t, c] for t, c in enumerate(path)))
    return -math.log(total) if total > 0 else math.inf


@pytest.mark.parametrize("engine", ENGINES)
def test_apple_lattice_by_enumeration(engine):
    """'apple' over {blank, a, p, l, e}: the double p needs a blank between, so T=5 is infeasible."""
    a, p, l, e = 1, 2, 3, 4
    target = [a, p, p, l, e]
    rng = np.random.default_rng(0)
    for T in (5, 6, 7):
        lp = torch.from_numpy(rng.normal(size=(T, 5))).log_softmax(-1)
        ours = ctc_loss(lp, torch.tensor(target), T, 5, reduction="none", engine=engine).item()
        expected = brute_force_nll(lp.numpy(), target)
        if T == 5:
            assert math.isinf(ours) and math.isinf(expected)
        else:
            assert ours == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("engine", ENGINES)
def test_small_cases_by_enumeration(engine):
    rng = np.random.default_rng(3)
    for target, blank in (([1, 2], 0), ([2, 2], 0), ([], 0), ([0, 1], 2)):
        lp = torch.from_numpy(rng.normal(size=(6, 3))).log_softmax(-1)
        ours = ctc_loss(lp, torch.tensor(target, dtype=torch.long), 6, len(target), blank=blank, reduction="sum",
                        engine=engine).item()
        assert ours == pytest.approx(brute_force_nll(lp.numpy(), target, blank), rel=1e-10)


def test_unbatched_and_module_forms():
    torch.manual_seed(2)
    lp = torch.randn(20, 6).log_softmax(-1)
    tg = torch.tensor([1, 2, 3])
    ref = F.ctc_loss(lp, tg, torch.tensor(20), torch.tensor(3), reduction="none")
    torch.testing.assert_close(ctc_loss(lp, tg, torch.tensor(20), torch.tensor(3), reduction="none"), ref)
    batch = torch.randn(20, 2, 6).log_softmax(-1)
    targets = torch.tensor([[1, 2], [3, 3]])
    module = CTCLoss(blank=0, reduction="sum")
    torch.testing.assert_close(module(batch, targets, (20, 18), (2, 2)),
                               F.ctc_loss(batch, targets, (20, 18), (2, 2), reduction="sum"))
    assert get_ctc_loss("asr") is ctc_loss


def test_bad_arguments():
    lp = torch.randn(5, 1, 4).log_softmax(-1)
    with pytest.raises(ValueError, match="reduction"):
        ctc_loss(lp, torch.tensor([[1]]), [5], [1], reduction="avg")
    with pytest.raises(ValueError, match="blank index 4"):
        ctc_loss(lp, torch.tensor([[1]]), [5], [1], blank=4)
    with pytest.raises(ValueError, match="at most the 5 frames"):
        ctc_loss(lp, torch.tensor([[1]]), [6], [1])


def test_training_uses_our_loss_by_default():
    from asr.config import TrainConfig

    assert TrainConfig().loss == "asr"
