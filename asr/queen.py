"""Flight of the Amazon Queen's talkie data: its speech clips and the dialogue lines they speak.

Debian's `flight-of-the-amazon-queen` installs the CD version rebuilt for ScummVM as one resource
file, `queen.1c`: a table of entries (name, offset, size) followed by their bytes. Speech clips
are `.SB` entries (MP3 at 11,025 Hz in this release) and each dialogue is a `.DOG` entry. A clip's
name says which dialogue line it speaks (the format of ScummVM's engines/queen talk code):

    "%2d%4x%c%1x" % (talk key of the dialogue, line id, 'J' for Joe or 'P' for the other person,
                     segment number), spaces as '0', + ".SB"          e.g. 020006J1.SB

A line is cut into segments at its '*' stage directions (*FL, *03, *XY00(237,112), ...), one clip
per segment. Joe's stock responses and object descriptions are lines of QUEEN2.JAS, spoken by
clips JOE<number><segment>.SB. Clips of cutaway scenes (.CUT) are not read yet and are reported as
untranscribed. Speakers: Joe, or the dialogue's character (the .DOG name less its trailing digits:
BOB1.DOG and BOB2.DOG are both Bob).
"""
from __future__ import annotations

import io
import logging
import re
import struct
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .atomic import atomic_write
from .prepare import Item, prepare_split

log = logging.getLogger("asr.queen")

RESOURCE_FILE = "/usr/share/scummvm/flight-of-the-amazon-queen/queen.1c"
SAMPLE_RATE = 11025  # the clips' own rate
DOG_HEADER = 20  # bytes before a dialogue's data (and before QUEEN.JAS's)
JOE_RESPONSES = 40  # Joe's stock responses ("It doesn't seem to open") before the object descriptions
NO_TEXT = ("", "0")  # how a dialogue marks an absent line
# characters held out whole, women and men in both: 384 clips (0.31 h) for dev, 537 (0.42 h) for test
DEV_SPEAKERS = ("TAM", "ORACLE", "LOLA", "IAN", "FRANK")
TEST_SPEAKERS = ("FAYE", "DEATH", "KLUNK", "NAOMI", "LOU")


class QueenDataError(ValueError):
    """The resource file is missing, truncated or not in the rebuilt QTBL format; the message names the entry."""


@dataclass(frozen=True)
class Entry:
    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class Line:
    clip: str  # the speech entry that speaks it, e.g. 020006J1.SB
    text: str
    speaker: str  # "JOE" or the dialogue's character
    dialogue: str  # the .DOG entry


@dataclass
class Inventory:
    """Every speech clip in the file, accounted for."""

    transcribed: list[Line] = field(default_factory=list)  # one line each, with audio
    untranscribed: list[str] = field(default_factory=list)  # clips no dialogue line names
    ambiguous: list[tuple[str, list[Line]]] = field(default_factory=list)  # clips two different lines name
    lines_without_audio: list[Line] = field(default_factory=list)  # dialogue lines whose clip is absent


class ResourceFile:
    """The entries of a rebuilt (QTBL) Queen resource file and their bytes."""

    def __init__(self, path: str | Path = RESOURCE_FILE):
        self.path = Path(path)
        if not self.path.exists():
            raise QueenDataError(f"{self.path}: not found (Debian: apt-get install flight-of-the-amazon-queen)")
        self.size = self.path.stat().st_size
        with self.path.open("rb") as f:
            head = f.read(15)
            if len(head) < 15 or head[:4] != b"QTBL":
                raise QueenDataError(f"{self.path}: not a rebuilt Queen resource file (no QTBL header)")
            self.version = head[4:10].rstrip(b"\0").decode("latin-1")
            self.compression = head[12]
            count = struct.unpack(">H", head[13:15])[0]
            table = f.read(21 * count)
        if len(table) < 21 * count:
            raise QueenDataError(f"{self.path}: truncated resource table ({len(table) // 21} of {count} entries)")
        self.entries: dict[str, Entry] = {}
        for i in range(count):
            row = table[21 * i: 21 * i + 21]
            name = row[:12].split(b"\0")[0].decode("latin-1")
            offset, size = struct.unpack(">II", row[13:21])
            if offset + size > self.size:
                raise QueenDataError(f"{self.path}: entry {name} ends at byte {offset + size}, past the end of the "
                                     f"file ({self.size} bytes): the file is truncated")
            self.entries[name] = Entry(name, offset, size)

    def names(self, suffix: str) -> list[str]:
        return sorted(n for n in self.entries if n.endswith(suffix))

    def read(self, name: str) -> bytes:
        entry = self.entries.get(name)
        if entry is None:
            raise QueenDataError(f"{self.path}: no entry {name}")
        with self.path.open("rb") as f:
            f.seek(entry.offset)
            return f.read(entry.size)


