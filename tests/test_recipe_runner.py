from pathlib import Path

import pytest

from asr.recipe import Stage, run_stages


def make_stages(tmp_path: Path, calls: list, cfg: dict):
    src, mid, out = tmp_path / "src.txt", tmp_path / "mid.txt", tmp_path / "out.txt"

    def first():
        calls.append("first")
        mid.write_text(src.read_text().upper())

    def second():
        calls.append("second")
        out.write_text(mid.read_text() + cfg["suffix"])

    return [Stage("first", first, [src], [mid]), Stage("second", second, [mid], [out], config=cfg)]


def test_stages_skip_when_up_to_date_and_rerun_on_change(tmp_path):
    (tmp_path / "src.txt").write_text("abc")
    calls: list = []
    run_stages(make_stages(tmp_path, calls, {"suffix": "!"}), tmp_path / "state")
    assert calls == ["first", "second"] and (tmp_path / "out.txt").read_text() == "ABC!"
    run_stages(make_stages(tmp_path, calls, {"suffix": "!"}), tmp_path / "state")
    assert calls == ["first", "second"]  # nothing to do
    run_stages(make_stages(tmp_path, calls, {"suffix": "?"}), tmp_path / "state")
    assert calls[2:] == ["second"]  # config changed: only the second stage
    (tmp_path / "src.txt").write_text("xyz")
    run_stages(make_stages(tmp_path, calls, {"suffix": "?"}), tmp_path / "state")
    assert calls[3:] == ["first", "second"] and (tmp_path / "out.txt").read_text() == "XYZ?"
    (tmp_path / "out.txt").unlink()
    run_stages(make_stages(tmp_path, calls, {"suffix": "?"}), tmp_path / "state")
    assert calls[5:] == ["second"]  # missing output


def test_stage_selection(tmp_path):
    (tmp_path / "src.txt").write_text("abc")
    calls: list = []
    run_stages(make_stages(tmp_path, calls, {"suffix": ""}), tmp_path / "state", stop_stage="first")
    assert calls == ["first"]
    run_stages(make_stages(tmp_path, calls, {"suffix": ""}), tmp_path / "state", stage="2", force=True)
    assert calls == ["first", "second"]
    with pytest.raises(ValueError, match="unknown stage 'bogus'"):
        run_stages(make_stages(tmp_path, calls, {"suffix": ""}), tmp_path / "state", stage="bogus")


def test_stage_without_outputs_fails(tmp_path):
    with pytest.raises(RuntimeError, match="without its outputs"):
        run_stages([Stage("noop", lambda: None, [], [tmp_path / "never"])], tmp_path / "state")


def test_insert_before_places_stages_by_name():
    from asr.recipe import insert_before

    stages = [Stage(n, lambda: None) for n in ("prepare", "train", "score")]
    assert [s.name for s in insert_before(stages, "score", Stage("voices", lambda: None))] == [
        "prepare", "train", "voices", "score"]
    with pytest.raises(ValueError, match="no stage 'decode'"):
        insert_before(stages, "decode", Stage("x", lambda: None))


def test_recipe_paths_follow_data_dir_and_every_recipe_asks_them():
    """The default manifests and vocabulary follow data_dir; each recipe's stages write where RecipePaths says."""
    from asr.recipe import load_recipe, recipe_config
    from asr.recipe_paths import RecipePaths

    root = Path(__file__).resolve().parents[1]
    for name in ("synthetic_en", "text_lines", "librispeech", "amazon_queen"):
        cfg = recipe_config(root / "recipes" / name, ["size=default", "data_dir=/x/d", "exp_dir=/x/e"])
        paths = cfg.paths
        assert paths == RecipePaths(Path("/x/d"), Path("/x/e"), cfg.lm.order)
        assert cfg.data.vocabulary == str(paths.vocabulary) == "/x/d/vocab.json"
        if name != "synthetic_en":  # its dev set is dev_mixed: synthetic and game voices together
            assert cfg.data.dev_manifest == str(paths.manifest("dev")) == "/x/d/manifests/dev.jsonl"
        stages = {s.name: s for s in load_recipe(root / "recipes" / name).stages(cfg)}
        assert paths.manifest("train") in stages["prepare"].outputs and paths.lm_text in stages["prepare"].outputs
        assert stages["vocabulary"].outputs == [paths.vocabulary] and stages["lm"].outputs == [paths.lm]
        assert stages["score"].outputs == [paths.results] and paths.model in stages["train"].outputs


def test_vocabulary_stage_takes_a_recipe_s_extra_characters(tmp_path):
    """synthetic_en's character vocabulary holds every prompt character even if no training line has one;
    a SentencePiece vocabulary learns from the training transcripts only."""
    from asr.manifest import Utterance, write_manifest
    from asr.recipe_stages import RecipeConfig, vocabulary_stage
    from asr.text import load_vocabulary

    cfg = RecipeConfig(data_dir=str(tmp_path), exp_dir=str(tmp_path / "exp"))
    paths = cfg.paths
    for split, text in (("train", "abc ab"), ("dev", "ba")):
        write_manifest(paths.manifest(split), [Utterance(str(tmp_path / "a.wav"), 1.0, text, id=split)])
    assert cfg.data.train_manifest == str(paths.manifest("train")) and cfg.data.vocabulary == str(paths.vocabulary)
    vocabulary_stage(cfg)
    assert load_vocabulary(paths.vocabulary).labels == ["<blank>", " ", "a", "b", "c"]
    vocabulary_stage(cfg, charset_text=lambda: ["zebra'"])
    assert load_vocabulary(paths.vocabulary).labels == ["<blank>", " ", "'", "a", "b", "c", "e", "r", "z"]


