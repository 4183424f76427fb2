"""Recipes for real corpora, run on tiny corpora built here in each corpus's exact on-disk layout."""
import json
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, TINY, run_cli

from asr.text import normalize_text

FAST = [*TINY, "train.epochs=1", "lm.order=2", "lm.beam=4", "lm.alphas=[0.5]", "lm.betas=[1.0]"]


def rows(manifest: Path) -> list[dict]:
    return [json.loads(x) for x in manifest.read_text().splitlines()]


def librispeech_layout(corpus: dict, root: Path) -> Path:
    """LibriSpeech/<subset>/<speaker>/<chapter>/<spk>-<ch>-<utt>.flac + <spk>-<ch>.trans.txt (upper case)."""
    train, dev = rows(corpus["train"]), rows(corpus["dev"])
    plan = {"train-clean-100": [("19", "198", train[:12]), ("26", "495", train[12:24])],
            "dev-clean": [("84", "121123", dev[:3])], "test-clean": [("1089", "134686", dev[3:])],
            "test-other": [("1688", "142285", dev[:4])]}
    for subset, speakers in plan.items():
        for spk, chapter, utts in speakers:
            folder = root / "LibriSpeech" / subset / spk / chapter
            folder.mkdir(parents=True)
            lines = []
            for i, u in enumerate(utts):
                utt_id = f"{spk}-{chapter}-{i:04d}"
                shutil.copy(corpus["train"].parent / u["audio_filepath"] if subset.startswith("train")
                            else corpus["dev"].parent / u["audio_filepath"], folder / f"{utt_id}.flac")
                lines.append(f"{utt_id} {u['text'].upper()}")
            (folder / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    bad = root / "LibriSpeech" / "train-clean-100" / "19" / "198"
    (bad / "19-198-0001.flac").write_bytes(b"fLaC not really")  # corrupt
    (bad / "19-198-0002.flac").unlink()  # listed but missing
    with (bad / "19-198.trans.txt").open("a") as f:
        f.write("19-198-0099 \n")  # empty transcript
    shutil.copy(bad / "19-198-0000.flac", bad / "19-198-0099.flac")
    return root


def test_librispeech_recipe_end_to_end(corpus, tmp_path):
    root = librispeech_layout(corpus, tmp_path / "corpora")
    args = ["recipe", "run", "recipes/librispeech", f"corpus_dir={root}", f"data_dir={tmp_path / 'data'}",
            f"exp_dir={tmp_path / 'exp'}", *FAST]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "data" / "prepare_report.json").read_text())
    assert report["train"]["utterances"] == 22 and report["train"]["speakers"] == 2
    assert report["train"]["rejected"] == {"unreadable audio": 1, "missing audio": 1, "empty transcript": 1}
    assert (report["dev"]["utterances"], report["test-clean"]["utterances"], report["test-other"]["utterances"]) == (3, 3, 4)
    rejected = (tmp_path / "data" / "rejected" / "train.tsv").read_text()
    assert "19-198-0001\tunreadable audio" in rejected and "19-198-0002\tmissing audio" in rejected
    train = rows(tmp_path / "data" / "manifests" / "train.jsonl")
    assert train[0]["id"] == "19-198-0000" and train[0]["speaker"] == "19" and train[0]["text"] == train[0]["text"].lower()
    results = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert {"dev", "test-clean", "test-other", "provenance"} == set(results)
    assert results["test-other"]["utterances"] == 4 and results["test-other"]["with_lm"]["decoder"] == "beam4+lm"
    assert "test-clean" in proc.stdout and "WER %" in proc.stdout
    # another learning rate: training starts afresh, saying which keys changed and where the old checkpoints are
    again = run_cli(*args, "train.lr=0.00123", "--stage", "train", "--stop-stage", "train")
    assert again.returncode == 0, again.stderr[-3000:]
    said = again.stdout + again.stderr
    assert "training config changed" in said and "train.lr: " in said and "-> 0.00123" in said
    assert "resumed from" not in said


