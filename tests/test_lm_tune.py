"""The LM weight search (asr.lm_tune.local_search): where it stops and what it decodes, on WER surfaces whose
optimum is known."""
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from asr.lm_tune import ALPHAS, BETAS, format_tuning, local_search


def _recording(surface):
    batches = []

    def wers(points):
        batches.append(list(points))
        return [surface(a, b) for a, b in points]
    return wers, batches


@settings(max_examples=200, deadline=None)
@given(ca=st.floats(-1, 3), cb=st.floats(-2, 4), tilt=st.floats(-0.6, 0.6), scale=st.floats(0.1, 10))
def test_finds_the_optimum_of_a_valley_anywhere_on_the_grid(ca, cb, tilt, scale):
    """A tilted quadratic valley (alpha and beta trade off against each other, as dev WER does): the walk ends on
    the whole grid's best point, having decoded no point twice. (Narrower valleys, |tilt| near 0.9, can leave a
    grid point no neighbour beats short of the optimum, in about 1 of 250 draws: `lm.search=grid` then.)"""
    def surface(a, b):
        x, y = (a - ca) / 0.5, b - cb
        return scale * (x * x + 2 * tilt * x * y + y * y)

    wers, batches = _recording(surface)
    found = local_search(wers, list(ALPHAS), list(BETAS))
    everywhere = {(a, b): surface(a, b) for a, b in itertools.product(ALPHAS, BETAS)}
    best = min(everywhere.values())
    assert min(found.values()) == best
    decoded = [p for batch in batches for p in batch]
    assert len(decoded) == len(set(decoded)) == len(found) <= len(everywhere)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=35, max_size=35))
def test_any_surface_ends_on_a_point_no_neighbour_beats(values):
    """Whatever the WERs, the walk stops where every neighbour on the grid was decoded and none is better."""
    alphas, betas = list(ALPHAS), list(BETAS)
    table = dict(zip(itertools.product(alphas, betas), values))
    wers, _ = _recording(lambda a, b: table[(a, b)])
    found = local_search(wers, alphas, betas)
    a, b = min(found, key=lambda p: (found[p], p[0], abs(p[1])))
    i, j = alphas.index(a), betas.index(b)
    for di, dj in itertools.product((-1, 0, 1), repeat=2):
        if 0 <= i + di < len(alphas) and 0 <= j + dj < len(betas):
            neighbour = (alphas[i + di], betas[j + dj])
            assert neighbour in found and found[neighbour] >= found[(a, b)]


def test_small_grids_are_decoded_whole_and_the_table_marks_what_was_skipped():
    wers, batches = _recording(lambda a, b: abs(a - 0.5) + abs(b - 1))
    assert len(local_search(wers, [0.0, 0.5, 1.0], [0.0, 1.0])) == 6 and len(batches) == 1
    wers, batches = _recording(lambda a, b: abs(a - 0.75) + abs(b - 1) / 10)
    found = local_search(wers, list(ALPHAS), list(BETAS))
    assert len(found) == 9 and len(batches) == 1  # the centre (0.75, 1) is the optimum: one neighbourhood
    result = {"alpha": 0.75, "beta": 1.0, "beam": 8, "dev_wer": 0.0, "greedy_dev_wer": 0.5, "search": "local",
              "alphas": list(ALPHAS), "betas": list(BETAS),
              "grid": [{"alpha": a, "beta": b, "wer": w} for (a, b), w in sorted(found.items())]}
    table = format_tuning(result)
    assert "9 of 35 points decoded (local search)" in table and "0.00*" in table
    assert table.splitlines()[1].split()[2:] == ["-"] * 5  # alpha 0: never visited


def test_a_decode_request_takes_what_the_tuning_chose_only_where_nothing_else_is_asked(tmp_path):
    """DecodeRequest.resolve against a real decoding.json beside the checkpoint: the tuned LM and weights fill in
    what the request leaves None when it names no decoder or the same LM; another LM, --greedy (use_tuned=False)
    or no tuning leave DecodingOptions' defaults, and nothing asked decodes greedily."""
    import json

    from asr.decoding import DecodingOptions
    from asr.inference import DECODING_FILE, DecodeRequest

    checkpoint, lm, other = tmp_path / "best.pt", tmp_path / "3gram.arpa", tmp_path / "other.arpa"
    assert DecodeRequest().resolve(checkpoint) is None  # nothing tuned, nothing asked: greedy
    assert DecodeRequest(hotwords=("queen",)).resolve(checkpoint) == (None, DecodingOptions(hotwords=("queen",)))
    (tmp_path / DECODING_FILE).write_text(json.dumps({"lm": str(lm), "alpha": 0.8, "beta": 2.0, "beam": 32}))
    tuned = DecodingOptions(beam_width=32, alpha=0.8, beta=2.0)
    assert DecodeRequest().resolve(checkpoint) == (str(lm), tuned)
    assert DecodeRequest(lm=lm, alpha=0.3).resolve(checkpoint) == (str(lm), DecodingOptions(beam_width=32, alpha=0.3,
                                                                                            beta=2.0))
    assert DecodeRequest(lm=other).resolve(checkpoint) == (str(other), DecodingOptions())
    assert DecodeRequest(beam=8).resolve(checkpoint) == (None, DecodingOptions(beam_width=8))  # a beam, no LM
    assert DecodeRequest(use_tuned=False).resolve(checkpoint) is None
