import json

import pytest

from asr.manifest import ManifestError, Utterance, read_manifest, write_manifest


def test_roundtrip_relative_paths(tmp_path):
    audio = tmp_path / "audio" / "a.wav"
    audio.parent.mkdir()
    audio.write_bytes(b"")
    utts = [Utterance(str(audio), 1.5, "hello", speaker="s1"), Utterance(str(audio), 2.0, "x", offset=1.0, id="b")]
    write_manifest(tmp_path / "m" / "m.jsonl", utts, relative_to_manifest=True)
    first = json.loads((tmp_path / "m" / "m.jsonl").read_text().splitlines()[0])
    assert first["audio_filepath"] == "../audio/a.wav" and "offset" not in first
    back = read_manifest(tmp_path / "m" / "m.jsonl")
    assert [u.id for u in back] == ["a", "b"]
    assert back[0].audio_filepath == str(tmp_path / "m" / "../audio/a.wav")
    assert back[1].offset == 1.0 and back[0].speaker == "s1"


def test_bad_lines_reported_by_number(tmp_path):
    lines = [
        '{"audio_filepath": "a.wav", "duration": 1.0, "text": "ok"}',
        "not json",
        '{"audio_filepath": "b.wav", "text": "no duration"}',
        '{"audio_filepath": "c.wav", "duration": -1, "text": "neg"}',
        '{"audio_filepath": "d.wav", "duration": 1.0, "text": 5}',
        "[1, 2]",
        '{"audio_filepath": "e.wav", "duration": NaN, "text": "nan"}',
    ]
    p = tmp_path / "m.jsonl"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError) as e:
        read_manifest(p)
    msg = str(e.value)
    assert "6 invalid line(s)" in msg
    for n in (2, 3, 4, 5, 6, 7):
        assert f"line {n}:" in msg
    assert "line 1:" not in msg and "missing key 'duration'" in msg


def test_duplicate_ids_rejected(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"audio_filepath": "x/a.wav", "duration": 1, "text": "a"}\n'
                 '{"audio_filepath": "y/a.wav", "duration": 1, "text": "b"}\n')
    with pytest.raises(ManifestError, match="duplicate"):
        read_manifest(p)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nope.jsonl")
