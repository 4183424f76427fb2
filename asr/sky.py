"""Beneath a Steel Sky's talkie data: its speech clips, the lines they speak, and who speaks them.

Debian's `beneath-a-steel-sky` installs the freeware CD version (BASS v0.0372) for ScummVM's Sky engine as
three files. The formats are those of ScummVM's engines/sky:

- `sky.dnr`, the "dinner table" (Disk::Disk, Disk::getFileInfo): a little-endian count, then 8 bytes per
  file: its 16-bit number, a 24-bit offset into `sky.dsk` (bit 23: the offset counts 16-byte units) and
  24 bits of size and flags (low 22 bits: the size; bit 22: a compressed file's header is not kept;
  bit 23: stored, not compressed). 5,097 entries mark v0.0372 (Disk::determineGameVersion).
- `sky.dsk`, the files. Each starts with a 22-byte header (struc.h's DataFileHeader: flag, ..., s_tot_size
  at byte 12); where the flag's bit 7 is set the rest is an RNC method-1 archive ("RNC\\1", lengths, CRCs,
  then Huffman-coded literals and LZ77 matches: rnc_deco.cpp's RncDecoder::unpackM1, rewritten here).
- `sky.cpt`, the compacts (the game's objects and characters, SkyCompact::SkyCompact): per object its
  size, type, 16-bit words and a name. The talk table (compact 0xBC, CPT_TALK_TABLE_LIST) lists the
  talking animation of every animation number a speech call can give (Logic::stdSpeak).

Text: a line's number is section << 12 | block << 5 | index; section s of English is file 60600 + s, a
Huffman-coded bank (Text::getText: per 32-line block a bit offset, per line a skip byte, 2-bit units; the
tree is hufftext.cpp's _huffTree_00372, kept here in pre-order). Speech: the clip of line n is file
50000 + (0, 600, 1100, 2430, 3380, 4530, 5080)[section] + (n & 0xFFF) (Sound::startSpeech), 8-bit unsigned
PCM at 11,025 Hz after its header, s_tot_size bytes in all. So every game clip's words are known exactly.

Speakers come from the scripts (files 60400-60406, Logic::script's byte code, disassembled linearly):
each call of fnSpeakMe, fnSpeakMeDir, fnSpeakWait or fnSpeakWaitDir names a target compact (a number, or
the script variable cur_id or id_talking) and an animation number. A clip's speaker is the character of a
numbered target, else the character whose talk animation the animation number selects in the talk table
(smljobs_talk, sc42_jobs_talk and sc82_jobs_talk are all Hobbins, the compact "jobsworth"), else the
player, Foster, for fnSpeakMeDir on cur_id (the engine's "must be player"). The lines Foster picks in a
conversation (fnAskThis, or pushed into the script variables text1..text8 before fnChooser) are his. Names are mapped
to characters by CHARACTER_RULES; a character no rule names keeps its compact or animation name. Lines
no call reaches with a number (said through a variable), or whose calls give no character, keep their
text but no speaker; lines two characters speak are ambiguous. Both stay out of every split: which
characters they belong to cannot be read from the data. One voice actor may play several characters,
so held-out characters are not guaranteed to be held-out actors.

The CD intro's 88 narration clips (files 59500-59672, Intro::_cdIntroSeq's PLAYVOICE) have no line in
any text bank: they are accounted for as untranscribed, and listed with their audio and no transcript for
teachers to label (asr.pseudo_label). Their voices (Foster telling how he came to the city, the men who take
him from the Gap) are none of the held-out characters, so such labels may train.
"""
from __future__ import annotations

import bisect
import logging
import re
import struct
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np
import soundfile as sf
import soxr

from .atomic import atomic_write
from .game_speech import Clip, check_held_out, write_splits
from .manifest import Utterance, write_manifest

log = logging.getLogger("asr.sky")

