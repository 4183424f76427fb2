"""Streaming cost: one model run chunk by chunk (asr.streaming) against the same model over whole utterances.

    python benchmarks/streaming.py [--model exp/stream/best.pt --manifest data/synthetic_en/manifests/test.jsonl]
        [--chunks-ms 40,100,200,500] [--utterances 100] [--threads 1] [--lm data/synthetic_en/lm/4gram.arpa]

Without --model it builds conf/ds2_streaming.yaml's model with random weights and feeds it seeded noise
(--seconds long); speed does not depend on the weights. For each chunk size it prints the real-time factor
(compute seconds per audio second), the compute time per chunk (mean, 95th percentile), the ratio to the
whole-utterance pass, and the largest log-prob difference from it (the two must agree). With a manifest it
also prints greedy WER of both, which must be equal. With --lm the streams also run the prefix beam search with
the LM frame by frame (partial transcripts LM-fused; alpha/beta from `asr lm tune`'s decoding.json beside the
model, else --alpha/--beta), and the table adds its cost and final WER against the same search over whole
utterances. One thread by default: a stream serves one live source, and a server runs one per core.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asr.audio import load_audio  # noqa: E402
from asr.checkpoint import load_model  # noqa: E402
from asr.config import FeatureConfig, ModelConfig  # noqa: E402
from asr.decoding import CTCBeamDecoder, greedy_decode  # noqa: E402
from asr.inference import tuned_decoding  # noqa: E402
from asr.manifest import read_manifest  # noqa: E402
from asr.metrics import word_errors  # noqa: E402
from asr.model import DeepSpeech2  # noqa: E402
from asr.streaming import Stream  # noqa: E402
from asr.text import CharVocabulary, normalize_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def random_model() -> tuple[DeepSpeech2, CharVocabulary]:
    cfg = OmegaConf.load(ROOT / "conf" / "ds2_streaming.yaml")
    vocab = CharVocabulary(list(" abcdefghijklmnopqrstuvwxyz'"))
    torch.manual_seed(0)
    model = DeepSpeech2(ModelConfig(**cfg.model), FeatureConfig(**cfg.features), len(vocab))
    return model.eval(), vocab


@torch.no_grad()
def whole(model: DeepSpeech2, waves: list[np.ndarray]) -> tuple[list[torch.Tensor], float]:
    out, t0 = [], time.perf_counter()
    for w in waves:
        lp, lens = model(torch.from_numpy(w)[None], torch.tensor([len(w)]))
        out.append(lp[0, : lens[0]])
    return out, time.perf_counter() - t0


def streamed(model: DeepSpeech2, vocab, waves: list[np.ndarray], chunk: int, decoder: CTCBeamDecoder | None = None
             ) -> tuple[list[torch.Tensor], list[str], float, list[float]]:
    out, texts, per_chunk = [], [], []
    stream = Stream(model, vocab, decoder)
    for w in waves:
        stream.reset()
        pieces = []
        for start in range(0, len(w), chunk):
            t0 = time.perf_counter()
            pieces.append(stream.accept(w[start: start + chunk]))
            per_chunk.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pieces.append(stream.finish())
        per_chunk.append(time.perf_counter() - t0)
        out.append(torch.cat(pieces))
        texts.append(stream.text)
    return out, texts, sum(per_chunk), per_chunk


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a unidirectional checkpoint (default: conf/ds2_streaming.yaml, random weights)")
    ap.add_argument("--manifest", help="utterances to stream (default: seeded noise)")
    ap.add_argument("--utterances", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60.0, help="audio without a manifest, in 6-s utterances")
    ap.add_argument("--chunks-ms", default="40,100,200,500")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lm", help="KenLM model: also stream with the beam search and this LM")
    ap.add_argument("--beam", type=int, default=100)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--beta", type=float, default=1.0)
    return ap.parse_args()


def load_inputs(args: argparse.Namespace) -> tuple:
    """(model, vocab, waveforms, reference texts or None): the manifest's first utterances, else seeded noise."""
    model, vocab = load_model(args.model)[:2] if args.model else random_model()
    rate = model.frontend.cfg.sample_rate
    if not args.manifest:
        rng = np.random.default_rng(0)
        return model, vocab, [rng.standard_normal(6 * rate).astype(np.float32) * 0.1
                              for _ in range(int(args.seconds // 6))], None
    utts = read_manifest(args.manifest)[: args.utterances]
    waves = [load_audio(u.audio_filepath, rate, u.offset, u.duration if u.offset else None) for u in utts]
    return model, vocab, waves, [normalize_text(u.text) for u in utts]


def chunk_line(ms: int, total: float, per_chunk: list[float], audio: float, reference: float, diff: str) -> str:
    """A table row: chunk size, real-time factor, per-chunk latency, time against the whole-utterance reference."""
    return (f"{ms:>6}ms | {total / audio:>7.4f} | {np.mean(per_chunk) * 1000:>12.2f} "
            f"{np.percentile(per_chunk, 95) * 1000:>12.2f} | {total / reference:>6.2f}x | {diff:>10}")


def greedy_table(model, vocab, waves, refs, chunks: list[int], threads: int) -> tuple[list[torch.Tensor], float]:
    """Whole-utterance reference, then each chunk size streamed with greedy decoding: time, largest difference of
    the log-probs from the whole pass, WER. Returns the reference's log-probs and seconds."""
    rate = model.frontend.cfg.sample_rate
    audio = sum(len(w) for w in waves) / rate
    whole(model, waves[:2])  # warm-up
    ref_lp, ref_time = whole(model, waves)
    print(f"{len(waves)} utterances, {audio:.1f} s of audio, {model.num_parameters() / 1e6:.2f}M parameters, "
          f"{threads} thread(s), torch {torch.__version__}; right context "
          f"{Stream(model, vocab).right_context_seconds * 1000:.0f} ms")
    print(f"whole-utterance pass (reference): RTF {ref_time / audio:.4f} ({ref_time:.2f} s)")
    if refs is not None:
        hyps = [greedy_decode(lp[None], torch.tensor([len(lp)]), vocab)[0] for lp in ref_lp]
        print(f"  greedy WER {word_errors(refs, hyps).rate:.2%}")
    print(f"{'chunk':>8} | {'RTF':>7} | {'per chunk ms (mean, p95)':>25} | {'x whole':>7} | {'max |diff|':>10}"
          + (" | greedy WER" if refs is not None else ""))
    for ms in chunks:
        lps, texts, total, per_chunk = streamed(model, vocab, waves, int(rate * ms / 1000))
        diff = max(float((a - b).abs().max()) for a, b in zip(lps, ref_lp) if len(a))
        line = chunk_line(ms, total, per_chunk, audio, ref_time, f"{diff:.1e}")
        print(line + (f" | {word_errors(refs, texts).rate:.2%}" if refs is not None else ""))
    return ref_lp, ref_time


def lm_table(args: argparse.Namespace, model, vocab, waves, refs, ref_lp, ref_time: float, chunks: list[int]) -> None:
    """The beam search with the LM (weights from `asr lm tune` where the model has them) over whole utterances,
    then streamed at each chunk size: time, WER, and how many streamed texts equal the whole-utterance ones."""
    rate = model.frontend.cfg.sample_rate
    audio = sum(len(w) for w in waves) / rate
    tuned = tuned_decoding(args.model) if args.model else None
    alpha, beta = (tuned["alpha"], tuned["beta"]) if tuned else (args.alpha, args.beta)
    decoder = CTCBeamDecoder(vocab.labels, vocab.blank, args.lm, alpha=alpha, beta=beta, beam_width=args.beam,
                             engine="python")
    t0 = time.perf_counter()
    whole_texts = [decoder.nbest(lp.numpy(), 1)[0].text for lp in ref_lp]
    search_time = time.perf_counter() - t0
    print(f"beam {args.beam} + LM (alpha {alpha:g}, beta {beta:g}), Python engine, over whole utterances "
          f"(reference): {search_time / audio:.4f} s per audio second"
          + (f", WER {word_errors(refs, whole_texts).rate:.2%}" if refs is not None else ""))
    for ms in chunks:
        _, texts, total, per_chunk = streamed(model, vocab, waves, int(rate * ms / 1000), decoder)
        line = chunk_line(ms, total, per_chunk, audio, ref_time + search_time, "")
        if refs is not None:
            same = sum(a == b for a, b in zip(texts, whole_texts))
            line += f" | {word_errors(refs, texts).rate:.2%} (same text as whole: {same}/{len(texts)})"
        print(line)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    model, vocab, waves, refs = load_inputs(args)
    chunks = [int(x) for x in args.chunks_ms.split(",")]
    ref_lp, ref_time = greedy_table(model, vocab, waves, refs, chunks, args.threads)
    if args.lm:
        lm_table(args, model, vocab, waves, refs, ref_lp, ref_time, chunks)


if __name__ == "__main__":
    main()
