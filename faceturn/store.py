"""The corpus store: one `.safetensors` file per conversation plus `manifest.jsonl`.

Why this shape: a file per conversation makes preparation parallel and resumable (each file is written to a
temporary name and renamed, so it exists whole or not at all), and the manifest can always be rebuilt from the files
because every header carries its own manifest entry. Reading is lazy: tensors are read-only memory-mapped views of
the file, so a corpus of thousands of hours streams one conversation at a time. Nothing here uses pickle.

All header metadata lives under one safetensors metadata key (`HEADER_KEY`) as sorted-key JSON: safetensors writes
its string→string metadata map in hash order, so several keys would make identical inputs give different bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

import numpy as np
from safetensors.numpy import save
from tqdm import tqdm

from faceturn.errors import ConfigError, CorpusError, SchemaError
from faceturn.io import atomic_write_bytes, atomic_write_text
from faceturn.schema import (
    CODEBOOK_SIZE,
    FACE_CHANNELS,
    N_CODEBOOKS,
    N_FACE,
    N_PARTICIPANTS,
    SCHEMA_VERSION,
    validate_channel_names,
    validate_face,
)
from faceturn.timebase import FRAME_RATE

MANIFEST = "manifest.jsonl"
SUFFIX = ".safetensors"
HEADER_KEY = "faceturn"  # the one safetensors metadata key; its value is the JSON of Conversation.meta
CHECKSUM_KEY = "checksum"  # header key: sha256 of the other header metadata and every tensor (see content_checksum)
SPLIT_NAMES = ("train", "val", "test")  # the only split names faceturn writes (prepare maps official splits to these)
DEFAULT_SPLITS: Mapping[str, float] = MappingProxyType({"train": 0.8, "val": 0.1, "test": 0.1})
STALE_TMP_S = 600.0  # finalize() removes temporary files untouched this long (a writer writes one in well under 1 s)
_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
_MAX_TENSOR_ELEMENTS = 2**48  # far beyond any conversation; keeps a corrupted shape within what numpy can represent
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
_RESERVED_META = ("schema_version", "face_channels", "frame_rate", "corpus", "framing", "extraction", "entry",
                  CHECKSUM_KEY)  # fmt: skip

# safetensors dtype tag -> numpy dtype (safetensors is little-endian)
_ST_DTYPES: dict[str, np.dtype] = {
    tag: np.dtype(code)
    for tag, code in {
        "BOOL": "?", "U8": "u1", "I8": "i1", "U16": "<u2", "I16": "<i2", "U32": "<u4", "I32": "<i4",
        "U64": "<u8", "I64": "<i8", "F16": "<f2", "F32": "<f4", "F64": "<f8",
    }.items()
}  # fmt: skip
TENSOR_DTYPES: dict[str, np.dtype] = {
    "codes": np.dtype(np.int16),
    "text": np.dtype(np.int32),
    "va": np.dtype(np.float16),
    "face": np.dtype(np.float16),
    "face_present": np.dtype(np.uint8),
}


def expected_shapes(n_frames: int) -> dict[str, tuple[int, ...]]:
    """The shape of every stored tensor for a conversation of `n_frames` frames."""
    p, t = N_PARTICIPANTS, n_frames
    return {"codes": (p, N_CODEBOOKS, t), "text": (p, t), "va": (p, t), "face": (p, t, N_FACE), "face_present": (p, t)}


def _error(path: str | Path, problem: str) -> CorpusError:
    """A CorpusError about a corpus file: the message always starts with the file's path, then the problem."""
    return CorpusError(f"{path}: {problem}")


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