def test_librispeech_missing_subset_is_a_clear_error(tmp_path):
    proc = run_cli("recipe", "run", "recipes/librispeech", f"corpus_dir={tmp_path}", f"data_dir={tmp_path / 'd'}",
                   f"exp_dir={tmp_path / 'e'}")
    assert proc.returncode == 2 and "train-clean-100" in proc.stderr and "openslr" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_folder_recipe_with_txt_files_and_with_a_listing(corpus, tmp_path):
    train, dev = rows(corpus["train"]), rows(corpus["dev"])
    root = tmp_path / "my_corpus"
    for split, items, base in (("train", train[:20], corpus["train"].parent), ("dev", dev[:3], corpus["dev"].parent),
                               ("test", dev[3:], corpus["dev"].parent)):
        (root / split).mkdir(parents=True)
        for i, u in enumerate(items):
            shutil.copy(base / u["audio_filepath"], root / split / f"utt{i}.flac")
            (root / split / f"utt{i}.txt").write_text(u["text"] + "\n")
    (root / "train" / "utt0.txt").unlink()  # audio without a transcript
    (root / "test" / "utt1.txt").write_text("café")  # a character training never shows
    proc = run_cli("recipe", "run", "recipes/folder", f"corpus_dir={root}", f"data_dir={tmp_path / 'data'}",
                   f"exp_dir={tmp_path / 'exp'}", *FAST, "--stop-stage", "train")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "data" / "prepare_report.json").read_text())
    assert report["train"]["utterances"] == 19 and report["train"]["rejected"] == {"empty transcript": 1}
    assert report["test"]["rejected"] == {"characters outside the set": 1} and report["dev"]["utterances"] == 3
    assert json.loads((tmp_path / "data" / "vocab.json").read_text())["type"] == "char"
    assert (tmp_path / "exp" / "best.pt").exists() and (tmp_path / "data" / "lm" / "2gram.arpa").exists()

    listing = tmp_path / "list.tsv"
    listing.write_text("path\ttext\n" + "".join(f"my_corpus/train/utt{i}.flac\t{u['text']}\n" for i, u in enumerate(train[:20])))
    proc = run_cli("recipe", "run", "recipes/folder", f"listing={listing}", f"data_dir={tmp_path / 'data2'}",
                   f"exp_dir={tmp_path / 'exp2'}", "dev_fraction=0.1", "test_fraction=0.1", "--stop-stage", "prepare")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "data2" / "prepare_report.json").read_text())
    assert (report["train"]["utterances"], report["dev"]["utterances"], report["test"]["utterances"]) == (16, 2, 2)


def _wave(corpus: dict, split: str, i: int):
    import soundfile as sf

    u = rows(corpus[split])[i]
    return sf.read(str(corpus[split].parent / u["audio_filepath"]))[0], u["text"]


def test_commonvoice_recipe_mp3_and_rare_characters(corpus, tmp_path):
    import subprocess

    root = tmp_path / "cv" / "en"
    (root / "clips").mkdir(parents=True)
    header = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment\n"
    tsv = {}
    for split, src, idx in (("train", "train", range(20)), ("dev", "dev", range(3)), ("test", "dev", range(3, 6))):
        lines = []
        for i in idx:
            u = rows(corpus[src])[i]
            clip = f"common_voice_en_{split}{i}.mp3"
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(corpus[src].parent / u["audio_filepath"]),
                            str(root / "clips" / clip)], check=True)
            lines.append(f"spk{i % 3}\t{clip}\t{u['text'].capitalize()}.\t2\t0\t\t\t\ten\t\n")
        tsv[split] = lines
    tsv["train"].append("spk0\tcommon_voice_en_missing.mp3\tHello there.\t2\t0\t\t\t\ten\t\n")
    tsv["train"][0] = tsv["train"][0].replace(".\t2", " smørrebrød.\t2")  # a foreign letter, seen once
    for split, lines in tsv.items():
        (root / f"{split}.tsv").write_text(header + "".join(lines))
    proc = run_cli("recipe", "run", "recipes/commonvoice", f"corpus_dir={root}", f"data_dir={tmp_path / 'data'}",
                   f"exp_dir={tmp_path / 'exp'}", "min_char_count=3", *FAST, "--stop-stage", "train")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "data" / "prepare_report.json").read_text())
    assert report["rare_characters"]["ø"] == 2 and "ø" not in report["characters"] and "a" in report["characters"]
    rejected = report["train"]["rejected"]
    assert rejected["missing audio"] == 1 and rejected["characters outside the set"] >= 1
    assert report["train"]["utterances"] + report["train"]["rejected_total"] == 21
    assert "common_voice_en_train0\tcharacters outside the set: ø" in (tmp_path / "data/rejected/train.tsv").read_text()
    assert (tmp_path / "exp" / "best.pt").exists()


