"""Lines of text rendered as images that look scanned or photographed: the data of the text-line recipe.

Fonts are the TrueType/OpenType files Debian's font packages install, grouped by family, so that a recipe can
hold whole families out for dev and test. A line is drawn in one font at a drawn size, weight (stroke) and
ink, on paper with texture, then rotated, sheared, elastically distorted, blurred, made noisy and stored as
JPEG at a drawn quality, every choice seeded by (seed, split, line number): the same call renders the same
image on any machine with the same fonts.
"""
from __future__ import annotations

import functools
import io
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

FONT_DIRS = (Path("/usr/share/fonts/truetype"), Path("/usr/share/fonts/opentype"))
CHARSET = frozenset(chr(c) for c in range(0x20, 0x7F))  # printable ASCII: what every font here covers


@dataclass(frozen=True)
class Font:
    path: str
    family: str  # the typographic family ("DejaVu Sans" for DejaVu Sans Condensed Bold too)
    style: str


def installed_fonts(dirs: Iterable[Path] = FONT_DIRS, charset: frozenset[str] = CHARSET) -> dict[str, list[Font]]:
    """Font files under `dirs` that draw every character of `charset`, by family (files sorted by path)."""
    from fontTools.ttLib import TTFont, TTLibError

    families: dict[str, list[Font]] = {}
    for folder in dirs:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if path.suffix.lower() not in (".ttf", ".otf"):
                continue
            try:
                with TTFont(str(path), lazy=True) as tt:
                    names = tt["name"]
                    family = str(names.getDebugName(16) or names.getDebugName(1) or path.stem)
                    style = str(names.getDebugName(17) or names.getDebugName(2) or "")
                    cmap = tt.getBestCmap() or {}
            except (TTLibError, KeyError, OSError):
                continue
            if all(ord(c) in cmap for c in charset):
                families.setdefault(family, []).append(Font(str(path), family, style))
    return _merge_spellings(families)


def _merge_spellings(families: dict[str, list[Font]]) -> dict[str, list[Font]]:
    """One family for names that differ only in spaces ("CabinSketch" is Cabin Sketch's bold file), under the
    spelling with the most spaces."""
    merged: dict[str, list[Font]] = {}
    by_key: dict[str, str] = {}
    for name in sorted(families, key=lambda n: (-n.count(" "), n)):
        canonical = by_key.setdefault(name.replace(" ", "").casefold(), name)
        merged.setdefault(canonical, []).extend(replace(f, family=canonical) for f in families[name])
    return {name: merged[name] for name in sorted(merged)}


@dataclass(frozen=True)
class Look:
    """How scanned a line may look: the ranges each choice is drawn from."""

    size: tuple[int, int] = (26, 44)  # font size in pixels
    margin: tuple[int, int] = (2, 14)  # pixels of paper around the text
    stroke_prob: float = 0.2  # share of lines drawn with a heavier stroke (ink thickness)
    ink: tuple[float, float] = (0.0, 70.0)  # ink brightness (of 255); paper is 180-255
    rotate: float = 1.5  # degrees, either way
    shear: float = 0.15  # x shift per pixel of height, either way
    elastic: float = 1.2  # pixels of smooth random displacement, at most
    blur: float = 1.0  # Gaussian radius in pixels, at most
    noise: float = 12.0  # standard deviation of pixel noise (of 255), at most
    jpeg_prob: float = 0.5  # share stored as JPEG (quality 30-90) before being saved
    low_res_prob: float = 0.25  # share scaled down to 50-80% and back (a low-resolution scan)
    glyph_prob: float = 0.0  # share drawn glyph by glyph, each with its own size, tilt, height and spacing
    glyph_scale: float = 0.12  # each glyph's size within +-12% of the line's
    glyph_rotate: float = 5.0  # degrees either way
    glyph_shift: float = 0.05  # baseline shift, of the font size, either way
    glyph_spacing: float = 0.12  # advance within +-12% of the font's
    glyph_warp: float = 0.0  # each glyph's strokes bent by a smooth random field of at most this share of the size