@dataclass(eq=False)
class Conversation:
    """One conversation's aligned streams. Arrays loaded from a corpus are read-only memory maps: copy to modify."""

    id: str
    codes: np.ndarray  # [2, 8, T] int16 Mimi codes
    text: np.ndarray  # [2, T] int32 text tokens, -1 = absent
    va: np.ndarray  # [2, T] float16 voiced fraction of each frame
    face: np.ndarray  # [2, T, 61] float16 A61 coefficients
    face_present: np.ndarray  # [2, T] uint8 1 where a face was tracked
    meta: dict = field(default_factory=dict)  # header metadata (decoded JSON)

    @property
    def n_frames(self) -> int:
        return int(self.va.shape[-1]) if self.va.ndim else 0

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in TENSOR_DTYPES}

    def problems(self, values: bool = True) -> list[str]:
        """Everything wrong with shapes and dtypes and, if `values`, with value ranges (a full scan)."""
        out = []
        t = self.n_frames
        if t < 1:
            out.append("conversation has no frames")
        shapes = expected_shapes(t)
        for name, arr in self.arrays().items():
            if arr.dtype != TENSOR_DTYPES[name]:
                out.append(f"tensor {name!r} has dtype {arr.dtype}, expected {TENSOR_DTYPES[name]}")
            if tuple(arr.shape) != shapes[name]:
                out.append(f"tensor {name!r} has shape {tuple(arr.shape)}, expected {shapes[name]}")
        if out or not values:
            return out  # value checks need the layout to be right
        codes = np.asarray(self.codes)
        bad = (codes < 0) | (codes >= CODEBOOK_SIZE)
        if bad.any():
            ix = _first_index(bad)
            out.append(
                f"{int(bad.sum())} codes outside [0, {CODEBOOK_SIZE - 1}] (first at [participant, codebook, frame] "
                f"{list(ix)}: {int(codes[ix])})"
            )
        text = np.asarray(self.text)
        if (text < -1).any():
            ix = _first_index(text < -1)
            out.append(f"text tokens below -1 (first at [participant, frame] {list(ix)}: {int(text[ix])})")
        va = np.asarray(self.va)
        bad = ~((va >= 0) & (va <= 1))  # also catches NaN
        if bad.any():
            ix = _first_index(bad)
            where = f"first at [participant, frame] {list(ix)}: {va[ix]}"
            out.append(f"{int(bad.sum())} va values outside [0, 1] ({where})")
        fp = np.asarray(self.face_present)
        try:
            validate_face(self.face, source="tensor 'face'", present=fp)
        except SchemaError as e:
            out.append(str(e))
        if (fp > 1).any():
            ix = _first_index(fp > 1)
            out.append(f"face_present values other than 0/1 (first at [participant, frame] {list(ix)}: {int(fp[ix])})")
        return out

    def validate(self, source: str) -> None:
        """Raise CorpusError naming `source` and every problem (shapes, dtypes, value ranges, finiteness)."""
        problems = self.problems(values=True)
        if problems:
            raise _error(source, "; ".join(problems))


@dataclass(frozen=True)
class ManifestEntry:
    """One line of manifest.jsonl. `split` is "" until CorpusWriter.finalize assigns one; `group` ties
    conversations that must share a split (e.g. a session); `source` names what the streams were extracted from."""

    id: str
    file: str
    split: str
    n_frames: int
    corpus: str
    framing: str
    participants: list[str]
    group: str
    source: str | dict
    audio: str | None = None  # relative path of a stereo WAV, one channel per participant
    timeline: str | dict | None = None

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["participants"] = list(self.participants)
        return {k: v for k, v in d.items() if not (k in ("audio", "timeline") and v is None)}

    @classmethod
    def from_json(cls, data: Any, source: str = "manifest entry") -> ManifestEntry:
        """Parse and type-check one entry; errors name `source` and the field."""
        if not isinstance(data, dict):
            raise _error(source, f"manifest entry must be a JSON object, got {type(data).__name__}")
        kinds: dict[str, tuple[type, ...]] = {
            "id": (str,), "file": (str,), "split": (str,), "n_frames": (int,), "corpus": (str,), "framing": (str,),
            "participants": (list,), "group": (str,), "source": (str, dict), "audio": (str,), "timeline": (str, dict),
        }  # fmt: skip
        unknown = sorted(set(data) - set(kinds))
        if unknown:
            raise _error(source, f"unknown manifest fields {unknown}; valid fields: {list(kinds)}")
        missing = [k for k in kinds if k not in data and k not in ("audio", "timeline")]
        if missing:
            raise _error(source, f"manifest entry lacks fields {missing}")
        for k, v in data.items():
            if v is None and k in ("audio", "timeline"):
                continue
            if not isinstance(v, kinds[k]) or isinstance(v, bool):
                names = " or ".join(t.__name__ for t in kinds[k])
                raise _error(source, f"manifest field {k!r} is {v!r}, expected {names}")
        parts = data["participants"]
        if len(parts) != N_PARTICIPANTS or not all(isinstance(p, str) for p in parts):
            raise _error(source, f"manifest field 'participants' must be {N_PARTICIPANTS} strings, got {parts!r}")
        if data["n_frames"] < 0:
            raise _error(source, f"manifest field 'n_frames' is negative ({data['n_frames']})")
        if data["split"] not in ("", *SPLIT_NAMES):
            raise _error(source, f"manifest field 'split' is {data['split']!r}, expected one of "
                                 f"{', '.join(SPLIT_NAMES)} (or \"\" before splits are assigned)")  # fmt: skip
        return cls(**{**data, "participants": list(parts)})