def test_an4_recipe_raw_audio(corpus, tmp_path):
    import soundfile as sf

    an4 = tmp_path / "corpora" / "an4"
    (an4 / "etc").mkdir(parents=True)
    for part, folder, src, idx in (("train", "an4_clstk", "train", range(24)), ("test", "an4test_clstk", "dev", range(6))):
        fileids, trans = [], []
        for i in idx:
            wave, text = _wave(corpus, src, i)
            spk = f"sp{i % 6}" if part == "train" else "fcaw"
            fileid = f"{spk}/an{100 + i}-{spk}-b"
            (an4 / "wav" / folder / spk).mkdir(parents=True, exist_ok=True)
            sf.write(str(an4 / "wav" / folder / f"{fileid}.raw"), wave, 16000, format="RAW", subtype="PCM_16",
                     endian="BIG")
            fileids.append(fileid)
            trans.append(f"<s> {text.upper()} </s> (an{100 + i}-{spk}-b)")
        (an4 / "etc" / f"an4_{part}.fileids").write_text("\n".join(fileids) + "\n")
        (an4 / "etc" / f"an4_{part}.transcription").write_text("\n".join(trans) + "\n")
    proc = run_cli("recipe", "run", "recipes/an4", f"corpus_dir={tmp_path / 'corpora'}", f"data_dir={tmp_path / 'data'}",
                   f"exp_dir={tmp_path / 'exp'}", "dev_speakers=1", *FAST, "--stop-stage", "train")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "data" / "prepare_report.json").read_text())
    assert (report["train"]["utterances"], report["dev"]["utterances"], report["test"]["utterances"]) == (20, 4, 6)
    train = rows(tmp_path / "data" / "manifests" / "train.jsonl")
    assert train[0]["audio_filepath"].endswith(".flac") and train[0]["text"] == train[0]["text"].lower()
    assert (tmp_path / "exp" / "best.pt").exists()