def _string(data: bytes, offset: int, align: int, where: str) -> tuple[str, int]:
    """A length-prefixed string at `offset` and the offset after it, padded to `align` bytes."""
    if offset >= len(data):
        raise QueenDataError(f"{where}: string at byte {offset} is past the end ({len(data)} bytes)")
    length = data[offset]
    offset += 1
    if offset + length > len(data):
        raise QueenDataError(f"{where}: string at byte {offset - 1} runs past the end")
    text = data[offset: offset + length].decode("latin-1")
    return text, (offset + length + align - 1) & ~(align - 1) if length else offset


def _table(data: bytes, offset: int, count: int, where: str) -> list[tuple[int, str]]:
    """A dialogue's (line id, text) table: per row 2 bytes unused, a signed id, a 4-aligned string."""
    rows = []
    for _ in range(count):
        if offset + 4 > len(data):
            raise QueenDataError(f"{where}: line table runs past the end ({len(data)} bytes)")
        line_id = struct.unpack(">h", data[offset + 2: offset + 4])[0]
        text, offset = _string(data, offset + 4, 4, where)
        rows.append((line_id, text))
    return rows


def segments(sentence: str) -> list[tuple[int, str]]:
    """(segment index, text) of a dialogue sentence cut at its '*' stage directions. Directions that only move
    Joe's hands (*GD, *GM) speak no clip but still take an index."""
    out, start, i, index = [], 0, 0, 0
    while i < len(sentence):
        if sentence[i] != "*":
            i += 1
            continue
        text, code = sentence[start:i], sentence[i + 1: i + 3]
        i += 3 + (11 if code == "XY" else 0)
        if code not in ("GD", "GM"):
            out.append((index, text))
        index, start = index + 1, i
    if start < len(sentence):
        out.append((index, sentence[start:]))
    return out


def _clip(prefix: str, index: int) -> str:
    return f"{prefix}{index + 1:1x}".replace(" ", "0").upper() + ".SB"


def dialogue_lines(data: bytes, name: str) -> list[Line]:
    """Every spoken segment of one .DOG entry (header included), with the clip it names."""
    where = f"dialogue {name}"
    body = data[DOG_HEADER:]
    if len(body) < 32:
        raise QueenDataError(f"{where}: {len(data)} bytes, shorter than a dialogue header")
    levels, _, key, joe_count, person_count = struct.unpack(">5h", body[:10])
    person_at, _, person2_at = struct.unpack(">3H", body[22:28])
    levels = abs(levels)
    speaker = re.sub(r"\d+$", "", name.rsplit(".", 1)[0])
    said: list[tuple[str, str, str]] = []  # (clip prefix, sentence, speaker)
    for line_id, text in _table(body, 32 + levels * 96, joe_count, where):
        said.append((f"{key:2d}{line_id:4x}J" if line_id else f"{key:2d}SSSSJ", text, "JOE"))
    for line_id, text in _table(body, person_at, person_count, where):
        said.append((f"{key:2d}{line_id:4x}P", text, speaker))
    again, offset = _string(body, person2_at, 2, where)  # what both say when met a second time
    joe_again, _ = _string(body, offset, 2, where)
    said += [(f"{key:2d}XXXXP", again, speaker), (f"{key:2d}XXXXJ", joe_again, "JOE")]
    return [Line(_clip(prefix, index), text.strip(), who, name)
            for prefix, sentence, who in said if sentence not in NO_TEXT
            for index, text in segments(sentence) if text.strip()]


