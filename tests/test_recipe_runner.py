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