def check_id(conv_id: str) -> None:
    """Conversation ids become file names: letters, digits and `._+-`, starting with a letter or digit."""
    if not isinstance(conv_id, str) or not _ID_RE.fullmatch(conv_id):
        raise CorpusError(
            f"conversation id {conv_id!r} is not a safe file name (letters, digits, '._+-', at most 200 characters)"
        )


def _is_inside(rel: str) -> bool:
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and "\\" not in rel


def _canonical_json(obj: Any, source: str) -> str:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise _error(source, f"metadata is not plain JSON ({e})") from None


# ---------------------------------------------------------------------------------------------------------------------
# reading one file


@dataclass(frozen=True)
class _Layout:
    header: dict  # safetensors header JSON
    data_start: int  # byte offset of the tensor data


def _read_layout(path: Path) -> _Layout:
    """Parse the safetensors header and check that the file holds every byte it announces (catches truncation)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise _error(path, f"truncated: {size} bytes, not even the 8-byte header length")
            n = int.from_bytes(head, "little")
            if n > _MAX_HEADER_BYTES or 8 + n > size:
                raise _error(
                    path, f"truncated or not safetensors: header length {n} bytes, but the file has {size} bytes"
                )
            raw = fh.read(n)
    except FileNotFoundError:
        raise _error(path, "file not found") from None
    except IsADirectoryError:
        raise _error(path, "is a directory, not a safetensors file") from None
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, an integer too long to convert, deep nesting
        raise _error(path, f"safetensors header is not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(header, dict):
        raise _error(path, "safetensors header is not a JSON object")
    data_start = 8 + n
    spans = []
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        if not (isinstance(spec, dict) and _is_tensor_spec(spec)):
            raise _error(path, f"malformed safetensors entry for tensor {name!r}: {spec!r}")
        tag, shape, (start, stop) = spec["dtype"], spec["shape"], spec["data_offsets"]
        sized = tag not in _ST_DTYPES or stop - start == math.prod(shape) * _ST_DTYPES[tag].itemsize
        if not (start <= stop) or not sized:
            raise _error(path, f"tensor {name!r}: data offsets {[start, stop]} do not fit shape {shape} {tag}")
        spans.append((start, stop, name))
    end = 0
    for start, stop, name in sorted(spans):  # safetensors packs tensors back to back: no gap, no overlap
        if start != end:
            raise _error(path, f"tensor {name!r}: data offsets {[start, stop]} "
                               f"{'overlap another tensor' if start < end else 'leave a gap'}")  # fmt: skip
        end = stop
    if data_start + end > size:
        raise _error(path, f"truncated: tensors need {data_start + end} bytes, the file has {size}")
    if data_start + end < size:
        raise _error(path, f"{size - data_start - end} unexpected bytes after the tensor data")
    return _Layout(header, data_start)


def _is_tensor_spec(spec: dict) -> bool:
    """{"dtype": str, "shape": [int >= 0, ...], "data_offsets": [int >= 0, int >= 0]} (bools are not ints), with
    a shape numpy can represent even where a zero dimension makes it empty."""

    def count(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= _MAX_TENSOR_ELEMENTS

    shape, offsets = spec.get("shape"), spec.get("data_offsets")
    return (
        isinstance(spec.get("dtype"), str)
        and isinstance(shape, list)
        and len(shape) <= 8
        and all(count(d) for d in shape)
        and math.prod(max(d, 1) for d in shape) <= _MAX_TENSOR_ELEMENTS
        and isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
    )


def _decode_meta(path: Path, layout: _Layout) -> dict:
    md = layout.header.get("__metadata__")
    if not isinstance(md, dict) or HEADER_KEY not in md:
        raise _error(path, f"no faceturn metadata in the header (safetensors __metadata__ lacks {HEADER_KEY!r})")
    try:
        meta = json.loads(md[HEADER_KEY])
    except (TypeError, ValueError, RecursionError) as e:
        raise _error(path, f"faceturn header metadata is not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict):
        raise _error(path, "faceturn header metadata is not a JSON object")
    return meta


def header_metadata(path: str | Path) -> dict:
    """A conversation file's faceturn header metadata (decoded JSON), without reading its tensors."""
    path = Path(path)
    return _decode_meta(path, _read_layout(path))


