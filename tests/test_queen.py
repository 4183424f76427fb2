"""Flight of the Amazon Queen's speech as a corpus: the installed Debian package read as it is, every clip
accounted for, speakers held out whole; broken resource files, clips, dialogues and cutaways named in errors."""
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from asr import queen
from asr.manifest import read_manifest

from conftest import run_cli

RESOURCE = Path(queen.RESOURCE_FILE)


@pytest.fixture(scope="module")
def resources() -> queen.ResourceFile:
    if not RESOURCE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{RESOURCE} missing: scripts/setup.sh installs flight-of-the-amazon-queen")
        pytest.skip("Debian's flight-of-the-amazon-queen is not installed")
    return queen.ResourceFile(RESOURCE)


def write_qtbl(path: Path, entries: dict[str, bytes], truncate: int = 0) -> Path:
    """A rebuilt Queen resource file holding `entries` (the layout ScummVM's tools write)."""
    table_size = 15 + 21 * len(entries)
    header, data, offset = [b"QTBL", b"CEM10\0", b"\0\0", bytes([1]), struct.pack(">H", len(entries))], [], table_size
    for name, blob in sorted(entries.items()):
        header.append(name.encode().ljust(12, b"\0") + bytes([1]) + struct.pack(">II", offset, len(blob)))
        data.append(blob)
        offset += len(blob)
    content = b"".join(header + data)
    path.write_bytes(content[: len(content) - truncate] if truncate else content)
    return path


def test_installed_game_every_clip_accounted_for(resources):
    inv = queen.inventory(resources)
    clips = set(resources.names(".SB"))
    transcribed = {line.clip for line in inv.transcribed}
    ambiguous = {clip for clip, _ in inv.ambiguous}
    assert len(clips) == 6745 and resources.version == "CEM10"
    assert transcribed | ambiguous | set(inv.untranscribed) == clips  # nothing lost ...
    assert len(transcribed) + len(ambiguous) + len(inv.untranscribed) == len(clips)  # ... and nothing twice
    assert len(transcribed) > 4500
    assert all(line.clip not in clips for line in inv.lines_without_audio)
    by_clip = {line.clip: line for line in inv.transcribed}
    assert by_clip["020006J1.SB"].speaker == "JOE" and by_clip["020006P1.SB"].speaker == "AND"
    assert by_clip["020006P1.SB"].text == "You're asking for trouble King."
    assert by_clip["JOE00011.SB"].text == "It doesn't seem to open" and by_clip["JOE00011.SB"].speaker == "JOE"
    assert not [c for c in inv.untranscribed if c.startswith("JOE")]  # every response and description read
    assert all("*" not in line.text and line.text for line in inv.transcribed)
    wave = queen.decode_clip(resources.read("020006P1.SB"), "020006P1.SB", 16000)
    assert wave.dtype == np.float32 and 0.5 < len(wave) / 16000 < 5 and np.abs(wave).max() > 0.05


def test_cutaway_scenes_give_their_clips_exact_text_and_speakers(resources):
    inv = queen.inventory(resources)
    by_clip = {line.clip: line for line in inv.transcribed}
    cut = [line for line in inv.transcribed if line.dialogue.endswith(".CUT")]
    assert len(cut) == 1764 and len({line.dialogue for line in cut}) == 245
    heard = [("C41B_011.SB", "JOE", "Hey, let me outta here!"),  # C41B.CUT's object 1 (Joe), segment 1
             ("C21D_012.SB", "JOE", "I've got some beef jerky, would you like some?"),
             ("C72B_172.SB", "LOLA", "You can use this dress as a disguise"),  # actor LOLA_SHOWER
             ("C3C__122.SB", "SPARKY", "It has to be in mint condition,"),  # C3C padded to 5 characters
             ("C50I_163.SB", "ZOMBIE", "Perhaps we will meet again."),
             ("C9A__063.SB", "BUD", "Don't spend it all at once!")]  # each checked against Whisper
    assert [(by_clip[clip].speaker, by_clip[clip].text) for clip, _, _ in heard] == [(s, t) for _, s, t in heard]
    assert by_clip["C13B_021.SB"].speaker == "TAM"  # actor TAMMY: TAM1.DOG's Mary-Lou, held out for dev
    ambiguous = dict(inv.ambiguous)  # room 41's first person is Frank or Anderson, as a game state says
    assert {line.speaker for line in ambiguous["C41B_082.SB"]} == {"AND", "FRANK"}
    assert len(inv.ambiguous) == 194 and len(inv.untranscribed) == 243
    assert inv.reasons["C41B_031.SB"] == "a caption of C41B.CUT that no one says: Joe! We finally found you!"
    assert sum(r.startswith("a caption") for r in inv.reasons.values()) == 85
    assert sum(r.startswith("a sound effect") for r in inv.reasons.values()) == 136
    assert inv.reasons["1001SSSS.SB"].startswith("a sound effect")
    assert not [line for line in inv.lines_without_audio if line.dialogue.endswith(".CUT")]  # every clip named is there
    assert queen.actor_speaker("X4_JOE") == queen.actor_speaker("JOE-H") == "JOE"
    assert queen.actor_speaker("AZURA-H") == queen.actor_speaker("PRINCESS1") == "PRIN"


