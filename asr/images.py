"""Images of text lines as model input: a line image is a spectrogram in all but name.

Height plays frequency and width plays time. An image is scaled to the model's fixed height, made grayscale
with ink high and paper low, and handed on as a 1-D signal of its columns one after another (column-major), so
that everything built for waveforms (manifests with durations, duration buckets, padding, batching, the
recognizer) carries images unchanged. The convention that makes the arithmetic work: a column is a 10-ms
frame, so an image of height H has a "sample rate" of H x 100 and a "duration" of its width / 100.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .audio import AudioError

COLUMNS_PER_SECOND = 100
SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pgm", ".pnm", ".webp", ".gif"})
MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "I", "I;16", "F"})  # made grayscale
MIN_HEIGHT = 8  # pixels: a smaller image holds no readable line


class ImageError(AudioError):
    """An image cannot be read as a text line; the message names the file. (An AudioError, so that every
    place that reports unreadable inputs reports unreadable images too.)"""


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in SUFFIXES


def height_of(sample_rate: int) -> int:
    """The model's image height for its features.sample_rate (height x COLUMNS_PER_SECOND)."""
    return int(sample_rate) // COLUMNS_PER_SECOND


def sample_rate_of(height: int) -> int:
    return int(height) * COLUMNS_PER_SECOND


def read_image(path: str | Path, height: int) -> np.ndarray:
    """Grayscale pixels (height, width) of the line image at `path`, scaled to `height`, ink 1 and paper 0."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    return decode_image(path.read_bytes(), path, height)


def decode_image(data: bytes, name: str | Path, height: int) -> np.ndarray:
    """`read_image` of an image file's bytes; errors name `name`."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(f"{name}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode, size = img.mode, img.size
            if mode not in MODES:
                raise ImageError(f"{name}: image mode {mode} cannot be read as a grayscale line "
                                 f"(supported: {', '.join(sorted(MODES))})")
            gray = _grayscale(img)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: cannot read image ({e})") from None
    w, h = size
    if h < MIN_HEIGHT or w < 1:
        raise ImageError(f"{name}: {w}x{h} pixels is too small for a text line (at least {MIN_HEIGHT} high)")
    width = max(1, int(round(w * height / h)))
    scaled = gray.resize((width, height), Image.Resampling.LANCZOS) if (width, height) != size else gray
    pixels = np.asarray(scaled, dtype=np.float32) / 255.0
    return _contrast(1.0 - pixels)


def _grayscale(img):
    """8-bit luminance, with transparent parts on white paper and 16/32-bit images scaled to their range."""
    from PIL import Image

    if img.mode in ("I", "I;16", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        return Image.fromarray(np.uint8(np.round(255 * (a - lo) / (hi - lo))) if hi > lo else np.full(a.shape, 255, np.uint8))
    if img.mode in ("LA", "PA", "RGBA", "P") and ("transparency" in img.info or img.mode.endswith("A")):
        rgba = img.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("L")
    return img.convert("L")


def _contrast(ink: np.ndarray) -> np.ndarray:
    """Paper at 0 and ink at 1 whatever the scan's brightness: the 30th percentile (paper: a line is mostly
    paper) and the 99.5th (ink) stretched to 0-1, paper texture below the first cut away. A blank image is
    left as it is."""
    lo, hi = np.percentile(ink, [30.0, 99.5])
    if hi - lo < 0.05:
        return np.clip(ink, 0.0, 1.0).astype(np.float32)
    return np.clip((ink - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def as_signal(pixels: np.ndarray) -> np.ndarray:
    """(height, width) pixels as the 1-D signal the model takes: column after column."""
    return np.ascontiguousarray(pixels.T).reshape(-1)


def stretch(signal: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """The line of `signal` written `factor` times as fast: its width divided by `factor`, its height kept
    (speed perturbation of an image, as fewer samples are faster speech)."""
    from PIL import Image

    height = height_of(sample_rate)
    pixels = signal.reshape(-1, height).T  # (height, width)
    width = max(1, int(round(pixels.shape[1] / factor)))
    img = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32))  # mode "F"
    return as_signal(np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32))


def load_line_image(path: str | Path, sample_rate: int) -> np.ndarray:
    """The signal of the line image at `path` for a model of features.sample_rate `sample_rate`."""
    return as_signal(read_image(path, height_of(sample_rate)))