def _meta_problems(meta: dict) -> list[str]:
    """Schema version, channel names and frame rate: what makes the numbers mean what the reader assumes."""
    out = []
    if meta.get("schema_version") != SCHEMA_VERSION:
        out.append(f"schema version {meta.get('schema_version')!r}, this faceturn reads version {SCHEMA_VERSION}")
    names = meta.get("face_channels")
    if not isinstance(names, list):
        out.append("header lacks the face channel names ('face_channels')")
    else:
        try:
            validate_channel_names(names, source="face channel names")
        except SchemaError as e:
            out.append(str(e))
    if meta.get("frame_rate") != FRAME_RATE:
        out.append(f"frame rate {meta.get('frame_rate')!r} Hz, expected {FRAME_RATE}")
    if "entry" not in meta:
        out.append("header lacks its manifest entry ('entry')")
    return out


def _entry_from_meta(path: Path, meta: dict) -> ManifestEntry:
    entry = ManifestEntry.from_json(meta.get("entry"), source=f"{path} (header entry)")
    if entry.file != path.name or f"{entry.id}{SUFFIX}" != path.name:
        raise _error(path, f"header entry (id {entry.id!r}, file {entry.file!r}) does not match the file name")
    return entry


def _map_tensors(path: Path, layout: _Layout) -> dict[str, np.ndarray]:
    """Read-only memory-mapped views of every tensor (no copy; pages load on first touch)."""
    names = [k for k in layout.header if k != "__metadata__"]
    missing = [k for k in TENSOR_DTYPES if k not in names]
    extra = [k for k in names if k not in TENSOR_DTYPES]
    if missing or extra:
        parts = ([f"missing tensors {missing}"] if missing else []) + ([f"unexpected tensors {extra}"] if extra else [])
        raise _error(path, "; ".join(parts))
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name in TENSOR_DTYPES:
        spec = layout.header[name]
        if spec["dtype"] not in _ST_DTYPES:
            raise _error(path, f"tensor {name!r} has unsupported dtype {spec['dtype']}, expected "
                              f"{TENSOR_DTYPES[name]}")  # fmt: skip
        start = layout.data_start + spec["data_offsets"][0]
        out[name] = np.ndarray(tuple(spec["shape"]), dtype=_ST_DTYPES[spec["dtype"]], buffer=mm, offset=start)
    return out


def content_checksum(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], source: str = "conversation") -> str:
    """The content checksum, "sha256:<hex>", of the header metadata (canonical JSON, without the checksum itself)
    and of every tensor's name, dtype, shape and little-endian bytes, in TENSOR_DTYPES order: any change to a stored
    value or to the metadata after writing changes it."""
    h = hashlib.sha256(_canonical_json({k: v for k, v in meta.items() if k != CHECKSUM_KEY}, source).encode())
    for name in TENSOR_DTYPES:
        arr = np.asarray(arrays[name])
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        h.update(f"\0{name}\0{arr.dtype.str}\0{list(arr.shape)}\0".encode())
        h.update(memoryview(arr.reshape(-1)).cast("B"))
    return f"sha256:{h.hexdigest()}"


def _checksum_problem(path: Path, conv: Conversation) -> str | None:
    """None when the header's checksum matches the content, or when the file has none (written before checksums)."""
    if CHECKSUM_KEY not in conv.meta:
        return None
    stored = conv.meta[CHECKSUM_KEY]
    if not isinstance(stored, str):
        return f"header checksum {stored!r} is not a string"
    try:
        actual = content_checksum(conv.meta, conv.arrays(), str(path))
    except CorpusError as e:
        return str(e).removeprefix(f"{path}: ")
    if actual != stored:
        return "content checksum mismatch: tensor data or header metadata changed after writing (a corrupted file)"
    return None


def _entry_differences(header: ManifestEntry, manifest: ManifestEntry) -> list[str]:
    """Manifest fields that disagree with the file's own entry. The split may differ where the header has none
    (finalize assigns splits in the manifest only)."""
    out = []
    for f in dataclasses.fields(ManifestEntry):
        got, want = getattr(manifest, f.name), getattr(header, f.name)
        if got != want and not (f.name == "split" and want == ""):
            out.append(f"{f.name} {got!r} (header: {want!r})")
    return out


