"""Fuzzing the store's readers: a damaged conversation file or manifest is a named CorpusError, never a crash, a hang
or silently different data.

`read_conversation` gets a small valid file with random truncations, byte flips (anywhere, and aimed at the tensor
data), insertions, deletions and edits of its safetensors header (shapes, dtypes, offsets, metadata values, with a
consistent header length so the edit reaches the deeper checks). `Corpus` gets random edits of manifest.jsonl (bytes,
lines, field values). If no error is raised, what comes back must be the original: the arrays and metadata exactly
(the content checksum makes a payload byte flip that yields other valid values detectable) — unless the edit erased
the checksum's own key, when the file reads like one written before checksums and its values must be genuinely valid
— and for the manifest every original conversation with its original entry (the split may differ only as another
valid split name, which the manifest alone decides).

Fast settings in the default suite; `pytest -m slow tests/test_fuzz_store.py` runs many more examples.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from faces import valid_face
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceturn import store
from faceturn.errors import CorpusError
from faceturn.schema import CHANNEL_INDEX, GAZE, HEAD_ROTATION, HEAD_TRANSLATION
from faceturn.store import Conversation, Corpus, CorpusWriter, ManifestEntry

N_FRAMES = 12
FAST = settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
THOROUGH = settings(max_examples=1500, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def _conversation(conv_id: str, seed: int) -> Conversation:
    rng = np.random.default_rng(seed)
    t = N_FRAMES
    face, present = valid_face(rng, t, present_rate=0.8)
    return Conversation(
        id=conv_id,
        codes=rng.integers(0, 2048, (2, 8, t)).astype(np.int16),
        text=rng.integers(-1, 50, (2, t)).astype(np.int32),
        va=rng.random((2, t)).astype(np.float16),
        face=face,
        face_present=present,
        meta={"note": f"seed {seed}", "nested": {"values": [1, 2.5, "x"]}},
    )


@dataclasses.dataclass
class Original:
    root: Path  # a valid corpus of three conversations
    scratch: Path  # where mutated copies are written
    file_bytes: bytes  # c0.safetensors
    data_start: int  # where c0's tensor data begins
    arrays: dict[str, np.ndarray]
    meta: dict
    manifest: bytes
    entries: dict[str, ManifestEntry]
    all_arrays: dict[str, dict[str, np.ndarray]]


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Original:
    root = tmp_path_factory.mktemp("fuzz")
    corpus = root / "corpus"
    writer = CorpusWriter(corpus, corpus="fuzz", framing="tight", extraction={"face": "synthetic"})
    all_arrays = {}
    for i in range(3):
        conv = _conversation(f"c{i}", i)
        entry = ManifestEntry(f"c{i}", f"c{i}.safetensors", "", N_FRAMES, "fuzz", "tight", [f"p{i}", f"q{i}"],
                              f"g{i}", {"video": f"c{i}.mp4"})  # fmt: skip
        writer.write(conv, entry)
        all_arrays[conv.id] = {k: np.array(v) for k, v in conv.arrays().items()}
    entries = {e.id: e for e in writer.finalize()}
    path = corpus / "c0.safetensors"
    data = path.read_bytes()
    conv = store.read_conversation(path)
    scratch = root / "scratch"
    scratch.mkdir()
    return Original(
        root=corpus,
        scratch=scratch,
        file_bytes=data,
        data_start=8 + int.from_bytes(data[:8], "little"),
        arrays={k: np.array(v) for k, v in conv.arrays().items()},
        meta=json.loads(json.dumps(conv.meta)),
        manifest=(corpus / store.MANIFEST).read_bytes(),
        entries=entries,
        all_arrays=all_arrays,
    )


# ---------------------------------------------------------------------------------------------------------------------
# edits


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
TENSORS = list(store.TENSOR_DTYPES)


def byte_edits(size: int, aim: tuple[int, int] | None = None):
    """Up to 4 random byte-level edits; `aim` adds flips inside [lo, hi) (the tensor data)."""
    pos = st.integers(0, size - 1)
    edits = [
        st.tuples(st.just("flip"), pos, st.integers(1, 255)),
        st.tuples(st.just("truncate"), st.integers(0, size - 1)),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("delete"), pos, st.integers(1, 64)),
    ]
    if aim is not None:
        edits.append(st.tuples(st.just("flip"), st.integers(*aim), st.integers(1, 255)))
    return st.lists(st.one_of(*edits), min_size=1, max_size=4)


def apply_byte_edits(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for op, *args in edits:
        if not out:
            break
        if op == "flip":
            out[args[0] % len(out)] ^= args[1]
        elif op == "truncate":
            del out[args[0] % len(out) :]
        elif op == "insert":
            out[args[0] % len(out) : args[0] % len(out)] = args[1]
        elif op == "delete":
            start = args[0] % len(out)
            del out[start : start + args[1]]
    return bytes(out)


META_KEYS = ["schema_version", "face_channels", "frame_rate", "entry", "extraction", "note", "nested", "checksum"]
ENTRY_KEYS = ["id", "file", "split", "n_frames", "participants", "group", "corpus", "source"]
DTYPE_TAGS = [*sorted(store._ST_DTYPES), "F8", ""]
SPEC_KEYS = ["dtype", "shape", "data_offsets"]
HEADER_EDIT = st.one_of(
    st.tuples(st.just("tensor"), st.sampled_from(TENSORS), st.sampled_from(SPEC_KEYS), JSON_VALUES),
    st.tuples(
        st.just("nudge"),
        st.sampled_from(TENSORS),
        st.sampled_from(SPEC_KEYS[1:]),
        st.integers(0, 2),
        st.integers(-3, 3),
    ),
    st.tuples(st.just("dtype"), st.sampled_from(TENSORS), st.sampled_from(DTYPE_TAGS)),
    st.tuples(st.just("drop"), st.sampled_from([*TENSORS, "__metadata__"])),
    st.tuples(st.just("meta"), st.sampled_from([*META_KEYS, "new"]), JSON_VALUES),
    st.tuples(st.just("entry"), st.sampled_from(ENTRY_KEYS), JSON_VALUES),
    st.tuples(st.just("channel"), st.integers(0, 60), st.text(max_size=12)),
    st.tuples(st.just("raw_meta"), st.binary(max_size=8)),
)
HEADER_EDITS = st.lists(HEADER_EDIT, min_size=1, max_size=3)


def apply_header_edits(data: bytes, edits) -> bytes:
    """Edit the parsed safetensors header and re-encode it with a matching length prefix (tensor data unchanged)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    payload = data[8 + n :]
    meta_text = header.get("__metadata__", {}).get(store.HEADER_KEY, "{}")
    meta = json.loads(meta_text)
    raw_meta = None
    for op, *args in edits:
        if op == "tensor" and isinstance(header.get(args[0]), dict):
            header[args[0]][args[1]] = args[2]
        elif op == "nudge" and isinstance(header.get(args[0]), dict):
            values = header[args[0]].get(args[1])
            if isinstance(values, list) and len(values) > args[2] and isinstance(values[args[2]], int):
                values[args[2]] += args[3]
        elif op == "dtype" and isinstance(header.get(args[0]), dict):
            header[args[0]]["dtype"] = args[1]
        elif op == "drop":
            header.pop(args[0], None)
        elif op == "meta":
            meta[args[0]] = args[1]
        elif op == "entry" and isinstance(meta.get("entry"), dict):
            meta["entry"][args[0]] = args[1]
        elif op == "channel" and isinstance(meta.get("face_channels"), list) and len(meta["face_channels"]) > args[0]:
            meta["face_channels"][args[0]] = args[1]
        elif op == "raw_meta":
            raw_meta = args[0].decode("latin-1")
    if "__metadata__" in header:
        header["__metadata__"] = {store.HEADER_KEY: raw_meta if raw_meta is not None else json.dumps(meta)}
    blob = json.dumps(header).encode()
    return len(blob).to_bytes(8, "little") + blob + payload


