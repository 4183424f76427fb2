"""Text-line images: rendering, the image front end, loading errors, and the text_lines recipe through the CLI."""
import io
import json
import random
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

from conftest import ROOT, run_cli

from asr import images, text_render
from asr.audio import AudioError, load_audio
from asr.config import Config, ConfigError, FeatureConfig, ModelConfig, load_config
from asr.model import DeepSpeech2, conv_shapes
from asr.text import CharVocabulary, verbatim_text, vocabulary_from_dict
from asr.text_render import Font, Look, installed_fonts, render_line

FONTS = installed_fonts()
needs_fonts = pytest.mark.skipif(not {"DejaVu Sans", "DejaVu Serif"} <= set(FONTS),
                                 reason="fonts-dejavu (bash scripts/setup.sh installs the fonts)")


@needs_fonts
def test_rendering_is_seeded():
    font = FONTS["DejaVu Serif"][0]
    text = "Seeded: the same (line), twice!"
    a, b = (np.asarray(render_line(text, font, random.Random("7:train:3"))) for _ in range(2))
    c = np.asarray(render_line(text, font, random.Random("7:train:4")))
    assert a.shape == b.shape and np.array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)
    assert a.dtype == np.uint8 and a.min() < 100 < a.max()  # ink on paper


@needs_fonts
def test_rendered_text_reads_left_to_right_in_columns():
    """More text is a wider image, and the ink lies across the line (not a blank or a squashed image)."""
    font, look = FONTS["DejaVu Sans"][0], Look(rotate=0, shear=0, elastic=0, blur=0, noise=0, jpeg_prob=0,
                                               low_res_prob=0, margin=(4, 4), size=(32, 32))
    short, long = (images.decode_image(_png(render_line(t, font, random.Random(0), look)), "line", 32)
                   for t in ("short line", "a much longer line of words"))
    assert long.shape[1] > 2 * short.shape[1] and short.shape[0] == 32
    ink_columns = (long > 0.5).any(axis=0)
    assert ink_columns[: long.shape[1] // 4].any() and ink_columns[-long.shape[1] // 4:].any()


@needs_fonts
def test_glyph_by_glyph_lines_are_seeded_and_keep_the_line():
    """A line drawn glyph by glyph is another face of the same text: seeded, as wide and as high as the font's own
    rendering within a fifth, ink from end to end."""
    font = FONTS["DejaVu Serif"][0]
    clean = Look(rotate=0, shear=0, elastic=0, blur=0, noise=0, jpeg_prob=0, low_res_prob=0, margin=(4, 4),
                 size=(32, 32))
    text = "Jumbled glyphs, (still) one line: 42!"
    plain = np.asarray(render_line(text, font, random.Random(5), clean))
    jittered = [np.asarray(render_line(text, font, random.Random(5), replace(clean, glyph_prob=1.0))) for _ in range(2)]
    other = np.asarray(render_line(text, font, random.Random(6), replace(clean, glyph_prob=1.0)))
    assert np.array_equal(*jittered) and (other.shape != jittered[0].shape or not np.array_equal(other, jittered[0]))
    assert not (plain.shape == jittered[0].shape and np.array_equal(plain, jittered[0]))
    for axis in (0, 1):
        assert abs(jittered[0].shape[axis] - plain.shape[axis]) <= plain.shape[axis] / 5
    ink_columns = (jittered[0] < 128).any(axis=0)
    assert ink_columns[:12].any() and ink_columns[-12:].any() and ink_columns.mean() > 0.5


@needs_fonts
def test_warped_glyphs_are_seeded_and_bend_the_strokes():
    """glyph_warp bends each glyph (a face no font has) without losing the line: seeded, another image than the
    unwarped one, about as much ink, ink from end to end."""
    font = FONTS["DejaVu Sans"][0]
    drawn = Look(rotate=0, shear=0, elastic=0, blur=0, noise=0, jpeg_prob=0, low_res_prob=0, margin=(4, 4),
                 size=(32, 32), glyph_prob=1.0)
    text = "wugy nun, Trouble 42!"
    plain = np.asarray(render_line(text, font, random.Random(5), drawn))
    warped = [np.asarray(render_line(text, font, random.Random(5), replace(drawn, glyph_warp=0.15))) for _ in range(2)]
    assert np.array_equal(*warped)
    assert not (plain.shape == warped[0].shape and np.array_equal(plain, warped[0]))
    for axis in (0, 1):
        assert abs(warped[0].shape[axis] - plain.shape[axis]) <= plain.shape[axis] / 5
    assert 0.7 < (warped[0] < 128).sum() / (plain < 128).sum() < 1.3
    ink_columns = (warped[0] < 128).any(axis=0)
    assert ink_columns[:12].any() and ink_columns[-12:].any()


@needs_fonts
def test_glyph_by_glyph_lines_keep_the_fonts_ligatures():
    """A held-out line drawn in one go has the font's fi, fl, ffi ligatures, so a line drawn glyph by glyph draws
    them as one glyph too; a font without ligatures is cut into characters."""
    ligatures = text_render._ligatures(FONTS["P052"][0].path)
    assert {"fi", "fl", "ff", "ffi", "ffl"} <= set(ligatures) and len(ligatures[0]) >= len(ligatures[-1])
    assert text_render._glyphs("official fluff", ligatures) == ["o", "ffi", "c", "i", "a", "l", " ", "fl", "u", "ff"]
    assert text_render._ligatures(FONTS["DejaVu Sans Mono"][0].path) == ()
    assert text_render._glyphs("office", ()) == list("office")


@pytest.mark.parametrize("override, message", [("glyph_warp=0.9", "'glyph_warp' = 0.9: must be in [0, 0.5]"),
                                               ("glyph_prob=-0.1", "'glyph_prob' = -0.1: must be in [0, 1]"),
                                               ("families.test=[DejaVu Sans]",
                                                "'families': ['DejaVu Sans'] both in training and held out")])
def test_text_lines_refuses_bad_look_keys_before_rendering(tmp_path, override, message):
    proc = run_cli("recipe", "run", "recipes/text_lines", "size=default", override, f"data_dir={tmp_path / 'data'}",
                   f"exp_dir={tmp_path / 'exp'}")
    assert proc.returncode != 0 and message in proc.stderr and not (tmp_path / "data").exists()


@needs_fonts
def test_text_lines_refuses_a_family_not_installed_before_rendering(tmp_path):
    """A listed family missing from the machine is an error naming it, not a training set quietly without it."""
    proc = run_cli("recipe", "run", "recipes/text_lines", "size=default", "families.train=[DejaVu Sans,No Such Face]",
                   f"data_dir={tmp_path / 'data'}", f"exp_dir={tmp_path / 'exp'}")
    assert proc.returncode != 0 and not (tmp_path / "data").exists()
    assert "config key 'families.train': ['No Such Face'] not installed" in proc.stderr


def _advances(font: Font) -> np.ndarray:
    """The font's advance widths of the letters and digits, in ems."""
    from fontTools.ttLib import TTFont

    with TTFont(font.path, lazy=True) as tt:
        cmap, widths, em = tt.getBestCmap(), tt["hmtx"], tt["head"].unitsPerEm
        return np.array([widths[cmap[ord(c)]][0] / em for c in sorted(text_render.CHARSET) if c.isalnum()])


@needs_fonts
def test_no_held_out_font_is_a_metric_clone_of_a_training_font():
    """Held out by family name is not enough where a family copies another's widths (Liberation Sans is
    Helvetica's and Arial's, as Nimbus Sans is): every dev and test font file differs from every training file by
    at least 0.05 em in some letter's or digit's advance width (the nearest pair, P052 Italic and Nimbus Roman,
    by 0.056; clones differ by 0.0002)."""
    from asr.recipe import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "text_lines")
    fonts = installed_fonts()
    train = [(f, _advances(f)) for family in recipe.TRAIN_FAMILIES for f in fonts.get(family, [])]
    liberation, nimbus = ({f.style: a for f, a in train if f.family == name} for name in ("Liberation Sans",
                                                                                          "Nimbus Sans"))
    assert np.abs(liberation["Regular"] - nimbus["Regular"]).max() < 0.001  # the measure finds a clone
    missing = [family for family in recipe.DEV_FAMILIES + recipe.TEST_FAMILIES if family not in fonts]
    assert not missing, f"held-out families not installed (bash scripts/setup.sh installs them): {missing}"
    held_out = [f for family in recipe.DEV_FAMILIES + recipe.TEST_FAMILIES for f in fonts[family]]
    for font in held_out:
        mine = _advances(font)
        nearest = min(train, key=lambda fa: np.abs(fa[1] - mine).max())
        assert np.abs(nearest[1] - mine).max() > 0.05, (font.path, nearest[0].path)