def read_conversation(path: str | Path, *, validate: bool = True, expect: ManifestEntry | None = None) -> Conversation:
    """Open one conversation file. Structure (header, schema version, channel names, shapes, dtypes, the header's
    entry against `expect`) is always checked; `validate` adds the content checksum (files written with one) and the
    full value scan (ranges, finiteness). Raises CorpusError naming the file."""
    path = Path(path)
    layout = _read_layout(path)
    meta = _decode_meta(path, layout)
    problems = _meta_problems(meta)
    entry = None
    if not problems:
        entry = _entry_from_meta(path, meta)
        if expect is not None and entry.id != expect.id:
            problems.append(f"header says conversation {entry.id!r}, the manifest says {expect.id!r}")
        elif expect is not None and (diff := _entry_differences(entry, expect)):
            problems.append(f"the manifest entry differs from the file's header: {'; '.join(diff)}")
    arrays = _map_tensors(path, layout)
    conv = Conversation(id=entry.id if entry else path.stem, meta=meta, **arrays)
    structure = conv.problems(values=False)
    problems += structure
    if validate and not structure:
        checksum = _checksum_problem(path, conv)
        problems += [checksum] if checksum else []
        problems += conv.problems(values=True)
    if expect is not None and not problems and conv.n_frames != expect.n_frames:
        problems.append(f"{conv.n_frames} frames, the manifest says {expect.n_frames}")
    if problems:
        raise _error(path, "; ".join(problems))
    return conv


# ---------------------------------------------------------------------------------------------------------------------
# splits


def _components(entries: list[ManifestEntry]) -> list[list[int]]:
    """Indices of entries linked by a shared participant or group key (within a corpus), as connected components."""
    parent = list(range(len(entries)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str, str], int] = {}
    for i, e in enumerate(entries):
        keys = [("p", e.corpus, p.strip()) for p in e.participants if p.strip()]
        keys += [("g", e.corpus, e.group.strip())] if e.group.strip() else []
        for key in keys:
            j = first.setdefault(key, i)
            parent[find(i)] = find(j)
    comps: dict[int, list[int]] = {}
    for i in range(len(entries)):
        comps.setdefault(find(i), []).append(i)
    return sorted(comps.values(), key=lambda c: min(entries[i].id for i in c))


