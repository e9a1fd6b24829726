"""Arguments that several subcommands share, so each is spelled, typed and explained once.

One spelling per meaning: `--jobs N` (things at a time), `--no-progress` (no progress bars or live lines),
`--executor local|slurm` with `--partition`, `--gpus-per-run`, ... (where a multi-job command's jobs run),
`--config NAME|FILE` (the command's config), `--set KEY=VALUE` (type-checked overrides of it, repeatable;
`args.overrides`), `--corpus`, `--run`, `--out`, `--force` (overwrite an earlier output of the same command).

Every command checks its outputs before any work (`faceturn.io.check_output_file` / `check_output_dir`): an output
is never one of the command's inputs or inside one, never in a corpus folder (unless the command writes corpora),
never an existing file of another kind, and replaces an earlier output of its own kind only with `--force`.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from faceturn.errors import ConfigError
from faceturn.io import JSON_FILE, MARKDOWN_FILE, Inputs, atomic_write_json, atomic_write_text, check_output_dir
from faceturn.slurm import SlurmConfig


def add_jobs(parser: argparse.ArgumentParser, *, default: int | None = 1, help: str | None = None) -> None:
    """`--jobs N`: how many runs, conversations or processes at a time."""
    text = help or f"processes working in parallel (default: {default})"
    parser.add_argument("--jobs", type=positive_int, default=default, metavar="N", help=text)


def add_progress(parser: argparse.ArgumentParser, *, help: str = "no progress bars (logs, CI)") -> None:
    """`--no-progress`, read as `args.progress` (True unless given)."""
    parser.add_argument("--no-progress", dest="progress", action="store_false", help=help)


def add_set(parser: argparse.ArgumentParser, *, help: str = "override a config value (repeatable)") -> None:
    """`--set KEY=VALUE` (repeatable), collected in `args.overrides`."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_config(parser: argparse.ArgumentParser, *, help: str, required: bool = False) -> None:
    """`--config NAME|FILE`: the command's config (a shipped name or a TOML/JSON file, as `help` says)."""
    parser.add_argument("--config", required=required, help=help)


def add_corpus(parser: argparse.ArgumentParser, *, required: bool = True, help: str = "corpus folder") -> None:
    """`--corpus FOLDER`: a corpus folder (manifest.jsonl + one .safetensors per conversation)."""
    parser.add_argument("--corpus", type=Path, required=required, help=help)


def add_run(parser: argparse.ArgumentParser) -> None:
    """`--run FOLDER`: a run folder (its newest checkpoint) or one checkpoint; `--allow-older`."""
    parser.add_argument("--run", type=Path, required=True, help="run folder (its newest checkpoint) or a checkpoint")
    add_allow_older(parser)


def add_allow_older(parser: argparse.ArgumentParser) -> None:
    """`--allow-older`: when a run's newest checkpoint is damaged, use the newest intact one (and say which)."""
    parser.add_argument(
        "--allow-older", action="store_true", help="if the newest checkpoint is damaged, use the newest intact one"
    )


def add_out(parser: argparse.ArgumentParser, *, help: str, required: bool = False, default: Path | None = None) -> None:
    """`--out PATH`: where the command writes (a folder or a file, as `help` says)."""
    parser.add_argument("--out", type=Path, required=required, default=default, help=help)


def add_study_config(parser: argparse.ArgumentParser) -> None:
    """`--config NAME|FILE` of a study, plus its `--set` overrides."""
    add_config(parser, required=True, help="study config: a shipped name (synthetic, real) or a TOML file")
    add_set(parser, help="override a study config value (repeatable)")


def add_device(parser: argparse.ArgumentParser, *, default: str = "cpu", help: str | None = None) -> None:
    """`--device`: the torch device."""
    parser.add_argument("--device", default=default, help=help or f"torch device (default: {default})")


def add_window(parser: argparse.ArgumentParser) -> None:
    """--pred, --conversation, --perspective, --start, --end, --corpus: one conversation window of a prediction file."""
    parser.add_argument("--pred", type=Path, required=True, help="prediction file from `faceturn predict`")
    parser.add_argument("--conversation", required=True, help="conversation id")
    parser.add_argument(
        "--perspective", type=int, default=0, choices=(0, 1),
        help="the participant the model speaks as; the face shown is the other's (default: 0)",
    )  # fmt: skip
    parser.add_argument("--start", type=float, help="window start in seconds (default: the conversation's start)")
    parser.add_argument("--end", type=float, help="window end in seconds (default: the conversation's end)")
    add_corpus(parser, required=False, help="corpus folder (default: the one the prediction file names)")


