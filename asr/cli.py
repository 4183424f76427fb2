"""The `asr` command: train, evaluate, transcribe, lm build/tune, pseudo-label, average, export, recipe run."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .atomic import write_text_atomic
from .audio import AudioError
from .checkpoint import CheckpointError
from .config import ConfigError
from .lm import LMError
from .lm_build import LMBuildError
from .manifest import ManifestError
from .pseudo_label import PseudoLabelOptions, TeacherError
from .streaming import StreamingError
from .synthesis import SynthesisError
from .text import OutOfVocabularyError

USER_ERRORS = (ConfigError, ManifestError, AudioError, CheckpointError, OutOfVocabularyError, SynthesisError, LMError,
               LMBuildError, StreamingError, TeacherError, FileNotFoundError)


def _train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training import train

    cfg = load_config(args.config, args.overrides)
    best = train(cfg, resume=args.resume)
    print(f"best checkpoint: {best}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, format_result

    rec = _recognizer(args)
    result = evaluate(args.model, args.manifest, args.out_dir, recognizer=rec)
    print(format_result(result))
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2))
    return 0


def _transcribe(args: argparse.Namespace) -> int:
    from .transcribe import transcribe_files, transcribe_pipe

    if "-" in args.audio and (not args.stream_chunk_ms or len(args.audio) > 1):
        raise ConfigError("'-' (live audio on stdin) needs --stream-chunk-ms and no other files")
    rec = _recognizer(args, streaming=bool(args.stream_chunk_ms))
    if args.audio == ["-"]:
        def partial(seconds: float, text: str) -> None:
            line = (json.dumps({"partial": True, "audio_seconds": round(seconds, 3), "text": text}, ensure_ascii=False)
                    if args.format == "json" else f"[{seconds:8.2f}s] {text}")
            print(line, flush=True)

        row = transcribe_pipe(rec, sys.stdin.buffer, args.stream_chunk_ms / 1000, args.word_timestamps, partial)
        print(json.dumps(row, ensure_ascii=False) if args.format == "json" else f"-\t{row['text']}")
        return 0
    document = args.format in ("srt", "vtt", "tsv", "verbose_json")
    if document and len(args.audio) > 1 and not args.output_dir:
        raise ConfigError(f"--format {args.format} with several files needs --output-dir (one file each)")
    rows = transcribe_files(rec, args.audio, args.max_segment_seconds, args.word_timestamps,
                            args.stream_chunk_ms / 1000 if args.stream_chunk_ms else None)
    for row in rows:
        if document and not row.get("error"):
            from .formats import render

            out = render(row, args.format)
            if args.output_dir:
                ext = "json" if args.format == "verbose_json" else args.format
                write_text_atomic(Path(args.output_dir) / f"{Path(row['path']).stem}.{ext}", out)
            else:
                sys.stdout.write(out)
            if row.get("warning"):
                print(f"{row['path']}\tWARNING: {row['warning']}", file=sys.stderr)
        elif args.format == "json":
            print(json.dumps(row, ensure_ascii=False))
        elif row.get("error"):
            print(f"{row['path']}\tERROR: {row['error']}", file=sys.stderr)
        else:
            print(f"{row['path']}\t{row['text']}")
            if row.get("warning"):
                print(f"{row['path']}\tWARNING: {row['warning']}", file=sys.stderr)
    failed = sum(1 for r in rows if r.get("error"))
    if failed:
        print(f"{failed} of {len(rows)} files could not be transcribed", file=sys.stderr)
    return 1 if failed else 0


def _segment_seconds(value: str) -> float:
    seconds = float(value)
    if not seconds >= 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 1 second, got {value}")
    return seconds


def _chunk_ms(value: str) -> float:
    ms = float(value)
    if not ms >= 10:
        raise argparse.ArgumentTypeError(f"must be at least 10 ms, got {value}")
    return ms


def _recognizer(args: argparse.Namespace, streaming: bool = False):
    from .inference import DecodeRequest, Recognizer

    if args.greedy and (args.beam or args.lm):
        raise ConfigError("--greedy cannot be combined with --beam or --lm")
    hotwords = tuple(h.strip() for h in (args.hotwords or "").split(",") if h.strip())
    request = DecodeRequest(args.beam, args.lm, args.alpha, args.beta, hotwords, args.hotword_weight,
                            use_tuned=not args.greedy)
    return Recognizer(args.model, args.device, args.batch_size, request, streaming=streaming, int8=args.int8)


def _serve(args: argparse.Namespace) -> int:
    from .server import ServeSettings, read_api_keys, serve

    given = {"device": args.device, "model_name": args.model_name, "language": args.language,
             "max_upload_mb": args.max_upload_mb, "max_audio_seconds": args.max_audio_seconds,
             "max_queue": args.max_queue, "max_batch": args.max_batch, "batch_wait_ms": args.batch_wait_ms,
             "request_timeout_s": args.timeout}  # options left out take ServeSettings' defaults (docs/serving.md)
    settings = ServeSettings(model=args.model, lm=args.lm, int8=args.int8, api_keys=read_api_keys(args.api_key_file),
                             cors_origins=tuple(args.cors_origin or ()),
                             **{k: v for k, v in given.items() if v is not None})
    serve(settings, args.host, args.port)
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from .confidence import calibrate

    r = calibrate(args.model, args.manifest, args.device)
    print(f"{r['words']} words ({100 * r['word_accuracy']:.1f}% right, {r['decoder']}): expected calibration error "
          f"{r['ece_raw']:.3f} raw, {r['ece_calibrated_held_out']:.3f} calibrated (held-out halves); "
          f"saved {Path(args.model).parent / 'calibration.json'} and calibration.png")
    return 0


def _lm_build(args: argparse.Namespace) -> int:
    from .lm_build import build_lm

    report = build_lm(args.text, args.out, args.order, args.engine, prune=args.prune or ())
    print(json.dumps(report, indent=2))
    return 0


def _lm_tune(args: argparse.Namespace) -> int:
    from .lm_tune import ALPHAS, BETAS, format_tuning, tune

    alphas = [float(a) for a in args.alphas.split(",")] if args.alphas else ALPHAS
    betas = [float(b) for b in args.betas.split(",")] if args.betas else BETAS
    result = tune(args.model, args.manifest, args.lm, alphas, betas, args.beam, args.device, args.processes,
                  write=not args.dry_run, search=args.search)
    print(format_tuning(result))
    return 0


def _pseudo_label(args: argparse.Namespace) -> int:
    from .manifest import read_manifest, write_manifest
    from .pseudo_label import pseudo_label, write_rejected

    opts = PseudoLabelOptions(teachers=tuple(t for t in args.teachers.split(",") if t),
                              max_disagreement=args.max_disagreement, min_logprob=args.min_logprob,
                              max_no_speech=args.max_no_speech, threads=args.threads)
    kept, rejected = pseudo_label(read_manifest(args.manifest), opts)
    write_manifest(args.out, kept)
    rejected_path = Path(args.rejected or Path(args.out).with_suffix(".rejected.tsv"))
    write_rejected(rejected_path, rejected)
    print(f"{len(kept)} pseudo-labelled -> {args.out}; {len(rejected)} rejected -> {rejected_path}")
    return 0


def _average(args: argparse.Namespace) -> int:
    from .checkpoint import best_epochs, last_steps
    from .export import average_checkpoints

    paths = list(args.models)
    if args.exp and args.best:
        paths += best_epochs(args.exp, args.best)
    elif args.exp:
        paths += last_steps(args.exp, args.last)
    print(json.dumps(average_checkpoints(paths, args.out)))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_onnx, export_torchscript

    fmt = args.format or ("onnx" if str(args.out).endswith(".onnx") else "torchscript")
    fn = export_onnx if fmt == "onnx" else export_torchscript
    print(json.dumps(fn(args.model, args.out)))
    return 0


def _recipe_run(args: argparse.Namespace) -> int:
    from .recipe import run_recipe

    run_recipe(args.recipe, args.overrides, args.stage, args.stop_stage, args.force)
    return 0


def _add_decoder_options(p: argparse.ArgumentParser) -> None:
    from .decoding import DecodingOptions

    d = DecodingOptions()
    p.add_argument("--beam", type=int, help=f"prefix beam search width (default: greedy; {d.beam_width} with --lm)")
    p.add_argument("--lm", help="KenLM model (ARPA or binary) for word-level shallow fusion")
    p.add_argument("--alpha", type=float, help=f"LM weight (default: tuned by `asr lm tune`, else {d.alpha:g})")
    p.add_argument("--beta", type=float, help=f"word insertion bonus (default: tuned, else {d.beta:g})")
    p.add_argument("--greedy", action="store_true", help="greedy decoding even when `asr lm tune` chose an LM")
    p.add_argument("--int8", action="store_true", help="int8 weights in the recurrent and linear layers (CPU; "
                                                       "dynamic quantisation, see asr/quantization.py)")
    p.add_argument("--hotwords", help="comma-separated words or phrases to favour (beam search; "
                                      f"{d.beam_width} wide by default)")
    p.add_argument("--hotword-weight", type=float, default=d.hotword_weight,
                   help=f"score bonus per hotword (default {d.hotword_weight:g})")


def _add_train(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("config", help="YAML config (see conf/)")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=3e-4")
    t.add_argument("--resume", action="store_true", help="continue from <exp_dir>/last.pt")
    t.set_defaults(fn=_train)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evaluate", help="WER/CER of a model on a manifest")
    e.add_argument("--model", required=True, help="checkpoint (.pt)")
    e.add_argument("--manifest", required=True, help="JSON Lines manifest (audio files, or line images)")
    e.add_argument("--json", help="also write the summary here")
    e.add_argument("--out-dir", help="folder for utterances.jsonl and summary.json")
    e.add_argument("--device", default="auto")
    e.add_argument("--batch-size", type=int, default=16)
    _add_decoder_options(e)
    e.set_defaults(fn=_evaluate)


def _add_transcribe(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("transcribe", help="transcribe audio files (or text-line images, with a text_lines model)")
    tr.add_argument("--model", required=True, help="checkpoint (.pt)")
    tr.add_argument("audio", nargs="+", help="audio files, or PNG/JPEG line images for an image model; '-' with "
                                             "--stream-chunk-ms: live raw 16-bit little-endian mono PCM at the "
                                             "model's sample rate on stdin, partials printed as they come")
    tr.add_argument("--format", choices=("text", "json", "srt", "vtt", "tsv", "verbose_json"), default="text",
                    help="text: path<TAB>transcript lines; json: one object per file; srt, vtt, tsv, verbose_json "
                         "(OpenAI's): the documents `asr serve` answers with")
    tr.add_argument("--output-dir", help="write each file's srt/vtt/tsv/verbose_json document here as <name>.<ext>")
    tr.add_argument("--device", default="auto")
    tr.add_argument("--batch-size", type=int, default=16, help="segments of a long file run through the model at once")
    tr.add_argument("--max-segment-seconds", type=_segment_seconds, default=20.0,
                    help="transcribe longer files in pieces of at most this length, cut at pauses (default 20)")
    tr.add_argument("--word-timestamps", action="store_true", help="with --format json: start/end of every word")
    tr.add_argument("--stream-chunk-ms", type=_chunk_ms, metavar="MS",
                    help="feed each file to the model as a stream, MS milliseconds at a time (unidirectional models, "
                         "e.g. conf/ds2_streaming.yaml); --format json adds the partial transcripts")
    _add_decoder_options(tr)
    tr.set_defaults(fn=_transcribe)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    sv = sub.add_parser("serve", help="serve a model over HTTP, with OpenAI's /v1/audio/transcriptions")
    sv.add_argument("--model", required=True, help="checkpoint (.pt)")
    sv.add_argument("--lm", help="KenLM model for the beam search; without it, the one `asr lm tune` chose, if any")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--device", help="auto, cpu, cuda, ...")
    sv.add_argument("--int8", action="store_true", help="int8 recurrent and linear layers (CPU)")
    sv.add_argument("--model-name", help="the model id clients name and /v1/models lists")
    sv.add_argument("--language", help="the model's language; requests naming another get a 400")
    sv.add_argument("--api-key-file", help="accepted API keys, one per line (also: ASR_API_KEYS, comma-separated)")
    sv.add_argument("--max-upload-mb", type=float, help="larger uploads get a 413")
    sv.add_argument("--max-audio-seconds", type=float, help="longer audio gets a 413")
    sv.add_argument("--max-queue", type=int, help="requests in progress before 503 + Retry-After")
    sv.add_argument("--max-batch", type=int, help="audio pieces run through the model at once")
    sv.add_argument("--batch-wait-ms", type=float, help="how long a batch waits for more requests")
    sv.add_argument("--timeout", type=float, help="seconds before a request gets a 504")
    sv.add_argument("--cors-origin", action="append", help="allow browser requests from this origin (repeatable)")
    sv.set_defaults(fn=_serve)


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    ca = sub.add_parser("calibrate", help="fit word confidence to dev data; writes calibration.json beside the model")
    ca.add_argument("--model", required=True, help="checkpoint (.pt)")
    ca.add_argument("--manifest", required=True, help="dev manifest (JSON Lines)")
    ca.add_argument("--device", default="auto")
    ca.set_defaults(fn=_calibrate)


def _add_lm(sub: argparse._SubParsersAction) -> None:
    lm = sub.add_parser("lm", help="build and tune word n-gram language models")
    lsub = lm.add_subparsers(dest="lm_command", required=True)
    lb = lsub.add_parser("build", help="estimate a modified Kneser-Ney n-gram LM from text")
    lb.add_argument("--text", required=True, nargs="+", help="text files, one sentence per line")
    lb.add_argument("--out", required=True, help="lm.arpa, or lm.bin (needs KenLM's build_binary)")
    lb.add_argument("--order", type=int, default=4)
    lb.add_argument("--engine", choices=("auto", "lmplz", "builtin"), default="auto",
                    help="auto: KenLM's lmplz when found, else the built-in estimator")
    lb.add_argument("--prune", type=int, nargs="+", metavar="N",
                    help="lmplz's count thresholds per order from unigrams on, the last for every higher order: "
                         "0 0 1 drops the 3-grams and longer seen once")
    lb.set_defaults(fn=_lm_build)
    lt = lsub.add_parser("tune", help="choose alpha/beta on a dev manifest; writes decoding.json beside the model")
    lt.add_argument("--model", required=True, help="checkpoint (.pt)")
    lt.add_argument("--manifest", required=True, help="dev manifest (JSON Lines)")
    lt.add_argument("--lm", required=True, help="KenLM model (ARPA or binary)")
    lt.add_argument("--alphas", help="comma-separated grid (default 0,0.25,0.5,0.75,1,1.5,2)")
    lt.add_argument("--betas", help="comma-separated grid (default -1,0,1,2,3)")
    lt.add_argument("--beam", type=int, default=32)
    lt.add_argument("--search", choices=("local", "grid"), default="local",
                    help="local: walk from the grid's centre to a point no neighbour beats (about a third of the "
                         "default grid's points); grid: decode every point")
    lt.add_argument("--processes", type=int, help="decoding processes (default: all cores for large sets)")
    lt.add_argument("--device", default="auto")
    lt.add_argument("--dry-run", action="store_true", help="print the grid, write nothing")
    lt.set_defaults(fn=_lm_tune)


def _add_pseudo_label(sub: argparse._SubParsersAction) -> None:
    pl = sub.add_parser("pseudo-label", help="transcripts for untranscribed clips from teachers that agree (training "
                                             "data only; pip install 'asr[teachers]')")
    pl.add_argument("--manifest", required=True, help="the clips (JSON Lines; their text is ignored)")
    pl.add_argument("--out", required=True, help="manifest of the kept clips, each marked with its teachers")
    pl.add_argument("--rejected", help="id<TAB>reason of every other clip (default: <out>.rejected.tsv)")
    defaults = PseudoLabelOptions()
    pl.add_argument("--teachers", default=",".join(defaults.teachers),
                    help=f"comma-separated, the first one's transcript kept (default {','.join(defaults.teachers)})")
    pl.add_argument("--max-disagreement", type=float, default=defaults.max_disagreement,
                    help=f"WER between the first teacher and each other, at most (default {defaults.max_disagreement:g})")
    pl.add_argument("--min-logprob", type=float, default=defaults.min_logprob,
                    help=f"the first teacher's mean token log-probability, at least (default {defaults.min_logprob:g})")
    pl.add_argument("--max-no-speech", type=float, default=defaults.max_no_speech,
                    help=f"the first teacher's no-speech probability, at most (default {defaults.max_no_speech:g})")
    pl.add_argument("--threads", type=int, default=0, help="threads per teacher (0: all cores)")
    pl.set_defaults(fn=_pseudo_label)


def _add_average(sub: argparse._SubParsersAction) -> None:
    av = sub.add_parser("average", help="average the weights of several checkpoints")
    av.add_argument("models", nargs="*", help="checkpoints (.pt)")
    av.add_argument("--exp", help="experiment folder: average its last --last checkpoints, or its --best epochs")
    av.add_argument("--last", type=int, default=3, help="the last N checkpoints/step-*.pt (train.keep_last)")
    av.add_argument("--best", type=int, default=0,
                    help="instead, the N end-of-epoch checkpoints with the lowest dev WER (train.keep_best)")
    av.add_argument("--out", required=True, help="averaged checkpoint (.pt)")
    av.set_defaults(fn=_average)


def _add_export(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="export a model to TorchScript or ONNX (waveforms -> log-probs, labels inside)")
    ex.add_argument("--model", required=True, help="checkpoint (.pt)")
    ex.add_argument("--out", required=True, help="output file, e.g. model.ts or model.onnx")
    ex.add_argument("--format", choices=("torchscript", "onnx"), default=None,
                    help="torchscript: batches of waveforms; onnx: one waveform (needs asr[export]); "
                         "default: onnx for a .onnx file, else torchscript")
    ex.set_defaults(fn=_export)


def _add_recipe(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("recipe", help="run a recipe")
    rsub = r.add_subparsers(dest="recipe_command", required=True)
    rr = rsub.add_parser("run", help="run a recipe's stages")
    rr.add_argument("recipe", help="recipe folder, e.g. recipes/synthetic_en")
    rr.add_argument("overrides", nargs="*", help="key=value overrides, e.g. size=large train.epochs=5")
    rr.add_argument("--stage", help="first stage (name or number)")
    rr.add_argument("--stop-stage", help="last stage (name or number)")
    rr.add_argument("--force", action="store_true", help="rerun stages even when up to date")
    rr.set_defaults(fn=_recipe_run)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asr", description="DeepSpeech2-style CTC speech recognition")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_evaluate, _add_transcribe, _add_serve, _add_calibrate, _add_lm, _add_pseudo_label,
                _add_average, _add_export, _add_recipe):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow options (`recipe run R --stage train train.lr=1e-3`)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.fn(args)
    except USER_ERRORS as e:
        print(f"asr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("asr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