def joe_lines(resources: ResourceFile) -> list[Line]:
    """Joe's responses and object descriptions: lines of QUEEN2.JAS, whose counts QUEEN.JAS holds. QUEEN2.JAS
    lists the object descriptions, object names, room names, 12 verbs, then Joe's 40 responses; clip JOE%04d<seg>
    speaks response k (1-40), or description k - 40."""
    if "QUEEN.JAS" not in resources.entries or "QUEEN2.JAS" not in resources.entries:
        return []
    header = resources.read("QUEEN.JAS")[DOG_HEADER:DOG_HEADER + 8]
    if len(header) < 8:
        raise QueenDataError(f"{resources.path}: QUEEN.JAS is shorter than its header")
    rooms, names, _, descriptions = struct.unpack(">4H", header)
    text = resources.read("QUEEN2.JAS").decode("latin-1").replace("\r\n", "\n").split("\n")
    verbs = descriptions + names + rooms
    if len(text) < verbs + 12 + JOE_RESPONSES:
        raise QueenDataError(f"{resources.path}: QUEEN2.JAS has {len(text)} lines, fewer than QUEEN.JAS counts")
    said = [(k, line) for k, line in enumerate(text[verbs + 12: verbs + 12 + JOE_RESPONSES], 1)]
    said += [(JOE_RESPONSES + k, line) for k, line in enumerate(text[:descriptions], 1)]
    return [Line(_clip(f"JOE{k:04d}", index), segment.strip(), "JOE", "QUEEN2.JAS")
            for k, sentence in said if sentence not in NO_TEXT
            for index, segment in segments(sentence) if segment.strip()]


def inventory(resources: ResourceFile) -> Inventory:
    """Every .SB clip: transcribed by exactly one dialogue line, named by conflicting lines, or by none."""
    named: dict[str, list[Line]] = defaultdict(list)
    lines = [line for dog in resources.names(".DOG") for line in dialogue_lines(resources.read(dog), dog)]
    for line in lines + joe_lines(resources):
        if all(line.text != other.text for other in named[line.clip]):
            named[line.clip].append(line)
    clips = set(resources.names(".SB"))
    inv = Inventory()
    for clip, lines in sorted(named.items()):
        if clip not in clips:
            inv.lines_without_audio.extend(lines)
        elif len(lines) > 1:
            inv.ambiguous.append((clip, lines))
        else:
            inv.transcribed.append(lines[0])
    inv.untranscribed = sorted(clips - set(named))
    return inv


def decode_clip(data: bytes, name: str, sample_rate: int) -> np.ndarray:
    """A clip's samples (float32 mono at `sample_rate`); QueenDataError naming the clip when it does not decode."""
    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise QueenDataError(f"clip {name}: cannot decode ({str(e)[:100]})") from None
    audio = audio.mean(axis=1)
    if not audio.size or not np.isfinite(audio).all():
        raise QueenDataError(f"clip {name}: no finite audio samples")
    return soxr.resample(audio, rate, sample_rate).astype(np.float32) if rate != sample_rate else audio


def split_of(speaker: str, dev_speakers: Sequence[str], test_speakers: Sequence[str]) -> str:
    return "test" if speaker in test_speakers else "dev" if speaker in dev_speakers else "train"