def test_tedlium_recipe_segments_from_stm(corpus, tmp_path):
    import numpy as np
    import soundfile as sf

    root = tmp_path / "TEDLIUM_release2"
    for split, src, idx in (("train", "train", range(0, 24)), ("dev", "dev", range(0, 3)), ("test", "dev", range(3, 6))):
        (root / split / "sph").mkdir(parents=True)
        (root / split / "stm").mkdir(parents=True)
        talk = f"Speaker{split.capitalize()}_2010"
        pieces, stm, t = [], [], 0.0
        for i in idx:
            wave, text = _wave(corpus, src, i)
            pieces += [wave, np.zeros(8000)]
            stm.append(f"{talk} 1 {talk} {t:.2f} {t + len(wave) / 16000:.2f} <o,f0,male> {text} {{NOISE}} <unk>")
            t += len(wave) / 16000 + 0.5
        stm.append(f"{talk} 1 {talk} {t:.2f} {t + 1.0:.2f} <o,f0,male> ignore_time_segment_in_scoring")
        stm.append(f"{talk} 1 {talk} {t + 100:.2f} {t + 101:.2f} <o,f0,male> past the end")
        sf.write(str(root / split / "sph" / f"{talk}.sph"), np.concatenate(pieces + [np.zeros(16000)]), 16000,
                 format="NIST", subtype="PCM_16")
        (root / split / "stm" / f"{talk}.stm").write_text("\n".join(stm) + "\n")
    proc = run_cli("recipe", "run", "recipes/tedlium", f"corpus_dir={root}", f"data_dir={tmp_path / 'data'}",
                   f"exp_dir={tmp_path / 'exp'}", *FAST, "--stop-stage", "train")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "data" / "prepare_report.json").read_text())
    assert report["train"]["utterances"] == 24 and report["train"]["ignored_segments"] == 1
    assert report["train"]["rejected"] == {"segment beyond the end of the audio": 1}
    train = rows(tmp_path / "data" / "manifests" / "train.jsonl")
    assert train[1]["offset"] > 0 and "unk" not in train[0]["text"] and "noise" not in train[0]["text"]
    assert train[0]["text"] == rows(corpus["train"])[0]["text"]
    assert (tmp_path / "exp" / "best.pt").exists()


@pytest.mark.parametrize("size, engines", [("default", "espeak,piper"), ("large", "espeak,piper"),
                                           ("default", "espeak,kokoro")])
def test_synthetic_en_plan_holds_out_voices_and_sentences(size, engines):
    """Whatever the size, no dev/test voice or sentence is heard in training, and training sentences repeat little."""
    from asr.recipe import load_recipe, recipe_config
    from asr.synthesis import engine_available

    if not all(engine_available(e) for e in engines.split(",")):
        pytest.skip(f"{engines}: not all installed (scripts/setup.sh --dev installs them)")
    module = load_recipe(ROOT / "recipes" / "synthetic_en")
    overrides = [f"size={size}", f"synth.engines=[{engines}]"]
    jobs = module.plan(recipe_config(ROOT / "recipes" / "synthetic_en", overrides))
    voices = {s: {j["id"].split("-", 2)[2] for j in jobs[s]} for s in jobs}
    texts = {s: {normalize_text(j["text"]) for j in jobs[s]} for s in jobs}
    variants = {s: {j["voice"]["name"].split("+")[1] for j in jobs[s] if j["voice"]["engine"] == "espeak"} for s in jobs}
    for held_out in ("dev", "test"):
        assert not voices["train"] & voices[held_out] and not texts["train"] & texts[held_out]
        assert not variants["train"] & variants[held_out]
    assert len({j["voice"]["engine"] for j in jobs["train"]}) == 2
    if "kokoro" in engines:  # blend seeds: disjoint speakers, and both accents in training
        seeds = {s: {j["voice"]["name"] for j in jobs[s] if j["voice"]["engine"] == "kokoro"} for s in jobs}
        assert seeds["test"] and not seeds["train"] & (seeds["dev"] | seeds["test"])
        assert {n.rsplit("-", 1)[0] for n in seeds["train"]} == {"en-us", "en-gb"}
    assert len(texts["train"]) == 5813  # 2,347 from prompts.txt + 3,466 from synth.train_prompts
    assert len(variants["train"]) == (69 if size == "large" else 20)  # synth.more_variants in large only


