from pathlib import Path

import pytest
import yaml

from asr.config import (Config, ConfigError, FeatureConfig, ModelConfig, config_changes, from_dict, load_config,
                        save_config, to_dict)
from asr.model import DeepSpeech2

ROOT = Path(__file__).resolve().parents[1]

REQ = ["exp_dir=e", "data.train_manifest=t.jsonl", "data.dev_manifest=d.jsonl"]


def test_overrides_are_typed():
    cfg = load_config(None, REQ + ["train.lr=3e-4", "model.rnn_type=lstm", "data.speed_perturb=[0.9,1.0,1.1]"])
    assert cfg.train.lr == 3e-4 and cfg.model.rnn_type == "lstm" and cfg.data.speed_perturb == [0.9, 1.0, 1.1]


@pytest.mark.parametrize("override, key", [
    ("train.lrr=1", "train.lrr"), ("train.lr=fast", "train.lr"), ("model.rnn_type=transformer", "model.rnn_type"),
    ("features.kind=mfcc", "features.kind"), ("train.epochs=0", "train.epochs"), ("nonsense=1", "nonsense"),
    ("data.vtlp=0.7", "data.vtlp"), ("data.vtlp=-0.1", "data.vtlp"), ("data.silence_pad=-1", "data.silence_pad"),
    ("data.silence_pad_prob=1.5", "data.silence_pad_prob"), ("data.concat_prob=-0.2", "data.concat_prob"),
    ("data.reverb_prob=2", "data.reverb_prob"), ("data.reverb_rt60=[0.5,9]", "data.reverb_rt60"),
    ("data.reverb_rt60=[0.5]", "data.reverb_rt60"),
    ("train.cpu_gru=fast", "train.cpu_gru"), ("train.plateau_restarts=-1", "train.plateau_restarts"),
    ("train.plateau_dev_cer=0", "train.plateau_dev_cer"), ("train.plateau_dev_cer=1.5", "train.plateau_dev_cer"),
    ("data.train_weight=0", "data.train_weight"), ("data.bandlimit_prob=1.2", "data.bandlimit_prob"),
    (["data.bandlimit_rates=[8000,22050]", "data.bandlimit_prob=0.5"], "data.bandlimit_rates"),
    ("data.train_sources=[{manifest: a.jsonl, weight: -1}]", "data.train_sources[0].weight"),
    ("data.train_sources=[{weight: 2}]", "data.train_sources"),
    ("data.train_sources=[{manifest: a.jsonl, speaker_share_max: 0}]", "data.train_sources[0].speaker_share_max"),
    ("data.train_sources=[{manifest: a.jsonl}, {manifest: b.jsonl, speed_perturb: [1.1, 3]}]",
     "data.train_sources[1].speed_perturb"),
    ("specaugment.from_epoch=0", "specaugment.from_epoch"),
    (["train.epochs=2", "specaugment.from_epoch=3"], "specaugment.from_epoch"),  # masks that would never start
    ("train.time_budget=-1", "train.time_budget"), ("train.min_epochs=0", "train.min_epochs"),
    (["train.time_budget=600", "train.schedule=onecycle"], "train.time_budget"),  # onecycle's length is fixed
])
def test_bad_keys_are_named(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, REQ + (override if isinstance(override, list) else [override]))
    assert key in str(e.value)


def test_off_is_a_word_not_yaml_false(tmp_path):
    """YAML 1.1 reads `off` as false; `train.amp=off` must still mean float32 training."""
    assert load_config(None, REQ + ["train.amp=off"]).train.amp == "off"
    (tmp_path / "c.yaml").write_text("train:\n  amp: off\n")
    cfg = load_config(tmp_path / "c.yaml", REQ)
    assert cfg.train.amp == "off"
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml").train.amp == "off"