@needs_fonts
def test_the_render_stage_draws_the_same_lines_in_one_process_or_several(tmp_path):
    """Every choice is drawn from (seed, split, line number), not from a worker's state: two workers render the
    bytes one does, and another seed renders other images of the same lines."""
    from asr.recipe import load_recipe, recipe_config

    recipe = load_recipe(ROOT / "recipes" / "text_lines")
    made = {}
    for name, procs, seed in (("one", 1, 0), ("two", 2, 0), ("other", 2, 1)):
        cfg = recipe_config(ROOT / "recipes" / "text_lines", [
            "size=default", f"data_dir={tmp_path / name}", f"exp_dir={tmp_path / 'exp'}", f"processes={procs}",
            f"seed={seed}", "train_lines=12", "dev_lines=3", "test_lines=3", "glyph_prob=0.5", "glyph_warp=0.1",
            "families.train=[DejaVu Sans,DejaVu Sans Mono]", "families.dev=[DejaVu Serif]",
            "families.test=[DejaVu Serif]"])
        recipe.render_stage(cfg)
        render = tmp_path / name / "render"
        made[name] = ({p.relative_to(render): p.read_bytes() for p in sorted(render.rglob("*.png"))},
                      [(render / f"{s}.jsonl").read_text().replace(str(render), "") for s in ("train", "dev", "test")])
    assert len(made["one"][0]) == 18 and made["one"] == made["two"]
    assert set(made["other"][0]) == set(made["one"][0])
    assert sum(made["other"][0][k] != v for k, v in made["one"][0].items()) >= 15


