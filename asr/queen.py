"""Flight of the Amazon Queen's talkie data: its speech clips and the dialogue lines they speak.

Debian's `flight-of-the-amazon-queen` installs the CD version rebuilt for ScummVM as one resource
file, `queen.1c`: a table of entries (name, offset, size) followed by their bytes. Speech clips
are `.SB` entries (MP3 at 11,025 Hz in this release) and each dialogue is a `.DOG` entry. A clip's
name says which dialogue line it speaks (the format of ScummVM's engines/queen talk code):

    "%2d%4x%c%1x" % (talk key of the dialogue, line id, 'J' for Joe or 'P' for the other person,
                     segment number), spaces as '0', + ".SB"          e.g. 020006J1.SB

A line is cut into segments at its '*' stage directions (*FL, *03, *XY00(237,112), ...), one clip
per segment. Joe's stock responses and object descriptions are lines of QUEEN2.JAS, spoken by
clips JOE<number><segment>.SB. Speakers: Joe, or the dialogue's character (the .DOG name less its
trailing digits: BOB1.DOG and BOB2.DOG are both Bob).

Cutaway scenes are .CUT entries (ScummVM's engines/queen/cutaway.cpp, Cutaway::load and Cutaway::run):
after the 20-byte header, 6 words (panel, signed object count, flags, offsets of the game-state block,
of the sentences and of the bank names), then one record per object: 17 words (object number first,
the animation list 5th, execute 6th, from-object 13th), a list of people to turn on, and for an
animation a list of 10-word frames ended by -2. The sentences are 2-aligned strings read in turn: the
first sets Joe's facing, then one per object. A person record (Joe, object 0 or -1, or a person
object, both without an animation list) speaks its sentence like a dialogue line, segment by segment,
with the clip prefix of findCdCut: the cutaway's name padded with '_' to 5 characters and the object's
1-based index as 2 digits, e.g. C41B_083.SB (object 8, segment 3). Its speaker is Joe, or the actor of
QUEEN.JAS's actor table in the object's room with the object's person number (Logic::findActor); where
the game state picks between two actors the clip is ambiguous. Objects -2 and -3 are captions: the
whole sentence is one clip, <prefix>1, that no person says, so their clips stay untranscribed.
Actor names are mapped to the dialogues' names (TAMMY is TAM1.DOG's character, see ACTOR_SPEAKERS).
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
from .game_speech import Clip, check_held_out, write_splits

log = logging.getLogger("asr.queen")

RESOURCE_FILE = "/usr/share/scummvm/flight-of-the-amazon-queen/queen.1c"
SAMPLE_RATE = 11025  # the clips' own rate
DOG_HEADER = 20  # bytes before a dialogue's data (and before QUEEN.JAS's)
JOE_RESPONSES = 40  # Joe's stock responses ("It doesn't seem to open") before the object descriptions
NO_TEXT = ("", "0")  # how a dialogue marks an absent line
# characters held out whole, women and men in both: 570 clips (0.47 h) for dev, 676 (0.51 h) for test
DEV_SPEAKERS = ("TAM", "ORACLE", "LOLA", "IAN", "FRANK")
TEST_SPEAKERS = ("FAYE", "DEATH", "KLUNK", "NAOMI", "LOU")
CUT_OBJECT_WORDS, CUT_FRAME_WORDS = 17, 10  # a cutaway object record; an animation frame, its header included
CUT_PEOPLE = 6  # the most people a cutaway object turns on (Cutaway::turnOnPeople)
PERSON_IMAGES = (-3, -4)  # the image of a person object (facing left, right)
CAPTIONS = (-2, -3)  # cutaway objects whose sentence is a spoken caption (-4: shown only)
# actors (QUEEN.JAS's names, less X<n>_ prefixes, -H/-E/-F, _STAND/_SHOWER and digits) whose dialogues are named
# otherwise: each is the person a .DOG is spoken with (QUEEN.JAS's talk commands, the cutaways' talk links)
ACTOR_SPEAKERS = {"ANDERSON": "AND", "ANDSON": "AND", "AZURA": "PRIN", "PRINCESS": "PRIN", "JIMMY": "JIM",
                  "JOHAN": "JOHN", "MIKE": "LARIS", "PYGMY": "TALLPYG", "SECRETARY": "SEC", "TAMMY": "TAM",
                  "WEDGEWOOD": "WEDGE"}
SOUND_EFFECT = re.compile(r"\d+[A-Z]?S+\.SB")  # e.g. 1001SSSS.SB, 55BSSSSS.SB: effects, named by number


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
    speaker: str  # "JOE", the dialogue's character, or "" for a cutaway caption (no one says it)
    dialogue: str  # the .DOG, .CUT or QUEEN2.JAS entry


@dataclass
class Inventory:
    """Every speech clip in the file, accounted for."""

    transcribed: list[Line] = field(default_factory=list)  # one line each, with audio
    untranscribed: list[str] = field(default_factory=list)  # clips no line names, or only a caption
    ambiguous: list[tuple[str, list[Line]]] = field(default_factory=list)  # clips two different lines name
    lines_without_audio: list[Line] = field(default_factory=list)  # dialogue and cutaway lines whose clip is absent
    reasons: dict[str, str] = field(default_factory=dict)  # why each untranscribed clip is


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


class _Words:
    """Big-endian 16-bit words read in turn from one entry's bytes; QueenDataError naming the entry past its end."""

    def __init__(self, data: bytes, where: str, offset: int = 0):
        self.data, self.where, self.offset = data, where, offset

    def read(self, count: int = 1, what: str = "data") -> tuple[int, ...]:
        end = self.offset + 2 * count
        if count < 0 or end > len(self.data):
            raise QueenDataError(f"{self.where}: {what} at byte {self.offset} runs past the end "
                                 f"({len(self.data)} bytes)")
        words = struct.unpack(f">{count}h", self.data[self.offset: end])
        self.offset = end
        return words

    def one(self, what: str = "data") -> int:
        return self.read(1, what)[0]

    def table(self, record_words: int, what: str, at_least_one: bool = False) -> list[tuple[int, ...]]:
        """A count, then that many records (one even for a count of 0 where the engine reads one anyway)."""
        count = self.one(f"{what} count") & 0xFFFF
        return [self.read(record_words, what) for _ in range(max(count, 1) if at_least_one else count)]


