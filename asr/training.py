"""Training a DeepSpeech2 model with CTC: `asr train CONFIG key=value ...`.

The experiment folder receives the resolved config, the vocabulary, checkpoints
(last.pt every epoch, best.pt by dev WER), TensorBoard logs, metrics.csv, curves.png
and train.log. `--resume` continues from last.pt.
"""
from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import allocator
from .atomic import atomic_write
from .checkpoint import FORMAT_VERSION, inference_view, keep_best, load_checkpoint, save_checkpoint, save_last
from .config import Config, DataConfig, TrainConfig, save_config, to_dict
from .augment import training_augmentations
from .data import (Batch, BucketBatchSampler, EpochDraw, UtteranceDataset, collate, make_batches,
                   speaker_capped_weights)
from .decoding import greedy_decode
from .distributed import Group, any_rank, barrier, gather, join, leave
from .features import num_frames, spec_augment
from .gru import kernels_ready as gru_kernels_ready
from .inference import resolve_device
from .losses import get_ctc_loss
from .manifest import Utterance, read_manifest
from .metrics import score
from .model import DeepSpeech2
from .plotting import plot_training_curves
from .text import Vocabulary, build_vocabulary, check_vocabulary, load_vocabulary

log = logging.getLogger("asr.train")

MAX_CONSECUTIVE_BAD_BATCHES = 20
# how far past train.time_budget the planned epochs may run before the run is shortened. An epoch's time wanders by
# a few per cent; synthetic_en's 660 s plus a tenth and an EPYC Zen 4's other stages (about 460 s) are 19 min 46 s
BUDGET_SLACK = 0.1
METRICS = ["epoch", "step", "lr", "train_loss", "dev_loss", "dev_wer", "dev_cer", "epoch_seconds",
           "audio_seconds_per_second", "skipped_batches", "failed_utterances"]


class TrainingError(RuntimeError):
    pass


@dataclass
class Rejections:
    """Utterances left out of training, by reason; written to rejected.tsv and logged."""

    items: list[tuple[str, str, str]] = field(default_factory=list)  # (split, id, reason)

    def add(self, split: str, utt_id: str, reason: str) -> None:
        self.items.append((split, utt_id, reason))

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for split, _, reason in self.items:
            key = f"{split}: {reason.split(' (')[0]}"
            counts[key] = counts.get(key, 0) + 1
        return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "none"

    def write(self, path: Path) -> None:
        with atomic_write(path) as f:
            f.write("split\tid\treason\n")
            for row in self.items:
                f.write("\t".join(row) + "\n")


def required_frames(targets: list[int]) -> int:
    """Fewest CTC frames that can emit `targets`: one per label plus a blank between repeats."""
    return len(targets) + sum(a == b for a, b in zip(targets, targets[1:]))


def screen_utterances(utts: list[Utterance], split: str, vocab: Vocabulary, model: DeepSpeech2,
                      cfg: Config, rejections: Rejections, training: bool,
                      speeds: Sequence[float] | None = None) -> list[Utterance]:
    """Keep utterances the model can learn from; report the rest with their reason. Training utterances are
    held to data.min/max_duration and, under speed perturbation (`speeds`, else data.speed_perturb), to the
    frames of their fastest version; dev utterances are scored as they are."""
    fastest = max((cfg.data.speed_perturb if speeds is None else speeds) or [1.0]) if training else 1.0
    kept = []
    for u in utts:
        if training and u.duration > cfg.data.max_duration:
            rejections.add(split, u.id, f"too long ({u.duration:.1f}s > data.max_duration={cfg.data.max_duration})")
            continue
        if training and u.duration < cfg.data.min_duration:
            rejections.add(split, u.id, f"too short ({u.duration:.2f}s < data.min_duration={cfg.data.min_duration})")
            continue
        if not Path(u.audio_filepath).is_file():
            rejections.add(split, u.id, f"missing audio ({u.audio_filepath})")
            continue
        if not u.text.strip():
            rejections.add(split, u.id, "empty transcript")
            continue
        frames = model.output_lengths(torch.tensor([num_frames(u.duration, cfg.features)])).item()
        # speed perturbation can make training audio shorter, so check it against the fastest factor
        need = required_frames(vocab.encode(u.text, u.id))
        if need > math.floor(frames / fastest):
            rejections.add(split, u.id, f"transcript longer than the frames allow ({need} labels > {frames} frames)")
            continue
        kept.append(u)
    return kept


def train_sources(data: DataConfig) -> list[tuple[str, float, list[Utterance]]]:
    """(name, weight, utterances) of data.train_manifest and each of data.train_sources."""
    out = [(Path(data.train_manifest).stem, data.train_weight, read_manifest(data.train_manifest))]
    for src in data.train_sources:
        out.append((src.name or Path(src.manifest).stem, src.weight, read_manifest(src.manifest)))
    return out


def source_speeds(data: DataConfig) -> list[list[float]]:
    """Each training source's speed perturbation factors, data.train_manifest's first (see SourceConfig)."""
    return [list(data.speed_perturb)] + [list(data.speed_perturb if src.speed_perturb is None else src.speed_perturb)
                                         for src in data.train_sources]


def describe_sources(sources: list[tuple[str, float, list[Utterance]]], speeds: Sequence[Sequence[float]]) -> str:
    """The log line of what each training source gives an epoch (and its speed factors, where it has any)."""
    hours = [weight * sum(u.duration for u in utts) / 3600 for _, weight, utts in sources]
    parts = [f"{name} {len(utts)} utterances x {weight:g} = {h:.2f} h ({100 * h / max(sum(hours), 1e-9):.0f}%)"
             + (f" at speeds {', '.join(f'{f:g}' for f in factors)}" if factors else "")
             for (name, weight, utts), h, factors in zip(sources, hours, speeds)]
    return f"training sources per epoch: {'; '.join(parts)}"


