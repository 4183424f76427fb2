import os
import pickle

import pytest
import torch

from asr.atomic import atomic_write, write_text_atomic
from asr.checkpoint import CheckpointError, load_checkpoint, load_model, model_from_checkpoint, save_checkpoint
from asr.config import load_config, to_dict
from asr.model import DeepSpeech2
from asr.text import CharVocabulary


def make_ckpt(*overrides: str):
    cfg = load_config(None, ["exp_dir=e", "data.train_manifest=t", "data.dev_manifest=d", "model.rnn_hidden=16",
                             "model.conv_channels=4", "model.rnn_layers=1", *overrides])
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


def test_atomic_text_write_replaces_whole_file_or_nothing(tmp_path):
    path = tmp_path / "sub" / "manifest.jsonl"
    write_text_atomic(path, "old\n")
    linked = tmp_path / "copy.jsonl"
    linked.hardlink_to(path)  # e.g. a data dir copied with cp -al
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write("half a fi")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n" and os.listdir(path.parent) == ["manifest.jsonl"]
    write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n"
    assert linked.read_text() == "old\n"  # a new inode: the other copy is not rewritten under its reader
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


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


def test_format_version_checked_and_inference_view_drops_training_state(tmp_path):
    from asr.checkpoint import FORMAT_VERSION, TRAINING_KEYS, inference_view

    ckpt, _ = make_ckpt()
    ckpt.update(format=FORMAT_VERSION, optimizer={"state": {}}, scheduler={}, scaler={}, rng={}, position=None, step=3)
    view = inference_view(ckpt)
    assert not set(view) & set(TRAINING_KEYS) and view["step"] == 3 and view["model"] is ckpt["model"]
    save_checkpoint({**ckpt, "format": FORMAT_VERSION + 1}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=f"format {FORMAT_VERSION + 1}.*reads format {FORMAT_VERSION}"):
        load_checkpoint(tmp_path / "future.pt")


def test_weights_of_other_model_rejected():
    ckpt, _ = make_ckpt()
    ckpt["config"]["model"]["rnn_hidden"] = 32
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_checkpoint(ckpt)


def _tiny_checkpoint(path, seed: int = 0, *overrides: str) -> None:
    torch.manual_seed(seed)
    ckpt, _ = make_ckpt(*overrides)
    save_checkpoint(ckpt, path)


def test_export_torchscript_parity_and_averaging(tmp_path):
    import json as _json

    import torch as _torch

    from asr.export import average_checkpoints, load_torchscript
    from conftest import run_cli

    ckpt = tmp_path / "m.pt"
    _tiny_checkpoint(ckpt)
    proc = run_cli("export", "--model", str(ckpt), "--out", str(tmp_path / "m.ts"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _json.loads(proc.stdout)["format"] == "torchscript"
    module, labels, conf = load_torchscript(tmp_path / "m.ts")
    model, vocab, _ = load_model(ckpt)
    assert labels == vocab.labels and conf["sample_rate"] == 16000
    for lengths in ([12000], [20000, 7000, 16000]):  # other batch sizes and lengths than traced
        waves = _torch.randn(len(lengths), max(lengths)) * 0.1
        lens = _torch.tensor(lengths)
        with _torch.no_grad():
            ours, ours_len = model(waves, lens)
            theirs, theirs_len = module(waves, lens)
        assert _torch.equal(ours_len, theirs_len) and _torch.allclose(ours, theirs, atol=1e-5)

    other = tmp_path / "other.pt"
    _tiny_checkpoint(other, seed=1)
    average_checkpoints([ckpt, other], tmp_path / "avg.pt")
    a, b, avg = (_torch.load(p, weights_only=True)["model"] for p in (ckpt, other, tmp_path / "avg.pt"))
    name = next(k for k, v in a.items() if v.is_floating_point() and v.numel() > 10)
    assert _torch.allclose(avg[name], (a[name] + b[name]) / 2)
    load_model(tmp_path / "avg.pt")


@pytest.mark.parametrize("overrides", [
    ("features.f_max=5500",),  # bidirectional GRU, log spectrogram up to 5.5 kHz
    ("model.bidirectional=false", "model.lookahead=3", "model.rnn_type=lstm", "model.rnn_layers=2",
     "features.kind=logmel", "features.n_mels=32"),  # streaming variant
])
def test_export_onnx_parity_with_onnxruntime(tmp_path, overrides):
    import json as _json

    import numpy as np
    import onnx
    import onnxruntime as ort

    from conftest import run_cli

    ckpt = tmp_path / "m.pt"
    _tiny_checkpoint(ckpt, 0, *overrides)
    proc = run_cli("export", "--model", str(ckpt), "--out", str(tmp_path / "m.onnx"))  # format from the suffix
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    model, vocab, _ = load_model(ckpt)
    assert _json.loads(meta["labels"]) == vocab.labels and meta["sample_rate"] == "16000"
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    for n in (8000, 23456, 40000):  # lengths other than the exported example
        wave = torch.randn(1, n) * 0.1
        theirs = session.run(None, {"waveform": wave.numpy()})[0]
        with torch.no_grad():
            ours, _ = model(wave, torch.tensor([n]))
        assert theirs.shape == tuple(ours.shape) and np.abs(theirs - ours.numpy()).max() < 1e-3


def test_init_from_starts_fine_tuning_from_a_checkpoint_and_refuses_misfits(tmp_path):
    from asr.config import ConfigError
    from asr.training import TrainingError, init_weights

    torch.manual_seed(0)
    ckpt, trained = make_ckpt()
    save_checkpoint(ckpt, tmp_path / "pre.pt")
    torch.manual_seed(1)
    _, fresh = make_ckpt()
    vocab = CharVocabulary.build(["abc"])
    init_weights(fresh, vocab, tmp_path / "pre.pt")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trained.state_dict().values()))
    with pytest.raises(TrainingError, match="train.init_from.*vocabulary"):
        init_weights(fresh, CharVocabulary.build(["abcd"]), tmp_path / "pre.pt")
    _, wider = make_ckpt("model.rnn_hidden=32")
    with pytest.raises(TrainingError, match="train.init_from.*do not fit"):
        init_weights(wider, vocab, tmp_path / "pre.pt")
    _, deeper = make_ckpt("model.rnn_layers=2")
    with pytest.raises(TrainingError, match="train.init_from.*do not fit.*rnns.1"):  # layers the checkpoint lacks
        init_weights(deeper, vocab, tmp_path / "pre.pt")
    two, plain = make_ckpt("model.rnn_layers=2")
    save_checkpoint(two, tmp_path / "two.pt")
    _, inter = make_ckpt("model.rnn_layers=2", "model.inter_ctc_layer=1")
    init_weights(inter, vocab, tmp_path / "two.pt")  # the intermediate CTC head, a training aid, starts anew
    kept = {k: v for k, v in inter.state_dict().items() if not k.startswith("inter_head.")}
    assert kept.keys() == plain.state_dict().keys() and all(torch.equal(v, plain.state_dict()[k]) for k, v in kept.items())
    with pytest.raises(ConfigError, match="train.init_from"):
        load_config(None, ["exp_dir=e", "data.train_manifest=t", "data.dev_manifest=d",
                           f"train.init_from={tmp_path / 'missing.pt'}"])
