"""The stages every corpus recipe shares once its manifests exist: vocabulary, LM, training, LM
tuning, decoding and scoring, with a results.json that says how each number can be made again.

A recipe's own code only prepares the manifests of train, dev and its test sets and the LM text from its
corpus's layout (where each file goes: `cfg.paths`, asr.recipe_paths); `corpus_stages` adds the rest.
"""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .atomic import write_text_atomic
from .config import Config, DataConfig, config_changes, to_dict
from .evaluate import format_result, model_outputs, score_outputs
from .inference import DECODING_FILE, Recognizer
from .lm_build import build_lm
from .lm_tune import format_tuning, tune
from .manifest import read_manifest
from .prepare import write_lm_text
from .recipe import Stage
from .recipe_paths import RecipePaths
from .text import build_vocabulary, check_vocabulary
from .training import train

log = logging.getLogger("asr.recipe")
DECODERS = ("greedy", "lm")


@dataclass
class LMConfig:
    order: int = 4
    engine: str = "auto"  # lmplz when built (scripts/build_kenlm.sh), else the built-in estimator
    prune: list[int] = field(default_factory=list)  # lmplz --prune: [0, 0, 1] drops 3- and 4-grams seen once
    extra_text: list[str] = field(default_factory=list)  # more LM text (e.g. librispeech-lm-norm.txt)
    beam: int = 100
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
    betas: list[float] = field(default_factory=lambda: [-1.0, 0.0, 1.0, 2.0, 3.0])
    search: str = "local"  # asr.lm_tune.SEARCHES: walk the grid from its centre, or "grid": decode every point


@dataclass
class RecipeConfig(Config):
    size: str = "default"
    data_dir: str = "data/recipe"
    decode_batch_size: int = 32
    test_sets: list[str] = field(default_factory=lambda: ["test"])  # names of manifests (paths.manifest)
    lm: LMConfig = field(default_factory=LMConfig)
    # data.train_manifest, data.dev_manifest and data.vocabulary default to where `paths` puts them
    data: DataConfig = field(default_factory=lambda: DataConfig(train_manifest="", dev_manifest=""))

    def __post_init__(self) -> None:
        d, paths = self.data, self.paths
        d.train_manifest = d.train_manifest or str(paths.manifest("train"))
        d.dev_manifest = d.dev_manifest or str(paths.manifest("dev"))
        d.vocabulary = d.vocabulary or str(paths.vocabulary)

    @property
    def paths(self) -> RecipePaths:
        return RecipePaths(Path(self.data_dir), Path(self.exp_dir), self.lm.order)


def train_manifests(cfg: RecipeConfig) -> list[Path]:
    """data.train_manifest and the manifests of data.train_sources."""
    return [Path(cfg.data.train_manifest)] + [Path(src.manifest) for src in cfg.data.train_sources]


def vocabulary_stage(cfg: RecipeConfig, charset_text: Callable[[], Iterable[str]] | None = None) -> None:
    """Characters or SentencePiece units from the training transcripts, checked against dev. `charset_text`:
    more normalised text whose characters a character vocabulary also holds (a recipe that knows every
    sentence it will ever score, so a small training set cannot miss a letter dev or test uses)."""
    texts = [u.text for p in train_manifests(cfg) for u in read_manifest(p)]
    if charset_text is not None and cfg.data.tokenizer == "char":
        texts += list(charset_text())
    vocab = build_vocabulary(texts, cfg.data.tokenizer, cfg.data.vocab_size, cfg.data.text_norm)
    check_vocabulary(vocab, [(u.id, u.text) for u in read_manifest(cfg.paths.manifest("dev"))])
    vocab.save(cfg.data.vocabulary)
    log.info(f"vocabulary: {len(vocab)} outputs ({cfg.data.tokenizer}) -> {cfg.data.vocabulary}")


def lm_stage(cfg: RecipeConfig) -> None:
    texts = [cfg.paths.lm_text] + [Path(t) for t in cfg.lm.extra_text]
    report = build_lm(texts, cfg.paths.lm, cfg.lm.order, cfg.lm.engine, text_norm=cfg.data.text_norm,
                      prune=cfg.lm.prune)
    write_text_atomic(cfg.paths.lm.parent / "report.json", json.dumps(report, indent=2))