def add_video(parser: argparse.ArgumentParser) -> None:
    """--video, --media-root: where the interlocutor's face video comes from (render, view)."""
    parser.add_argument("--video", type=Path,
                        help="the interlocutor's face video (its time 0 = the conversation's start)")  # fmt: skip
    parser.add_argument("--media-root", type=Path,
                        help="folder searched for the video the face tracker read (by its file name)")  # fmt: skip


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_force(parser: argparse.ArgumentParser) -> None:
    """`--force`: replace an earlier output of the same command (never an input, nor a file of another kind)."""
    parser.add_argument(
        "--force", action="store_true",
        help="overwrite an earlier output of this command (inputs and files of another kind are never replaced)",
    )  # fmt: skip


def config_input(value: str | Path | None) -> Path | None:
    """A `--config` (or model) value as an input path: the file or folder it names, None for a shipped config's name
    (or a hub id, or nothing)."""
    return Path(value) if value and Path(value).exists() else None


def run_input(run: Path) -> Path:
    """A `--run` value as an input path: the run's checkpoints (outputs may go into the run folder itself, as the
    attribution study's predictions do, never among its checkpoints), or the checkpoint folder given."""
    checkpoints = Path(run) / "checkpoints"  # faceturn.checkpoint.CHECKPOINTS
    return checkpoints if checkpoints.is_dir() else Path(run)


def check_result_out(out: Path | None, stem: str, *, inputs: Inputs, force: bool) -> None:
    """Before any work: `--out` of `write_result` (a folder for `<stem>.json` and `<stem>.md`) may be written."""
    if out is not None:
        files = {f"{stem}.json": JSON_FILE, f"{stem}.md": MARKDOWN_FILE}
        check_output_dir(out, files=files, inputs=inputs, force=force)


def write_result(command: str, out: Path | None, stem: str, result: dict, table: str) -> None:
    """Print a step's Markdown table and, with `--out`, write `<stem>.json` and `<stem>.md` there (atomically)."""
    print(table)
    if out:
        atomic_write_json(out / f"{stem}.json", result)
        atomic_write_text(out / f"{stem}.md", table + "\n")
        print(f"{command}: wrote {out / f'{stem}.json'}")


# flags named as SlurmConfig's fields; each overrides the config's [slurm] value when given
_SLURM_FLAGS = ("partition", "account", "gpus_per_run", "cpus_per_run", "mem_gb", "time_min", "poll_s")


def add_executor(parser: argparse.ArgumentParser) -> None:
    """`--executor local|slurm` and the SLURM resources (docs/slurm.md), read by `slurm_config`. Each resource
    overrides a study config's [slurm] field; the defaults are `faceturn.slurm.SlurmConfig`'s."""
    g = parser.add_argument_group("where the jobs run (docs/slurm.md; each resource overrides a study's [slurm])")
    g.add_argument(
        "--executor", choices=("local", "slurm"), default="local",
        help="local: here, --jobs at a time (default); slurm: as SLURM job arrays, through submitit",
    )  # fmt: skip
    g.add_argument("--partition", metavar="NAME", help="SLURM partition (default: the cluster's)")
    g.add_argument("--account", metavar="NAME", help="SLURM account to charge (default: yours)")
    g.add_argument("--gpus-per-run", type=int, metavar="N",
                   help="GPUs of a job that trains, or prepares unless --device cpu (default: 1)")  # fmt: skip
    g.add_argument("--cpus-per-run", type=positive_int, metavar="N", help="CPUs of every job (default: 8)")
    g.add_argument("--mem-gb", type=positive_int, metavar="GB", help="memory of every job (default: 64)")
    g.add_argument("--time-min", type=positive_int, metavar="MIN",
                   help="time limit of every job; a training job that reaches it resumes in a requeued job "
                   "(default: 240)")  # fmt: skip
    g.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                   help="another sbatch option, e.g. qos=high or constraint=h100 (repeatable)")  # fmt: skip
    g.add_argument("--poll-s", type=float, metavar="S", help="seconds between looks at the queue (default: 30)")


def slurm_config(args: argparse.Namespace, base: SlurmConfig | None = None) -> SlurmConfig | None:
    """The resources for `--executor slurm` (`base`, e.g. a study's [slurm], with the flags given on top); None for
    `--executor local`, where a SLURM flag is refused rather than ignored."""
    given = {key: getattr(args, key) for key in _SLURM_FLAGS if getattr(args, key) is not None}
    if args.executor == "local":
        if given or args.sbatch:
            flag = next(iter(given), "sbatch").replace("_", "-")
            raise ConfigError(f"--{flag} is a SLURM resource: add --executor slurm")
        return None
    base = base or SlurmConfig()
    try:
        return replace(base, **given, sbatch=(*base.sbatch, *args.sbatch))
    except ValueError as e:
        raise ConfigError(str(e)) from None