# ---------------------------------------------------------------------------------------------------------------------
# the reader of one conversation file


def check_file(original: Original, data: bytes) -> None:
    path = original.scratch / "c0.safetensors"
    path.write_bytes(data)
    for validate in (False, True):
        try:
            conv = store.read_conversation(path, validate=validate)
        except CorpusError as e:
            message = str(e)
            assert message.startswith(str(path)) and "\n" not in message, message  # names the file, one line
            continue
        # structure is always right
        for name, arr in conv.arrays().items():
            assert arr.dtype == store.TENSOR_DTYPES[name]
            assert tuple(arr.shape) == store.expected_shapes(conv.n_frames)[name]
        if validate and store.CHECKSUM_KEY in conv.meta:  # the content is the original, exactly
            for name, arr in original.arrays.items():
                assert np.array_equal(getattr(conv, name), arr), name
            assert conv.meta == original.meta
        elif validate:  # the edit erased the checksum's key: read as an older file, the values must be valid
            assert_genuinely_valid(conv)
        del conv  # the memory map goes before the file is rewritten


def assert_genuinely_valid(conv: Conversation) -> None:
    """An oracle written apart from the store's value scan: the ranges of docs/design.md."""
    codes, text, va = (np.asarray(a, np.float64) for a in (conv.codes, conv.text, conv.va))
    face, present = np.asarray(conv.face, np.float64), np.asarray(conv.face_present)
    assert ((codes >= 0) & (codes <= 2047)).all() and (text >= -1).all() and ((va >= 0) & (va <= 1)).all()
    assert set(np.unique(present).tolist()) <= {0, 1} and np.isfinite(face).all()
    assert ((face[..., :52] >= -1e-3) & (face[..., :52] <= 1 + 1e-3)).all()
    assert (np.abs(face[..., [CHANNEL_INDEX[c] for c in HEAD_ROTATION]]) <= np.pi + 1e-3).all()
    assert (np.abs(face[..., [CHANNEL_INDEX[c] for c in HEAD_TRANSLATION]]) <= 500 + 1e-3).all()
    norm = np.linalg.norm(face[..., [CHANNEL_INDEX[c] for c in GAZE]], axis=-1)
    assert ((np.abs(norm - 1) <= 1e-2) | ((norm == 0) & (present == 0))).all()


