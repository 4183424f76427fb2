"""Beneath a Steel Sky's speech as a corpus: the installed Debian package read as it is, every clip accounted for,
characters held out whole; truncated or corrupt data files, text banks, scripts and clips named in errors."""
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asr import sky
from asr.game_speech import split_of
from asr.manifest import read_manifest

GAME = Path(sky.DATA_DIR)
# each heard through Whisper tiny.en: (clip, character, line)
HEARD = [(51146, "Get OUT of here and stop wasting my TIME."),
         (54213, "I feel LUCKY today, Gallagher!"),
         (54214, "You'll need more than LUCK to beat ME, Colston."),
         (54180, "I shall PERMIT the witness to ANSWER."),
         (51751, "...it was probably the work of CRAZIES from HOBART!"),
         (53230, "We could BOTH use an OVERHAUL..."),
         (52640, "Book me on the ECONOMY tour.")]


@pytest.fixture(scope="module")
def game() -> sky.Game:
    if not (GAME / "sky.dsk").exists():
        if os.environ.get("CI"):
            pytest.fail(f"{GAME} missing: scripts/setup.sh installs beneath-a-steel-sky")
        pytest.skip("Debian's beneath-a-steel-sky is not installed")
    return sky.Game(GAME)


@pytest.fixture(scope="module")
def inv(game) -> sky.Inventory:
    return sky.inventory(game)


def test_installed_game_every_clip_accounted_for(game, inv):
    clips = set(game.clips())
    transcribed = {line.clip for line in inv.transcribed}
    unattributed = {line.clip for line in inv.unattributed}
    assert len(clips) == 3491 and len(game.disk.entries) == sky.DNR_ENTRIES
    assert transcribed | unattributed | set(inv.untranscribed) == clips | set(sky.INTRO_CLIPS)  # nothing lost ...
    assert len(transcribed) + len(unattributed) + len(inv.untranscribed) == 3491 + 88  # ... nothing twice
    assert (len(transcribed), len(unattributed), len(inv.untranscribed)) == (3388, 99, 92)
    assert sum(r.startswith("CD intro") for r in inv.reasons.values()) == 88
    assert all(line.text and line.speaker for line in inv.transcribed)
    by_clip = {line.clip: line for line in inv.transcribed}
    assert [by_clip[clip].text for clip, _ in HEARD] == [text for _, text in HEARD]
    assert [by_clip[clip].speaker for clip, _ in HEARD[1:]] == ["COLSTON", "GALLAGHER", "JUDGE", "HOBBINS", "JOEY",
                                                                "FOSTER"]
    assert sky.clip_text_number(51146) == 2 << 12 | 46 and sky.clip_text_number(50000) == 0
    assert game.text(1) == "Foster" and game.text(2) == "Hobbins"  # section 0 opens with names


def test_clips_decode_to_their_length(game):
    data = game.disk.load(51146)
    assert data[sky.HEADER:sky.HEADER + 4] != b"RNC\x01"  # unpacked, header kept
    wave = game.clip_audio(51146, 16000)
    total = struct.unpack("<H", data[12:14])[0]
    assert wave.dtype == np.float32 and abs(len(wave) / 16000 - (total - sky.HEADER) / 11025) < 0.01
    assert 2 < len(wave) / 16000 < 4 and 0.05 < np.abs(wave).max() <= 1.0


def test_held_out_characters_are_disjoint_from_training(game, inv, tmp_path):
    speakers = {line.speaker for line in inv.transcribed}
    assert set(sky.DEV_SPEAKERS) <= speakers and set(sky.TEST_SPEAKERS) <= speakers
    assert not set(sky.DEV_SPEAKERS) & set(sky.TEST_SPEAKERS)
    split = {line.clip: split_of(line.speaker, sky.DEV_SPEAKERS, sky.TEST_SPEAKERS) for line in inv.transcribed}
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "dev", "test")}
    assert counts["dev"] > 250 and counts["test"] > 250 and counts["train"] > 2700
    report = sky.prepare(GAME, tmp_path, 16000, sky.DEV_SPEAKERS, sky.TEST_SPEAKERS, limit=2)
    manifests = {s: read_manifest(tmp_path / "manifests" / f"{s}.jsonl") for s in ("train", "dev", "test")}
    heard = {s: {u.speaker for u in utts} for s, utts in manifests.items()}
    assert heard["dev"] <= set(sky.DEV_SPEAKERS) and heard["test"] <= set(sky.TEST_SPEAKERS)
    assert not heard["train"] & (set(sky.DEV_SPEAKERS) | set(sky.TEST_SPEAKERS))
    assert all(len(utts) == 2 and utts[0].text == utts[0].text.lower() for utts in manifests.values())
    rows = [r.split("\t") for r in (tmp_path / "inventory.tsv").read_text().splitlines()[1:]]
    assert len(rows) == len({r[0] for r in rows}) == 3491 + 88
    assert sum(r[1] == "unattributed" for r in rows) == 99 and report["clips"]["total"] == 3491 + 88
    assert sum(r[1] in ("train", "dev", "test") for r in rows) == 6
    intro = read_manifest(tmp_path / "manifests" / "untranscribed.jsonl")  # for teachers: no text, no held-out voice
    assert [u.id for u in intro] == [f"bass-{c}" for c in sky.INTRO_CLIPS[:2]] and report["intro"]["clips"] == 2
    assert all(u.text == "" and u.speaker == sky.INTRO_SPEAKER and 0.3 < u.duration < 20 for u in intro)