DATA_DIR = "/usr/share/scummvm/beneath-a-steel-sky"
SAMPLE_RATE = 11025  # the clips' own rate (Sound::startSpeech)
DNR_ENTRIES = 5097  # v0.0372, the freeware CD release
HEADER = 22  # DataFileHeader
SPEECH_BASE, TEXT_BASE, SCRIPT_BASE = 50000, 60600, 60400  # English text: language 0
SCRIPT_MODULES = 7
SECTION_START = (0, 600, 1100, 2430, 3380, 4530, 5080)  # Sound::_speechConvertTable: first clip of each section
TALK_TABLE = 0xBC  # CPT_TALK_TABLE_LIST
SPEAK_MCODES = {35: "fnSpeakMe", 36: "fnSpeakMeDir", 37: "fnSpeakWait", 38: "fnSpeakWaitDir"}
ASK_THIS_MCODE = 70  # fnAskThis: a line offered to the player's choice (text1..text8)
CUR_ID, ID_TALKING, THE_CHOSEN_ONE = 12, 120, 51  # script variables (debug.cpp's scriptVars)
CHOICE_TEXTS = range(53, 69, 2)  # text1 .. text8, read by fnChooser
# Intro::_cdIntroSeq's voice files CDV_00 .. CDV_87
INTRO_CLIPS = (59500, 59504, 59505, 59507, 59508, 59510, 59511, 59513, 59514, 59515, 59518, 59520, 59523, 59525,
               59527, 59528, 59531, 59534, 59535, 59536, 59539, 59541, 59545, 59546, 59551, 59554, 59556, 59558,
               59561, 59562, 59563, 59565, 59566, 59567, 59568, 59570, 59574, 59576, 59579, 59581, 59583, 59587,
               59588, 59590, 59594, 59596, 59600, 59602, 59606, 59610, 59612, 59613, 59614, 59615, 59616, 59618,
               59621, 59622, 59624, 59627, 59628, 59629, 59630, 59631, 59632, 59633, 59635, 59639, 59642, 59644,
               59647, 59648, 59649, 59654, 59655, 59656, 59659, 59660, 59663, 59664, 59665, 59666, 59667, 59668,
               59669, 59670, 59671, 59672)
# hufftext.cpp's _huffTree_00372 in pre-order: a character code for a leaf, -1 for a node (left child first)
HUFFMAN_372 = (
    -1, -1, -1, 32, -1, 101, 97, -1, -1, -1, 111, 115, -1, 116, 110, -1, -1, 46, 105, 114, -1, -1, -1, -1, -1, 0,
    69, 117, -1, 109, 65, -1, -1, -1, 108, 73, -1, 100, 82, -1, -1, 78, 83, 84, -1, -1, -1, -1, -1, 79, 104, 99, -1,
    68, 103, -1, -1, -1, 76, 67, -1, 112, 85, -1, -1, 33, 121, 77, -1, -1, -1, -1, -1, 80, 118, 72, -1, 63, 98, -1,
    -1, -1, 39, 102, 44, -1, 71, 66, -1, -1, -1, -1, -1, 86, 107, 70, -1, 113, 119, -1, -1, -1, 75, 45, 87, -1, 74,
    42, -1, -1, -1, -1, 122, 89, -1, 106, 43, -1, -1, -1, 81, 133, 41, -1, -1, 90, 139, 60, -1, -1, -1, -1, -1, 149,
    126, 138, -1, 135, 58, -1, -1, -1, 127, 93, 35, -1, -1, 120, 88, 145, -1, -1, -1, -1, -1, 136, 96, 50, -1, -1,
    48, 131, 49, -1, -1, -1, 47, 40, 61, -1, 134, 94, -1, -1, -1, -1, 51, 57, -1, 152, 52, -1, -1, -1, 125, 56, 92,
    -1, 34, 144, -1, -1, -1, -1, 38, 141, -1, 53, 54, -1, -1, 146, 143, -1, 142, 147, -1, -1, -1, -1, 140, 55, 128,
    -1, -1, 129, 153, -1, 36, 64, -1, -1, -1, -1, 91, 154, 95, -1, 62, 150, -1, -1, -1, 130, 37, 9, -1, -1, 156,
    151, -1, 123, -1, 148, 33)
# compact and talk-animation names -> characters (first match wins; lower-case names)
CHARACTER_RULES = (
    (r"^(sml|big)?fost|^big_f_|^rad_|^foster|^fsit_|^crouch_talk|^chairtlk|^sc\d+_fos_", "FOSTER"),
    (r"joey", "JOEY"), (r"jobs", "HOBBINS"), (r"^lamb", "LAMB"), (r"anita|^hologram_b$", "ANITA"),
    (r"^fore(man)?|^forprod", "FOREMAN"), (r"^shades", "SHADES"), (r"^monitor", "MONITOR"),
    (r"^sc81_(dad|father)", "FATHER"), (r"^dad", "DAD"), (r"^son", "SON"), (r"^skorl", "SKORL"),
    (r"^big_ss|^(full|mini)_so", "SECURITY"), (r"^welder", "WELDER"), (r"^radman", "RADMAN"),
    (r"^walt", "WALTER"), (r"^burke", "BURKE"), (r"^anchor", "ANCHOR"), (r"^trevor", "TREVOR"), (r"^medi", "MEDI"),
    (r"^(sc36_)?gal", "GALLAGHER"), (r"^helga|^holo$", "HELGA"), (r"ken|^stuck_talk", "KEN"), (r"dani", "DANIELLE"),
    (r"henri", "HENRI"), (r"vinc", "VINCENT"), (r"garden", "GARDENER"), (r"^sc31_guard|blunt", "BLUNT"),
    (r"barman", "BARMAN"), (r"^sc36_col|colston", "COLSTON"), (r"juke", "JUKEBOX"), (r"babs", "BABS"),
    (r"judge|jdg", "JUDGE"), (r"pros", "PROSECUTOR"), (r"clerk", "CLERK"), (r"android", "ANDROID"),
)
# characters held out whole (chosen by their clip counts, women and men in both)
DEV_SPEAKERS = ("ANITA", "TREVOR", "HENRI", "GARDENER", "COLSTON")
TEST_SPEAKERS = ("BURKE", "DANIELLE", "VINCENT", "BARMAN", "JUDGE")
OPCODE_WORDS = {0: 1, 1: 0, 2: 1, 3: 0, 4: 0, 5: 1, 6: 1, 7: 0, 8: 0, 9: 1, 10: 0, 11: 2, 12: 0, 13: 0, 15: 1,
                16: 1, 17: 0, 18: 1, 19: 0, 20: 0}  # Logic::script's operand words (14, switch: its count says)