def render_line(text: str, font: Font, rng: random.Random, look: Look = Look()):
    """`text` in `font` on textured paper, degraded as `look` allows: a grayscale PIL image."""
    from PIL import Image, ImageDraw, ImageFilter

    size = rng.randint(*look.size)
    face = _face(font.path, size)
    stroke = 1 if rng.random() < look.stroke_prob and size >= 30 else 0
    left, top, right, bottom = face.getbbox(text, stroke_width=stroke)
    ascent, descent = face.getmetrics()
    mx, my = rng.randint(*look.margin), rng.randint(*look.margin) // 2 + 1
    width, height = right - left + 2 * mx, max(ascent + descent, bottom - top) + 2 * my + 2 * stroke
    if look.glyph_prob and rng.random() < look.glyph_prob:
        mask = _glyph_by_glyph(text, font, size, stroke, (mx, my), rng, look)
    else:
        mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask).text((mx - left, my + stroke), text, fill=255, font=face, stroke_width=stroke,
                                  stroke_fill=255)
    np_rng = np.random.default_rng(rng.getrandbits(64))
    mask = _geometry(mask, rng, np_rng, look)
    ink = rng.uniform(*look.ink)
    paper = _paper(mask.size, rng, np_rng)
    alpha = np.asarray(mask, dtype=np.float32) / 255.0
    pixels = paper * (1 - alpha) + ink * alpha
    pixels += np_rng.normal(0.0, rng.uniform(0, look.noise), pixels.shape)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if look.blur:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, look.blur)))
    if rng.random() < look.low_res_prob:
        scale = rng.uniform(0.5, 0.8)
        small = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))), Image.Resampling.BILINEAR)
        img = small.resize(img.size, Image.Resampling.BILINEAR)
    if rng.random() < look.jpeg_prob:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=rng.randint(30, 90))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("L")
    return img