@dataclass(frozen=True)
class Cast:
    """Who can speak in a room, from QUEEN.JAS (Logic::readQueenJas): each object's room and image, each room's
    first object less one, and the actors as (room, person number, name)."""

    rooms: list[int]  # by object number; 0 unused
    images: list[int]
    room_start: list[int]  # by room number; 0 unused
    actors: list[tuple[int, int, str]]


def read_cast(resources: ResourceFile) -> Cast:
    """QUEEN.JAS read through (Logic::readQueenJas), checked by the version string that ends it; the actor names
    from QUEEN2.JAS."""
    w = _Words(resources.read("QUEEN.JAS"), "QUEEN.JAS", DOG_HEADER)
    rooms, names, objects, descriptions = (n & 0xFFFF for n in w.read(4, "header"))
    records = [w.read(8, "object data") for _ in range(objects)]  # name x y description entry room state image
    room_start = [0, *(n & 0xFFFF for n in w.read(rooms + 1, "room data"))]
    w.read(rooms, "room sound effects")
    for words, what in ((5, "items"), (5, "graphics")):
        w.table(words, what)
    for _ in range(rooms):  # the walking grid: object and area counts, then the areas
        w.read(8 * w.read(2, "grid")[1], "grid areas")
    w.read(4 * objects, "object boxes")
    for words, what in ((3, "walk-off points"), (4, "object descriptions")):
        w.table(words, what)
    for words in (10, 3, 3, 3, 4):  # command list, areas, objects, inventory, game states
        w.table(words, "commands", at_least_one=True)
    w.one("entry object")
    w.table(2, "furniture")
    actor_count, anims, actor_names, _ = w.read(4, "actor counts")
    actors = [w.read(12, "actor data") for _ in range(actor_count)]  # room, person number, name, ...
    w.table(3, "graphic animations", at_least_one=True)
    if w.data[w.offset: w.offset + 5].decode("latin-1") != resources.version[:5]:
        raise QueenDataError(f"{resources.path}: QUEEN.JAS does not end in its version string "
                             f"{resources.version!r} where its tables end (byte {w.offset}): not this layout")
    text = resources.read("QUEEN2.JAS").decode("latin-1").replace("\r\n", "\n").split("\n")
    first = descriptions + names + rooms + 12 + JOE_RESPONSES + anims  # QUEEN2.JAS's actor names
    if len(text) < first + actor_names or any(not 0 < a[2] <= actor_names for a in actors):
        raise QueenDataError(f"{resources.path}: QUEEN2.JAS has no actor name for some QUEEN.JAS actor")
    return Cast([0, *(r[5] for r in records)], [0, *(r[7] for r in records)], room_start,
                [(a[0], a[1], text[first + a[2] - 1]) for a in actors])