def sampling_groups(sources: list[tuple[str, float, list[Utterance]]], caps: Sequence[float]) -> tuple[list[int], list[float]]:
    """The sampler's group of each training utterance and each group's per-clip weight: a source is one group,
    or one per speaker where its speaker cap (`caps[k]` < 1, SourceConfig.speaker_share_max) applies."""
    group_of: list[int] = []
    weights: list[float] = []
    for (name, weight, utts), cap in zip(sources, caps):
        if cap >= 1.0 or not utts:  # an empty source (a game not installed) has no speaker to cap
            group_of += [len(weights)] * len(utts)
            weights.append(weight)
            continue
        missing = sum(u.speaker is None for u in utts)
        if missing:
            raise ValueError(f"training source {name!r}: {missing} of {len(utts)} utterances name no speaker, so "
                             f"its speaker_share_max = {cap:g} cannot apply")
        try:
            per_clip = speaker_capped_weights([u.speaker for u in utts], weight, cap)
        except ValueError as e:
            raise ValueError(f"training source {name!r}: {e} (speaker_share_max)") from None
        index = {spk: len(weights) + i for i, spk in enumerate(per_clip)}
        group_of += [index[u.speaker] for u in utts]
        weights += list(per_clip.values())
        counts = Counter(u.speaker for u in utts)
        capped = sorted((s for s in per_clip if per_clip[s] < weight), key=lambda s: -counts[s])
        hours = sum(per_clip[u.speaker] * u.duration for u in utts) / 3600
        log.info(f"{name}: speakers capped at {cap:.0%} of its draws: "
                 + ", ".join(f"{s} {counts[s] / len(utts):.0%} of its clips, each x{per_clip[s]:.2f}" for s in capped)
                 + f"; the others' clips x{max(per_clip.values()):.2f}; {hours:.2f} h an epoch")
    return group_of, weights


class WarmupCosine:
    """The learning rate's factor at each step: linear warm-up, then constant or a cosine down to min_lr_ratio at
    `total_steps`. An object, not a closure, so that LambdaLR saves `total_steps` with the checkpoint: a time
    budget (`train.time_budget`) sets it after the first epoch, and a resumed run must keep it."""

    def __init__(self, cfg: Config, total_steps: int):
        t = cfg.train
        self.warmup_steps, self.constant, self.min_lr_ratio = t.warmup_steps, t.schedule == "constant", t.min_lr_ratio
        self.total_steps = total_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.constant:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(opt: torch.optim.Optimizer, cfg: Config, total_steps: int):
    if cfg.train.schedule == "onecycle":
        pct = min(0.3, max(cfg.train.warmup_steps / max(total_steps, 1), 0.05))
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.train.lr, total_steps=max(total_steps, 2), pct_start=pct)
    return torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(cfg, total_steps))


