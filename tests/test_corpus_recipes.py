"""Recipes for real corpora, run on tiny corpora built here in each corpus's exact on-disk layout."""
import json
import shutil
from pathlib import Path

from conftest import TINY, run_cli

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
                   f"exp_dir={tmp_path / 'exp'}", "--stop-stage", "vocabulary")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "data" / "prepare_report.json").read_text())
    assert report["train"]["utterances"] == 19 and report["train"]["rejected"] == {"empty transcript": 1}
    assert report["test"]["rejected"] == {"characters outside the set": 1} and report["dev"]["utterances"] == 3
    assert json.loads((tmp_path / "data" / "vocab.json").read_text())["type"] == "char"

    listing = tmp_path / "list.tsv"
    listing.write_text("path\ttext\n" + "".join(f"my_corpus/train/utt{i}.flac\t{u['text']}\n" for i, u in enumerate(train[:20])))
    proc = run_cli("recipe", "run", "recipes/folder", f"listing={listing}", f"data_dir={tmp_path / 'data2'}",
                   f"exp_dir={tmp_path / 'exp2'}", "dev_fraction=0.1", "test_fraction=0.1", "--stop-stage", "prepare")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "data2" / "prepare_report.json").read_text())
    assert (report["train"]["utterances"], report["dev"]["utterances"], report["test"]["utterances"]) == (16, 2, 2)
