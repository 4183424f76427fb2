"""Zero rows before bf16 products (asr.row_padding): shapes oneDNN has built, the same results."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from asr import row_padding
from asr.config import FeatureConfig, ModelConfig
from asr.gru import gru_packed
from asr.model import DeepSpeech2
from asr.row_padding import pad_rows


@pytest.mark.parametrize("rows", [1, 255, 256, 257, 700])
def test_pad_rows_rounds_bf16_rows_up_with_zeros(rows):
    x = torch.randn(rows, 3)
    padded = pad_rows(x, torch.bfloat16)
    assert padded.shape[0] % row_padding.ROWS == 0 and rows <= padded.shape[0] < rows + row_padding.ROWS
    assert torch.equal(padded[:rows], x) and not padded[rows:].any()
    assert pad_rows(x, torch.float32) is x  # MKL's float32 products build no kernels: nothing to pad


def _gru_under_bf16(rnn, x, lengths, weights):
    rnn.zero_grad()
    x = x.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gru_packed(rnn, pack_padded_sequence(x, lengths, enforce_sorted=False))
    (out.data * weights).sum().backward()
    return [out.data.detach(), x.grad] + [p.grad.clone() for p in rnn.parameters()]


def test_padded_gru_equals_unpadded(monkeypatch):
    """Outputs, input and weight gradients of asr.gru under bf16 autocast: the padding rows change nothing but
    the products' summation order."""
    torch.manual_seed(0)
    rnn = torch.nn.GRU(40, 24, bidirectional=True)
    lengths = torch.tensor([37, 20, 9, 33, 1])  # 100 packed rows: 156 rows of padding
    x, weights = torch.randn(37, 5, 40), torch.randn(100, 48)
    padded = _gru_under_bf16(rnn, x, lengths, weights)
    monkeypatch.setattr(row_padding, "ROWS", 1)
    plain = _gru_under_bf16(rnn, x, lengths, weights)
    for a, b in zip(padded, plain):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_model_log_probs_under_bf16_do_not_depend_on_padding(monkeypatch):
    torch.manual_seed(0)
    model = DeepSpeech2(ModelConfig(conv_channels=4, rnn_hidden=16, rnn_layers=2), FeatureConfig(n_mels=32), 9).train()
    waves, lengths = torch.randn(3, 16000), torch.tensor([16000, 9000, 4000])

    def run():
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            log_probs, out_lengths = model(waves, lengths)
        log_probs.sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        return log_probs.detach(), out_lengths, grads

    padded = run()
    monkeypatch.setattr(row_padding, "ROWS", 1)
    plain = run()
    torch.testing.assert_close(padded[0], plain[0], rtol=1e-3, atol=1e-3)
    assert torch.equal(padded[1], plain[1])
    for a, b in zip(padded[2], plain[2]):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-3)