def test_malformed_cutaway_fails_with_the_entry_named(resources, tmp_path):
    cut, jas = resources.read("C41B.CUT"), {name: resources.read(name) for name in ("QUEEN.JAS", "QUEEN2.JAS")}
    entries = {**jas, "C41B.CUT": cut, "C41B_011.SB": resources.read("C41B_011.SB")}
    inv = queen.inventory(queen.ResourceFile(write_qtbl(tmp_path / "good.1c", entries)))
    assert [(line.clip, line.text) for line in inv.transcribed] == [("C41B_011.SB", "Hey, let me outta here!")]
    more = cut[:22] + struct.pack(">h", -200) + cut[24:]  # 200 objects where there are 78
    for bad, message in [(cut[:1000], r"cutaway BAD.CUT: an offset in its header is past the end \(980 bytes\)"),
                         (cut[:4900], r"cutaway BAD.CUT: string at byte \d+ runs past the end"),
                         (more, r"cutaway BAD.CUT: object 79 runs into the game-state data at byte 4736")]:
        path = write_qtbl(tmp_path / "bad.1c", {**jas, "BAD.CUT": bad})
        with pytest.raises(queen.QueenDataError, match=message):
            queen.inventory(queen.ResourceFile(path))
    with pytest.raises(queen.QueenDataError, match="no entry QUEEN.JAS"):  # a cutaway's people are QUEEN.JAS's
        queen.inventory(queen.ResourceFile(write_qtbl(tmp_path / "alone.1c", {"C41B.CUT": cut})))


def test_segments_follow_stage_directions():
    assert queen.segments("Hello.*FLHow are you?") == [(0, "Hello."), (1, "How are you?")]
    assert queen.segments("*XY00(237,112)Over here!") == [(0, ""), (1, "Over here!")]
    assert queen.segments("Take it.*GDThanks.") == [(1, "Thanks.")]  # Joe's hands: no clip, still an index
    assert queen.segments("Plain.") == [(0, "Plain.")]