def test_family_names_that_differ_in_spaces_are_one_family():
    """Cabin Sketch's bold file names its family "CabinSketch": one family, so it is not drawn twice as often."""
    fonts = {"CabinSketch": [Font("/f/CabinSketch-Bold.ttf", "CabinSketch", "Bold")],
             "Cabin Sketch": [Font("/f/CabinSketch-Regular.ttf", "Cabin Sketch", "Regular")],
             "DejaVu Sans": [Font("/f/DejaVuSans.ttf", "DejaVu Sans", "Book")]}
    merged = text_render._merge_spellings(fonts)
    assert list(merged) == ["Cabin Sketch", "DejaVu Sans"]
    assert [(f.path, f.family) for f in merged["Cabin Sketch"]] == [("/f/CabinSketch-Regular.ttf", "Cabin Sketch"),
                                                                   ("/f/CabinSketch-Bold.ttf", "Cabin Sketch")]
    assert merged["DejaVu Sans"] == fonts["DejaVu Sans"]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_image_signal_round_trip(tmp_path):
    """An image reaches the model as its columns one after another: the front end gives back its pixels."""
    pixels = np.zeros((40, 90), np.uint8) + 255
    pixels[10:30, 5:20] = 0  # a block of ink
    path = tmp_path / "line.png"
    Image.fromarray(pixels).save(path)
    cfg = _image_features(32)
    signal = load_audio(path, cfg.sample_rate)
    width = round(90 * 32 / 40)
    assert signal.dtype == np.float32 and signal.shape == (32 * width,)
    model = DeepSpeech2(ModelConfig(conv_layers=2, conv_channels=4, rnn_layers=1, rnn_hidden=16), cfg, 10)
    feats, frames = model.frontend(torch.from_numpy(signal)[None], torch.tensor([len(signal)]))
    assert feats.shape == (1, 32, width) and frames.tolist() == [width]
    expected = images.read_image(path, 32)
    assert np.allclose(feats[0].numpy(), expected)
    assert expected[16, 10] == pytest.approx(1.0) and expected[2, 60] == pytest.approx(0.0)  # ink 1, paper 0