class SkyDataError(ValueError):
    """The data files are missing, truncated or not the CD v0.0372 layout; the message names the file."""


@dataclass(frozen=True)
class Line:
    clip: int  # the speech file, e.g. 51146
    text_number: int  # section << 12 | line
    text: str
    speaker: str  # the character, or "" when the scripts do not say


@dataclass
class Inventory:
    """Every speech clip in the data, accounted for."""

    transcribed: list[Line] = field(default_factory=list)  # text and one speaker
    unattributed: list[Line] = field(default_factory=list)  # text, but no speaker (or two): in no split
    untranscribed: list[int] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)  # why each clip is unattributed or untranscribed


# --- sky.dnr and sky.dsk -------------------------------------------------------------------------------------

class Disk:
    """The files of sky.dsk, found through sky.dnr (Disk::loadFile)."""

    def __init__(self, data_dir: str | Path = DATA_DIR):
        self.dir = Path(data_dir)
        dnr, self.dsk = self.dir / "sky.dnr", self.dir / "sky.dsk"
        for path in (dnr, self.dsk):
            if not path.exists():
                raise SkyDataError(f"{path}: not found (Debian: apt-get install beneath-a-steel-sky)")
        table = dnr.read_bytes()
        count = struct.unpack("<I", table[:4])[0] if len(table) >= 4 else 0
        if len(table) < 4 + 8 * count:
            raise SkyDataError(f"{dnr}: truncated dinner table ({(len(table) - 4) // 8} of {count} entries)")
        if count != DNR_ENTRIES:
            raise SkyDataError(f"{dnr}: {count} entries, not the CD version v0.0372 ({DNR_ENTRIES})")
        self.size = self.dsk.stat().st_size
        self.entries: dict[int, tuple[int, int, int]] = {}  # file number -> (offset, size, flags)
        for i in range(count):
            row = table[4 + 8 * i: 12 + 8 * i]
            number = struct.unpack("<H", row[:2])[0]
            offset, flags = int.from_bytes(row[2:5], "little"), int.from_bytes(row[5:8], "little")
            start = (offset & 0x7FFFFF) << (4 if offset >> 23 & 1 else 0)
            if start + (flags & 0x3FFFFF) > self.size:
                raise SkyDataError(f"{self.dsk}: file {number} ends at byte {start + (flags & 0x3FFFFF)}, past "
                                   f"the end ({self.size} bytes): sky.dsk is truncated")
            self.entries[number] = (start, flags & 0x3FFFFF, flags)

    def numbers(self, lo: int, hi: int) -> list[int]:
        return sorted(n for n in self.entries if lo <= n < hi)

    def raw(self, number: int) -> bytes:
        if number not in self.entries:
            raise SkyDataError(f"{self.dsk}: no file {number}")
        start, size, _ = self.entries[number]
        with self.dsk.open("rb") as f:
            f.seek(start)
            return f.read(size)

    def load(self, number: int) -> bytes:
        """A file's bytes as the engine sees them: decompressed, its header kept unless the flags drop it."""
        data, flags = self.raw(number), self.entries[number][2]
        if flags >> 23 & 1 or len(data) < HEADER or not data[0] & 0x80:
            return data
        unpacked = rnc_unpack(data[HEADER:], f"file {number}")
        if unpacked is None:  # not packed after all (unpackM1 returns 0)
            return data
        return unpacked if flags >> 22 & 1 else data[:HEADER] + unpacked


# --- RNC method 1 (rnc_deco.cpp) -------------------------------------------------------------------------------
# Compiled with numba: the byte-by-byte Huffman and LZ77 loops took 40 of the 42 s that preparing the game's
# 3,476 clips took in Python; compiled, the whole preparation takes a few seconds.

def _crc_table() -> np.ndarray:
    table = np.zeros(256, np.int64)
    for i in range(256):
        c = i
        for _ in range(8):
            c = c >> 1 ^ 0xA001 if c & 1 else c >> 1
        table[i] = c
    return table