def _check_bytes(original: Original, edits) -> None:
    check_file(original, apply_byte_edits(original.file_bytes, edits))


def _check_header(original: Original, edits) -> None:
    check_file(original, apply_header_edits(original.file_bytes, edits))


def test_unedited_file_reads_back(original):
    check_file(original, original.file_bytes)
    check_file(original, apply_header_edits(original.file_bytes, []))  # re-encoded header, same content


@FAST
@given(edits=st.data())
def test_byte_edits_of_a_conversation_file(original, edits):
    size, start = len(original.file_bytes), original.data_start
    _check_bytes(original, edits.draw(byte_edits(size, aim=(start, size - 1))))


@FAST
@given(edits=HEADER_EDITS)
def test_header_edits_of_a_conversation_file(original, edits):
    _check_header(original, edits)


@pytest.mark.slow
@THOROUGH
@given(edits=st.data())
def test_byte_edits_of_a_conversation_file_thorough(original, edits):
    size, start = len(original.file_bytes), original.data_start
    _check_bytes(original, edits.draw(byte_edits(size, aim=(start, size - 1))))


@pytest.mark.slow
@THOROUGH
@given(edits=HEADER_EDITS)
def test_header_edits_of_a_conversation_file_thorough(original, edits):
    _check_header(original, edits)


# ---------------------------------------------------------------------------------------------------------------------
# the manifest reader


FIELDS = [f.name for f in dataclasses.fields(ManifestEntry)] + ["extra"]
SPLITS = ["train", "val", "test", "", "tset", "dev"]
MANIFEST_EDIT = st.one_of(
    st.tuples(st.just("bytes"), byte_edits(1000)),
    st.tuples(st.just("drop_line"), st.integers(0, 2)),
    st.tuples(st.just("duplicate_line"), st.integers(0, 2)),
    st.tuples(st.just("swap_lines"), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("field"), st.integers(0, 2), st.sampled_from(FIELDS), JSON_VALUES),
    st.tuples(st.just("split"), st.integers(0, 2), st.sampled_from(SPLITS)),
    st.tuples(st.just("blank_lines"), st.integers(0, 3)),
)
MANIFEST_EDITS = st.lists(MANIFEST_EDIT, min_size=1, max_size=3)


def apply_manifest_edits(manifest: bytes, edits) -> bytes:
    lines = manifest.split(b"\n")[:-1]
    for op, *args in edits:
        if op == "bytes":
            lines = apply_byte_edits(b"\n".join(lines) + b"\n", args[0]).split(b"\n")
        elif not lines:
            break
        elif op == "drop_line":
            del lines[args[0] % len(lines)]
        elif op == "duplicate_line":
            lines.append(lines[args[0] % len(lines)])
        elif op == "swap_lines":
            i, j = args[0] % len(lines), args[1] % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        elif op in ("field", "split"):
            i = args[0] % len(lines)
            try:
                entry = json.loads(lines[i])
            except ValueError:
                continue
            if isinstance(entry, dict):
                entry[args[1] if op == "field" else "split"] = args[-1]
                lines[i] = json.dumps(entry).encode()
        elif op == "blank_lines":
            lines[args[0] % len(lines) : args[0] % len(lines)] = [b"", b"  "]
    return b"\n".join(lines) + b"\n"


def check_manifest(original: Original, data: bytes) -> None:
    manifest = original.root / store.MANIFEST
    manifest.write_bytes(data)
    try:
        corpus = Corpus(original.root)
    except CorpusError as e:
        message = str(e)
        assert message.startswith(f"{original.root}") and "\n" not in message, message
        return
    # nothing lost: every conversation is listed, once
    assert sorted(corpus.ids()) == sorted(original.entries)
    for entry in corpus.entries:
        want = original.entries[entry.id]
        try:
            conv = corpus.load(entry.id)
        except CorpusError as e:
            assert str(e).startswith(str(original.root / want.file)) and "\n" not in str(e), str(e)
            continue
        assert entry.split in store.SPLIT_NAMES
        assert dataclasses.replace(entry, split=want.split) == want  # every other field is the original
        for name, arr in original.all_arrays[entry.id].items():
            assert np.array_equal(getattr(conv, name), arr), name
        del conv


def _check_manifest_edits(original, edits) -> None:
    try:
        check_manifest(original, apply_manifest_edits(original.manifest, edits))
    finally:
        (original.root / store.MANIFEST).write_bytes(original.manifest)


@FAST
@given(edits=MANIFEST_EDITS)
def test_edits_of_the_manifest(original, edits):
    _check_manifest_edits(original, edits)


@pytest.mark.slow
@THOROUGH
@given(edits=MANIFEST_EDITS)
def test_edits_of_the_manifest_thorough(original, edits):
    _check_manifest_edits(original, edits)


def test_unedited_manifest_reads_back(original):
    check_manifest(original, original.manifest)
    assert Corpus(original.root).validate_all(progress=False) == []
