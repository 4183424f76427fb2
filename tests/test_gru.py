"""asr.gru against torch.nn.GRU: same outputs and gradients, packed sequences of any lengths."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

from asr.config import ConfigError, FeatureConfig, ModelConfig, load_config
from asr.gru import gru_packed
from asr.model import DeepSpeech2
from conftest import training_pass


def _run(rnn, x, lengths, fn, weights, autocast=False):
    rnn.zero_grad()
    x = x.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out = fn(packed)
    (out.data.to(weights.dtype) * weights).sum().backward()
    return [out.data.detach().to(weights.dtype), x.grad] + [p.grad for p in rnn.parameters()]


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=6), bidirectional=st.booleans(),
       hidden=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_matches_torch_gru_in_float64(lengths, bidirectional, hidden, seed):
    """Outputs, input gradients and all eight weight gradients equal nn.GRU's to float64 rounding."""
    torch.manual_seed(seed)
    rnn = torch.nn.GRU(5, hidden, bidirectional=bidirectional).double()
    x = torch.randn(max(lengths), len(lengths), 5, dtype=torch.double)
    lens = torch.tensor(lengths)
    weights = torch.randn(sum(lengths), hidden * (2 if bidirectional else 1), dtype=torch.double)
    ours = _run(rnn, x, lens, lambda p: gru_packed(rnn, p), weights)
    ref = _run(rnn, x, lens, lambda p: rnn(p)[0], weights)
    assert len(ours) == 2 + len(list(rnn.parameters()))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_bf16_autocast_stays_close_to_float32():
    """Under bf16 autocast the products run in bf16 and the states in float32: within 1% of float32 nn.GRU
    (nn.GRU's own bf16 run is further off, ~1.5% on the hidden-to-hidden weight gradients)."""
    torch.manual_seed(0)
    rnn = torch.nn.GRU(64, 48, bidirectional=True)
    lens = torch.randint(20, 60, (8,))
    x = torch.randn(60, 8, 64)
    weights = torch.randn(int(lens.sum()), 96)
    ours = _run(rnn, x, lens, lambda p: gru_packed(rnn, p), weights, autocast=True)
    ref = _run(rnn, x, lens, lambda p: rnn(p)[0], weights)
    for a, b in zip(ours, ref):
        assert a.dtype == b.dtype == torch.float32
        assert ((a - b).norm() / b.norm()).item() < 1e-2


@settings(max_examples=15, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=9), hidden=st.integers(1, 70),
       seed=st.integers(0, 2**16))
def test_float32_kernels_match_torch_gru(lengths, hidden, seed):
    """The float32 C kernels (vectorised expf/tanhf, -ffast-math) against nn.GRU in float32, widths that are
    and are not multiples of the vector length."""
    torch.manual_seed(seed)
    rnn = torch.nn.GRU(7, hidden, bidirectional=True)
    x = torch.randn(max(lengths), len(lengths), 7)
    lens = torch.tensor(lengths)
    weights = torch.randn(sum(lengths), 2 * hidden)
    ours = _run(rnn, x, lens, lambda p: gru_packed(rnn, p), weights)
    ref = _run(rnn, x, lens, lambda p: rnn(p)[0], weights)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_kernel_build_errors_name_the_compiler(tmp_path):
    """Without a working C compiler the kernels report why (training then uses nn.GRU); with one they land in
    the cache. One fresh process, so nothing built earlier is reused."""
    import os
    import subprocess
    import sys

    code = ("import os; from asr.gru import kernels_ready\n"
            "for cc in ('false', '/no/such/cc', 'cc'):\n"
            "    os.environ['CC'] = cc; print(kernels_ready())")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    failed, missing, built = out.strip().split("\n")[-3:]
    assert "building gru_kernel.c with false failed" in failed
    assert "building gru_kernel.c needs a C compiler (/no/such/cc)" in missing
    assert built == "None" and len(list((tmp_path / "asr").glob("gru_kernel-*.so"))) == 1


def test_sum_directions_and_rejections():
    rnn = torch.nn.GRU(3, 4, bidirectional=True)
    packed = pack_padded_sequence(torch.randn(5, 2, 3), torch.tensor([5, 3]))
    both = gru_packed(rnn, packed).data
    torch.testing.assert_close(gru_packed(rnn, packed, sum_directions=True).data, both[:, :4] + both[:, 4:])
    with pytest.raises(ValueError, match="single-layer"):
        gru_packed(torch.nn.GRU(3, 4, num_layers=2), packed)
    with pytest.raises(ValueError, match="float32 with torch.float16 products"), \
            torch.autocast("cpu", dtype=torch.float16):
        gru_packed(rnn, packed)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_model_trains_the_same_with_either_gru(bidirectional):
    """DeepSpeech2 in training mode (bidirectional, or streaming with lookahead): asr.gru and nn.GRU give the
    same parameter gradients."""
    torch.manual_seed(0)
    cfg = ModelConfig(conv_channels=4, rnn_hidden=16, rnn_layers=2, bidirectional=bidirectional,
                      lookahead=0 if bidirectional else 2)
    model = DeepSpeech2(cfg, FeatureConfig(kind="logmel", n_mels=32), 7).train()
    waves, lens = torch.randn(3, 9000) * 0.1, torch.tensor([9000, 5000, 7000])
    grads = []
    for own in (True, False):
        model.use_own_cpu_gru(own)
        lp, g = training_pass(model, waves, lens, lambda lp: lp[:, :, 2].sum())
        assert _graph_has(lp.grad_fn, "_GRUDirectionBackward") == own
        grads.append(g)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _graph_has(fn, name: str) -> bool:
    seen, todo = set(), [fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if type(fn).__name__ == name:
            return True
        todo += [f for f, _ in fn.next_functions]
    return False


def test_cpu_gru_choice_is_validated():
    with pytest.raises(ConfigError, match="train.cpu_gru"):
        load_config(None, ["exp_dir=x", "data.train_manifest=a", "data.dev_manifest=b", "train.cpu_gru=fast"])


def test_loading_the_kernels_keeps_subnormal_floats():
    """The kernels are compiled with -ffast-math but linked without it: linking with it adds crtfastmath.o,
    which sets flush-to-zero for the whole process as soon as the library loads."""
    from asr.gru import kernels

    kernels()
    assert 5e-324 * 1.0 > 0  # the smallest subnormal double survives arithmetic
    assert (torch.tensor(1e-40) * 1.0).item() > 0  # and a float32 one