def actor_speaker(actor: str) -> str:
    """The dialogues' name for an actor: X4_JOE and JOE-H are JOE, PRINCESS1 and AZURA-H are PRIN."""
    name = re.sub(r"(-[HEF]|_STAND|_SHOWER|\d+)$", "", re.sub(r"^X\d+_", "", actor))
    return ACTOR_SPEAKERS.get(name, name)


def person_speakers(cast: Cast, obj: int) -> list[str]:
    """Who a person object can be: the actors in its room with its person number (Logic::findActor picks the
    one whose game state holds, so two different names are a choice only the game state makes)."""
    if not 0 < obj < len(cast.rooms) or cast.rooms[obj] >= len(cast.room_start):
        return []
    room = cast.rooms[obj]
    number = sum(image in PERSON_IMAGES for image in cast.images[cast.room_start[room] + 1: obj + 1])
    return sorted({actor_speaker(name) for r, n, name in cast.actors if (r, n) == (room, number)})


def _cd_cut(name: str, index: int) -> str:
    """findCdCut: a cutaway's clip prefix for its object `index` (1-based), e.g. C41B_08."""
    return f"{name.rsplit('.', 1)[0].upper():_<5}"[:5] + f"{index:02d}"[:2]


def _cut_kind(obj: int, anims: int, execute: int, from_obj: int, cast: Cast, where: str) -> str:
    """Cutaway::getObjectType: "person", "caption", "shown", "animation" (its frames follow) or "none"."""
    if obj >= len(cast.images):
        raise QueenDataError(f"{where}: object number {obj} is not in QUEEN.JAS ({len(cast.images) - 1} objects)")
    kind = "person" if not anims and (obj == 0 or obj > 0 and cast.images[obj] in PERSON_IMAGES) else "animation"
    kind = "none" if from_obj > 0 else kind
    kind = "caption" if obj in CAPTIONS else "shown" if obj == -4 else kind
    return "none" if kind == "animation" and not execute else kind


def cutaway_lines(data: bytes, name: str, cast: Cast) -> list[Line]:
    """Every spoken segment of one .CUT entry (header included), read as Cutaway::run does: person records'
    segments, one Line per speaker the object can be (Joe for objects 0 and -1), and captions with no speaker."""
    where = f"cutaway {name}"
    w = _Words(data, where, DOG_HEADER)
    _, count, _, states_at, sentence_at, _ = w.read(6, "header")
    states_at, sentence_at = states_at & 0xFFFF, sentence_at & 0xFFFF
    body = data[DOG_HEADER:]
    if max(states_at, sentence_at) >= len(body):
        raise QueenDataError(f"{where}: an offset in its header is past the end ({len(body)} bytes)")
    _, sentence_at = _string(body, sentence_at, 2, where)  # Joe's facing as the cutaway starts
    lines = []
    for index in range(1, abs(count) + 1):
        what = f"object {index}"
        record = w.read(CUT_OBJECT_WORDS, what)
        obj = 0 if record[0] == -1 else record[0]  # -1: a room fade, then Joe
        kind = _cut_kind(obj, record[4], record[5], record[12], cast, where)
        people = w.one(f"{what}'s people")
        if not 0 <= people <= CUT_PEOPLE:
            raise QueenDataError(f"{where}: {what} turns on {people} people (at most {CUT_PEOPLE})")
        w.read(people, f"{what}'s people")
        while kind == "animation" and (frame := w.one(f"{what}'s animation")) != -2:
            if frame > 1000:
                raise QueenDataError(f"{where}: {what}'s animation has a frame header {frame} (at most 1000)")
            w.read(CUT_FRAME_WORDS - 1, f"{what}'s animation")
        if w.offset > DOG_HEADER + states_at:
            raise QueenDataError(f"{where}: {what} runs into the game-state data at byte {states_at}")
        sentence, sentence_at = _string(body, sentence_at, 2, where)
        prefix = _cd_cut(name, index)
        if kind == "caption" and sentence.strip():
            lines.append(Line(prefix + "1.SB", sentence.strip(), "", name))
        elif kind == "person" and sentence != "*" and not sentence.startswith("#"):  # '#': the credits
            speakers = ["JOE"] if obj == 0 else person_speakers(cast, obj)
            if not speakers:
                raise QueenDataError(f"{where}: {what} (object {obj}) is a person with no actor in QUEEN.JAS")
            lines += [Line(_clip(prefix, i), text.strip(), who, name)
                      for i, text in segments(sentence) if text.strip() for who in speakers]
    return lines