def test_synthetic_en_medium_shares_the_default_data():
    """size=medium trains another model on the default's data: its data stages are the default's, stamp for stamp,
    so a run after the default synthesises and prepares nothing again; only the model and training differ."""
    from asr.recipe import load_recipe, recipe_config, stage_stamp

    module = load_recipe(ROOT / "recipes" / "synthetic_en")
    default, medium = (recipe_config(ROOT / "recipes" / "synthetic_en", [f"size={size}"])
                       for size in ("default", "medium"))
    stages = {size: {st.name: st for st in module.stages(cfg)} for size, cfg in (("default", default),
                                                                                 ("medium", medium))}
    for name in ("synthesize", "prepare", "vocabulary", "lm"):
        assert stage_stamp(stages["medium"][name]) == stage_stamp(stages["default"][name]), name
        assert stages["medium"][name].outputs == stages["default"][name].outputs, name
    assert stage_stamp(stages["medium"]["train"]) != stage_stamp(stages["default"]["train"])
    assert medium.exp_dir != default.exp_dir and medium.data_dir == default.data_dir
    assert medium.model.rnn_hidden > default.model.rnn_hidden
    # its training is its own length: the default's time budget would cut its 10 epochs to train.min_epochs
    assert default.train.time_budget > 0 and medium.train.time_budget == 0 and medium.train.epochs == 10


def test_synthetic_en_test_real_reads_pocketsphinx_testdata_layout(tmp_path):
    """test_real comes from recordings in pocketsphinx-testdata's layout; without them the set is left out, said once."""
    import numpy as np
    import soundfile as sf

    from asr.manifest import ManifestError
    from asr.recipe import load_recipe, recipe_config

    module = load_recipe(ROOT / "recipes" / "synthetic_en")
    root = tmp_path / "ps"
    for name, transcripts in module.REAL_SETS.items():
        (root / transcripts).parent.mkdir(parents=True, exist_ok=True)
        lines = [f"<s> Take {name} {i}  </s> (utt{i})" for i in range(2)] + [""]
        (root / transcripts).write_text("\n".join(lines) + "\n")
        for i in range(2):  # 8 kHz stereo: loaded like any other file, mixed and resampled
            sf.write(str(root / name / f"utt{i}.wav"), np.full((8000, 2), 0.1 * (i + 1), np.float32), 8000)
    items = module.real_speech_items(root)
    assert [i[0] for i in items] == ["real-librivox-utt0", "real-librivox-utt1", "real-cards-utt0", "real-cards-utt1"]
    assert items[0][2] == "Take librivox 0"
    cfg = recipe_config(ROOT / "recipes" / "synthetic_en", [f"data_dir={tmp_path / 'data'}", f"real_speech={root}"])
    report = module.write_test_real(cfg)
    assert report["utterances"] == 4 and report["words"] == 12
    rows = [json.loads(x) for x in (tmp_path / "data" / "manifests" / "test_real.jsonl").read_text().splitlines()]
    assert rows[0]["text"] == "take librivox zero" and rows[3]["speaker"] == "cards" and rows[0]["duration"] == 1.0
    assert sf.info(str(tmp_path / "data" / "manifests" / rows[0]["audio_filepath"])).samplerate == 16000
    assert module.voice_groups(rows[0]["id"]) == {"engine": "human"}
    assert "test_real" in cfg.test_sets and len(module.stages(cfg)) == 9
    (root / "cards" / "cards.transcription").write_text("<s> ten of clubs </s> (001)\nten of clubs\n")
    with pytest.raises(ManifestError, match="cards.transcription, line 2"):
        module.real_speech_items(root)
    missing = recipe_config(ROOT / "recipes" / "synthetic_en", [f"real_speech={tmp_path / 'none'}",
                                                                 f"people.resource_file={tmp_path / 'none.1c'}",
                                                                 f"sky.game_dir={tmp_path / 'no_sky'}"])
    before = list(missing.test_sets)
    decode = {s.name: s for s in module.stages(missing)}["decode"]
    assert module.available_test_sets(missing) == ["test", "test_pauses"]  # no people set: all three left out
    assert {p.parent.name for p in decode.outputs} == {f"decode_{n}_{d}" for n in ("dev", "test", "test_pauses")
                                                       for d in ("greedy", "lm")}
    assert missing.test_sets == before  # the caller's config is not edited
    assert module.voice_groups("fotaq-020006P1") == module.voice_groups("bass-50012") == {"engine": "people"}
