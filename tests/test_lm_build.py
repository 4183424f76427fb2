"""LM building: our modified Kneser-Ney estimator against KenLM's lmplz, the `asr lm build` CLI, KenLM loading."""
import math
import subprocess
from pathlib import Path

import kenlm
import pytest

from asr.config import ConfigError
from asr.lm_build import LMBuildError, build_lm, kenlm_tool, kneser_ney, read_arpa, read_corpus, write_arpa
from asr.recipe import recipe_config
from conftest import ROOT, run_cli

TEXT = Path(__file__).parent / "data" / "synthetic_en_lm_text.txt"
needs_lmplz = pytest.mark.skipif(kenlm_tool("lmplz") is None, reason="lmplz not built (bash scripts/build_kenlm.sh)")


def lmplz_arpa(text: Path, order: int, out: Path) -> Path:
    with text.open() as fin, out.open("w") as fout:
        subprocess.run([kenlm_tool("lmplz"), "-o", str(order), "--discount_fallback", "-S", "100M"], stdin=fin,
                       stdout=fout, stderr=subprocess.DEVNULL, check=True)
    return out


def assert_same_model(ours: dict, theirs: dict) -> None:
    assert set(ours) == set(theirs)
    for g, (p, b) in theirs.items():
        assert ours[g][0] == pytest.approx(p, abs=2e-6), g
        assert ours[g][1] == pytest.approx(b, abs=2e-6), g


@needs_lmplz
@pytest.mark.parametrize("order", [2, 3, 5])
def test_builtin_estimator_matches_lmplz(tmp_path, order):
    sentences, _ = read_corpus([TEXT])
    norm = tmp_path / "text.txt"
    norm.write_text("\n".join(" ".join(s) for s in sentences) + "\n")
    write_arpa(kneser_ney(sentences, order), tmp_path / "ours.arpa")
    assert_same_model(read_arpa(tmp_path / "ours.arpa"), read_arpa(lmplz_arpa(norm, order, tmp_path / "lmplz.arpa")))


@needs_lmplz
def test_tiny_corpus_uses_fallback_discounts_like_lmplz(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("the cat sat\nthe dog sat\n")
    model = kneser_ney(read_corpus([text])[0], 3)
    assert model.fallback_orders == [1, 2, 3]
    write_arpa(model, tmp_path / "ours.arpa")
    assert_same_model(read_arpa(tmp_path / "ours.arpa"), read_arpa(lmplz_arpa(text, 3, tmp_path / "lmplz.arpa")))


def test_builtin_model_is_a_normalised_kenlm_model(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("One cat sat.\nthe cat sat on 2 mats\n\n   \nthe dog sat on the mat\na dog and a cat\n")
    report = build_lm([text], tmp_path / "lm.arpa", order=3, engine="builtin")
    assert report["sentences"] == 4 and report["empty_lines_skipped"] == 2 and report["engine"] == "builtin"
    words = (tmp_path / "lm.unigrams.txt").read_text().split()
    assert "two" in words and "one" in words and "2" not in words  # normalised like transcripts
    model = kenlm.Model(str(tmp_path / "lm.arpa"))
    vocab = words + ["</s>"]
    for context in ([], ["the"], ["the", "cat"], ["a", "dog"]):  # p(. | context) sums to 1 over the vocabulary
        total = 0.0
        for w in vocab + ["<unk>"]:
            state, out = kenlm.State(), kenlm.State()
            model.BeginSentenceWrite(state) if not context else model.NullContextWrite(state)
            for c in context:
                model.BaseScore(state, c, out)
                state, out = out, state
            total += 10 ** model.BaseScore(state, w, out)
        assert total == pytest.approx(1.0, abs=1e-4), context


def test_errors_are_clear(tmp_path):
    with pytest.raises(LMBuildError, match="order must be at least 2"):
        build_lm([TEXT], tmp_path / "x.arpa", order=1)
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(LMBuildError, match="no words"):
        build_lm([tmp_path / "empty.txt"], tmp_path / "x.arpa", engine="builtin")
    with pytest.raises(LMBuildError, match="not found"):
        build_lm([tmp_path / "missing.txt"], tmp_path / "x.arpa", engine="builtin")


@needs_lmplz
def test_cli_builds_binary_with_kenlm_tools(tmp_path):
    proc = run_cli("lm", "build", "--text", str(TEXT), "--out", str(tmp_path / "lm.bin"), "--order", "4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"engine": "lmplz"' in proc.stdout
    model = kenlm.Model(str(tmp_path / "lm.bin"))
    assert model.order == 4 and math.isfinite(model.score("he walked to school every morning"))
    assert (tmp_path / "lm.unigrams.txt").exists()


def test_cli_reports_bad_order_without_traceback(tmp_path):
    proc = run_cli("lm", "build", "--text", str(TEXT), "--out", str(tmp_path / "lm.arpa"), "--order", "1")
    assert proc.returncode == 2 and "order must be at least 2" in proc.stderr and "Traceback" not in proc.stderr


@needs_lmplz
def test_pruned_lm_drops_rare_long_ngrams_and_keeps_every_word(tmp_path):
    """--prune 0 0 1: 3- and 4-grams seen once go, every word stays; a bad threshold list is refused by name, from
    the CLI and from a recipe config before any stage runs."""
    full = build_lm([TEXT], tmp_path / "full.arpa", 4)
    proc = run_cli("lm", "build", "--text", str(TEXT), "--out", str(tmp_path / "pruned.arpa"), "--prune", "0", "0", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    pruned = read_arpa(tmp_path / "pruned.arpa")
    kept = {n: sum(len(g) == n for g in pruned) for n in (1, 2, 3, 4)}
    assert kept[1] == full["ngrams"]["1"] and kept[2] == full["ngrams"]["2"]
    assert kept[3] < 0.7 * full["ngrams"]["3"] and kept[4] < 0.7 * full["ngrams"]["4"]
    model = kenlm.Model(str(tmp_path / "pruned.arpa"))
    assert math.isfinite(model.score("he walked to school every morning"))
    for bad, why in (([1, 1], "unigrams"), ([0, 2, 1], "must not decrease"), ([0, 0, 0, 0, 1], "one threshold")):
        with pytest.raises(LMBuildError, match=why):
            build_lm([TEXT], tmp_path / "bad.arpa", 4, prune=bad)
    with pytest.raises(LMBuildError, match="needs KenLM's lmplz"):
        build_lm([TEXT], tmp_path / "bad.arpa", 4, engine="builtin", prune=[0, 0, 1])
    with pytest.raises(ConfigError, match=r"'lm.prune' = \[0, 3, 1\]: thresholds must not decrease"):
        recipe_config(ROOT / "recipes" / "synthetic_en", ["lm.prune=[0,3,1]"])
