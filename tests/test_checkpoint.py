import os
import pickle

import pytest
import torch

from asr.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from asr.config import load_config, to_dict
from asr.model import DeepSpeech2
from asr.text import CharVocabulary


def make_ckpt():
    cfg = load_config(None, ["exp_dir=e", "data.train_manifest=t", "data.dev_manifest=d", "model.rnn_hidden=16",
                             "model.conv_channels=4", "model.rnn_layers=1"])
    vocab = CharVocabulary.build(["abc"])
    model = DeepSpeech2(cfg.model, cfg.features, len(vocab))
    return {"model": model.state_dict(), "config": to_dict(cfg), "labels": vocab.labels, "epoch": 3}, model


def test_save_is_atomic_and_loads_weights_only(tmp_path):
    ckpt, model = make_ckpt()
    save_checkpoint(ckpt, tmp_path / "last.pt")
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary left behind
    back = load_checkpoint(tmp_path / "last.pt")
    m2, vocab, cfg = model_from_checkpoint(back)
    assert vocab.labels == ckpt["labels"] and cfg.model.rnn_hidden == 16
    for (k, a), (_, b) in zip(model.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


def test_failed_save_keeps_previous(tmp_path):
    ckpt, _ = make_ckpt()
    save_checkpoint(ckpt, tmp_path / "last.pt")
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(Exception):
        save_checkpoint({"model": lambda: None}, tmp_path / "last.pt")  # unpicklable
    assert (tmp_path / "last.pt").read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]


def test_untrusted_pickle_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"model": Evil(), "config": {}, "labels": []}, f)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


def test_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not an asr checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_weights_of_other_model_rejected():
    ckpt, _ = make_ckpt()
    ckpt["config"]["model"]["rnn_hidden"] = 32
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_checkpoint(ckpt)