def _setup_logging(exp: Path) -> None:
    root = logging.getLogger("asr")
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if getattr(h, "_asr_train", False):
            root.removeHandler(h)
    fh = logging.FileHandler(exp / "train.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    sh = logging.StreamHandler(sys.stderr)
    sh.setFormatter(logging.Formatter("%(message)s"))
    for h in (fh, sh):
        h._asr_train = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.propagate = False


@torch.no_grad()
def evaluate_loss_and_wer(model: DeepSpeech2, loader: DataLoader, vocab: Vocabulary, loss_fn,
                          device: torch.device, group: Group = Group()) -> dict:
    """Dev loss (mean per token) and greedy WER/CER; each rank decodes its share, results are gathered."""
    model.eval()
    total_loss, total_tokens, refs, hyps = 0.0, 0, [], []
    for batch in loader:
        if not len(batch):
            continue
        lp, out_lens = model(batch.waves.to(device), batch.wave_lengths.to(device))
        losses = loss_fn(lp.transpose(0, 1), batch.targets.to(device), out_lens, batch.target_lengths.to(device),
                         blank=vocab.blank, reduction="none", zero_infinity=True)
        total_loss += float(losses.sum())
        total_tokens += int(batch.target_lengths.sum())
        refs += batch.texts
        hyps += greedy_decode(lp, out_lens, vocab)
    if group.enabled:
        parts = gather((total_loss, total_tokens, refs, hyps), group)
        total_loss, total_tokens = sum(p[0] for p in parts), sum(p[1] for p in parts)
        refs, hyps = [r for p in parts for r in p[2]], [h for p in parts for h in p[3]]
    result = score(refs, hyps)
    result["loss"] = total_loss / max(total_tokens, 1)
    result["examples"] = list(zip(refs[:3], hyps[:3]))
    return result


def autocast_dtype(amp: str, device: torch.device) -> tuple[torch.dtype, bool]:
    """(dtype, enabled) for train.amp on `device`: bf16 needs no loss scaling; fp16 gets a grad scaler.

    `auto` takes bf16 on a CPU only where oneDNN has bf16 kernels: without them (AVX2 CPUs) a bf16 matmul
    runs about 100x slower than a float32 one."""
    if amp == "off" or (amp == "auto" and device.type != "cuda" and not cpu_has_bf16_kernels()):
        return torch.float32, False
    if amp == "fp16":
        if device.type != "cuda":
            raise TrainingError("train.amp=fp16 needs a CUDA device; use train.amp=bf16 on the CPU")
        return torch.float16, True
    if amp == "auto" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16, True
    return torch.bfloat16, True


def describe_compute(device: torch.device, dtype: torch.dtype) -> str:
    """The line the log gives the hardware path: device, the CPU's kernel ISA, precision, conv layout."""
    precision = str(dtype).replace("torch.", "") + (" autocast" if dtype != torch.float32 else "")
    if device.type != "cpu":
        return f"compute: {device.type} ({torch.cuda.get_device_name(device)}), {precision}"
    # ATen's, oneDNN's and MKL's kernels each pick their ISA: an AVX2 host is emulated only when all three are limited
    limits = "".join(f", {lib} limited to {os.environ[var]}" for lib, var in
                     (("oneDNN", "ONEDNN_MAX_CPU_ISA"), ("MKL", "MKL_ENABLE_INSTRUCTIONS")) if os.environ.get(var))
    return (f"compute: cpu, {torch.get_num_threads()} threads, torch kernels {torch.backends.cpu.get_cpu_capability()}"
            f"{limits}, oneDNN bf16 kernels "
            f"{'yes' if cpu_has_bf16_kernels() else 'no'}; {precision}; conv stack "
            f"{'channels-last' if dtype == torch.float32 else 'contiguous'}")


def cpu_has_bf16_kernels() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX-512 or newer), without which train.amp=bf16 is slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _rng_state(gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "specaug": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    gen.set_state(state["specaug"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _NullWriter:
    """TensorBoard's SummaryWriter for ranks other than 0: writes nothing."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class TrainStep(torch.nn.Module):
    """Features, VTLP, SpecAugment and the network in one forward, so DistributedDataParallel sees it all."""

    def __init__(self, model: DeepSpeech2, specaugment, generator: torch.Generator, vtlp: float = 0.0):
        super().__init__()
        self.model, self.specaugment, self.generator, self.vtlp = model, specaugment, generator, vtlp
        self.masking = True  # SpecAugment on (the training loop turns it off before specaugment.from_epoch)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        warp = None
        if self.vtlp:
            warp = 1.0 + (2 * torch.rand(waves.shape[0], generator=self.generator) - 1) * self.vtlp
        feats, frames = self.model.frontend(waves, lengths, warp)
        if self.masking:
            feats = spec_augment(feats, frames, self.specaugment, self.generator)
        return self.model.forward_features(feats, frames, intermediate=self.model.inter_head is not None)


class Plateau(Exception):
    """The first epoch ended with the model still on CTC's blank plateau (train.plateau_dev_cer)."""


def train(cfg: Config, resume: bool = False) -> Path:
    """Train per `cfg` (data parallel under torchrun); returns the path of the best checkpoint.

    A run whose first epoch leaves it on CTC's blank plateau starts again from scratch with the next seed, up to
    `train.plateau_restarts` times; the stuck attempt's checkpoints and metrics move to plateau-<seed>/ and the
    config saved with the checkpoints names the seed that trained them."""
    group, device = join(resolve_device(cfg.train.device))
    try:
        for restart in range(cfg.train.plateau_restarts + 1):
            try:
                return _train(cfg, resume, group, device, may_restart=restart < cfg.train.plateau_restarts)
            except Plateau as stuck:
                log.warning(f"{stuck}: training again from scratch with train.seed={cfg.train.seed + 1} "
                            f"(restart {restart + 1} of at most {cfg.train.plateau_restarts})")
                if group.main:
                    _set_aside(Path(cfg.exp_dir), f"plateau-seed{cfg.train.seed}")
                barrier(group)
                cfg = replace(cfg, train=replace(cfg.train, seed=cfg.train.seed + 1))
                resume = False
        raise AssertionError("unreachable: the last attempt never raises Plateau")
    finally:
        leave(group)


def _set_aside(exp: Path, name: str) -> None:
    """Move a stuck attempt's checkpoints, metrics and TensorBoard events into exp/name (train.log goes on),
    replacing an earlier stuck attempt of the same name."""
    folder = exp / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for item in ("checkpoints", "last.pt", "best.pt", "metrics.csv", "curves.png", "tensorboard"):
        if (exp / item).exists():
            os.replace(exp / item, folder / item)


def init_weights(model: DeepSpeech2, vocab: Vocabulary, path: str | Path) -> None:
    """Fine-tuning: `model` starts from the weights (and feature statistics) of the checkpoint at `path`."""
    ckpt = load_checkpoint(path)
    if ckpt["labels"] != vocab.labels:
        raise TrainingError(f"train.init_from={path}: its vocabulary ({len(ckpt['labels'])} labels) is not this "
                            f"run's ({len(vocab.labels)}); fine-tuning needs the same one")
    try:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as e:
        raise TrainingError(f"train.init_from={path}: its weights do not fit this model config: {str(e)[:300]}") from None
    if [k for k in missing + unexpected if not k.startswith("inter_head.")]:
        raise TrainingError(f"train.init_from={path}: its weights do not fit this model config: missing "
                            f"{missing[:5]}, unexpected {unexpected[:5]}")
    # the intermediate CTC head is a training aid: a checkpoint trained without one starts a new one
    log.info(f"weights from {path} (train.init_from)" + (", a new intermediate CTC head" if missing else ""))


def init_head_prior(model: DeepSpeech2, vocab: Vocabulary, utts: list[Utterance], cfg: Config) -> None:
    """Start the CTC head's bias at the log prior of each output over the training frames: the blank's share is
    the frames no label takes. A head that starts there need not first learn the blank's share with large
    gradients through the whole network, the phase in which training can settle on CTC's blank plateau."""
    counts = torch.ones(len(vocab), dtype=torch.float64)  # add-one: every output keeps a finite prior
    for u in utts:
        counts += torch.bincount(torch.tensor(vocab.encode(u.text, u.id)), minlength=len(vocab))
    frames = model.output_lengths(torch.tensor([num_frames(u.duration, cfg.features) for u in utts])).sum().item()
    counts[vocab.blank] += max(frames - counts.sum().item(), 0.0)
    with torch.no_grad():
        for head in filter(None, (model.head, model.inter_head)):
            head[1].bias.copy_((counts / counts.sum()).log())
    log.info(f"CTC head bias: the label prior of {len(utts)} training utterances (blank "
             f"{100 * counts[vocab.blank].item() / counts.sum().item():.1f}% of {frames} frames)")


@dataclass
class EpochProgress:
    """How far an epoch has gone: what a checkpoint saved inside an epoch needs to continue it."""

    batch: int = 0  # batches done (skipped ones included)
    seen_audio: float = 0.0
    seen_utts: int = 0
    loss_sum: float = 0.0
    loss_n: int = 0
    skipped: int = 0  # batches with a non-finite loss
    failed: int = 0  # unreadable utterances
    seconds: float = 0.0


@dataclass
class TrainState:
    """Everything that changes as training goes and that a resumed run restores: weights, optimizer, schedule,
    loss scaler, random generators, counters and the progress of an interrupted epoch."""

    model: DeepSpeech2
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    specaug_gen: torch.Generator
    epoch: int = 0  # the epoch to run next (or to continue, with `progress`)
    epochs: int = 0  # the run's length: train.epochs, or what train.time_budget kept after epoch 1
    spent: float = 0.0  # seconds the finished epochs took, dev evaluation included (train.time_budget's account)
    step: int = 0  # optimizer steps taken
    best_wer: float = math.inf
    progress: EpochProgress | None = None
    consecutive_bad: int = 0  # batches with a non-finite loss in a row (not saved: a restart forgives them)

    def state_dict(self, epoch: int, progress: EpochProgress | None, dev_wer: float | None = None) -> dict:
        """The checkpoint's training part (asr.checkpoint adds nothing; the caller adds config and vocabulary)."""
        return {"format": FORMAT_VERSION, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(), "epoch": epoch,
                "epochs": self.epochs, "spent": self.spent, "step": self.step,
                "position": asdict(progress) if progress else None, "best_wer": self.best_wer, "dev_wer": dev_wer,
                "rng": _rng_state(self.specaug_gen)}

    def load_state_dict(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"], self.specaug_gen)
        self.step, self.best_wer = ckpt["step"], ckpt["best_wer"]
        self.epochs = ckpt.get("epochs", self.epochs)
        self.spent = ckpt.get("spent", 0.0)
        # saved inside an epoch: continue that epoch after the batches it had done; else start the next
        self.progress = EpochProgress(**ckpt["position"]) if ckpt.get("position") else None
        self.epoch = ckpt["epoch"] if self.progress else ckpt["epoch"] + 1


@dataclass
class _Run:
    """What stays fixed through a run: the config (but train.epochs, which a time budget sets after epoch 1), its
    data and model plumbing, and where results go."""

    cfg: Config
    exp: Path
    group: Group
    device: torch.device
    vocab: Vocabulary
    train_set: UtteranceDataset
    sampler: BucketBatchSampler
    loader: DataLoader
    dev_loader: DataLoader
    step_model: torch.nn.Module
    loss_fn: object
    amp_dtype: torch.dtype
    use_amp: bool
    writer: object = None

    def checkpoint(self, state: TrainState, epoch: int, progress: EpochProgress | None,
                   dev_wer: float | None = None) -> dict:
        """Everything a resumed run needs to continue exactly where this one is."""
        return {**state.state_dict(epoch, progress, dev_wer), "config": to_dict(self.cfg),
                "labels": self.vocab.labels, "vocabulary": self.vocab.to_dict()}


def _loaders(cfg: Config, vocab: Vocabulary, sources: list[tuple[str, float, list[Utterance]]],
             dev_utts: list[Utterance], group: Group, device: torch.device):
    """The training set with its augmentation, its batch sampler (buckets, sources' weights, pairs) and loader,
    and the dev loader."""
    t = cfg.train
    train_utts = [u for _, _, utts in sources for u in utts]
    group_of, group_weights = sampling_groups(sources, [1.0] + [src.speaker_share_max for src in cfg.data.train_sources])
    speeds = [factors for (_, _, utts), factors in zip(sources, source_speeds(cfg.data)) for _ in utts]
    train_set = UtteranceDataset(train_utts, vocab, cfg.features.sample_rate, speeds, t.seed,
                                 training_augmentations(cfg.data, cfg.features.sample_rate))
    sampler = BucketBatchSampler([u.duration for u in train_utts], t.batch_size, t.max_batch_seconds, t.sortagrad,
                                 t.seed, group.rank, group.world,
                                 EpochDraw(group_of, group_weights, cfg.data.concat_prob, speeds))
    if cfg.data.concat_prob:
        per_epoch = sum(round(weight * len(utts)) for _, weight, utts in sources)
        log.info(f"data.concat_prob={cfg.data.concat_prob}: {int(per_epoch * cfg.data.concat_prob) // 2} pairs "
                 f"of training utterances joined after a pause, new pairs each epoch")
    # the loader's own generator: drawing worker seeds must not move the global RNG (resume = uninterrupted)
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.data.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.data.num_workers > 0,
                        generator=torch.Generator().manual_seed(t.seed))
    dev_set = UtteranceDataset(dev_utts, vocab, cfg.features.sample_rate)
    dev_batches = make_batches([u.duration for u in dev_utts], t.dev_batch_size)[group.rank::group.world]
    dev_loader = DataLoader(dev_set, batch_sampler=dev_batches, collate_fn=collate, num_workers=cfg.data.num_workers)
    return train_set, sampler, loader, dev_loader


def _start(cfg: Config, group: Group) -> Path:
    """The experiment folder, its log, the thread count and the seeds."""
    exp = Path(cfg.exp_dir)
    exp.mkdir(parents=True, exist_ok=True)
    if group.main:
        _setup_logging(exp)
    else:
        logging.getLogger("asr").setLevel(logging.WARNING)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    random.seed(cfg.train.seed)
    return exp


def _vocabulary(cfg: Config, train_utts: list[Utterance], dev_utts: list[Utterance]) -> Vocabulary:
    """data.vocabulary, or one built from the training transcripts; every transcript must encode."""
    if cfg.data.vocabulary:
        vocab = load_vocabulary(cfg.data.vocabulary)
        if vocab.text_norm != cfg.data.text_norm:
            raise TrainingError(f"config key 'data.text_norm' = {cfg.data.text_norm!r}, but the vocabulary "
                                f"{cfg.data.vocabulary} was built from {vocab.text_norm!r} transcripts")
    else:
        vocab = build_vocabulary((u.text for u in train_utts), cfg.data.tokenizer, cfg.data.vocab_size,
                                 cfg.data.text_norm)
    check_vocabulary(vocab, [(u.id, u.text) for u in train_utts + dev_utts])
    return vocab


def _screen(cfg: Config, exp: Path, group: Group, vocab: Vocabulary, model: DeepSpeech2,
            sources: list[tuple[str, float, list[Utterance]]], dev_utts: list[Utterance]) -> tuple[list, list]:
    """The training sources and dev set without the utterances the model cannot learn from (each one reported
    in rejected.tsv, with the counts in the log)."""
    rejections, speeds = Rejections(), source_speeds(cfg.data)
    sources = [(name, weight, screen_utterances(utts, "train", vocab, model, cfg, rejections, training=True,
                                                speeds=factors))
               for (name, weight, utts), factors in zip(sources, speeds)]
    train_utts = [u for _, _, utts in sources for u in utts]
    dev_utts = screen_utterances(dev_utts, "dev", vocab, model, cfg, rejections, training=False)
    if group.main:
        rejections.write(exp / "rejected.tsv")
    log.info(f"data: {len(train_utts)} train utterances ({sum(u.duration for u in train_utts) / 3600:.2f} h), "
             f"{len(dev_utts)} dev; left out: {rejections.summary()} (see {exp / 'rejected.tsv'})")
    if not train_utts:
        raise TrainingError("no training utterances left after screening; see rejected.tsv")
    if len(sources) > 1:
        log.info(describe_sources(sources, speeds))
    return sources, dev_utts


def _describe_model(cfg: Config, model: DeepSpeech2, n_outputs: int, group: Group, device: torch.device) -> str:
    m = cfg.model
    direction = "bi" if m.bidirectional else "uni"
    return (f"model: DeepSpeech2 {m.conv_layers} {m.conv_kind} conv + {m.rnn_layers} x {direction}"
            f"{m.rnn_type.upper()}({m.rnn_hidden}), {n_outputs} outputs, {model.num_parameters():,} parameters; "
            f"device {device}" + (f"; data parallel over {group.world} processes" if group.enabled else ""))


def _place_model(cfg: Config, model: DeepSpeech2, train_set: UtteranceDataset, sampler: BucketBatchSampler,
                 fit_stats: bool, device: torch.device) -> None:
    """Global feature statistics (when asked for and not inherited), then the model on its device and kernels."""
    if cfg.features.normalize == "global" and fit_stats:
        stats_batches = ((b.waves, b.wave_lengths) for b in (collate([train_set[i] for i in idx])
                                                              for idx in sampler.batches[::max(1, len(sampler) // 20)]))
        model.frontend.fit_global_stats(stats_batches)
    model.to(device)
    own_gru = cfg.train.cpu_gru == "asr" and device.type == "cpu" and cfg.model.rnn_type == "gru"
    why_not = gru_kernels_ready() if own_gru else None
    if why_not:
        log.warning(f"asr.gru's C kernels are unavailable, so the GRUs train as nn.GRU (~3x slower): {why_not}")
    model.use_own_cpu_gru(own_gru and not why_not)
    if cfg.train.compile:
        model.compile_features_and_conv()
        log.info("torch.compile: front-end and conv stack (the first batches of each new shape compile)")


def _precision(cfg: Config, model: DeepSpeech2, device: torch.device) -> tuple[torch.dtype, bool]:
    """(autocast dtype, whether autocast is on), logged with the ISA; channels-last convs in float32 on CPU."""
    amp_dtype, use_amp = autocast_dtype(cfg.train.amp, device)
    model.use_channels_last(device.type == "cpu" and not use_amp)
    log.info(describe_compute(device, amp_dtype if use_amp else torch.float32))
    if use_amp and device.type == "cpu" and not cpu_has_bf16_kernels():
        log.warning("oneDNN has no bf16 kernels for this CPU (they need AVX-512 or newer): bf16 matmuls run "
                    "emulated, ~100x slower than float32; use train.amp=auto or off")
    return amp_dtype, use_amp


def _restore(state: TrainState, exp: Path, vocab: Vocabulary, resume: bool) -> None:
    """With `resume`, continue from last.pt exactly where it stopped (when there is one)."""
    if resume and (exp / "last.pt").exists():
        ckpt = load_checkpoint(exp / "last.pt")
        if ckpt["labels"] != vocab.labels:
            raise TrainingError(f"{exp / 'last.pt'} was trained with another vocabulary; cannot resume")
        state.load_state_dict(ckpt)
        where = f", batch {state.progress.batch}" if state.progress else ""
        log.info(f"resumed from {exp / 'last.pt'}: epoch {state.epoch + 1}{where}, step {state.step}, "
                 f"best dev WER {state.best_wer:.4f}")
    elif resume:
        log.info(f"--resume: no {exp / 'last.pt'} yet, starting from scratch")


def _open_outputs(run: _Run, state: TrainState) -> None:
    """On the main process: the resolved config, TensorBoard, and metrics.csv (a new one unless resuming)."""
    if not run.group.main:
        return
    from torch.utils.tensorboard import SummaryWriter

    save_config(run.cfg, run.exp / "config.yaml")
    run.writer = SummaryWriter(str(run.exp / "tensorboard"))
    metrics_path = run.exp / "metrics.csv"
    if state.epoch == 0 or not metrics_path.exists():
        with atomic_write(metrics_path, newline="") as f:
            csv.writer(f).writerow(METRICS)


def _train(cfg: Config, resume: bool, group: Group, device: torch.device, may_restart: bool = False) -> Path:
    t = cfg.train
    exp = _start(cfg, group)
    sources = train_sources(cfg.data)
    dev_utts = read_manifest(cfg.data.dev_manifest, scoring=True)
    vocab = _vocabulary(cfg, [u for _, _, utts in sources for u in utts], dev_utts)
    if group.main:
        vocab.save(exp / "vocab.json")
    model = DeepSpeech2(cfg.model, cfg.features, len(vocab))
    if t.init_from:
        init_weights(model, vocab, t.init_from)
    sources, dev_utts = _screen(cfg, exp, group, vocab, model, sources, dev_utts)
    if cfg.model.head_bias and not t.init_from:
        init_head_prior(model, vocab, [u for _, _, utts in sources for u in utts], cfg)
    log.info(_describe_model(cfg, model, len(vocab), group, device))
    if device.type == "cpu":
        log.info(allocator.describe())
    train_set, sampler, loader, dev_loader = _loaders(cfg, vocab, sources, dev_utts, group, device)
    _place_model(cfg, model, train_set, sampler, fit_stats=not resume and not t.init_from, device=device)

    total_steps = _total_steps(sampler, t, t.epochs)
    # fused: one kernel over all parameters (1.2 against 8.3 ms a step for the default model on 2 CPU cores)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay,
                            fused=device.type in ("cpu", "cuda"))
    sched = make_scheduler(opt, cfg, total_steps)
    amp_dtype, use_amp = _precision(cfg, model, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    loss_fn = get_ctc_loss(t.loss)
    specaug_gen = torch.Generator().manual_seed(t.seed + group.rank)
    step_model = train_step = TrainStep(model, cfg.specaugment, specaug_gen, cfg.data.vtlp)
    if group.enabled:
        step_model = torch.nn.parallel.DistributedDataParallel(
            step_model, device_ids=[device.index] if device.type == "cuda" else None)
    state = TrainState(model, opt, sched, scaler, specaug_gen, epochs=t.epochs)
    _restore(state, exp, vocab, resume)
    if not t.time_budget or state.epoch == 0:  # the length this config asks for (a budget decides after epoch 1)
        state.epochs = t.epochs
        _set_total_steps(sched, total_steps)
    run = _Run(replace(cfg, train=replace(t, epochs=state.epochs)), exp, group, device, vocab, train_set, sampler,
               loader, dev_loader, step_model, loss_fn, amp_dtype, use_amp, _NullWriter())
    _open_outputs(run, state)

    for epoch in range(state.epoch, t.epochs):
        if epoch >= state.epochs or (t.max_steps and state.step >= t.max_steps):
            break
        progress, state.progress = state.progress or EpochProgress(), None
        train_step.masking = epoch + 1 >= cfg.specaugment.from_epoch
        train_one_epoch(run, state, epoch, progress)
        dev_start = time.time()
        dev = evaluate_loss_and_wer(model, dev_loader, vocab, loss_fn, device, group)
        seconds = progress.seconds + time.time() - dev_start
        state.spent += seconds
        if epoch == 0 and t.time_budget:
            _fit_time_budget(run, state, seconds)
        elif t.time_budget and epoch + 1 < state.epochs:
            _refit_time_budget(run, state, epoch + 1, seconds)
        if group.main:
            end_epoch(run, state, epoch, progress, dev)
        barrier(group)  # the other ranks wait for rank 0's checkpoint
        if may_restart and epoch == 0 and dev["cer"] > t.plateau_dev_cer:
            run.writer.close()
            raise Plateau(f"dev CER {100 * dev['cer']:.1f}% after epoch 1 (train.plateau_dev_cer "
                          f"{100 * t.plateau_dev_cer:.0f}%): CTC's blank plateau")
    run.writer.close()
    if group.main and not (exp / "best.pt").exists():
        raise TrainingError(f"training finished without a checkpoint in {exp}")
    return exp / "best.pt"


def _total_steps(sampler: BucketBatchSampler, t: TrainConfig, epochs: int) -> int:
    """Optimizer steps in the first `epochs` epochs (at most train.max_steps)."""
    steps = sum(math.ceil(sampler.batches_per_rank(e) / t.accum_steps) for e in range(epochs))
    return min(steps, t.max_steps) if t.max_steps else steps


def _set_total_steps(sched: torch.optim.lr_scheduler.LRScheduler, total_steps: int) -> None:
    for fn in getattr(sched, "lr_lambdas", []):  # WarmupCosine (OneCycleLR fixes its length when made)
        fn.total_steps = total_steps


def _fit_time_budget(run: _Run, state: TrainState, first_epoch_seconds: float) -> None:
    """After epoch 1 of a run with `train.time_budget`: keep as many epochs as the budget holds at epoch 1's pace
    (dev evaluation included; at least train.min_epochs, at most train.epochs; rank 0's choice on every rank), end
    the learning rate's cosine at the last of them, and say so in the log and config.yaml."""
    t = run.cfg.train
    fits = int(t.time_budget // max(first_epoch_seconds, 1e-9))
    epochs = gather(min(t.epochs, max(t.min_epochs, fits)), run.group)[0]
    _set_run_length(run, state, epochs)
    shorter = " (epoch 1's learning rate then decays a little sooner)" if epochs < t.epochs else ""
    log.info(f"train.time_budget {t.time_budget:.0f} s: epoch 1 took {first_epoch_seconds:.0f} s with dev, so "
             f"{epochs} epochs of at most {t.epochs} (train.min_epochs {t.min_epochs}); `train.epochs={epochs} "
             f"train.time_budget=0` trains as long{shorter}")


def epochs_within_budget(budget: float, spent: float, done: int, last: float, planned: int, floor: int) -> int:
    """The run's length after `done` epochs that took `spent` seconds, the last of them `last`: `planned` while
    the epochs left fit in `budget` at the last one's pace (or overrun it by at most BUDGET_SLACK), else as many
    as fit (at least `floor` and `done`). Never longer than planned: it only catches a host that slowed down."""
    if spent + (planned - done) * last <= budget * (1 + BUDGET_SLACK):
        return planned
    return max(floor, done, min(planned, done + int(max(0.0, budget - spent) // max(last, 1e-9))))


def _refit_time_budget(run: _Run, state: TrainState, done: int, last_seconds: float) -> None:
    """After a later epoch of a run with `train.time_budget`: shorten the run if the host has slowed so that the
    epochs left no longer fit (see `epochs_within_budget`), ending the cosine at the new last epoch."""
    t = run.cfg.train
    epochs = gather(epochs_within_budget(t.time_budget, state.spent, done, last_seconds, state.epochs,
                                         t.min_epochs), run.group)[0]
    if epochs == state.epochs:
        return
    log.info(f"train.time_budget {t.time_budget:.0f} s: {done} epochs took {state.spent:.0f} s, the last "
             f"{last_seconds:.0f} s, so {epochs} epochs instead of {state.epochs}")
    _set_run_length(run, state, epochs)


def _set_run_length(run: _Run, state: TrainState, epochs: int) -> None:
    """The run trains `epochs` epochs: its cosine ends at the last of them, and config.yaml says so."""
    state.epochs = epochs
    _set_total_steps(state.sched, _total_steps(run.sampler, run.cfg.train, epochs))
    run.cfg = replace(run.cfg, train=replace(run.cfg.train, epochs=epochs))
    if run.group.main:
        save_config(run.cfg, run.exp / "config.yaml")


def train_one_epoch(run: _Run, state: TrainState, epoch: int, progress: EpochProgress) -> None:
    """One pass over the epoch's batches (from `progress.batch` on), updating `state` and `progress`: each batch a
    forward and backward pass, and every `train.accum_steps` batches (and at the epoch's end) an optimizer step."""
    t, group, device, vocab = run.cfg.train, run.group, run.device, run.vocab
    run.sampler.set_epoch(epoch, skip=progress.batch)
    run.train_set.set_epoch(epoch)
    state.model.train()
    t0 = time.time() - progress.seconds
    bar = tqdm(run.loader, desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch", dynamic_ncols=True,
               disable=None if group.main else True, file=sys.stderr)
    micro = 0  # micro-batches accumulated into the next optimizer step
    for batch in bar:
        batch: Batch
        progress.batch += 1
        if batch.failed:
            progress.failed += len(batch.failed)
            for utt_id, reason in batch.failed:
                log.warning(f"skipped unreadable utterance {utt_id}: {reason}")
        if any_rank(not len(batch), group):  # every rank skips together, or the gradient sync hangs
            continue
        with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.use_amp):
            outputs = run.step_model(batch.waves.to(device, non_blocking=True), batch.wave_lengths.to(device))
        loss = ctc_objective(run.loss_fn, outputs, batch.targets.to(device), batch.target_lengths.to(device),
                             vocab.blank, run.cfg.model.inter_ctc_weight)
        if any_rank(not torch.isfinite(loss), group):
            progress.skipped += 1
            state.consecutive_bad += 1
            log.warning(f"non-finite loss at step {state.step} (this rank: {loss.item()}); batch skipped on every "
                        f"rank: {batch.ids}")
            state.opt.zero_grad(set_to_none=True)
            micro = 0
            if state.consecutive_bad >= MAX_CONSECUTIVE_BAD_BATCHES:
                raise TrainingError(f"{state.consecutive_bad} consecutive batches had non-finite loss; "
                                    f"lower train.lr or check the data (last batch: {batch.ids[:5]})")
            continue
        state.consecutive_bad = 0
        micro += 1
        last_micro = micro == t.accum_steps or progress.batch == len(run.sampler) + run.sampler.skip
        sync = run.step_model.no_sync() if group.enabled and not last_micro else contextlib.nullcontext()
        with sync:
            state.scaler.scale(loss / t.accum_steps).backward()
        if not last_micro:
            continue
        micro = 0
        grad_norm = _optimizer_step(state, t.grad_clip)
        progress.seen_audio += sum(batch.durations)
        progress.seen_utts += len(batch)
        progress.loss_sum += loss.item()
        progress.loss_n += 1
        _log_step(run, state, epoch, progress, loss.item(), float(grad_norm), time.time() - t0, bar)
        if (group.main and t.save_every_steps and state.step % t.save_every_steps == 0
                and progress.batch < len(run.sampler) + run.sampler.skip):
            progress.seconds = time.time() - t0
            save_last(run.exp, t.keep_last, run.checkpoint(state, epoch, progress))
        if t.max_steps and state.step >= t.max_steps:
            break
    bar.close()
    if progress.failed and progress.failed >= 0.5 * len(run.train_set):
        raise TrainingError(f"{progress.failed} of {len(run.train_set)} training utterances could not be read in "
                            f"epoch {epoch + 1}; see the warnings above")
    progress.seconds = time.time() - t0


def ctc_objective(loss_fn, outputs: tuple[torch.Tensor, ...], targets: torch.Tensor, target_lengths: torch.Tensor,
                  blank: int, inter_weight: float) -> torch.Tensor:
    """The mean CTC loss training minimises, from the model's (log-probs, lengths[, intermediate log-probs]): the
    final head's, or with model.inter_ctc_layer (1 - w) x it + w x the intermediate head's."""
    def loss(log_probs: torch.Tensor) -> torch.Tensor:
        return loss_fn(log_probs.float().transpose(0, 1), targets, outputs[1], target_lengths, blank=blank,
                       reduction="mean")

    if len(outputs) == 2:
        return loss(outputs[0])
    return (1 - inter_weight) * loss(outputs[0]) + inter_weight * loss(outputs[2])


def _optimizer_step(state: TrainState, grad_clip: float) -> torch.Tensor:
    """Unscale, clip, step, advance the schedule; the gradient norm before clipping."""
    state.scaler.unscale_(state.opt)
    grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), grad_clip)
    state.scaler.step(state.opt)
    state.scaler.update()
    state.opt.zero_grad(set_to_none=True)
    state.sched.step()
    state.step += 1
    return grad_norm


def _log_step(run: _Run, state: TrainState, epoch: int, progress: EpochProgress, loss: float, grad_norm: float,
              elapsed: float, bar) -> None:
    rate = progress.seen_audio / max(elapsed, 1e-9)
    bar.set_postfix(loss=f"{loss:.3f}", utt_s=f"{progress.seen_utts / max(elapsed, 1e-9):.0f}", audio_s=f"{rate:.0f}")
    if state.step % run.cfg.train.log_every == 0:
        run.writer.add_scalar("train/loss", loss, state.step)
        run.writer.add_scalar("train/lr", state.sched.get_last_lr()[0], state.step)
        run.writer.add_scalar("train/grad_norm", grad_norm, state.step)
        if bar.disable:
            log.info(f"epoch {epoch + 1} step {state.step}: loss {loss:.3f}, {rate:.0f} audio-s/s")


def end_epoch(run: _Run, state: TrainState, epoch: int, progress: EpochProgress, dev: dict) -> None:
    """Rank 0 after an epoch: metrics row, TensorBoard, curves, log line; last, kept and best checkpoints."""
    exp, t = run.exp, run.cfg.train
    train_loss = progress.loss_sum / max(progress.loss_n, 1)
    row = {"epoch": epoch + 1, "step": state.step, "lr": state.sched.get_last_lr()[0], "train_loss": train_loss,
           "dev_loss": dev["loss"], "dev_wer": dev["wer"], "dev_cer": dev["cer"], "epoch_seconds": progress.seconds,
           "audio_seconds_per_second": progress.seen_audio / max(progress.seconds, 1e-9),
           "skipped_batches": progress.skipped, "failed_utterances": progress.failed}
    with (exp / "metrics.csv").open("a", newline="") as f:
        csv.DictWriter(f, METRICS).writerow(row)
    for k in ("train_loss", "dev_loss", "dev_wer", "dev_cer"):
        run.writer.add_scalar(f"epoch/{k}", row[k], epoch + 1)
    run.writer.flush()
    plot_training_curves(exp / "metrics.csv", exp / "curves.png")
    skipped, failed = progress.skipped, progress.failed
    log.info(f"epoch {epoch + 1}: train loss {train_loss:.3f}, dev loss {dev['loss']:.3f}, "
             f"dev WER {100 * dev['wer']:.2f}%, CER {100 * dev['cer']:.2f}% "
             f"({progress.seconds:.0f}s, {row['audio_seconds_per_second']:.0f} audio-s/s"
             f"{f', {skipped} batches skipped' if skipped else ''}{f', {failed} unreadable' if failed else ''})")
    if dev["examples"]:
        ref, hyp = dev["examples"][0]
        log.info(f"  ref: {ref}\n  hyp: {hyp}")
    is_best = dev["wer"] < state.best_wer
    state.best_wer = min(state.best_wer, dev["wer"])
    ckpt = run.checkpoint(state, epoch, None, dev["wer"])
    save_last(exp, t.keep_last, ckpt)
    keep_best(exp, t.keep_best, epoch, dev["wer"])
    if is_best:
        save_checkpoint(inference_view(ckpt), exp / "best.pt")
        log.info(f"  new best dev WER {100 * state.best_wer:.2f}% -> {exp / 'best.pt'}")