_CRC = _crc_table()
# _unpack_m1's outcomes besides success (0), as messages
_RNC_ERRORS = {1: "RNC data holds a code its Huffman table lacks", 2: "RNC literal runs past the packed data",
               3: "RNC match reaches before the start of the data", 4: "RNC bit stream runs past the packed data"}


@numba.njit(cache=True)
def _crc16(data: np.ndarray, table: np.ndarray) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        crc = table[crc & 0xFF] ^ crc >> 8
    return crc


def crc16(data: bytes | np.ndarray) -> int:
    """RncDecoder::crcBlock (CRC-16, polynomial 0xA001 reflected) of bytes or a uint8 array."""
    return int(_crc16(np.frombuffer(data, np.uint8), _CRC))


@numba.njit(cache=True)
def _word(data: np.ndarray, pos: int) -> int:
    if pos + 1 >= len(data):  # past the zero padding: _unpack_m1 reports it
        return 0
    return np.int64(data[pos]) | np.int64(data[pos + 1]) << 8


@numba.njit(cache=True)
def _read(data: np.ndarray, st: np.ndarray, amount: int) -> int:
    """RncDecoder::inputBits on the bit buffer st = (pos, count, high, low): 16-bit little-endian words, least
    significant bit first."""
    pos, count, high, low = st[0], st[1], st[2], st[3]
    value = low & (1 << amount) - 1
    count -= amount
    if count < 0:
        count += amount
        low = (low >> count | high << 16 - count) & 0xFFFF
        pos += 2
        high = _word(data, pos)
        amount -= count
        count = 16 - amount
    st[0], st[1], st[2], st[3] = pos, count, high >> amount, (low >> amount | high << 16 - amount) & 0xFFFF
    return value


@numba.njit(cache=True)
def _table(data: np.ndarray, st: np.ndarray, tables: np.ndarray, sizes: np.ndarray, which: int) -> None:
    """RncDecoder::makeHufftable into tables[which]: (mask, bit-reversed code, length, symbol) per code; a table
    of no codes keeps the old one."""
    count = _read(data, st, 5)
    if not count:
        return
    lengths = np.empty(count, np.int64)
    for i in range(count):
        lengths[i] = _read(data, st, 4)
    n, code = 0, 0
    for length in range(1, 17):
        for symbol in range(count):
            if lengths[symbol] == length:
                top, bits, reversed_ = code >> 16 - length, length, 0
                while top >> bits:
                    bits += 1
                for b in range(bits):
                    reversed_ = reversed_ << 1 | top >> b & 1
                tables[which, n, 0], tables[which, n, 1] = (1 << length) - 1, reversed_
                tables[which, n, 2], tables[which, n, 3] = length, symbol
                n += 1
                code += 1 << 16 - length
    sizes[which] = n


@numba.njit(cache=True)
def _value(data: np.ndarray, st: np.ndarray, tables: np.ndarray, sizes: np.ndarray, which: int) -> int:
    """RncDecoder::inputValue; -1 when the bits match no code of the table."""
    for i in range(sizes[which]):
        if st[3] & tables[which, i, 0] == tables[which, i, 1]:
            _read(data, st, tables[which, i, 2])
            symbol = tables[which, i, 3]
            if symbol >= 2:
                symbol -= 1
                symbol = _read(data, st, symbol) | 1 << symbol
            return symbol
    return -1


@numba.njit(cache=True)
def _unpack_m1(data: np.ndarray, end: int, blocks: int, out: np.ndarray) -> tuple[int, int]:
    """RncDecoder::unpackM1's loops over `data` (the archive up to byte `end`, then 8 zero bytes) into `out`
    (one byte more than the header's unpacked size): (status, bytes written); status 0, or a _RNC_ERRORS key."""
    st = np.zeros(4, np.int64)
    st[0], st[3] = 18, _word(data, 18)
    _read(data, st, 2)
    tables, sizes = np.zeros((3, 32, 4), np.int64), np.zeros(3, np.int64)  # raw, distance, length
    n_out, unpacked_size = 0, len(out) - 1
    for _ in range(blocks):
        for which in range(3):
            _table(data, st, tables, sizes, which)
        counts = _read(data, st, 16)
        while True:
            n = _value(data, st, tables, sizes, 0)
            if n < 0:
                return 1, n_out
            if n:
                if st[0] + n > end:
                    return 2, n_out
                if n_out + n > len(out):
                    return 0, len(out)  # longer than the header says: the caller's length check fails
                out[n_out:n_out + n] = data[st[0]:st[0] + n]
                n_out += n
                st[0] += n
                a, b, count = _word(data, st[0]), _word(data, st[0] + 2), st[1]
                st[3] = (st[3] & (1 << count) - 1 | a << count) & 0xFFFF
                st[2] = (a >> 16 - count | b << count) & 0xFFFF
            if counts > 1:
                back = _value(data, st, tables, sizes, 1) + 1
                size = _value(data, st, tables, sizes, 2) + 2
                if back < 1 or size < 2:
                    return 1, n_out
                if back > n_out:
                    return 3, n_out
                if n_out + size > len(out):
                    return 0, len(out)
                for i in range(size):  # byte by byte: a match may overlap what it copies
                    out[n_out + i] = out[n_out - back + i]
                n_out += size
            if st[0] + 1 >= len(data):
                return 4, n_out
            counts = counts - 1 & 0xFFFF
            if not counts:
                break
        if n_out > unpacked_size:
            break
    return 0, n_out