def inventory(resources: ResourceFile) -> Inventory:
    """Every .SB clip: transcribed by exactly one line (a dialogue's, Joe's, a cutaway's), named by conflicting
    lines (or by a cutaway line the game state gives to one of two people), a caption no one says, or by none."""
    lines = [line for dog in resources.names(".DOG") for line in dialogue_lines(resources.read(dog), dog)]
    lines += joe_lines(resources)
    if resources.names(".CUT"):
        cast = read_cast(resources)
        lines += [line for cut in resources.names(".CUT") for line in cutaway_lines(resources.read(cut), cut, cast)]
    named: dict[str, list[Line]] = defaultdict(list)
    for line in lines:
        if all((line.text, line.speaker) != (other.text, other.speaker) for other in named[line.clip]):
            named[line.clip].append(line)
    clips = set(resources.names(".SB"))
    inv = Inventory()
    for clip, said in sorted(named.items()):
        spoken = [line for line in said if line.speaker]
        if clip not in clips:
            inv.lines_without_audio.extend(said)
        elif not spoken:
            inv.reasons[clip] = f"a caption of {said[0].dialogue} that no one says: {said[0].text}"
        elif len(spoken) > 1:
            inv.ambiguous.append((clip, spoken))
        else:
            inv.transcribed.append(spoken[0])
    for clip in clips - set(named):
        inv.reasons[clip] = ("a sound effect, not speech (named by its number)" if SOUND_EFFECT.fullmatch(clip)
                             else "no dialogue or cutaway line names it")
    inv.untranscribed = sorted(inv.reasons)
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


def prepare(resource_path: str | Path, data_dir: str | Path, sample_rate: int, dev_speakers: Sequence[str],
            test_speakers: Sequence[str], names: dict[str, str] | None = None, max_duration: float = 30.0,
            limit: int = 0) -> dict:
    """Manifests of the transcribed clips, speakers held out whole for dev and test, and `inventory.tsv` saying
    what became of every clip (its split, or why not). `names` maps train/dev/test to manifest names; `limit`
    keeps the first clips of each split (0: all), for quick runs."""
    names = names or {"train": "train", "dev": "dev", "test": "test"}
    data = Path(data_dir)
    resources = ResourceFile(resource_path)
    inv = inventory(resources)
    check_held_out(dev_speakers, test_speakers, {line.speaker for line in inv.transcribed}, str(resources.path),
                   QueenDataError)
    clips = [Clip(f"fotaq-{line.clip[:-3]}", line.clip[:-3], line.text, line.speaker, line.clip,
                  lambda rate, name=line.clip: decode_clip(resources.read(name), name, rate))
             for line in inv.transcribed]
    report, status = write_splits(clips, data, data / "audio" / "fotaq", sample_rate, dev_speakers, test_speakers,
                                  names, max_duration, limit, QueenDataError)
    write_inventory(data, inv, status)
    report["clips"] = {"total": len(resources.names(".SB")), "transcribed": len(inv.transcribed),
                       "ambiguous": len(inv.ambiguous), "untranscribed": len(inv.untranscribed),
                       "dialogue_lines_without_audio": len(inv.lines_without_audio)}
    log.info(f"{resources.path}: {report['clips']} (the lines without audio: {data / 'lines_without_audio.tsv'})")
    return report


def write_inventory(data: Path, inv: Inventory, status: dict[str, str]) -> None:
    """<data>/inventory.tsv: every clip once, with its manifest (`status` of the transcribed, see
    game_speech.clip_status), or why it is in none; <data>/lines_without_audio.tsv: every dialogue or cutaway
    line whose clip the resource file lacks (the game shows them as text only)."""
    for clip, lines in inv.ambiguous:
        status[clip] = "ambiguous\t" + " | ".join(f"{x.dialogue} ({x.speaker}): {x.text}" for x in lines)
    for clip in inv.untranscribed:
        status[clip] = f"untranscribed\t{inv.reasons.get(clip, 'no dialogue or cutaway line names it')}"
    with atomic_write(data / "inventory.tsv") as f:
        f.write("clip\tstatus\tdetail\ttext\n")
        for clip in sorted(status):
            f.write(f"{clip}\t{status[clip]}\n")
    with atomic_write(data / "lines_without_audio.tsv") as f:
        f.write("clip\tdialogue\tspeaker\ttext\n")
        for line in sorted(inv.lines_without_audio, key=lambda x: (x.clip, x.dialogue)):
            f.write(f"{line.clip}\t{line.dialogue}\t{line.speaker}\t{line.text}\n")