def train_stage(cfg: RecipeConfig) -> None:
    """Train; resume an interrupted run of the same config, start afresh when the config changed."""
    exp = Path(cfg.exp_dir)
    stamp, stamp_file = json.dumps(to_dict(cfg), sort_keys=True), exp / ".train_config.json"
    same = stamp_file.exists() and stamp_file.read_text() == stamp
    if not same:
        if stamp_file.exists() and (exp / "last.pt").exists():
            changes = config_changes(json.loads(stamp_file.read_text()), json.loads(stamp))
            log.warning(f"training config changed since {exp / 'last.pt'} ({'; '.join(changes[:8])}"
                        f"{'; ...' if len(changes) > 8 else ''}): training starts afresh (the earlier run's "
                        f"checkpoints stay in {exp / 'checkpoints'})")
        for name in ("last.pt", "best.pt", "metrics.csv"):
            (exp / name).unlink(missing_ok=True)
    exp.mkdir(parents=True, exist_ok=True)
    write_text_atomic(exp / ".train_config.json", stamp)
    train(cfg, resume=same)


def tune_stage(cfg: RecipeConfig) -> None:
    result = tune(cfg.paths.model, cfg.data.dev_manifest, cfg.paths.lm, cfg.lm.alphas, cfg.lm.betas,
                  cfg.lm.beam, cfg.train.device, search=cfg.lm.search)
    log.info(format_tuning(result))


def _test_sets(cfg: RecipeConfig) -> dict[str, Path]:
    return {"dev": Path(cfg.data.dev_manifest), **{name: cfg.paths.manifest(name) for name in cfg.test_sets}}


