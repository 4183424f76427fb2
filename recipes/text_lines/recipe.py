"""text_lines: printed lines of English read by the DeepSpeech2 stack (strided convs, BiGRUs, CTC) as images.

Lines of real English (fortunes and WordNet's usage examples, Debian packages) are rendered in Debian's fonts
and made to look scanned (asr.text_render); whole font families are held out for dev and test, and so are the
sentences the dev and test lines come from, which never reach training or the LM. Case, digits and punctuation
are kept (data.text_norm=verbatim): the vocabulary is every character of the training lines (a held-out line
with a character no training line has is rejected, with the reason). After rendering and preparing, the stages
are the speech recipes' own: vocabulary, LM, train, tune, decode, score.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from asr import english_text, images
from asr.atomic import atomic_write, write_text_atomic
from asr.config import ConfigError
from asr.fork_pool import fork_map
from asr.manifest import Utterance, read_manifest, write_manifest
from asr.recipe import Stage
from asr.recipe_stages import RecipeConfig, corpus_stages
from asr.text import verbatim_text
from asr.text_render import CHARSET, Font, Look, installed_fonts, render_line, wrap_lines

log = logging.getLogger("asr.recipe")

# The default size's bf16 training step (asr.step_timing: 32 random lines of 2.4-4 s, asr.gru) above which a host
# trains the float32 size instead (asr.recipe.default_size). Measured 2026-12-07 on an EPYC Zen 4 (AVX-512 on
# 256-bit units): 550-686 ms in five fresh processes, and the default trained at 176 audio-s/s there, about 1,200 s
# for its two epochs: about 1.9 s of training per ms, so 0.45 s is about 15 minutes. An EPYC Zen 5 trains it at
# 316-334 audio-s/s (629-667 s), 1.85x as fast: about 300-370 ms.
SLOW_STEP_SECONDS = 0.45

# Font families by split (Debian packages in brackets). No dev or test family is a metric clone of a training
# one; each split has serif, sans and handwriting-like faces.
TRAIN_FAMILIES = (
    "DejaVu Sans", "DejaVu Serif", "DejaVu Sans Mono",  # fonts-dejavu-core, fonts-dejavu-extra
    "Liberation Sans", "Liberation Serif", "Liberation Mono", "Liberation Sans Narrow",  # fonts-liberation(2)
    "FreeSans", "FreeSerif", "FreeMono",  # fonts-freefont-ttf
    "Nimbus Sans", "Nimbus Sans Narrow", "Nimbus Roman", "Nimbus Mono PS", "URW Gothic", "Z003",  # fonts-urw-base35
    "Linux Libertine O", "Linux Biolinum O",  # fonts-linuxlibertine
    "Cantarell",  # fonts-cantarell
    "EB Garamond", "Gentium", "Charis SIL",  # fonts-ebgaramond, fonts-sil-gentium, fonts-sil-charis
    "Old Standard TT", "Junicode Two Beta",  # fonts-oldstandard, fonts-junicode
    "Accanthis ADF Std", "Baskervald ADF Std",  # fonts-adf-accanthis, fonts-adf-baskervald
    "Open Sans", "Cabin", "Jura", "Mekanus ADF Std",  # fonts-open-sans, fonts-cabin, fonts-jura, fonts-adf-mekanus
    "Averia Sans GWF", "Averia Serif GWF", "Fantasque Sans Mono",  # fonts-averia-(sans|serif)-gwf, -fantasque-sans
    "Andika", "Comfortaa", "Yanone Kaffeesatz",  # fonts-sil-andika, fonts-comfortaa, fonts-yanone-kaffeesatz
    "DkgHandwriting", "Kaushan Script", "femkeklaver",  # fonts-dkg-handwriting, -kaushanscript, -femkeklaver
    "Comic Neue", "Dancing Script", "Isabella", "Kristi",  # fonts-comic-neue, -dancingscript, -isabella, -kristi
    "Leckerli One", "Lobster Two", "Klee One", "Cabin Sketch",  # fonts-leckerli-one, -lobstertwo, -klee, -cabinsketch
    "Nanum Brush Script", "Nanum Pen Script", "Purisa", "SetoFont", "StayPuft",  # fonts-nanum-extra, -tlwg-purisa-ttf,
    # -seto, -staypuft
    "Delphine", "Steve", "Yusei Magic", "kiloji", "kiloji - P", "OpenDyslexic",  # fonts-sjfonts, -yusei-magic,
    # -kiloji, -opendyslexic
)
DEV_FAMILIES = ("C059", "Caladea", "Breip")  # fonts-urw-base35, fonts-crosextra-caladea, fonts-breip
TEST_FAMILIES = ("P052", "URW Bookman", "Carlito", "Rufscript")  # fonts-urw-base35, -crosextra-carlito, -rufscript
SPLITS = ("train", "dev", "test")


@dataclass
class TextLinesConfig(RecipeConfig):
    data_dir: str = "data/text_lines"
    train_lines: int = 10000
    dev_lines: int = 300
    test_lines: int = 500
    max_chars: int = 48  # characters per line, at most
    min_chars: int = 8
    seed: int = 0
    processes: int = 2  # rendering workers
    glyph_prob: float = 0.0  # share of training lines drawn glyph by glyph, each glyph jittered (text_render.Look)
    glyph_warp: float = 0.0  # each such glyph bent by a smooth random field of at most this share of the size
    families: dict = field(default_factory=lambda: {"train": list(TRAIN_FAMILIES), "dev": list(DEV_FAMILIES),
                                                    "test": list(TEST_FAMILIES)})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.glyph_prob <= 1:
            raise ConfigError(f"config key 'glyph_prob' = {self.glyph_prob}: must be in [0, 1]")
        if not 0 <= self.glyph_warp <= 0.5:
            raise ConfigError(f"config key 'glyph_warp' = {self.glyph_warp}: must be in [0, 0.5] (of the font size)")
        for s in SPLITS:
            if not self.families.get(s):
                raise ConfigError(f"config key 'families.{s}' is empty")
        overlap = set(self.families["train"]) & (set(self.families["dev"]) | set(self.families["test"]))
        if overlap:
            raise ConfigError(f"config key 'families': {sorted(overlap)} both in training and held out")


SCHEMA = TextLinesConfig


def source_sentences() -> list[str]:
    """Distinct sentences of the offline English text, as written, in printable ASCII and mostly words (the
    fortunes' ASCII art and tables are left out)."""
    out: dict[str, None] = {}
    for sentence in (*english_text.fortunes(), *english_text.wordnet_examples()):
        text = verbatim_text(sentence)
        letters = sum(c.isalpha() or c == " " for c in text)
        if len(text.split()) >= 2 and set(text) <= CHARSET and letters >= 0.8 * len(text):
            out[text] = None
    return list(out)


def split_lines(cfg: TextLinesConfig) -> tuple[dict[str, list[str]], list[str]]:
    """Lines for each split, cut from sentences shuffled by the seed (a sentence gives lines to one split only),
    and the sentences no dev or test line came from (the LM's text)."""
    sentences = source_sentences()
    random.Random(f"{cfg.seed}:sentences").shuffle(sentences)
    wanted = {"test": cfg.test_lines, "dev": cfg.dev_lines, "train": cfg.train_lines}
    lines: dict[str, list[str]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    rng = random.Random(f"{cfg.seed}:wrap")
    held_out_end = 0
    for k, sentence in enumerate(sentences):
        split = next((s for s in ("test", "dev", "train") if len(lines[s]) < wanted[s]), None)
        if split is None:
            break
        if split == "train" and not held_out_end:
            held_out_end = k
        fresh = [x for x in wrap_lines([sentence], cfg.max_chars, cfg.min_chars, rng) if x not in seen]
        seen.update(fresh)
        lines[split] += fresh[: wanted[split] - len(lines[split])]
    short = {s: f"{len(lines[s])}/{wanted[s]}" for s in SPLITS if len(lines[s]) < wanted[s]}
    if short:
        raise RuntimeError(f"not enough English text for the lines asked for: {short} (install fortunes and wordnet-base)")
    return lines, sentences[held_out_end:]


def _render(fonts: dict[str, dict[str, list[Font]]], job: tuple[int, str, int, str, str, Look]) -> dict:
    """One line's image, every choice drawn from (seed, split, line number)."""
    seed, split, index, text, folder, look = job
    rng = random.Random(f"{seed}:{split}:{index}")
    family = rng.choice(sorted(fonts[split]))
    font = rng.choice(fonts[split][family])
    utt_id = f"{split}-{index:06d}"
    path = Path(folder) / split / f"{utt_id}.png"
    img = render_line(text, font, rng, look)
    with atomic_write(path, "wb") as f:
        img.save(f, format="PNG")
    return {"id": utt_id, "image": str(path), "text": text, "family": family, "font": Path(font.path).name,
            "style": font.style}


def render_stage(cfg: TextLinesConfig) -> None:
    """Every split's lines rendered to <data_dir>/render/<split>/*.png, listed in render/<split>.jsonl."""
    installed = installed_fonts()
    fonts = {s: {f: installed[f] for f in cfg.families[s] if f in installed} for s in SPLITS}
    for s in SPLITS:  # a missing family would change the split's mix of faces: refused, not skipped
        missing = sorted(set(cfg.families[s]) - set(fonts[s]))
        if missing:
            raise ConfigError(f"config key 'families.{s}': {missing} not installed (bash scripts/setup.sh installs "
                              f"them), or not drawing every character of printable ASCII")
    lines, rest = split_lines(cfg)
    out = Path(cfg.data_dir) / "render"
    for s in SPLITS:
        look = Look(glyph_prob=cfg.glyph_prob, glyph_warp=cfg.glyph_warp) if s == "train" else Look()
        rows = fork_map(_render, fonts, [(cfg.seed, s, i, t, str(out), look) for i, t in enumerate(lines[s])],
                        cfg.processes, chunksize=64)
        write_text_atomic(out / f"{s}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        log.info(f"rendered {s}: {len(rows)} lines in {len({r['family'] for r in rows})} font families")
    write_text_atomic(out / "lm_sentences.txt", "\n".join(rest) + "\n")


def prepare_stage(cfg: TextLinesConfig) -> None:
    """Manifests of the rendered lines (each image checked: unreadable ones, and held-out lines with a character
    no training line has, are listed in rejected/<split>.tsv) and the LM text (training lines and the sentences no
    held-out line came from)."""
    data, render = Path(cfg.data_dir), Path(cfg.data_dir) / "render"
    height = cfg.features.image_height
    report, families, trained = {}, {}, set()
    for s in SPLITS:  # train first: its characters are the vocabulary
        rows = [json.loads(x) for x in (render / f"{s}.jsonl").read_text().splitlines()]
        utts, rejected = [], []
        for r in rows:
            unseen = sorted(set(r["text"]) - trained) if s != "train" else []
            if unseen:
                rejected.append((r["id"], f"characters in no training line: {''.join(unseen)}", r["image"]))
                continue
            try:
                pixels = images.read_image(r["image"], height)
            except images.ImageError as e:
                rejected.append((r["id"], str(e), r["image"]))
                continue
            utts.append(Utterance(r["image"], round(pixels.shape[1] / images.COLUMNS_PER_SECOND, 3), r["text"],
                                  speaker=r["family"], id=r["id"]))
        write_manifest(cfg.paths.manifest(s), utts, relative_to_manifest=True)
        trained |= {c for u in utts for c in u.text} if s == "train" else set()
        with atomic_write(data / "rejected" / f"{s}.tsv") as f:
            f.write("id\treason\timage\n" + "".join("\t".join(row) + "\n" for row in rejected))
        families[s] = sorted({r["family"] for r in rows})
        report[s] = {"lines": len(utts), "rejected": len(rejected), "font_families": families[s],
                     "fonts": len({r["font"] for r in rows}), "characters": sum(len(u.text) for u in utts)}
        log.info(f"prepared {s}: {len(utts)} lines, {len(rejected)} rejected, families {families[s]}")
    assert not set(families["train"]) & (set(families["dev"]) | set(families["test"])), "a held-out font trained"
    train_text = [u.text for u in read_manifest(cfg.paths.manifest("train"))]
    lm_text = sorted(set(train_text)) + (render / "lm_sentences.txt").read_text().splitlines()
    write_text_atomic(cfg.paths.lm_text, "\n".join(lm_text) + "\n")
    report["lm_text_lines"] = len(lm_text)
    write_text_atomic(data / "prepare_report.json", json.dumps(report, indent=2))


def stages(cfg: TextLinesConfig) -> list[Stage]:
    data = Path(cfg.data_dir)
    render_config = {k: getattr(cfg, k) for k in ("train_lines", "dev_lines", "test_lines", "max_chars", "min_chars",
                                                 "seed", "families", "glyph_prob", "glyph_warp")}
    render_config["look"] = hashlib.sha256(repr(Look()).encode()).hexdigest()[:12]
    render = Stage("render", lambda: render_stage(cfg), inputs=[],
                   outputs=[data / "render" / f"{s}.jsonl" for s in SPLITS] + [data / "render" / "lm_sentences.txt"],
                   config=render_config)
    prepare = Stage("prepare", lambda: prepare_stage(cfg),
                    inputs=[data / "render" / f"{s}.jsonl" for s in SPLITS] + [data / "render" / "lm_sentences.txt"],
                    outputs=cfg.paths.manifests(SPLITS) + [cfg.paths.lm_text],
                    config={"image_height": cfg.features.image_height, "data_dir": cfg.data_dir})
    return [render, *corpus_stages(cfg, prepare)]