def split_point(key: str, seed: int = 0) -> float:
    """Where a component with this key falls in [0, 1): a hash of (seed, key), the same in every corpus."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _component_key(entries: list[ManifestEntry], comp: list[int]) -> str:
    """The unit a split is drawn for: the component's smallest group key, else its smallest participant id, else
    its conversation id. It does not depend on the rest of the corpus, or on the order of the entries."""
    groups = sorted(entries[i].group.strip() for i in comp if entries[i].group.strip())
    if groups:
        return f"group:{groups[0]}"
    people = sorted(p.strip() for i in comp for p in entries[i].participants if p.strip())
    if people:
        return f"participant:{people[0]}"
    return f"conversation:{min(entries[i].id for i in comp)}"


def assign_splits(
    entries: Iterable[ManifestEntry], fractions: Mapping[str, float] = DEFAULT_SPLITS, seed: int = 0
) -> dict[str, str]:
    """Split names by conversation id, disjoint by conversation and, where participant ids allow, by participant.

    Conversations sharing a participant or a `group` (connected components) land in one split. Entries that already
    carry a split keep it and pull their component along. A free component's split is a function of its key
    (`_component_key`) and `seed` only: `split_point(key, seed)` against the cumulative fractions (in the order
    given), so a growing corpus never moves a conversation, whatever the corpus' size or order. Fractions are
    expected shares of components, not exact ones.

    Small corpora stay usable: when hashing leaves a split empty, the first k splits by decreasing share (train,
    val, test; k = the number of components) each get one, by moving as few free components as possible, each time
    the one whose split point lies nearest to the empty split's interval, from a split that keeps a component or
    that need not have one. Only such a moved component can change split when the corpus grows (back to its own).
    """
    entries = list(entries)
    fractions = dict(fractions)
    if not fractions or any(not math.isfinite(f) or f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise ConfigError(f"split fractions must be finite, >= 0 and not all 0, got {fractions}")
    unknown = [s for s in fractions if s not in SPLIT_NAMES]
    if unknown:
        raise ConfigError(f"split names {unknown} are not faceturn's splits ({', '.join(SPLIT_NAMES)})")
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise CorpusError(f"duplicate conversation ids: {sorted(k for k, n in Counter(ids).items() if n > 1)[:5]}")
    names = list(fractions)
    total = sum(fractions.values())
    interval: dict[str, tuple[float, float]] = {}
    lo = 0.0
    for s in names:
        interval[s] = (lo, lo + fractions[s] / total)
        lo = interval[s][1]
    positive = [s for s in names if fractions[s] > 0]
    out: dict[str, str] = {}
    count: Counter = Counter()  # components per split
    components = _components(entries)
    free: list[tuple[str, float, list[int]]] = []  # (key, split point, entry indices)
    for comp in components:
        pinned = Counter(entries[i].split for i in comp if entries[i].split)
        if not pinned:
            key = _component_key(entries, comp)
            free.append((key, split_point(key, seed), comp))
            continue
        comp_split = sorted(pinned.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        for i in comp:
            out[entries[i].id] = entries[i].split or comp_split
        count.update({out[entries[i].id] for i in comp})
    chosen = [next((s for s in positive if u < interval[s][1]), positive[-1]) for _, u, _ in free]
    count.update(chosen)
    required = sorted(positive, key=lambda s: (-fractions[s], names.index(s)))[: len(components)]
    for s in required:
        if count[s]:
            continue
        donors = [j for j, c in enumerate(chosen) if c not in required or count[c] > 1]
        if not donors:
            break
        lo, hi = interval[s]
        j = min(donors, key=lambda j: (max(lo - free[j][1], free[j][1] - hi, 0.0), free[j][0]))
        count[chosen[j]] -= 1
        chosen[j] = s
        count[s] += 1
    for (_, _, comp), s in zip(free, chosen, strict=True):
        for i in comp:
            out[entries[i].id] = s
    return out


def split_leaks(entries: Iterable[ManifestEntry]) -> list[str]:
    """Participants or group keys that appear in more than one split (empty for splits from assign_splits)."""
    seen: dict[tuple[str, str, str], set[str]] = {}
    for e in entries:
        keys = [("participant", e.corpus, p) for p in e.participants if p.strip()]
        keys += [("group", e.corpus, e.group)] if e.group.strip() else []
        for key in keys:
            seen.setdefault(key, set()).add(e.split)
    return [f"{kind} {name!r} ({corpus}) in splits {sorted(s)}" for (kind, corpus, name), s in sorted(seen.items())
            if len(s) > 1]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# writer


class CorpusWriter:
    """Writes conversations into a corpus folder, each atomically; re-running skips or reproduces finished files."""

    def __init__(self, root: str | Path, corpus: str, framing: str = "", extraction: dict | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.corpus = corpus
        self.framing = framing
        self.extraction = dict(extraction or {})
        _canonical_json(self.extraction, f"{self.root} (extraction settings)")

    def path(self, conv_id: str) -> Path:
        check_id(conv_id)
        return self.root / f"{conv_id}{SUFFIX}"

    def done(self, conv_id: str) -> bool:
        """True when a complete file for `conv_id` is already there (a crash never leaves a partial one)."""
        try:
            _read_layout(self.path(conv_id))
        except CorpusError:
            return False
        return True

    def _tmp_files(self, prefix: str = ".") -> list[Path]:
        """Leftovers of interrupted writes: atomic_write_bytes names them .<file name>.<random>.tmp."""
        return [p for p in self.root.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]

    def write(self, conv: Conversation, entry: ManifestEntry) -> Path:
        """Validate, then write `<id>.safetensors` atomically; identical existing bytes are left untouched."""
        path = self.path(conv.id)
        expected = {"id": conv.id, "file": path.name, "n_frames": conv.n_frames, "corpus": self.corpus}
        if self.framing:
            expected["framing"] = self.framing
        wrong = {k: (getattr(entry, k), v) for k, v in expected.items() if getattr(entry, k) != v}
        if wrong:
            raise _error(path, "manifest entry disagrees with the conversation/writer: " + ", ".join(
                f"{k}={got!r} (expected {want!r})" for k, (got, want) in wrong.items()))  # fmt: skip
        ManifestEntry.from_json(entry.to_json(), source=str(path))  # type-check what will be stored
        for rel in (entry.audio,) + ((entry.timeline,) if isinstance(entry.timeline, str) else ()):
            if rel is not None and not _is_inside(rel):
                raise _error(path, f"path {rel!r} in the manifest entry must be relative and inside the corpus")
        conv.validate(str(path))
        meta = {k: v for k, v in conv.meta.items() if k not in _RESERVED_META}
        meta.update(
            schema_version=SCHEMA_VERSION,
            face_channels=list(FACE_CHANNELS),
            frame_rate=FRAME_RATE,
            corpus=self.corpus,
            framing=self.framing,
            extraction=self.extraction,
            entry=entry.to_json(),
        )
        arrays = {k: np.ascontiguousarray(v) for k, v in conv.arrays().items()}
        meta[CHECKSUM_KEY] = content_checksum(meta, arrays, str(path))
        data = save(arrays, metadata={HEADER_KEY: _canonical_json(meta, str(path))})
        for tmp in self._tmp_files(f".{path.name}."):
            tmp.unlink(missing_ok=True)
        if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return path
        atomic_write_bytes(path, data)
        return path

    def finalize(self, fractions: Mapping[str, float] = DEFAULT_SPLITS, seed: int = 0) -> list[ManifestEntry]:
        """(Re)build manifest.jsonl from the files' headers, sorted by id, with splits (see assign_splits).

        Safe to call again at any time: the manifest only depends on the files present.
        """
        entries = []
        for path in sorted(self.root.glob(f"*{SUFFIX}")):
            meta = _decode_meta(path, _read_layout(path))
            entries.append(_entry_from_meta(path, meta))
        entries.sort(key=lambda e: e.id)
        splits = assign_splits(entries, fractions, seed)
        entries = [dataclasses.replace(e, split=splits[e.id]) for e in entries]
        text = "".join(json.dumps(e.to_json(), sort_keys=True) + "\n" for e in entries)
        manifest = self.root / MANIFEST
        if not (manifest.exists() and manifest.read_text() == text):
            atomic_write_text(manifest, text)
        now = time.time()
        for tmp in self._tmp_files():
            try:
                stale = now - tmp.stat().st_mtime > STALE_TMP_S
            except FileNotFoundError:
                continue  # renamed just now by a concurrent writer
            if stale:
                tmp.unlink(missing_ok=True)
        return entries


# ---------------------------------------------------------------------------------------------------------------------
# reader


def _read_manifest(root: Path, manifest: Path) -> tuple[list[ManifestEntry], list[CorpusError]]:
    """Usable entries plus every manifest problem, each naming manifest.jsonl:LINE (or the unlisted file)."""
    entries: list[ManifestEntry] = []
    problems: list[CorpusError] = []
    first_line: dict[str, int] = {}
    file_line: dict[str, int] = {}
    mentioned: set[str] = set()
    for line_no, raw in enumerate(manifest.read_bytes().split(b"\n"), start=1):
        where = f"{manifest}:{line_no}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.append(_error(where, f"not UTF-8 text (byte {e.start} of the line is {raw[e.start]:#04x}); a "
                                          f"manifest is JSON lines"))  # fmt: skip
            continue
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, an integer too long to convert, deep nesting
            problems.append(_error(where, f"not valid JSON ({type(e).__name__}: {e})"))
            continue
        try:
            entry = ManifestEntry.from_json(data, source=where)
        except CorpusError as e:
            problems.append(e)
            if isinstance(data, dict) and isinstance(data.get("file"), str):
                mentioned.add(data["file"])  # its file is listed, on a bad line: one problem, not two
            continue
        if entry.id in first_line:
            problems.append(_error(where, f"duplicate conversation id {entry.id!r} (first on line "
                                               f"{first_line[entry.id]})"))  # fmt: skip
            continue
        first_line[entry.id] = line_no
        if not _ID_RE.fullmatch(entry.id):
            problems.append(_error(where, f"conversation id {entry.id!r} is not a safe file name (letters, digits, "
                                          f"'._+-', at most 200 characters)"))  # fmt: skip
            continue
        if not _is_inside(entry.file):
            problems.append(_error(where, f"file {entry.file!r} must be a relative path inside the corpus folder"))
            continue
        if entry.file != f"{entry.id}{SUFFIX}":
            problems.append(_error(where, f"file {entry.file!r} of conversation {entry.id!r} must be "
                                          f"'{entry.id}{SUFFIX}'"))  # fmt: skip
            continue
        if entry.file in file_line:
            problems.append(_error(where, f"file {entry.file!r} is also listed on line {file_line[entry.file]}"))
            continue
        file_line[entry.file] = line_no
        if not (root / entry.file).is_file():
            problems.append(_error(where, f"file {entry.file!r} of conversation {entry.id!r} is missing "
                                               f"({root / entry.file})"))  # fmt: skip
            continue
        if not entry.split:
            problems.append(_error(where, f"conversation {entry.id!r} has no split"))
        entries.append(entry)
    for path in sorted(root.glob(f"*{SUFFIX}")):  # nothing lost: a conversation file the manifest does not list
        if path.name not in file_line and path.name not in mentioned and path.is_file():
            problems.append(_error(path, f"conversation file not listed in {manifest} (CorpusWriter.finalize "
                                         f"rebuilds the manifest from the files)"))  # fmt: skip
    return entries, problems


class Corpus:
    """Read a corpus folder: the manifest at once, conversations lazily (memory-mapped) one at a time."""

    def __init__(self, root: str | Path, validate: bool = True):
        self.root = Path(root)
        self.manifest_path = self.root / MANIFEST
        if not self.root.is_dir():
            raise _error(self.root, "corpus folder not found")
        if not self.manifest_path.is_file():
            raise _error(self.manifest_path, "manifest not found (CorpusWriter.finalize writes it)")
        self.entries, errors = _read_manifest(self.root, self.manifest_path)
        self.manifest_problems = [str(e) for e in errors]
        self._by_id = {e.id: e for e in self.entries}
        if validate and errors:
            more = f" (and {len(errors) - 1} more manifest problems)" if len(errors) > 1 else ""
            raise CorpusError(f"{errors[0]}{more}")

    def __len__(self) -> int:
        return len(self.entries)

    def ids(self, split: str | None = None) -> list[str]:
        return [e.id for e in self.entries if split is None or e.split == split]

    def splits(self) -> list[str]:
        return sorted({e.split for e in self.entries})

    def entry(self, conv_id: str) -> ManifestEntry:
        try:
            return self._by_id[conv_id]
        except KeyError:
            raise _error(self.manifest_path, f"no conversation {conv_id!r}") from None

    def load(self, conv_id: str, *, validate: bool = True) -> Conversation:
        """One conversation as memory-mapped arrays; `validate` adds the value scan (structure is always checked)."""
        entry = self.entry(conv_id)
        return read_conversation(self.root / entry.file, validate=validate, expect=entry)

    def scan(
        self, *, validate: bool = True, progress: bool = False
    ) -> Iterator[tuple[ManifestEntry, Conversation | None, list[str]]]:
        """Each conversation once, in manifest order, with its problems (conversation None when it is unusable)."""
        for entry in tqdm(self.entries, desc=f"reading {self.root.name}", unit="conv", disable=not progress):
            problems = []
            if entry.audio is not None and not (_is_inside(entry.audio) and (self.root / entry.audio).is_file()):
                problems.append(
                    f"{self.root / entry.audio}: audio of conversation {entry.id!r} not found ({self.manifest_path})"
                )
            try:
                conv = self.load(entry.id, validate=validate)
            except CorpusError as e:
                conv = None
                problems.append(str(e))
            yield entry, conv, problems

    def validate_all(self, progress: bool = True) -> list[str]:
        """Every problem in the corpus, each as "path: problem" (manifest first, then file by file)."""
        problems = list(self.manifest_problems)
        for _, _, p in self.scan(validate=True, progress=progress):
            problems += p
        return problems


# ------------------------------------------------------------------------------------------------- provenance


def fingerprint(root: str | Path) -> str:
    """The corpus' content fingerprint, "sha256:<hex>" of its manifest.jsonl's bytes. Prediction files and run
    folders record it (with the corpus path, for messages) so that whatever pairs them with a corpus can refuse
    another one, or the same folder changed since, whatever path it is read from."""
    manifest = Path(root) / MANIFEST
    if not Path(root).is_dir():
        raise _error(root, "corpus folder not found")
    try:
        data = manifest.read_bytes()
    except FileNotFoundError:
        raise _error(manifest, "manifest not found (CorpusWriter.finalize writes it)") from None
    except OSError as e:
        raise _error(manifest, f"cannot be read ({e.strerror or e})") from None
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def provenance(root: str | Path) -> dict[str, str]:
    """What a derived file records about the corpus it was made from: {"path": absolute path, "fingerprint": ...}."""
    return {"path": str(Path(root).resolve()), "fingerprint": fingerprint(root)}
