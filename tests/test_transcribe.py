"""Long recordings are cut into pieces at pauses before transcription."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asr.transcribe import split_at_pauses


@settings(max_examples=200, deadline=None)
@given(samples=st.integers(0, 200_000), max_seconds=st.floats(1.0, 5.0), rate=st.sampled_from([8000, 16000]),
       seed=st.integers(0, 2**32 - 1))
def test_pieces_cover_the_recording_within_the_limit(samples, max_seconds, rate, seed):
    wave = np.random.default_rng(seed).standard_normal(samples).astype(np.float32)
    spans = split_at_pauses(wave, rate, max_seconds)
    limit = int(max_seconds * rate)
    assert spans[0][0] == 0 and spans[-1][1] == samples
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous: nothing lost, nothing twice
    assert all(0 < e - s <= limit for s, e in spans) or samples == 0
    if len(spans) > 1:
        assert all(e - s >= limit // 4 for s, e in spans)  # no slivers
        assert len(spans) <= 2 * samples / limit + 1


def test_cuts_fall_in_the_pauses():
    rate, rng = 16000, np.random.default_rng(0)
    parts, pauses, pos = [], [], 0
    for k in range(8):  # 1.2-2.2 s bursts of "speech" with 0.4 s pauses under a quiet noise floor
        burst = np.sin(np.arange(int((1.2 + 0.15 * k) * rate)) * 0.2) * 0.5
        parts += [burst, np.zeros(int(0.4 * rate))]
        pauses.append((pos + len(burst), pos + len(burst) + int(0.4 * rate)))
        pos += len(burst) + int(0.4 * rate)
    wave = (np.concatenate(parts) + rng.standard_normal(pos) * 1e-3).astype(np.float32)
    spans = split_at_pauses(wave, rate, max_seconds=4.0)
    assert len(spans) >= 5
    for _, cut in spans[:-1]:
        assert any(a <= cut <= b for a, b in pauses), cut / rate


def test_too_short_a_limit_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        split_at_pauses(np.zeros(10), 16000, 0.5)
