"""Small file helpers shared by every writer: nothing is ever written half, nothing an output should not replace is
ever replaced.

Files are written atomically (a temporary file in the same folder, fsynced, renamed) with the mode an ordinary
`open()` would give them (0o666 minus the process umask), so a shared corpus or report stays readable by colleagues.

**Outputs never clobber inputs** (`check_output_file`, `check_output_dir`, called by every command before any
work): an output path is refused when it is, or is inside, one of the command's inputs; when it is, or is inside, a
corpus folder (a folder with `manifest.jsonl`) and the command does not write corpora; when it exists as something of
another kind than what the command writes (judged by content: `path_kind`); and, when it exists as an earlier
output of the same kind, unless `force` (or the caller's `replaceable` says that re-running reproduces it).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from faceturn.errors import FaceturnError

# What `path_kind` calls things; commands name what they write with the same words.
PREDICTION_FILE = "prediction file"
TALK_FILE = "talk file"
HTML_PAGE = "HTML page"
MP4_VIDEO = "MP4 video"
PNG_IMAGE = "PNG image"
SVG_IMAGE = "SVG image"
JSON_FILE = "JSON file"
MARKDOWN_FILE = "Markdown file"
ONNX_MODEL = "ONNX model"
EMPTY_FILE = "empty file"
CORPUS_FOLDER = "corpus folder"
RUN_FOLDER = "run folder"
CHECKPOINT_FOLDER = "checkpoint folder"
STUDY_FOLDER = "study folder"
EMPTY_FOLDER = "empty folder"
FOLDER = "folder"
_SPECIAL_FOLDERS = (CORPUS_FOLDER, RUN_FOLDER, CHECKPOINT_FOLDER, STUDY_FOLDER)
_FOLDERS = (*_SPECIAL_FOLDERS, EMPTY_FOLDER, FOLDER)
_MANIFEST = "manifest.jsonl"  # faceturn.store.MANIFEST (the store sits above this module)
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", PNG_IMAGE),
    (b"\x1a\x45\xdf\xa3", "WebM/Matroska video"),
    (b"\x93NUMPY", "NumPy array (.npy)"),
    (b"%PDF", "PDF document"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"\x80\x04", "Python pickle"),
    (b"\x1f\x8b", "gzip file"),
)
_SUFFIX_KINDS = {".jsonl": "JSON lines file", ".md": MARKDOWN_FILE, ".toml": "TOML file", ".txt": "text file",
                 ".csv": "CSV file", ".log": "log file", ".py": "Python file", ".wav": "WAV audio",
                 ".onnx": ONNX_MODEL}  # fmt: skip
_UMASK_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------------- atomic writes


def current_umask() -> int:
    """The process umask, read without changing it where the system shows it (Linux: /proc/self/status); elsewhere
    set to 0o077 and restored at once, under a lock, so no file created meanwhile comes out more open than asked."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode `open()` gives a new file: 0o666 minus the umask (mkstemp's files are 0o600 whatever the umask)."""
    return 0o666 & ~current_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path` (atomic on POSIX). The file gets
    the process umask's mode, as `open()` would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk (append-only logs such as metrics.jsonl)."""
    with open(path, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# ----------------------------------------------------------------------------------------------- what a path is


def path_kind(path: str | Path) -> str | None:
    """What an existing path is, judged by its content (None when nothing is there): a folder kind (corpus, run,
    checkpoint, study, empty, plain folder) or a file kind (prediction file, talk file, safetensors file, MP4 video,
    HTML page, PNG/SVG image, JSON file — with its `format` when it names one —, empty file, ...)."""
    p = Path(path)
    if not p.exists():
        return None
    return _folder_kind(p) if p.is_dir() else file_kind(p)


def _folder_kind(p: Path) -> str:
    if (p / _MANIFEST).is_file():
        return CORPUS_FOLDER
    if (p / "COMPLETE").is_file():
        return CHECKPOINT_FOLDER
    config = _json_object(p / "config.json")
    if config is not None and "train" in config:
        return RUN_FOLDER
    if (p / "study.json").is_file() or (p / "plan.json").is_file():
        return STUDY_FOLDER
    return FOLDER if any(p.iterdir()) else EMPTY_FOLDER


def _json_object(path: Path, limit: int = 64 << 20) -> dict | None:
    """A small JSON file's top-level object, or None (missing, too large, not JSON, not an object)."""
    try:
        if not path.is_file() or path.stat().st_size > limit:
            return None
        obj = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def file_kind(path: str | Path) -> str:
    """What an existing file is, from its first bytes (and, for zip and JSON files, their contents)."""
    p = Path(path)
    with open(p, "rb") as fh:
        head = fh.read(1024)
    if not head:
        return EMPTY_FILE
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_kind(p)
    if len(head) > 8 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= p.stat().st_size - 8:
        return "safetensors file"
    if head[4:8] == b"ftyp":
        return MP4_VIDEO
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "WAV audio"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return HTML_PAGE
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and (b"<svg" in text or b"<!doctype svg" in text)):
        return SVG_IMAGE
    suffix = p.suffix.lower()
    if suffix == ".json":
        obj = _json_object(p)
        fmt = obj.get("format") if obj is not None else None
        return f"{JSON_FILE} ({fmt})" if isinstance(fmt, str) else JSON_FILE
    return _SUFFIX_KINDS.get(suffix, "file")


def _zip_kind(p: Path) -> str:
    try:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
    except Exception:  # whatever a damaged archive raises, it is a damaged archive
        return "damaged zip archive"
    if {"meta.npy", "p_face.npy"} <= names:
        return PREDICTION_FILE
    if {"meta.npy", "codes.npy", "voice.npy"} <= names:
        return TALK_FILE
    if names and all(n.endswith(".npy") for n in names):
        return "NumPy archive (.npz)"
    if any(n.endswith("data.pkl") for n in names):
        return "PyTorch file"
    return "zip archive"


# ------------------------------------------------------------------------------------------------ output checks

Inputs = Mapping[str, "str | Path | Iterable[str | Path] | None"]


def _input_paths(inputs: Inputs) -> list[tuple[str, Path]]:
    out = []
    for flag, value in inputs.items():
        if value is None:
            continue
        for v in [value] if isinstance(value, str | Path) else value:
            if v is not None and str(v) != "":
                out.append((flag, Path(v).resolve()))
    return out


def _refuse_inputs(target: Path, resolved: Path, inputs: Inputs, flag: str) -> None:
    for name, src in _input_paths(inputs):
        if resolved == src:
            raise FaceturnError(f"{target}: {flag} is the {name} input ({src}); outputs never replace inputs")
        if src in resolved.parents and src.is_dir():
            raise FaceturnError(f"{target}: {flag} is inside the {name} folder {src}; outputs never go into inputs")


def _refuse_corpus(target: Path, resolved: Path, flag: str, *, itself: bool = True) -> None:
    """An output is never a corpus folder (when `itself`) nor inside one."""
    for folder in ([resolved] if itself else []) + list(resolved.parents):
        if (folder / _MANIFEST).is_file():
            where = "is" if folder == resolved else "is inside"
            raise FaceturnError(f"{target}: {flag} {where} the corpus folder {folder}; corpora are written only by "
                                "`faceturn synth` and `faceturn prepare`")  # fmt: skip


def _refuse_file_parent(target: Path, resolved: Path, flag: str) -> None:
    for folder in resolved.parents:
        if folder.exists():
            if not folder.is_dir():
                raise FaceturnError(f"{target}: {flag} lies under {folder}, which is a file, not a folder")
            return


def check_output_file(
    out: str | Path,
    kind: str,
    *,
    inputs: Inputs | None = None,
    force: bool = False,
    replaceable: Callable[[Path], bool] | None = None,
    flag: str = "--out",
) -> Path:
    """Refuse, before any work, a file output that would clobber something (see the module docstring); returns
    `out`. `kind` is what the command writes (a `path_kind` word); an existing file of that kind is replaced only
    with `force` or when `replaceable(path)` is true (an empty file is always replaced)."""
    target = Path(out)
    resolved = target.resolve()
    _refuse_inputs(target, resolved, inputs or {}, flag)
    _refuse_corpus(target, resolved, flag)
    _refuse_file_parent(target, resolved, flag)
    existing = path_kind(resolved)
    if existing is None or existing == EMPTY_FILE:
        return target
    if existing in _FOLDERS:
        raise FaceturnError(f"{target}: {flag} is an existing {existing}; it takes a file (a {kind})")
    if existing != kind:
        raise FaceturnError(
            f"{target}: exists and is a {existing}, not a {kind}: refusing to replace it (choose another {flag})"
        )
    if force or (replaceable is not None and replaceable(resolved)):
        return target
    raise FaceturnError(f"{target}: exists (a {kind} written earlier); pass --force to overwrite it")


def check_output_dir(
    out: str | Path,
    *,
    files: Mapping[str, str] | None = None,
    kind: str | None = None,
    inputs: Inputs | None = None,
    force: bool = False,
    flag: str = "--out",
) -> Path:
    """Refuse, before any work, a folder output that would clobber something; returns `out`.

    `kind`: what the folder is (CORPUS_FOLDER, RUN_FOLDER, STUDY_FOLDER; None for a plain folder of results): an
    existing folder of another special kind is refused, and only a corpus writer may write into a corpus folder.
    `files`: the names the command writes into the folder and their kinds, each checked as `check_output_file`."""
    target = Path(out)
    resolved = target.resolve()
    _refuse_inputs(target, resolved, inputs or {}, flag)
    _refuse_corpus(target, resolved, flag, itself=kind != CORPUS_FOLDER)
    _refuse_file_parent(target, resolved, flag)
    existing = path_kind(resolved)
    if existing is not None and existing not in _FOLDERS:
        raise FaceturnError(f"{target}: {flag} is an existing {existing}; it takes a folder")
    if kind is not None and existing in _SPECIAL_FOLDERS and existing != kind:
        raise FaceturnError(f"{target}: {flag} is a {existing}, not a {kind}: refusing to write into it")
    for name, file_kind_ in (files or {}).items():
        check_output_file(target / name, file_kind_, inputs=inputs, force=force, flag=flag)
    return target