def decode_stage(cfg: RecipeConfig) -> None:
    paths = cfg.paths
    rec = Recognizer(paths.model, cfg.train.device, cfg.decode_batch_size)  # the LM decoding of decoding.json
    for name, manifest in _test_sets(cfg).items():
        outputs = model_outputs(rec, manifest)  # one pass of the model, decoded both ways
        for decoder in DECODERS:
            result = score_outputs(outputs, rec, paths.decode(name, decoder), paths.model,
                                   greedy=decoder == "greedy")
            log.info(format_result(result))


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def provenance(cfg: RecipeConfig) -> dict:
    """What regenerates the numbers: commit, config hash, manifest checksums, seed."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, cwd=Path(__file__).parent).stdout.strip())
    except OSError:
        commit, dirty = None, None
    config = json.dumps(to_dict(cfg), sort_keys=True)
    manifests = {**{("train" if i == 0 else f"train_{p.stem}"): p for i, p in enumerate(train_manifests(cfg))},
                 **_test_sets(cfg)}
    return {"commit": commit, "uncommitted_changes": dirty,
            "config_sha256": hashlib.sha256(config.encode()).hexdigest(), "seed": cfg.train.seed,
            "manifests_sha256": {k: _sha256(p) for k, p in manifests.items()},
            "lm_sha256": _sha256(cfg.paths.lm) if cfg.paths.lm.exists() else None}


def score_stage(cfg: RecipeConfig) -> None:
    paths = cfg.paths
    keys = ("wer", "cer", "utterances", "decoder", "beam", "lm", "alpha", "beta")
    results = {}
    for name in _test_sets(cfg):
        greedy, lm = (json.loads((paths.decode(name, d) / "summary.json").read_text()) for d in DECODERS)
        results[name] = {k: greedy[k] for k in keys if k in greedy}
        results[name]["with_lm"] = {k: lm[k] for k in keys if k in lm}
        if greedy["wer"]:
            results[name]["with_lm"]["relative_wer_reduction"] = (greedy["wer"] - lm["wer"]) / greedy["wer"]
    write_text_atomic(paths.results, json.dumps({**results, "provenance": provenance(cfg)}, indent=2))
    print(results_table(results))


def results_table(results: dict) -> str:
    """The WER table printed at the end of a recipe."""
    lines = [f"{'test set':<12} {'decoder':<12} {'utts':>6} {'WER %':>8} {'CER %':>8}"]
    for name, r in results.items():
        if name == "provenance":
            continue
        for row in (r, r["with_lm"]):
            lines.append(f"{name:<12} {row['decoder']:<12} {row['utterances']:>6} {100 * row['wer']:>8.2f} "
                         f"{100 * row['cer']:>8.2f}")
    names = [k for k in results if k != "provenance"]
    main = names[1] if len(names) > 1 else names[0]  # the first test set after dev
    with_lm = results[main]["with_lm"]
    if "relative_wer_reduction" in with_lm:
        lines.append(f"LM fusion: {100 * with_lm['relative_wer_reduction']:.1f}% fewer word errors than greedy on {main} "
                     f"(alpha {with_lm['alpha']:g}, beta {with_lm['beta']:g}, tuned on dev)")
    return "\n".join(lines)


def _text_norm_key(cfg: RecipeConfig) -> dict:
    """data.text_norm for a stage's stamp, named only when not the default (so speech recipes' stamps stay)."""
    return {"text_norm": cfg.data.text_norm} if cfg.data.text_norm != "speech" else {}


def corpus_stages(cfg: RecipeConfig, prepare: Stage, charset_text: Callable[[], Iterable[str]] | None = None
                  ) -> list[Stage]:
    """`prepare` (the recipe's own) followed by the shared stages (`charset_text`: see `vocabulary_stage`)."""
    paths = cfg.paths
    sets = _test_sets(cfg)
    manifests = [Path(cfg.data.train_manifest), *sets.values()]
    train_inputs = [*train_manifests(cfg), Path(cfg.data.dev_manifest)]
    train_keys = {k: v for k, v in to_dict(cfg).items() if k in ("data", "features", "specaugment", "model", "train")}
    summaries = [paths.decode(n, d) / "summary.json" for n in sets for d in DECODERS]
    return [
        prepare,
        Stage("vocabulary", lambda: vocabulary_stage(cfg, charset_text), inputs=train_inputs,
              outputs=[Path(cfg.data.vocabulary)],
              config={"tokenizer": cfg.data.tokenizer, "vocab_size": cfg.data.vocab_size, **_text_norm_key(cfg)}),
        Stage("lm", lambda: lm_stage(cfg), inputs=[paths.lm_text] + [Path(t) for t in cfg.lm.extra_text],
              outputs=[cfg.paths.lm], config={"order": cfg.lm.order, "engine": cfg.lm.engine,
                                              **({"prune": cfg.lm.prune} if any(cfg.lm.prune) else {}),
                                              **_text_norm_key(cfg)}),
        Stage("train", lambda: train_stage(cfg), inputs=train_inputs + [Path(cfg.data.vocabulary)],
              outputs=[paths.model], config=train_keys),
        Stage("tune", lambda: tune_stage(cfg), inputs=[paths.model, manifests[1], paths.lm],
              outputs=[paths.exp / DECODING_FILE], config=asdict(cfg.lm)),
        Stage("decode", lambda: decode_stage(cfg), inputs=[paths.model, paths.exp / DECODING_FILE] + manifests[1:],
              outputs=summaries),
        Stage("score", lambda: score_stage(cfg), inputs=summaries, outputs=[paths.results]),
    ]


def held_out_speaker_stages(cfg: RecipeConfig, prepare: Callable[[], dict], inputs: list[Path], config: dict
                            ) -> list[Stage]:
    """A corpus whose `prepare` writes manifests/{train,dev,test}.jsonl and inventory.tsv and returns its report
    (a game's speech, speakers held out whole): its prepare stage, with the LM text and report written after,
    then the shared stages."""
    paths = cfg.paths

    def run() -> None:
        report = prepare()
        report["lm_text_sentences"] = write_lm_text(paths.data, "train")
        write_text_atomic(paths.data / "prepare_report.json", json.dumps(report, indent=2))

    stage = Stage("prepare", run, inputs=inputs,
                  outputs=paths.manifests(("train", "dev", "test")) + [paths.lm_text, paths.data / "inventory.tsv"],
                  config={**config, "data_dir": cfg.data_dir})
    return corpus_stages(cfg, stage)