def test_recipe_prepares_speaker_disjoint_splits_through_the_cli(resources, tmp_path):
    data = tmp_path / "data"
    proc = run_cli("recipe", "run", "recipes/amazon_queen", f"data_dir={data}", f"exp_dir={tmp_path / 'exp'}",
                   "--stop-stage", "prepare")
    assert proc.returncode == 0, proc.stderr[-2000:]
    splits = {s: read_manifest(data / "manifests" / f"{s}.jsonl") for s in ("train", "dev", "test")}
    speakers = {s: {u.speaker for u in utts} for s, utts in splits.items()}
    assert speakers["dev"] == set(queen.DEV_SPEAKERS) and speakers["test"] == set(queen.TEST_SPEAKERS)
    assert not speakers["train"] & (speakers["dev"] | speakers["test"]) and "JOE" in speakers["train"]
    rows = [line.split("\t") for line in (data / "inventory.tsv").read_text().splitlines()[1:]]
    assert len(rows) == len({r[0] for r in rows}) == 6745
    status = {r[0]: r[1] for r in rows}
    for split, utts in splits.items():
        assert all(status[u.id.removeprefix("fotaq-") + ".SB"] == split for u in utts)
    counted = {s: sum(v == s for v in status.values()) for s in ("train", "dev", "test", "untranscribed", "ambiguous")}
    assert counted["train"] == len(splits["train"]) and counted["test"] == len(splits["test"])
    assert sum(counted.values()) + sum(v == "rejected" for v in status.values()) == 6745
    report = json.loads((data / "prepare_report.json").read_text())
    assert report["clips"]["total"] == 6745 and report["test"]["utterances"] == len(splits["test"])
    lm_text = set((data / "lm_text.txt").read_text().splitlines())
    assert lm_text == {u.text for u in splits["train"]}  # dev and test lines never reach the LM
    u = splits["test"][0]
    assert u.text == u.text.lower() and Path(u.audio_filepath).exists() and u.duration > 0


def test_broken_clip_and_lines_without_audio_are_reported_by_name(resources, tmp_path):
    dog = resources.read("AND1.DOG")
    lines = queen.dialogue_lines(dog, "AND1.DOG")
    have = [line.clip for line in lines if line.clip in resources.entries][:4]
    entries = {"AND1.DOG": dog, **{clip: resources.read(clip) for clip in have[:3]}}
    entries[have[1]] = b"this is not an mp3 frame" * 20  # a clip that will not decode
    path = write_qtbl(tmp_path / "queen.1c", entries)
    inv = queen.inventory(queen.ResourceFile(path))
    assert {line.clip for line in inv.transcribed} == set(have[:3])
    assert have[3] in {line.clip for line in inv.lines_without_audio}  # its clip is absent from the file
    speakers = sorted({line.speaker for line in inv.transcribed})
    report = queen.prepare(path, tmp_path / "data", 16000, speakers, [], max_duration=30.0)
    assert report["dev"]["utterances"] == 2 and report["dev"]["rejected"] == {"unreadable audio": 1}
    rejected = (tmp_path / "data" / "rejected" / "dev.tsv").read_text()
    assert f"fotaq-{have[1][:-3]}" in rejected and f"clip {have[1]}: cannot decode" in rejected
    inventory = (tmp_path / "data" / "inventory.tsv").read_text()
    assert f"{have[1]}\trejected\tunreadable audio" in inventory
    assert report["clips"]["dialogue_lines_without_audio"] == len(inv.lines_without_audio) > 0
    silent = (tmp_path / "data" / "lines_without_audio.tsv").read_text().splitlines()
    assert len(silent) == 1 + len(inv.lines_without_audio)  # each named in a file, not only counted
    assert any(row.startswith(f"{have[3]}\tAND1.DOG\t") for row in silent)


def test_truncated_or_foreign_resource_files_fail_with_the_entry_named(resources, tmp_path):
    entries = {"AND1.DOG": resources.read("AND1.DOG"), "020006P1.SB": resources.read("020006P1.SB")}
    with pytest.raises(queen.QueenDataError, match=r"entry AND1.DOG ends at byte \d+, past the end.*truncated"):
        queen.ResourceFile(write_qtbl(tmp_path / "cut.1c", entries, truncate=100))
    (tmp_path / "other.1c").write_bytes(b"RIFF" + bytes(100))
    with pytest.raises(queen.QueenDataError, match="no QTBL header"):
        queen.ResourceFile(tmp_path / "other.1c")
    with pytest.raises(queen.QueenDataError, match="apt-get install flight-of-the-amazon-queen"):
        queen.ResourceFile(tmp_path / "absent.1c")
    short = write_qtbl(tmp_path / "short.1c", {"BAD.DOG": resources.read("AND1.DOG")[:60]})
    with pytest.raises(queen.QueenDataError, match="dialogue BAD.DOG"):
        queen.inventory(queen.ResourceFile(short))
    with pytest.raises(queen.QueenDataError, match="held-out characters not in"):
        queen.prepare(RESOURCE, tmp_path / "d", 16000, ["NOBODY"], [])