@settings(max_examples=20, deadline=None)
@given(width=st.integers(20, 300), factor=st.sampled_from([0.8, 0.9, 1.1, 1.25]))
def test_speed_perturbing_an_image_stretches_its_width(width, factor):
    """Speed perturbation of a line image: width / factor, height and ink kept, the rows unmixed."""
    pixels = np.zeros((32, width), np.float32)
    pixels[8:24, width // 4: width // 2] = 1.0  # a block of ink
    stretched = images.stretch(images.as_signal(pixels), images.sample_rate_of(32), factor)
    new_width = round(width / factor)
    assert stretched.dtype == np.float32 and stretched.shape == (32 * new_width,)
    back = stretched.reshape(new_width, 32).T
    assert back[:8].max() == pytest.approx(0.0) and back[24:].max() == pytest.approx(0.0)  # paper rows stay paper
    assert back[16].sum() == pytest.approx(pixels[16].sum() / factor, abs=2.0)  # the block narrows or widens
    assert np.array_equal(images.stretch(images.as_signal(pixels), images.sample_rate_of(32), 1.0),
                          images.as_signal(pixels))


def test_speed_perturbed_lines_are_seeded_per_epoch(tmp_path):
    """Training lines get a stretch drawn per line and epoch: the same seed and epoch give the same image."""
    from asr.data import UtteranceDataset
    from asr.manifest import Utterance

    rate = images.sample_rate_of(32)
    utts = []
    for i in range(8):
        pixels = np.full((40, 120 + 10 * i), 255, np.uint8)
        pixels[10:30, 20:60] = 0
        Image.fromarray(pixels).save(tmp_path / f"l{i}.png")
        utts.append(Utterance(id=f"l{i}", audio_filepath=str(tmp_path / f"l{i}.png"), duration=1.0, text="ab"))
    vocab = CharVocabulary.build(u.text for u in utts)
    plain = UtteranceDataset(utts, vocab, rate)
    perturbed = [UtteranceDataset(utts, vocab, rate, speed_perturb=[0.8, 1.25], seed=3) for _ in range(2)]
    widths = []
    for epoch in (0, 1):
        for ds in perturbed:
            ds.set_epoch(epoch)
        for i in range(len(utts)):
            a, b, c = (ds[i]["wave"] for ds in (*perturbed, plain))
            assert np.array_equal(a, b)
            ratio = len(c) / len(a)
            assert ratio == pytest.approx(0.8, abs=0.02) or ratio == pytest.approx(1.25, abs=0.02)
            widths.append(len(a))
    assert len(set(widths)) > len(utts)  # both factors drawn, and not the same for a line in both epochs


def _image_features(height: int) -> FeatureConfig:
    return _config("features.kind=image", f"features.image_height={height}", "features.normalize=none").features


def _config(*overrides: str) -> Config:
    return load_config(None, ["exp_dir=x", "data.train_manifest=x", "data.dev_manifest=x", *overrides])


@settings(max_examples=15, deadline=None)
@given(widths=st.lists(st.integers(3, 400), min_size=1, max_size=4), stride=st.sampled_from([1, 2, 3, 4]),
       kind_layers=st.sampled_from([("ds2", 1), ("ds2", 2), ("ds2", 3), ("vgg", 1), ("vgg", 3), ("vgg", 5),
                                    ("subsample", 1), ("subsample", 2), ("subsample", 3)]))
def test_image_frames_match_model_output_lengths(widths, stride, kind_layers):
    """Frames are columns, and the model's output lengths (padded batch) follow its conv geometry."""
    cfg = _image_features(32)
    kind, layers = kind_layers
    model = DeepSpeech2(ModelConfig(conv_kind=kind, conv_layers=layers, conv_channels=4, conv_time_stride=stride,
                                    rnn_layers=1, rnn_hidden=16), cfg, 7).eval()
    signals = torch.zeros(len(widths), 32 * max(widths))
    for i, w in enumerate(widths):
        signals[i, : 32 * w] = torch.rand(32 * w)
    lengths = torch.tensor([32 * w for w in widths])
    frames = model.frontend.frame_lengths(lengths)
    assert frames.tolist() == widths
    with torch.no_grad():
        log_probs, out = model(signals, lengths)
    assert out.tolist() == model.output_lengths(frames).tolist()
    assert log_probs.shape[1] == int(model.output_lengths(torch.tensor([max(widths)]))[0])
    assert model.frame_seconds == pytest.approx(stride / images.COLUMNS_PER_SECOND)


@pytest.mark.parametrize("kind", ["ds2", "vgg", "subsample"])
@pytest.mark.parametrize("stride", [1, 2, 3, 4, 6])
def test_the_first_conv_reads_every_column(kind, stride):
    """A first conv layer at least as wide as its time stride: no column falls between two windows."""
    channels, kf, kt, sf, st = conv_shapes(ModelConfig(conv_kind=kind, conv_layers=2, conv_time_stride=stride))[0]
    assert st == stride and kt >= stride


def test_image_config_follows_height_and_refuses_waveform_augmentation():
    cfg = _config("features.kind=image", "features.image_height=48")
    assert (cfg.features.sample_rate, cfg.features.hop_ms, cfg.features.window_ms) == (4800, 10.0, 10.0)
    for key, value in (("noise_dir", "noise"), ("concat_prob", "0.5"), ("bandlimit_prob", "0.3")):
        with pytest.raises(ConfigError, match=f"data.{key}"):
            _config("features.kind=image", f"data.{key}={value}")
    assert _config("features.kind=image", "data.speed_perturb=[0.9,1.0,1.1]").data.speed_perturb == [0.9, 1.0, 1.1]
    with pytest.raises(ConfigError, match="data.speed_perturb"):
        _config("features.kind=image", "data.speed_perturb=[0.9,0.0]")
    with pytest.raises(ConfigError, match="features.image_height"):
        _config("features.kind=image", "features.image_height=16")


def test_image_errors_name_the_file(tmp_path):
    rate = images.sample_rate_of(32)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    lab = tmp_path / "lab.tif"
    Image.new("LAB", (80, 20)).save(lab)
    tiny = tmp_path / "tiny.png"
    Image.new("L", (50, 4), 255).save(tiny)
    cases = {empty: "empty file", corrupt: "cannot read image", lab: "image mode LAB",
             tiny: "too small", tmp_path / "missing.png": "file not found"}
    for path, reason in cases.items():
        with pytest.raises(images.ImageError, match=reason) as err:
            load_audio(path, rate)
        assert str(path) in str(err.value) and isinstance(err.value, AudioError)


def test_other_image_modes_become_grayscale_lines(tmp_path):
    """RGBA (transparent paper), palette and 16-bit images read as the same line as their grayscale form."""
    gray = np.full((32, 64), 255, np.uint8)
    gray[8:24, 10:50] = 0
    Image.fromarray(gray).save(tmp_path / "l.png")
    rgba = np.zeros((32, 64, 4), np.uint8)
    rgba[8:24, 10:50, 3] = 255  # black ink, transparent elsewhere
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(gray).convert("P").save(tmp_path / "p.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "i16.png")
    want = images.read_image(tmp_path / "l.png", 32)
    for name in ("rgba.png", "p.png", "i16.png"):
        assert np.allclose(images.read_image(tmp_path / name, 32), want, atol=0.02), name
    # photographs and scans come as JPEG: gray, three-channel and a scanner's CMYK
    Image.fromarray(gray).save(tmp_path / "l.jpg", quality=90)
    Image.fromarray(np.stack([gray, gray, gray], -1)).save(tmp_path / "rgb.jpeg", quality=90)
    Image.fromarray(gray).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=90)
    for name in ("l.jpg", "rgb.jpeg", "cmyk.jpg"):
        got = images.read_image(tmp_path / name, 32)
        assert got.shape == want.shape and np.abs(got - want).mean() < 0.02 and np.abs(got - want).max() < 0.35, name
        assert got[16, 30] > 0.9 and got[2, 2] < 0.1, name  # ink high, paper low


def test_verbatim_vocabulary_keeps_case_and_punctuation():
    text = verbatim_text("  \u201cHello,\u201d  she said \u2014 twice!  ")
    assert text == '"Hello," she said - twice!'
    vocab = CharVocabulary.build([text], "verbatim")
    again = vocabulary_from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again == vocab and again.normalize("Hi,  There!") == "Hi, There!"
    assert vocabulary_from_dict({"type": "char", "labels": vocab.labels}).normalize("Hi, There!") == "hi there"


@needs_fonts
def test_text_lines_recipe_through_the_cli(tmp_path):
    """render -> prepare -> vocabulary -> LM -> train -> tune -> decode -> score, then `asr transcribe` and
    `asr evaluate` on the model and its held-out lines; held-out fonts and sentences never reach training."""
    data, exp = tmp_path / "data", tmp_path / "exp"
    train_families = "[DejaVu Sans,DejaVu Sans Mono]"
    proc = run_cli("recipe", "run", "recipes/text_lines", "size=default", f"data_dir={data}", f"exp_dir={exp}",
                   "train_lines=48",
                   "dev_lines=6", "test_lines=6", "processes=1", f"families.train={train_families}",
                   "families.dev=[DejaVu Serif]", "families.test=[DejaVu Serif]", "model.conv_channels=8",
                   "model.rnn_layers=1", "model.rnn_hidden=32", "train.epochs=1", "train.batch_size=16",
                   "train.warmup_steps=2", "train.amp=off", "train.plateau_restarts=0", "lm.order=2", "lm.beam=4",
                   "lm.alphas=[0.3]", "lm.betas=[0.0]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {s: [json.loads(x) for x in (data / "manifests" / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "dev", "test")}
    report = json.loads((data / "prepare_report.json").read_text())
    assert [len(rows[s]) + report[s]["rejected"] for s in rows] == [48, 6, 6] and len(rows["test"]) >= 3
    vocab = json.loads((data / "vocab.json").read_text())
    assert vocab["text_norm"] == "verbatim" and set(vocab["labels"][1:]) == {c for r in rows["train"] for c in r["text"]} | {" "}
    for s in ("dev", "test"):  # a held-out line with a character no training line has is rejected, with it named
        for line in (data / "rejected" / f"{s}.tsv").read_text().splitlines()[1:]:
            assert "characters in no training line: " in line
    assert {r["speaker"] for r in rows["train"]} <= {"DejaVu Sans", "DejaVu Sans Mono"}
    assert {r["speaker"] for r in rows["test"]} == {"DejaVu Serif"}
    lm_text = set((data / "lm_text.txt").read_text().splitlines())
    train_text = {r["text"] for r in rows["train"]}
    for r in rows["dev"] + rows["test"]:
        assert r["text"] not in train_text and r["text"] not in lm_text
    assert any(c.isupper() for r in rows["train"] for c in r["text"])  # case kept
    results = json.loads((exp / "results.json").read_text())
    assert results["test"]["utterances"] == len(rows["test"]) and 0 <= results["test"]["cer"]
    log = (exp / "train.log").read_text()
    assert f"CTC head bias: the label prior of {len(rows['train'])} training utterances" in log
    image = data / "manifests" / rows["test"][0]["audio_filepath"]
    audio = tmp_path / "speech.wav"
    sf.write(audio, np.zeros(8000, np.float32), 16000)
    out = run_cli("transcribe", "--model", str(exp / "best.pt"), str(image), str(tmp_path / "nope.png"), str(audio),
                  "--format", "json")
    assert out.returncode == 1 and "2 of 3 files could not be transcribed" in out.stderr
    listed = [json.loads(x) for x in out.stdout.splitlines()]
    assert listed[0]["path"] == str(image) and isinstance(listed[0]["text"], str)
    assert listed[0]["segments"][0]["start"] == 0.0 and "nope.png" in listed[1]["error"]
    assert "speech.wav: not an image, and the model reads text-line images" in listed[2]["error"]
    ev = run_cli("evaluate", "--model", str(exp / "best.pt"), "--manifest", str(data / "manifests" / "test.jsonl"),
                 "--out-dir", str(tmp_path / "ev"), "--greedy")
    assert ev.returncode == 0, ev.stderr[-2000:]
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["utterances"] == len(rows["test"]) and summary["cer"] == pytest.approx(results["test"]["cer"])