def test_yaml_file_bad_key_named(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  rnn_hiden: 10\n")
    with pytest.raises(ConfigError, match="model.rnn_hiden"):
        load_config(tmp_path / "c.yaml", REQ)


def test_missing_required():
    with pytest.raises(ConfigError, match="data.dev_manifest"):
        load_config(None, ["exp_dir=e", "data.train_manifest=t"])


def test_save_and_roundtrip(tmp_path):
    cfg = load_config(None, REQ + ["model.rnn_hidden=99"])
    save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["model"]["rnn_hidden"] == 99
    assert load_config(tmp_path / "config.yaml") == cfg
    assert from_dict(to_dict(cfg)) == cfg and isinstance(from_dict(to_dict(cfg)), Config)


@pytest.mark.parametrize("override", ["features.kind=logmel features.n_mels=20",
                                      "features.kind=spectrogram features.window_ms=2"])
def test_too_few_frequency_bins_named(tmp_path, override):
    """A front end narrower than the first conv kernel is refused up front (and never reaches oneDNN's crash)."""
    key = "features.n_mels" if "n_mels" in override else "features.window_ms"
    with pytest.raises(ConfigError, match=key):
        load_config(None, REQ + override.split())


@pytest.mark.parametrize("overrides, key", [(["model.conv_layers=4"], "model.conv_layers"),
                                            (["model.conv_kind=vgg", "model.conv_layers=6"], "model.conv_layers"),
                                            (["model.conv_kind=resnet"], "model.conv_kind")])
def test_conv_stack_shape_checked(overrides, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, REQ + overrides)
    assert load_config(None, REQ + ["model.conv_kind=vgg", "model.conv_layers=5"]).model.conv_layers == 5


def test_a_model_built_without_load_config_names_a_bad_layer_count():
    with pytest.raises(ValueError, match="model.conv_layers = 4: must be 1 to 3 with model.conv_kind=ds2"):
        DeepSpeech2(ModelConfig(conv_layers=4), FeatureConfig(), num_classes=29)


def test_train_sources_are_typed_and_survive_a_checkpoint_round_trip():
    cfg = load_config(None, REQ + ["data.train_sources=[{manifest: people.jsonl, weight: 2.5, name: people}]",
                                   "data.train_weight=0.5", "data.bandlimit_prob=0.3"])
    src = cfg.data.train_sources[0]
    assert (src.manifest, src.weight, src.name, cfg.data.train_weight) == ("people.jsonl", 2.5, "people", 0.5)
    again = from_dict(to_dict(cfg))
    assert again.data.train_sources == cfg.data.train_sources and again.data.bandlimit_rates == [8000, 11025]


def test_config_changes_name_each_differing_key_by_its_dotted_path():
    """What a recipe's train stage logs before it starts afresh on a changed config."""
    old = to_dict(load_config(None, REQ + ["train.lr=3e-3", "model.rnn_layers=3"]))
    new = to_dict(load_config(None, REQ + ["train.lr=2e-3", "model.rnn_layers=4"]))
    assert config_changes(old, old) == []
    assert config_changes(old, new) == ["model.rnn_layers: 3 -> 4", "train.lr: 0.003 -> 0.002"]
    new["pseudo"] = {"teachers": []}
    del new["train"]["epochs"]
    assert config_changes(old, new)[-3:] == ["pseudo: new", "train.epochs: gone", "train.lr: 0.003 -> 0.002"]


def test_a_yaml_base_is_merged_under_the_file_and_bad_bases_are_named(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "base.yaml").write_text("data: {train_manifest: t.jsonl, dev_manifest: d.jsonl}\n"
                                                   "train: {epochs: 20, lr: 2.0e-3}\nmodel: {rnn_hidden: 256}\n")
    (tmp_path / "run.yaml").write_text("base: shared/base.yaml\nexp_dir: e\ntrain: {epochs: 3}\n")
    cfg = load_config(tmp_path / "run.yaml", ["model.rnn_hidden=128"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.data.train_manifest, cfg.model.rnn_hidden) == (3, 2e-3, "t.jsonl", 128)
    (tmp_path / "lost.yaml").write_text("base: nowhere.yaml\nexp_dir: e\n")
    with pytest.raises(ConfigError, match="lost.yaml: config key 'base' = 'nowhere.yaml': no such file"):
        load_config(tmp_path / "lost.yaml")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="comes back to itself"):
        load_config(tmp_path / "a.yaml")


def test_corpus_recipes_share_one_base():
    from asr.recipe import recipe_config

    for name in ("librispeech", "commonvoice", "an4", "tedlium", "folder", "amazon_queen", "steel_sky"):
        text = (ROOT / "recipes" / name / "conf" / "default.yaml").read_text()
        assert "base: ../../corpus_cpu.yaml" in text and "model:" not in text, name
        cfg = recipe_config(ROOT / "recipes" / name, [])
        assert cfg.model.rnn_hidden == 256 and cfg.data.train_manifest == f"{cfg.data_dir}/manifests/train.jsonl"
