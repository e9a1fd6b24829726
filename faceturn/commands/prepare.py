"""`faceturn prepare {seamless,multidialog,livelink,recordings}`: real recordings → a corpus on the 12.5 Hz grid.

Every setting of `faceturn.prep` (Mimi, face, text, Silero, and the corpus' own) can be overridden with
`--set key=value`, type-checked: keys of the shared settings (`face.crop_margin=0.6`, `mimi.chunk_s=10`,
`silero.threshold=0.6`) or of the corpus (`gap.turn_gap_s=0.3`, `max_av_mismatch_s=0.5`). Re-running with the same
arguments resumes; `--shard i/n` splits the conversations for cluster job arrays (run once more without it, or any
shard again, to rebuild the manifest over everything written). `--executor slurm --shards N` does that itself: N
shards as one SLURM job array (finished shards skipped, failed ones resubmitted on a re-run), then the manifest over
everything written (docs/slurm.md).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from faceturn.commands._args import (
    add_device,
    add_executor,
    add_jobs,
    add_out,
    add_progress,
    add_set,
    config_input,
    positive_int,
    slurm_config,
)
from faceturn.config import apply_overrides
from faceturn.errors import ConfigError, CorpusError
from faceturn.io import CORPUS_FOLDER, check_output_dir
from faceturn.jobs import Job
from faceturn.prep import livelink, multidialog, recordings, seamless
from faceturn.prep.audio_tokens import MimiSettings
from faceturn.prep.face import FaceSettings
from faceturn.prep.pipeline import PrepSettings, run_jobs, shard_summary
from faceturn.prep.text import TextSettings
from faceturn.slurm import SlurmConfig, execute


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes i/n (e.g. 0/8), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= i < n")
    return i, n


def _csv(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, required=True, help="the corpus as downloaded")
    add_out(p, required=True, help="corpus folder to write (created; resumable)")
    p.add_argument("--mimi", default="kyutai/mimi", help="MimiModel: local folder or hub id (default kyutai/mimi)")
    add_device(p, default="auto", help="torch device for Mimi (default: CUDA when available)")
    p.add_argument("--face-model", default="", help="face_landmarker.task (default: $FACETURN_FACE_MODEL)")
    p.add_argument("--gaze", choices=("blendshapes", "iris"), default="blendshapes", help="gaze estimate")
    p.add_argument("--no-crop", action="store_true", help="feed whole frames to the landmarker (no face crop)")
    p.add_argument("--text-model", default="", help="SentencePiece .model for text tokens (default: no text)")
    add_jobs(p, default=1, help="worker processes (default 1)")
    p.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N", help="prepare only shard I of N")
    p.add_argument("--retry-skipped", action="store_true", help="retry conversations earlier runs skipped")
    p.add_argument("--audio", action="store_true", help="also write audio/<id>.wav (24 kHz, one channel each)")
    p.add_argument("--splits", choices=("official", "assign"), default="official",
                   help="keep the corpus' own splits (default) or assign new ones by participant")  # fmt: skip
    add_progress(p, help="no progress bar (logs, CI)")
    add_set(p, help="override any setting (repeatable)")
    add_executor(p)
    p.add_argument("--shards", type=positive_int, metavar="N",
                   help="with --executor slurm: N shards, one SLURM job each (--jobs processes in each)")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="corpus", metavar="CORPUS", required=True)
    # options spelled in full (no abbreviations), so the shards' command lines are this one's minus the executor's
    s = sub.add_parser("seamless", help="Seamless Interaction (WebDataset tars and/or extracted folders)",
                       allow_abbrev=False)  # fmt: skip
    _common(s)
    s.add_argument("--labels", type=_csv, default=("improvised", "naturalistic"), help="comma list")
    s.add_argument("--split", type=_csv, default=("train", "dev", "test"), help="Seamless splits, comma list")
    s.add_argument("--va", choices=("auto", "annotations", "silero"), default="auto",
                   help="voice activity: the JSON's VAD/word times (auto falls back to Silero)")  # fmt: skip
    m = sub.add_parser("multidialog", help="MultiDialog (tar.gz archives + metadata JSONL)", allow_abbrev=False)
    _common(m)
    m.add_argument("--subsets", type=_csv, default=("train", "valid_freq", "valid_rare", "test_freq", "test_rare"),
                   help="comma list (default: all five)")  # fmt: skip
    m.add_argument("--video-root", default="", help="folder of videos (default: audio only, no faces)")
    m.add_argument("--video-layout", choices=("per-participant", "shared"), default="per-participant")
    m.add_argument("--video-pattern", default="", help="file name pattern with {conv_id} and {speaker}")
    m.add_argument("--recordings", default="", help="folder of full-length recordings (measured timeline)")
    m.add_argument("--recording-pattern", default="{conv_id}.wav", help="may use {speaker}")
    m.add_argument("--work-dir", default="", help="archive extraction cache (default <out>/.multidialog-extracted)")
    m.add_argument("--va", choices=("silero", "utterance"), default="silero",
                   help="voice activity: Silero on each track (default) or whole utterance clips")  # fmt: skip
    ll = sub.add_parser("livelink", help="your recordings: <root>/<id>/<name>.wav + Live Link Face <name>.csv",
                        allow_abbrev=False)  # fmt: skip
    _common(ll)
    ll.add_argument("--timecode-fps", type=float, default=60.0, help="frame base of the takes' timecodes")
    rec = sub.add_parser("recordings", help="your recordings: <root>/<id>/<name>.wav (+ <name>.mp4/mkv/... video)",
                         allow_abbrev=False)  # fmt: skip
    _common(rec)


def _split_overrides(items: list[str], prep_cls: type) -> tuple[list[str], list[str]]:
    """Overrides of the shared settings (first key a PrepSettings field) and of the corpus settings."""
    shared = {f.name for f in dataclasses.fields(prep_cls)}
    prep = [o for o in items if o.split("=", 1)[0].split(".")[0].strip() in shared]
    return prep, [o for o in items if o not in prep]


def shard_jobs(argv: list[str], out: Path, shards: int, gpu: bool) -> list[Job]:
    """The command as given (argv after `faceturn`), minus the executor's options, once per shard: N jobs that each
    prepare one shard and are finished when its summary exists (`faceturn.prep.pipeline.shard_summary`)."""
    strip = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_executor(strip)
    strip.add_argument("--shards")
    _, own = strip.parse_known_args(argv[argv.index("prepare") + 1 :])
    jobs = []
    for i in range(shards):
        step = ("faceturn", "prepare", *own, "--no-progress", "--shard", f"{i}/{shards}")
        done = Path(out).resolve() / shard_summary(i, shards)
        jobs.append(Job(f"prepare/shard-{i}-of-{shards}", (step,), Path.cwd(), (done,), gpu=gpu))
    return jobs


def _on_slurm(args: argparse.Namespace, slurm: SlurmConfig) -> None:
    """Prepare every shard as a SLURM job and wait; the caller then rebuilds the manifest here."""
    if args.shard != (0, 1):
        raise ConfigError("--shard I/N prepares one shard by hand; with --executor slurm give --shards N instead")
    jobs = shard_jobs(args.argv, args.out, args.shards or 1, gpu=args.device != "cpu")
    execute(jobs, args.out / "logs", slurm=slurm, name=f"faceturn-prepare-{args.corpus}", progress=args.progress,
            desc=f"prepare {args.corpus} shards")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if not args.root.is_dir():
        raise CorpusError(f"{args.root}: folder not found")
    given = {k: config_input(getattr(args, k.removeprefix("--").replace("-", "_"), None))
             for k in ("--mimi", "--face-model", "--text-model", "--video-root", "--recordings")}  # fmt: skip
    inputs = {"--root": args.root, **given}  # local models and media folders; hub ids are not paths
    check_output_dir(args.out, kind=CORPUS_FOLDER, inputs=inputs)
    slurm = slurm_config(args)
    if slurm is None and args.shards:
        raise ConfigError("--shards N splits the preparation into SLURM jobs: add --executor slurm (here, --jobs N)")
    if slurm is not None:  # every conversation is then written or logged as skipped: the run below only indexes
        _on_slurm(args, slurm)  # and rebuilds the manifest over everything the shards wrote
        args.retry_skipped = False
    prep = PrepSettings(
        mimi=MimiSettings(model=args.mimi, device=args.device),
        face=FaceSettings(model=args.face_model, gaze=args.gaze, crop="none" if args.no_crop else "auto"),
        text=TextSettings(tokenizer=args.text_model),
        jobs=args.jobs,
        shard_index=args.shard[0],
        shard_count=args.shard[1],
        retry_skipped=args.retry_skipped,
        write_audio=args.audio,
        progress=args.progress,
    )
    official = args.splits == "official"
    need_face = True
    if args.corpus == "seamless":
        corpus = seamless.SeamlessSettings(labels=args.labels, splits=args.split, va_source=args.va,
                                           official_splits=official)  # fmt: skip
    elif args.corpus == "multidialog":
        corpus = multidialog.MultiDialogSettings(
            subsets=args.subsets,
            va_source=args.va,
            work_dir=args.work_dir,
            recordings=args.recordings,
            recording_pattern=args.recording_pattern,
            video_root=args.video_root,
            video_layout=args.video_layout,
            video_pattern=args.video_pattern,
            official_splits=official,
        )
        need_face = bool(args.video_root)
    elif args.corpus == "livelink":
        corpus = livelink.LiveLinkSettings(timecode_fps=args.timecode_fps)
        need_face = False
    else:
        corpus = recordings.RecordingsSettings()
    prep_over, corpus_over = _split_overrides(args.overrides, PrepSettings)
    prep = apply_overrides(prep, prep_over)
    corpus = apply_overrides(corpus, corpus_over)
    if args.corpus == "seamless":
        jobs, framing = seamless.jobs_from_root(args.root, corpus), corpus.framing
    elif args.corpus == "multidialog":
        jobs = multidialog.jobs_from_root(args.root, args.out, corpus, progress=prep.progress)
        framing = corpus.framing if corpus.video_root else "none"
    elif args.corpus == "livelink":
        jobs, framing = livelink.jobs_from_root(args.root, corpus), corpus.framing
    else:
        jobs, framing = recordings.jobs_from_root(args.root, corpus), corpus.framing
        need_face = any(j.videos for j in jobs)
    summary = run_jobs(jobs, args.out, args.corpus, framing, prep, describe=f"prepare {args.corpus}",
                       need_face=need_face)  # fmt: skip
    return 1 if summary["internal_errors"] else 0