def prepare(resource_path: str | Path, data_dir: str | Path, sample_rate: int, dev_speakers: Sequence[str],
            test_speakers: Sequence[str], names: dict[str, str] | None = None, max_duration: float = 30.0,
            limit: int = 0) -> dict:
    """Manifests of the transcribed clips, speakers held out whole for dev and test, and `inventory.tsv` saying
    what became of every clip (its split, or why not). `names` maps train/dev/test to manifest names; `limit`
    keeps the first clips of each split (0: all), for quick runs."""
    names = names or {"train": "train", "dev": "dev", "test": "test"}
    if set(dev_speakers) & set(test_speakers):
        raise QueenDataError(f"speakers both in dev and test: {sorted(set(dev_speakers) & set(test_speakers))}")
    data = Path(data_dir)
    resources = ResourceFile(resource_path)
    inv = inventory(resources)
    known = {line.speaker for line in inv.transcribed}
    unknown = sorted(set(dev_speakers) - known | set(test_speakers) - known)
    if unknown:
        raise QueenDataError(f"held-out speakers not in {resources.path}: {unknown}; speakers: {sorted(known)}")
    items: dict[str, list[Item]] = {split: [] for split in names}
    failed: dict[str, list[tuple[str, str, str]]] = {split: [] for split in names}
    for line in inv.transcribed:
        split, clip_id = split_of(line.speaker, dev_speakers, test_speakers), f"fotaq-{line.clip[:-3]}"
        if limit and len(items[split]) + len(failed[split]) >= limit:
            continue
        path = data / "audio" / "fotaq" / str(sample_rate) / f"{line.clip[:-3]}.flac"
        if not path.exists():  # decoded by an earlier run at this rate
            try:
                wave = decode_clip(resources.read(line.clip), line.clip, sample_rate)
            except QueenDataError as e:
                failed[split].append((clip_id, f"unreadable audio: {e}", line.clip))
                continue
            with atomic_write(path, "wb") as f:
                sf.write(f, wave, sample_rate, format="FLAC", subtype="PCM_16")
        items[split].append(Item(clip_id, path, line.text, speaker=line.speaker))
    report = {split: prepare_split(items[split], data, name, max_duration=max_duration if split == "train"
                                   else float("inf"), extra_rejected=failed[split])
              for split, name in names.items()}
    write_inventory(data, inv, names, dev_speakers, test_speakers, {it.id for split in items for it in items[split]},
                    limit)
    report["clips"] = {"total": len(resources.names(".SB")), "transcribed": len(inv.transcribed),
                       "ambiguous": len(inv.ambiguous), "untranscribed": len(inv.untranscribed),
                       "dialogue_lines_without_audio": len(inv.lines_without_audio)}
    report["speakers"] = {names[s]: sorted({line.speaker for line in inv.transcribed
                                            if split_of(line.speaker, dev_speakers, test_speakers) == s})
                          for s in names}
    log.info(f"{resources.path}: {report['clips']}")
    return report


def write_inventory(data: Path, inv: Inventory, names: dict[str, str], dev_speakers: Sequence[str],
                    test_speakers: Sequence[str], used: set[str], limit: int) -> None:
    """<data>/inventory.tsv: every clip once, with its manifest, or why it is in none (the rejections are read
    back from prepare_split's rejected/<name>.tsv)."""
    status = {}
    for split, name in names.items():
        for row in (data / "rejected" / f"{name}.tsv").read_text().splitlines()[1:]:
            clip_id, reason = row.split("\t")[:2]
            status[clip_id[len("fotaq-"):] + ".SB"] = f"rejected\t{reason}"
    for line in inv.transcribed:
        split = split_of(line.speaker, dev_speakers, test_speakers)
        status.setdefault(line.clip, f"{names[split]}\t{line.speaker}" if f"fotaq-{line.clip[:-3]}" in used
                          else f"unused\tbeyond limit={limit}")
    for clip, lines in inv.ambiguous:
        status[clip] = "ambiguous\t" + " | ".join(f"{x.dialogue}: {x.text}" for x in lines)
    for clip in inv.untranscribed:
        status[clip] = "untranscribed\tno dialogue line names it (a cutaway scene's, not read yet)"
    with atomic_write(data / "inventory.tsv") as f:
        f.write("clip\tstatus\tdetail\n")
        for clip in sorted(status):
            f.write(f"{clip}\t{status[clip]}\n")