def rnc_unpack(data: bytes, where: str) -> bytes | None:
    """RncDecoder::unpackM1: the unpacked bytes, None when `data` is not RNC-packed; SkyDataError naming
    `where` when it is truncated or corrupt (either CRC, a length, a match before the start)."""
    if data[:4] != b"RNC\x01":
        return None
    if len(data) < 18:
        raise SkyDataError(f"{where}: RNC header truncated")
    unpacked_size, packed_size = struct.unpack(">II", data[4:12])
    crc_unpacked, crc_packed = struct.unpack(">HH", data[12:16])
    body = data[18: 18 + packed_size]
    if len(body) < packed_size:
        raise SkyDataError(f"{where}: RNC data truncated ({len(body)} of {packed_size} packed bytes)")
    if crc16(body) != crc_packed:
        raise SkyDataError(f"{where}: RNC packed data fails its CRC")
    archive = np.frombuffer(bytes(data[:18 + packed_size]) + bytes(8), np.uint8)
    out = np.zeros(unpacked_size + 1, np.uint8)
    status, n_out = _unpack_m1(archive, 18 + packed_size, data[17], out)
    if status:
        raise SkyDataError(f"{where}: {_RNC_ERRORS[status]}")
    if n_out != unpacked_size or crc16(out[:n_out]) != crc_unpacked:
        raise SkyDataError(f"{where}: RNC data unpacks to {n_out}{'+' if n_out > unpacked_size else ''} bytes, "
                           f"not the {unpacked_size} its header says, or fails its CRC")
    return out[:n_out].tobytes()


# --- text banks (text.cpp) --------------------------------------------------------------------------------------

def _codes(tree: Sequence[int]) -> dict[str, int]:
    codes: dict[str, int] = {}

    def walk(i: int, prefix: str) -> int:
        if tree[i] != -1:
            codes[prefix] = tree[i]
            return i + 1
        return walk(walk(i + 1, prefix + "0"), prefix + "1")

    walk(0, "")
    return codes


_HUFFMAN = _codes(HUFFMAN_372)


def section_lines(bank: bytes, section: int) -> int:
    """How many lines a section's bank holds: its skip-byte table runs from word 0 to word 1."""
    if len(bank) < 4:
        raise SkyDataError(f"text section {section}: {len(bank)} bytes, shorter than its header")
    return struct.unpack("<H", bank[2:4])[0] - struct.unpack("<H", bank[:2])[0]


def get_text(bank: bytes, number: int, section: int = 0) -> str:
    """Text::getText: line `number & 0xFFF` of a section's bank, Huffman-decoded up to its 0."""
    where = f"text section {section}, line {number & 0xFFF}"
    block, index = number & 0xFE0, number & 0x1F
    if len(bank) < 4:
        raise SkyDataError(f"{where}: the bank is {len(bank)} bytes, shorter than its header")
    skips_at, data_at = struct.unpack("<HH", bank[:4])
    if 4 + 2 * (block >> 5) > skips_at or skips_at + block + index >= data_at or data_at > len(bank):
        raise SkyDataError(f"{where}: not in the bank ({section_lines(bank, section)} lines)")
    offset = sum(struct.unpack_from(f"<{block >> 5}H", bank, 4)) if block else 0
    for skip in bank[skips_at + block: skips_at + block + index]:
        offset += (skip & 0x7F) << 3 if skip & 0x80 else skip
    pos = ((offset >> 2) + data_at) * 8 + 2 * (offset & 3)  # offsets count 2-bit units
    out, code = [], ""
    while True:
        if pos >> 3 >= len(bank):
            raise SkyDataError(f"{where}: runs past the end of the bank ({len(bank)} bytes)")
        code += "1" if bank[pos >> 3] >> 7 - (pos & 7) & 1 else "0"
        pos += 1
        if code in _HUFFMAN:
            if not _HUFFMAN[code]:
                return bytes(out).decode("latin-1")
            out.append(_HUFFMAN[code])
            code = ""
        elif len(code) > 32:
            raise SkyDataError(f"{where}: not a Huffman code of v0.0372")


def clip_text_number(clip: int) -> int:
    """The line a game clip speaks: the inverse of Sound::startSpeech's file number."""
    index = clip - SPEECH_BASE
    section = bisect.bisect_right(SECTION_START, index) - 1
    return section << 12 | index - SECTION_START[section]