def _with_packed_crc(packed: bytes) -> bytes:
    """An RNC archive whose packed-data CRC is made to match its (altered) body, so the decoder itself meets it."""
    size = struct.unpack(">I", packed[8:12])[0]
    return packed[:14] + struct.pack(">H", sky.crc16(packed[18:18 + size])) + packed[16:]


@settings(max_examples=150, deadline=None)
@given(at=st.integers(18, 24000), xor=st.integers(1, 255), cut=st.integers(0, 40))
def test_corrupt_rnc_streams_raise_a_named_error_or_decode_exactly(game, at, xor, cut):
    """The compiled RNC decoder meets any damage past the CRC with a SkyDataError naming the file (never a crash,
    a hang or bytes other than the original's), and unpacks the undamaged archive to the engine's bytes."""
    packed = game.disk.raw(51146)[sky.HEADER:]
    original = sky.rnc_unpack(packed, "file 51146")
    damaged = bytearray(packed)
    damaged[at] ^= xor
    if cut:  # the body shortened too, its header's length with it
        size = struct.unpack(">I", packed[8:12])[0] - cut
        damaged[8:12] = struct.pack(">I", size)
        damaged = damaged[:18 + size]
    try:
        out = sky.rnc_unpack(_with_packed_crc(bytes(damaged)), "file 51146")
    except sky.SkyDataError as e:
        assert str(e).startswith("file 51146: RNC")
    else:
        assert out == original


def test_every_packed_file_of_the_game_unpacks_to_its_checksum(game):
    """All 4,768 RNC archives of sky.dsk unpack to the length and the CRC their headers give (a wrong byte
    anywhere raises), in seconds now that the decoder is compiled."""
    packed = [n for n in game.disk.entries if game.disk.raw(n)[sky.HEADER:sky.HEADER + 4] == b"RNC\x01"]
    assert len(packed) == 4768
    for number in packed:
        raw = game.disk.raw(number)
        unpacked = sky.rnc_unpack(raw[sky.HEADER:], f"file {number}")
        assert len(unpacked) == struct.unpack(">I", raw[sky.HEADER + 4:sky.HEADER + 8])[0]


def test_truncated_or_foreign_data_fail_with_the_file_named(game, tmp_path):
    for name in ("sky.dnr", "sky.cpt"):
        shutil.copy(GAME / name, tmp_path / name)
    with (GAME / "sky.dsk").open("rb") as f:
        (tmp_path / "sky.dsk").write_bytes(f.read(1 << 20))
    with pytest.raises(sky.SkyDataError, match=r"sky.dsk: file \d+ ends at byte \d+, past the end.*truncated"):
        sky.Disk(tmp_path)
    dnr = (GAME / "sky.dnr").read_bytes()
    (tmp_path / "sky.dnr").write_bytes(struct.pack("<I", 1445) + dnr[4:4 + 8 * 1445])
    with pytest.raises(sky.SkyDataError, match="1445 entries, not the CD version"):
        sky.Disk(tmp_path)
    (tmp_path / "sky.dnr").write_bytes(dnr[:1000])
    with pytest.raises(sky.SkyDataError, match="truncated dinner table"):
        sky.Disk(tmp_path)
    with pytest.raises(sky.SkyDataError, match="apt-get install beneath-a-steel-sky"):
        sky.Disk(tmp_path / "absent")
    (tmp_path / "sky.cpt").write_bytes((GAME / "sky.cpt").read_bytes()[:5000])
    with pytest.raises(sky.SkyDataError, match="sky.cpt: truncated"):
        sky.read_compacts(tmp_path / "sky.cpt")
    with pytest.raises(sky.SkyDataError, match="held-out characters not in"):
        sky.prepare(GAME, tmp_path / "d", 16000, ["NOBODY"], [])


def test_corrupt_clips_banks_and_scripts_name_the_entry(game):
    raw = game.disk.raw(51146)
    packed = raw[sky.HEADER:]
    assert sky.rnc_unpack(packed, "file 51146") is not None
    flipped = packed[:40] + bytes([packed[40] ^ 0xFF]) + packed[41:]
    with pytest.raises(sky.SkyDataError, match="file 51146: RNC packed data fails its CRC"):
        sky.rnc_unpack(flipped, "file 51146")
    with pytest.raises(sky.SkyDataError, match=r"file 51146: RNC data truncated"):
        sky.rnc_unpack(packed[:500], "file 51146")
    with pytest.raises(sky.SkyDataError, match="clip 51146: header says"):
        sky.decode_clip(game.disk.load(51146)[:1000], 51146, 16000)
    bank = game.bank(2)
    with pytest.raises(sky.SkyDataError, match="text section 2, line 46: runs past the end"):
        sky.get_text(bank[:1500], 2 << 12 | 46, 2)
    with pytest.raises(sky.SkyDataError, match="text section 2, line 4000: not in the bank"):
        sky.get_text(bank, 2 << 12 | 4000, 2)
    module = game.disk.load(sky.SCRIPT_BASE + 3)
    words = struct.unpack("<2H", module[:4])
    broken = module[:2 * words[1]] + struct.pack("<H", 99) + module[2 * words[1] + 2:]
    with pytest.raises(sky.SkyDataError, match=r"script module 3 \(file 60403\): unknown opcode 99"):
        sky.disassemble(broken, 3)