def _glyph_by_glyph(text: str, font: Font, size: int, stroke: int, margin: tuple[int, int], rng: random.Random,
                    look: Look):
    """The ink mask of `text` drawn one glyph at a time, each at its own size, tilt, baseline and spacing: a face
    the font's designer never drew, so that a model learns letters' shapes rather than a few fonts' renderings.
    The font's ligatures stay one glyph, as a line drawn in one go has them."""
    from PIL import Image, ImageChops, ImageDraw

    pieces, x = [], 0.0
    for ch in _glyphs(text, _ligatures(font.path)):
        face = _face(font.path, max(8, round(size * rng.uniform(1 - look.glyph_scale, 1 + look.glyph_scale))))
        length = face.getlength(ch)
        advance = length * rng.uniform(1 - look.glyph_spacing, 1 + look.glyph_spacing)
        if not ch.isspace():
            ascent, descent = face.getmetrics()
            pad = stroke + size // 4
            glyph = Image.new("L", (int(length) + 2 * pad + size // 2, ascent + descent + 2 * pad), 0)
            ImageDraw.Draw(glyph).text((pad, pad), ch, fill=255, font=face, stroke_width=stroke, stroke_fill=255)
            if look.glyph_warp:
                glyph = _warp(glyph, rng.uniform(0, look.glyph_warp * size), size * rng.uniform(0.06, 0.12),
                              np.random.default_rng(rng.getrandbits(64)))
            tilted = glyph.rotate(rng.uniform(-look.glyph_rotate, look.glyph_rotate),
                                  resample=Image.Resampling.BILINEAR, expand=True)
            centre = (x - pad + glyph.width / 2, -ascent - pad + glyph.height / 2
                      + size * rng.uniform(-look.glyph_shift, look.glyph_shift))  # baseline at y = 0
            pieces.append((tilted, centre[0] - tilted.width / 2, centre[1] - tilted.height / 2))
        x += advance
    ascent, descent = _face(font.path, size).getmetrics()
    if not pieces:
        return Image.new("L", (2 * margin[0] + 1, ascent + descent + 2 * margin[1]), 0)
    x0 = int(min(left for _, left, _ in pieces))
    y0 = int(min(top for _, _, top in pieces))
    mask = Image.new("L", (int(max(left + g.width for g, left, _ in pieces)) - x0 + 1,
                           int(max(top + g.height for g, _, top in pieces)) - y0 + 1), 0)
    for g, left, top in pieces:
        at = (int(round(left)) - x0, int(round(top)) - y0)
        mask.paste(ImageChops.lighter(mask.crop((*at, at[0] + g.width, at[1] + g.height)), g), at)
    left, top, right, bottom = mask.getbbox() or (0, 0, 1, 1)
    top, bottom = min(top, -ascent - y0), max(bottom, descent - y0)  # the font's line height, as drawn in one go
    mx, my = margin
    out = Image.new("L", (right - left + 2 * mx, bottom - top + 2 * my + 2 * stroke), 0)
    out.paste(mask.crop((left, max(top, 0), right, bottom)), (mx, my + stroke + max(top, 0) - top))
    return out


def _glyphs(text: str, ligatures: tuple[str, ...]) -> list[str]:
    """`text` cut into the pieces a font draws as one glyph: its characters, but a ligature's as one piece."""
    pieces, i = [], 0
    while i < len(text):
        pieces.append(next((lig for lig in ligatures if text.startswith(lig, i)), text[i]))
        i += len(pieces[-1])
    return pieces


@functools.lru_cache(maxsize=256)
def _ligatures(path: str) -> tuple[str, ...]:
    """What the font at `path` draws as one glyph by default (its GSUB "liga" and "clig" ligatures of printable
    ASCII: fi, fl, ffi, ...), longest first."""
    from fontTools.ttLib import TTFont

    found = set()
    with TTFont(path, lazy=True) as tt:
        gsub = tt["GSUB"].table if "GSUB" in tt else None
        if gsub is None or gsub.FeatureList is None:
            return ()
        chars = {glyph: chr(code) for code, glyph in (tt.getBestCmap() or {}).items() if chr(code) in CHARSET}
        lookups = {i for r in gsub.FeatureList.FeatureRecord if r.FeatureTag in ("liga", "clig")
                   for i in r.Feature.LookupListIndex}
        for i in sorted(lookups):
            lookup = gsub.LookupList.Lookup[i]
            for table in lookup.SubTable:
                table = table.ExtSubTable if lookup.LookupType == 7 else table
                for first, ligatures in (table.ligatures.items() if table.LookupType == 4 else ()):
                    for lig in ligatures:
                        glyphs = [first, *lig.Component]
                        if all(g in chars for g in glyphs):
                            found.add("".join(chars[g] for g in glyphs))
    return tuple(sorted(found, key=lambda s: (-len(s), s)))


@functools.lru_cache(maxsize=256)
def _face(path: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


def _geometry(mask, rng: random.Random, np_rng: np.random.Generator, look: Look):
    """The ink mask rotated, sheared and elastically distorted (the canvas grows to keep every pixel)."""
    from PIL import Image

    shear = rng.uniform(-look.shear, look.shear)
    w, h = mask.size
    pad = int(abs(shear) * h) + 1
    mask = mask.transform((w + 2 * pad, h), Image.Transform.AFFINE, (1, shear, -pad - shear * h / 2, 0, 1, 0),
                          resample=Image.Resampling.BILINEAR)
    mask = mask.rotate(rng.uniform(-look.rotate, look.rotate), resample=Image.Resampling.BILINEAR, expand=True)
    amount = rng.uniform(0, look.elastic)
    return _warp(mask, amount, rng.uniform(4, 8), np_rng) if amount > 0.2 else mask


def _warp(mask, amount: float, sigma: float, np_rng: np.random.Generator):
    """`mask` displaced by a smooth random field (Gaussian-filtered noise of width `sigma` pixels) whose largest
    shift is `amount` pixels: an elastic distortion (Simard et al., 2003)."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter, map_coordinates

    a = np.asarray(mask, dtype=np.float32)
    dy, dx = (gaussian_filter(np_rng.uniform(-1, 1, a.shape), sigma) for _ in range(2))
    scale = amount / max(float(np.abs(dx).max()), float(np.abs(dy).max()), 1e-6)
    yy, xx = np.meshgrid(np.arange(a.shape[0]), np.arange(a.shape[1]), indexing="ij")
    a = map_coordinates(a, [yy + dy * scale, xx + dx * scale], order=1, mode="constant")
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _paper(size: tuple[int, int], rng: random.Random, np_rng: np.random.Generator) -> np.ndarray:
    """Paper of brightness 180-255 with a smooth texture and a shading gradient."""
    from scipy.ndimage import gaussian_filter

    w, h = size
    base = rng.uniform(180, 255)
    texture = gaussian_filter(np_rng.normal(0, 1, (h, w)), rng.uniform(1, 6))
    texture *= rng.uniform(0, 12) / max(float(texture.std()), 1e-6)
    gradient = np.linspace(0, rng.uniform(-25, 25), w)[None, :] + np.linspace(0, rng.uniform(-15, 15), h)[:, None]
    return np.clip(base + texture + gradient, 0, 255).astype(np.float32)


def wrap_lines(sentences: Iterable[str], max_chars: int, min_chars: int, rng: random.Random) -> list[str]:
    """Sentences cut into lines of whole words, each line at most a drawn 60-100% of `max_chars` long (so lines
    vary in length), lines shorter than `min_chars` dropped; distinct lines, in first-seen order."""
    out: dict[str, None] = {}
    for sentence in sentences:
        words, line = sentence.split(), ""
        limit = int(max_chars * rng.uniform(0.6, 1.0))
        for word in words:
            if line and len(line) + 1 + len(word) > limit:
                if len(line) >= min_chars:
                    out[line] = None
                line, limit = word, int(max_chars * rng.uniform(0.6, 1.0))
            else:
                line = f"{line} {word}" if line else word
        if len(line) >= min_chars and len(line) <= max_chars:
            out[line] = None
    return list(out)