# --- compacts and scripts ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Compacts:
    names: dict[int, str]  # compact id -> name (dlincs resolved to their target's name)
    talk_table: tuple[int, ...]  # animation number -> talking animation compact


def read_compacts(path: str | Path) -> Compacts:
    """sky.cpt (SkyCompact::SkyCompact): the compacts' names and the talk table."""
    path = Path(path)
    if not path.exists():
        raise SkyDataError(f"{path}: not found (Debian: apt-get install beneath-a-steel-sky)")
    data = path.read_bytes()
    try:
        version, lists = struct.unpack_from("<HH", data, 0)
        if version != 0:
            raise SkyDataError(f"{path}: compact file version {version}, not 0")
        lengths = struct.unpack_from(f"<{lists}H", data, 4)
        pos = 4 + 2 * lists
        _, words = struct.unpack_from("<II", data, pos)
        src = struct.unpack_from(f"<{words}H", data, pos + 8)
        pos += 8 + 2 * words
        ascii_size = struct.unpack_from("<I", data, pos)[0]
        text = data[pos + 4: pos + 4 + ascii_size]
        pos += 4 + ascii_size
        names = iter(text.decode("latin-1").split("\0"))
        compacts: dict[int, tuple[str, tuple[int, ...]]] = {}
        at = 0
        for lst in range(lists):
            for entry in range(lengths[lst]):
                size = src[at]
                if size:
                    compacts[lst << 12 | entry] = (next(names), src[at + 2: at + 2 + size])
                    at += 2 + size
                else:
                    at += 1
        dlincs = struct.unpack_from("<H", data, pos)[0]
        pairs = struct.unpack_from(f"<{2 * dlincs}H", data, pos + 2)
    except (struct.error, IndexError, StopIteration):
        raise SkyDataError(f"{path}: truncated or not a compact file") from None
    result = {cid: name for cid, (name, _) in compacts.items()}
    for link, target in zip(pairs[::2], pairs[1::2]):
        result[link] = result.get(target, f"compact_{target}")
    if TALK_TABLE not in compacts:
        raise SkyDataError(f"{path}: no talk table (compact {TALK_TABLE})")
    return Compacts(result, compacts[TALK_TABLE][1])


def character(name: str) -> str:
    """The character a compact or talk-animation name belongs to (CHARACTER_RULES, else the name itself)."""
    name = name.lower()
    for pattern, who in CHARACTER_RULES:
        if re.search(pattern, name):
            return who
    return re.sub(r"_(talk|tlk|conv|speech|anim).*$", "", re.sub(r"^sc\d+_", "", name)).upper()


def known_character(name: str) -> str | None:
    name = name.lower()
    return next((who for pattern, who in CHARACTER_RULES if re.search(pattern, name)), None)