def test_data_stages_stamp_the_data_dir_so_experiments_share_them(tmp_path):
    """A stage writing only into the data dir keeps its stamp there: a second experiment on the same data skips
    it, and an experiment that changes that stage's config makes the others' next run remake it too."""
    data, calls = tmp_path / "data", []
    data.mkdir()

    def stages(suffix: str, exp: str) -> list[Stage]:
        def prepare():
            calls.append(("prepare", exp))
            (data / "manifest.txt").write_text(suffix)

        def train():
            calls.append(("train", exp))
            (tmp_path / exp / "model.txt").write_text((data / "manifest.txt").read_text())

        return [Stage("prepare", prepare, [], [data / "manifest.txt"], config={"suffix": suffix}),
                Stage("train", train, [data / "manifest.txt"], [tmp_path / exp / "model.txt"])]

    for exp in ("a", "b"):
        (tmp_path / exp).mkdir()
        run_stages(stages("!", exp), tmp_path / exp / ".stages", data_dir=data)
    assert calls == [("prepare", "a"), ("train", "a"), ("train", "b")]
    assert (data / ".stages" / "prepare.stamp").exists() and (tmp_path / "b" / ".stages" / "train.stamp").exists()
    run_stages(stages("?", "b"), tmp_path / "b" / ".stages", data_dir=data)  # b changes the data
    run_stages(stages("!", "a"), tmp_path / "a" / ".stages", data_dir=data)  # a's data must be made again
    # a's model was made from data with the same content as now: it stands
    assert calls[3:] == [("prepare", "b"), ("train", "b"), ("prepare", "a")]
    assert (data / "manifest.txt").read_text() == (tmp_path / "a" / "model.txt").read_text() == "!"


def test_a_float32_host_gets_the_recipe_s_float32_size():
    """Without size=..., a host that trains in float32 runs conf/float32.yaml where the recipe has one (text_lines:
    sized for an AVX2 CPU's time budget), a recipe without one its default; size=... always wins, and the size
    run is in the resolved config."""
    from asr.recipe import default_size, recipe_config, trains_in_float32

    root = Path(__file__).resolve().parents[1]
    assert default_size(root / "recipes" / "text_lines", float32_host=True) == "float32"
    assert default_size(root / "recipes" / "synthetic_en", float32_host=True) == "default"
    if trains_in_float32():
        assert default_size(root / "recipes" / "text_lines") == "float32"
    default = recipe_config(root / "recipes" / "text_lines", ["size=default"])
    small = recipe_config(root / "recipes" / "text_lines", ["size=float32"])
    assert (default.size, small.size) == ("default", "float32")
    assert small.features.image_height < default.features.image_height
    assert small.model.rnn_hidden < default.model.rnn_hidden
    assert small.data_dir != default.data_dir and small.exp_dir != default.exp_dir
    assert small.test_sets == default.test_sets and small.families == default.families  # the same held-out lines


def test_a_host_too_slow_for_the_default_size_gets_the_float32_size():
    """A host with bf16 kernels whose measured training step of text_lines' default size is slower than the
    recipe's SLOW_STEP_SECONDS (a CPU with half-width bf16 units) runs the float32 size; a recipe without the limit
    keeps its default. The measurement is a real step of the config's model: a larger model's takes longer."""
    import torch

    from asr.recipe import default_size, load_recipe, recipe_config
    from asr.step_timing import median_step_seconds
    from asr.training import cpu_has_bf16_kernels

    root = Path(__file__).resolve().parents[1]
    text_lines = root / "recipes" / "text_lines"
    limit = load_recipe(text_lines).SLOW_STEP_SECONDS
    assert default_size(text_lines, float32_host=False, step_seconds=0.5 * limit) == "default"
    assert default_size(text_lines, float32_host=False, step_seconds=2 * limit) == "float32"
    assert default_size(root / "recipes" / "synthetic_en", float32_host=False, step_seconds=100.0) == "default"
    small = recipe_config(text_lines, ["size=float32", "model.rnn_hidden=32", "model.conv_channels=8"])
    large = recipe_config(text_lines, ["size=default", "model.rnn_hidden=1024"])
    dtype = torch.bfloat16 if cpu_has_bf16_kernels() else None  # emulated bf16 is 27x slower: float32 there
    fast, slow = (median_step_seconds(c, dtype, batch=4, seconds=1.0) for c in (small, large))
    assert 0 < 3 * fast < slow


def test_the_cli_says_which_size_a_float32_host_runs(tmp_path):
    """oneDNN limited to AVX2 has no bf16 kernels on any x86 host: `asr recipe run` says it runs the float32 size,
    and runs the one size=... names without a word (a bad key stops both runs before any stage)."""
    from conftest import run_cli

    avx2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "CUDA_VISIBLE_DEVICES": ""}
    args = ["recipe", "run", "recipes/text_lines", "glyph_warp=0.9", f"data_dir={tmp_path / 'd'}",
            f"exp_dir={tmp_path / 'e'}"]
    auto, named = run_cli(*args, env=avx2), run_cli(*args, "size=default", env=avx2)
    for proc in (auto, named):
        assert proc.returncode != 0 and "'glyph_warp' = 0.9: must be in [0, 0.5]" in proc.stderr, proc.stderr[-2000:]
    assert "size float32: this host trains in float32" in auto.stderr and "size float32" not in named.stderr
    assert not (tmp_path / "d").exists()