def disassemble(module: bytes, number: int) -> list[tuple[int, tuple[int, ...]]]:
    """One script module (file 60400 + number) as (opcode, operands), swept from script 1 to the end."""
    where = f"script module {number} (file {SCRIPT_BASE + number})"
    words = struct.unpack(f"<{len(module) // 2}H", module[: len(module) // 2 * 2])
    if len(words) < 2 or not 1 < words[0] <= len(words) or not words[0] <= words[1] <= len(words):
        raise SkyDataError(f"{where}: not a script module (its script table is out of range)")
    i, out = words[1], []
    while i < len(words):
        op = words[i]
        if op == 14:
            size = 3 + 2 * words[i + 1] if i + 1 < len(words) else 2
        elif op in OPCODE_WORDS:
            size = 1 + OPCODE_WORDS[op]
        else:
            raise SkyDataError(f"{where}: unknown opcode {op} at word {i}")
        if i + size > len(words):
            raise SkyDataError(f"{where}: opcode {op} at word {i} runs past the end ({len(words)} words)")
        out.append((op, words[i + 1: i + size]))
        i += size
    return out


def _track(stack: list[int | None], op: int, args: tuple[int, ...]) -> None:
    """Logic::script's stack effect of one instruction, constants kept (push_number) and others None."""
    pops, pushes = {0: (0, 1), 2: (0, 1), 15: (0, 1), 5: (1, 0), 18: (1, 0), 6: (1, 0), 16: (1, 0), 14: (1, 0),
                    11: (args[0] if args else 0, 0)}.get(op, (2, 1) if op in (1, 3, 4, 7, 8, 10, 12, 17) else (0, 0))
    del stack[max(0, len(stack) - pops):]
    if pushes:
        stack.append(args[0] if op == 2 else None)


def speakers_by_line(modules: Sequence[bytes], compacts: Compacts) -> dict[int, set[str]]:
    """Line number -> the characters the scripts' speech calls give it ("" where a call gives none)."""
    said: dict[int, set[str]] = defaultdict(set)
    table = compacts.talk_table

    def animation(anim: int, directions: bool) -> set[str]:
        """The characters of the talk animations `anim` selects: at anim (+ 2 * direction for the Dir calls),
        else one on (stdSpeak adds the target's mega set, 1 for Foster's big sprites)."""
        found = set()
        for k in (anim + step for step in (range(0, 8, 2) if directions else (0,))):
            k = k if k < len(table) and table[k] else k + 1
            if k < len(table) and table[k]:
                found.add(character(compacts.names.get(table[k], "")))
        return found

    for number, module in enumerate(modules):
        recent: list[tuple[int, tuple[int, ...]]] = []
        stack: list[int | None] = []  # the constants pushed, as far as a straight sweep can follow them
        for op, args in disassemble(module, number):
            if op == 6 and args[0] // 4 in CHOICE_TEXTS and stack and stack[-1] is not None:
                said[stack[-1]].add("FOSTER")  # a line the player picks: fnChooser, then he says it
            if op == 11 and args[1] // 4 == ASK_THIS_MCODE and args[0] == 2 and len(stack) >= 2 \
                    and stack[-2] is not None:
                said[stack[-2]].add("FOSTER")  # fnAskThis(line, anim): one more of the player's choices
            _track(stack, op, args)
            if op == 11 and args[1] // 4 in SPEAK_MCODES and args[0] == 3 and len(recent) >= 3:
                (t_op, target), (m_op, line), (a_op, anim) = ((o, a[0] if a else -1) for o, a in recent[-3:])
                if m_op != 2:  # a line from a variable (the chosen one) or computed
                    recent.append((op, args))
                    continue
                mcode = args[1] // 4
                who = known_character(compacts.names.get(target, "")) if t_op == 2 else None
                from_anim = animation(anim, mcode in (36, 38)) if a_op == 2 else set()
                from_anim = {w for w in from_anim if w}
                if who is None and len(from_anim) == 1:
                    who = next(iter(from_anim))
                if who is None and t_op == 2 and target in compacts.names:
                    who = character(compacts.names[target])
                if who is None and mcode == 36 and t_op == 0 and target // 4 == CUR_ID:
                    who = "FOSTER"  # fnSpeakMeDir: "must be player"
                said[line].add(who or "")
            recent.append((op, args))
    return said


# --- clips ---------------------------------------------------------------------------------------------------------

def decode_clip(data: bytes, clip: int, sample_rate: int) -> np.ndarray:
    """A speech file's samples (float32 mono at `sample_rate`); SkyDataError naming the clip when malformed."""
    if len(data) < HEADER:
        raise SkyDataError(f"clip {clip}: {len(data)} bytes, shorter than its header")
    total = struct.unpack("<H", data[12:14])[0]
    if total <= HEADER or total > len(data):
        raise SkyDataError(f"clip {clip}: header says {total} bytes, the file has {len(data)}")
    audio = np.frombuffer(data[HEADER:total], dtype=np.uint8).astype(np.float32) / 128.0 - 1.0
    if sample_rate != SAMPLE_RATE:  # clipped: the recordings reach full scale, and resampling overshoots it
        audio = np.clip(soxr.resample(audio, SAMPLE_RATE, sample_rate), -1.0, 1.0).astype(np.float32)
    return audio


class Game:
    """The installed data: disk, text banks, compacts, scripts."""

    def __init__(self, data_dir: str | Path = DATA_DIR):
        self.disk = Disk(data_dir)
        self.compacts = read_compacts(Path(data_dir) / "sky.cpt")
        self._banks: dict[int, bytes] = {}

    def bank(self, section: int) -> bytes:
        if section not in self._banks:
            self._banks[section] = self.disk.load(TEXT_BASE + section)
        return self._banks[section]

    def text(self, number: int) -> str:
        return get_text(self.bank(number >> 12), number, number >> 12)

    def clips(self) -> list[int]:
        """The game's speech files (every file of 50000-59999 outside the intro's range)."""
        return self.disk.numbers(SPEECH_BASE, SPEECH_BASE + SECTION_START[-1] + 1000)

    def clip_audio(self, clip: int, sample_rate: int) -> np.ndarray:
        return decode_clip(self.disk.load(clip), clip, sample_rate)


def clean(text: str) -> str:
    """A bank line as spoken: emphasis capitals kept (normalisation lower-cases), backquotes as quotes."""
    return text.replace("`", "'").strip()


def inventory(game: Game) -> Inventory:
    """Every speech clip: transcribed (its line and one character), unattributed (its line, no or two
    characters), or untranscribed (no line: the intro's narration, a line outside its bank)."""
    modules = [game.disk.load(SCRIPT_BASE + m) for m in range(SCRIPT_MODULES)]
    said = speakers_by_line(modules, game.compacts)
    inv = Inventory()
    for clip in game.clips():
        number = clip_text_number(clip)
        try:
            text = clean(game.text(number))
        except SkyDataError as e:
            inv.reasons[clip] = f"no line: {e}"
            continue
        if not any(c.isalpha() for c in text):
            inv.reasons[clip] = f"its line has no words: {text!r}"
            continue
        who = said.get(number, set())
        named = sorted(w for w in who if w)
        line = Line(clip, number, text, named[0] if len(named) == 1 else "")
        if len(named) == 1:
            inv.transcribed.append(line)
            continue
        inv.unattributed.append(line)
        inv.reasons[clip] = (f"two or more characters say it: {', '.join(named)}" if named else
                             "no script call says who speaks it" if who else "no script call with its number")
    for clip in INTRO_CLIPS:
        if clip in game.disk.entries:
            inv.reasons[clip] = "CD intro narration: no text bank holds its words"
    inv.untranscribed = sorted(c for c in inv.reasons if c not in {line.clip for line in inv.unattributed})
    return inv


def prepare(data_dir_in: str | Path, data_dir: str | Path, sample_rate: int, dev_speakers: Sequence[str],
            test_speakers: Sequence[str], names: dict[str, str] | None = None, max_duration: float = 30.0,
            limit: int = 0) -> dict:
    """Manifests of the transcribed clips, characters held out whole for dev and test, and `inventory.tsv`
    saying what became of every clip. `names` maps train/dev/test to manifest names; `limit` keeps the first
    clips of each split (0: all), for quick runs."""
    names = names or {"train": "train", "dev": "dev", "test": "test"}
    data = Path(data_dir)
    game = Game(data_dir_in)
    inv = inventory(game)
    check_held_out(dev_speakers, test_speakers, {line.speaker for line in inv.transcribed}, str(game.disk.dir),
                   SkyDataError)
    clips = [Clip(f"bass-{line.clip}", str(line.clip), line.text, line.speaker, str(line.clip),
                  lambda rate, clip=line.clip: game.clip_audio(clip, rate))
             for line in inv.transcribed]
    report, status = write_splits(clips, data, data / "audio" / "bass", sample_rate, dev_speakers, test_speakers,
                                  names, max_duration, limit, SkyDataError)
    write_inventory(data, inv, status)
    report["intro"] = write_intro(game, data, sample_rate, names.get("untranscribed", "untranscribed"), limit)
    report["clips"] = {"total": len(game.clips()) + sum(c in game.disk.entries for c in INTRO_CLIPS),
                       "transcribed": len(inv.transcribed), "unattributed": len(inv.unattributed),
                       "untranscribed": len(inv.untranscribed)}
    log.info(f"{game.disk.dir}: {report['clips']}")
    return report


INTRO_SPEAKER = "INTRO"  # the CD intro's voices: Foster narrating, the men who take him from the Gap


def write_intro(game: Game, data: Path, sample_rate: int, name: str, limit: int = 0) -> dict:
    """manifests/<name>.jsonl: the CD intro's narration clips (the first `limit`; 0: all) with their audio and an
    empty transcript, for teachers to label; a clip that will not decode is left out, named in the log and report."""
    utts, unreadable = [], {}
    for clip in INTRO_CLIPS:
        if clip not in game.disk.entries or (limit and len(utts) + len(unreadable) >= limit):
            continue
        path = data / "audio" / "bass" / str(sample_rate) / f"{clip}.flac"
        if not path.exists():
            try:
                wave = game.clip_audio(clip, sample_rate)
            except SkyDataError as e:
                unreadable[f"bass-{clip}"] = str(e)
                log.warning(f"intro clip {clip} left out: {e}")
                continue
            with atomic_write(path, "wb") as f:
                sf.write(f, wave, sample_rate, format="FLAC", subtype="PCM_16")
        utts.append(Utterance(str(path.resolve()), round(sf.info(str(path)).duration, 3), "", speaker=INTRO_SPEAKER,
                              id=f"bass-{clip}"))
    write_manifest(data / "manifests" / f"{name}.jsonl", utts, relative_to_manifest=True)
    return {"manifest": name, "clips": len(utts), "seconds": round(sum(u.duration for u in utts), 1),
            "unreadable": unreadable}


def write_inventory(data: Path, inv: Inventory, status: dict[str, str]) -> None:
    """<data>/inventory.tsv: every clip once, with its manifest (`status` of the transcribed, see
    game_speech.clip_status), or why it is in none."""
    for line in inv.unattributed:
        status[str(line.clip)] = f"unattributed\t{inv.reasons[line.clip]}\t{line.text}"
    for clip in inv.untranscribed:
        status[str(clip)] = f"untranscribed\t{inv.reasons[clip]}"
    with atomic_write(data / "inventory.tsv") as f:
        f.write("clip\tstatus\tdetail\ttext\n")
        for clip in sorted(status):
            f.write(f"{clip}\t{status[clip]}\n")
