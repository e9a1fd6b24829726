import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from faces import valid_face

from faceturn import store
from faceturn.schema import (
    CHANNEL_INDEX,
    FACE_CHANNELS,
    FACE_GROUPS,
    GAZE,
)
from faceturn.store import Conversation, Corpus, CorpusError, CorpusWriter, ManifestEntry
from faceturn.timebase import n_frames_for, voiced_fraction

REPO = Path(__file__).resolve().parents[1]


def make_conv(conv_id: str, n_frames: int = 40, seed: int = 0) -> Conversation:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2048, (2, 8, n_frames)).astype(np.int16)
    text = rng.integers(-1, 100, (2, n_frames)).astype(np.int32)
    va = rng.random((2, n_frames)).astype(np.float16)
    face, present = valid_face(rng, n_frames)
    return Conversation(conv_id, codes, text, va, face, present, meta={"note": f"seed {seed}"})


def make_entry(conv: Conversation, participants=("p0", "p1"), group="", split="") -> ManifestEntry:
    return ManifestEntry(
        id=conv.id,
        file=f"{conv.id}.safetensors",
        split=split,
        n_frames=conv.n_frames,
        corpus="toy",
        framing="tight",
        participants=list(participants),
        group=group,
        source={"video": f"{conv.id}.mp4"},
    )


def build(root: Path, n: int = 4, n_frames: int = 40) -> list[ManifestEntry]:
    w = CorpusWriter(root, corpus="toy", framing="tight", extraction={"face": "synthetic"})
    for i in range(n):
        conv = make_conv(f"c{i}", n_frames, seed=i)
        w.write(conv, make_entry(conv, participants=(f"p{i}", f"q{i}")))
    return w.finalize()


def files_of(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def rewrite(path: Path, **changes) -> None:
    """Rewrite a corpus file with some tensors or metadata replaced (crafts bad files the writer would refuse), with a
    matching content checksum, as a faulty producer would write them: the value checks must catch what it let by."""
    from safetensors import safe_open
    from safetensors.numpy import save

    with safe_open(path, "numpy") as f:
        meta = json.loads(f.metadata()[store.HEADER_KEY])
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    for k, v in changes.items():
        (arrays if k in arrays else meta)[k] = v
    if store.CHECKSUM_KEY in meta and set(arrays) == set(store.TENSOR_DTYPES):
        meta[store.CHECKSUM_KEY] = store.content_checksum(meta, arrays)
    path.write_bytes(save(arrays, metadata={store.HEADER_KEY: json.dumps(meta)}))


# ---------------------------------------------------------------------------------------------------------------------
# round trip, determinism, atomicity


def test_round_trip_is_lazy_and_exact(tmp_path):
    entries = build(tmp_path, n=3)
    assert [e.id for e in entries] == ["c0", "c1", "c2"]
    corpus = Corpus(tmp_path)
    assert corpus.ids() == ["c0", "c1", "c2"] and len(corpus) == 3
    assert sorted(corpus.ids("train") + corpus.ids("val") + corpus.ids("test")) == corpus.ids()
    for i, cid in enumerate(corpus.ids()):
        want = make_conv(cid, 40, seed=i)
        got = corpus.load(cid)
        for name, arr in want.arrays().items():
            loaded = getattr(got, name)
            assert loaded.dtype == arr.dtype and np.array_equal(loaded, arr, equal_nan=True), name
            assert isinstance(loaded.base, np.memmap) and not loaded.flags.writeable  # memory-mapped, read-only
        assert got.n_frames == 40 and got.id == cid
        assert got.meta["note"] == f"seed {i}" and got.meta["extraction"] == {"face": "synthetic"}
        assert got.meta["face_channels"] == list(FACE_CHANNELS) and got.meta["frame_rate"] == 12.5
        assert got.meta["entry"]["participants"] == [f"p{i}", f"q{i}"]
        # plain safetensors readers see the same tensors
        from safetensors.numpy import load_file

        ref = load_file(tmp_path / f"{cid}.safetensors")
        assert all(np.array_equal(ref[k], want.arrays()[k]) for k in ref)
    manifest = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [ManifestEntry.from_json(m) for m in manifest] == corpus.entries
    assert corpus.validate_all(progress=False) == []


def test_rewrite_is_idempotent_and_deterministic(tmp_path):
    build(tmp_path / "a")
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()}
    before = files_of(tmp_path / "a")
    build(tmp_path / "a")  # re-run: same bytes, nothing rewritten (manifest included)
    assert files_of(tmp_path / "a") == before
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()} == mtimes
    build(tmp_path / "b")  # another folder, same input: byte-identical files
    assert files_of(tmp_path / "b") == before
    w = CorpusWriter(tmp_path / "a", corpus="toy")
    assert w.done("c0") and not w.done("c9")


def test_exception_inside_atomic_write_leaves_nothing_then_resumes(tmp_path, monkeypatch):
    build(tmp_path / "ref")
    calls = {"n": 0}
    real_replace = os.replace

    def failing_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk pulled")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk pulled"):
        build(tmp_path / "run")
    monkeypatch.setattr(os, "replace", real_replace)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["c0.safetensors", "c1.safetensors"]
    build(tmp_path / "run")
    assert files_of(tmp_path / "run") == files_of(tmp_path / "ref")


def test_killed_writer_resumes_to_identical_files(tmp_path):
    """SIGKILL the writer while the 3rd file sits fully written under its temporary name, then re-run."""
    build(tmp_path / "ref", n=5)
    child = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path[:0] = [{str(REPO)!r}, {str(Path(__file__).parent)!r}]
        import test_store
        calls = 0
        real_fsync = os.fsync
        def fsync(fd):
            global calls
            calls += 1
            real_fsync(fd)
            if calls == 3:
                print("blocked", flush=True)
                time.sleep(60)
        os.fsync = fsync
        test_store.build(test_store.Path({str(tmp_path / "run")!r}), n=5)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "blocked"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    tmp, done = sorted(p.name for p in (tmp_path / "run").iterdir())[0], sorted((tmp_path / "run").glob("c*"))
    assert [p.name for p in done] == ["c0.safetensors", "c1.safetensors"]
    assert tmp.startswith(".c2.safetensors.") and tmp.endswith(".tmp")  # c2 exists only as a temporary file
    assert not CorpusWriter(tmp_path / "run", corpus="toy").done("c2")
    build(tmp_path / "run", n=5)  # resume: skips nothing it should not, cleans the temporary file
    assert files_of(tmp_path / "run") == files_of(tmp_path / "ref")


def test_finalize_removes_only_stale_temporary_files(tmp_path):
    build(tmp_path, n=1)
    old, fresh = tmp_path / ".c7.safetensors.abc.tmp", tmp_path / ".c8.safetensors.def.tmp"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"being written")
    os.utime(old, (0, 0))
    CorpusWriter(tmp_path, corpus="toy").finalize()
    assert not old.exists() and fresh.exists()  # a fresh one may belong to a concurrent writer
    assert Corpus(tmp_path).ids() == ["c0"]


# ---------------------------------------------------------------------------------------------------------------------
# bad input: every problem names the file


def assert_fails(root: Path, file_name: str, pattern: str, capsys) -> None:
    """Reader, validator and `faceturn inspect` all name the file and the problem."""
    from faceturn.cli import main

    path = str(root / file_name)
    with pytest.raises(CorpusError, match=pattern) as err:
        Corpus(root).load(file_name.removesuffix(".safetensors"))
    assert str(err.value).startswith(path)
    problems = Corpus(root, validate=False).validate_all(progress=False)
    assert len(problems) == 1 and problems[0].startswith(path)
    assert main(["inspect", str(root)]) == 1
    out = capsys.readouterr()
    assert path in out.err and any(line.startswith(path) for line in out.err.splitlines())
    assert __import__("re").search(pattern, out.err)


def test_truncated_file(tmp_path, capsys):
    build(tmp_path)
    path = tmp_path / "c1.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    assert_fails(tmp_path, "c1.safetensors", r"truncated: tensors need \d+ bytes, the file has \d+", capsys)
    path.write_bytes(data[:5])
    assert_fails(tmp_path, "c1.safetensors", "truncated: 5 bytes", capsys)
    path.write_bytes(data[:200])
    assert_fails(tmp_path, "c1.safetensors", "truncated or not safetensors: header length", capsys)


def test_wrong_shape(tmp_path, capsys):
    build(tmp_path)
    rewrite(tmp_path / "c2.safetensors", face=np.zeros((2, 40, 60), np.float16))
    assert_fails(tmp_path, "c2.safetensors", r"tensor 'face' has shape \(2, 40, 60\), expected \(2, 40, 61\)", capsys)
    rewrite(tmp_path / "c2.safetensors", face=np.zeros((2, 40, 61), np.float16), codes=np.zeros((2, 7, 40), np.int16))
    assert_fails(tmp_path, "c2.safetensors", r"tensor 'codes' has shape \(2, 7, 40\), expected \(2, 8, 40\)", capsys)


def test_wrong_dtype(tmp_path, capsys):
    build(tmp_path)
    rewrite(tmp_path / "c0.safetensors", va=np.zeros((2, 40), np.float32))
    assert_fails(tmp_path, "c0.safetensors", "tensor 'va' has dtype float32, expected float16", capsys)


def test_nan_in_face(tmp_path, capsys):
    build(tmp_path)
    face = np.zeros((2, 40, 61), np.float16)
    face[1, 7, 3] = np.nan
    rewrite(tmp_path / "c3.safetensors", face=face)
    assert_fails(tmp_path, "c3.safetensors", r"1 non-finite face values .*\(1, 7, 3\).*'eyeLookOutLeft'", capsys)


def test_unknown_channel_names(tmp_path, capsys):
    build(tmp_path)
    names = list(FACE_CHANNELS)
    names[3] = "eyeLookSideways"
    rewrite(tmp_path / "c1.safetensors", face_channels=names)
    assert_fails(tmp_path, "c1.safetensors", r"unknown channel names \['eyeLookSideways'\]", capsys)


def test_wrong_schema_version_and_missing_tensor(tmp_path, capsys):
    build(tmp_path)
    rewrite(tmp_path / "c1.safetensors", schema_version=99)
    assert_fails(tmp_path, "c1.safetensors", "schema version 99, this faceturn reads version 1", capsys)
    from safetensors.numpy import save

    conv = store.read_conversation(tmp_path / "c2.safetensors")
    arrays = {k: np.array(v) for k, v in conv.arrays().items() if k != "text"}
    (tmp_path / "c2.safetensors").write_bytes(save(arrays, metadata={store.HEADER_KEY: json.dumps(conv.meta)}))
    problems = Corpus(tmp_path, validate=False).validate_all(progress=False)
    assert any(p.startswith(str(tmp_path / "c2.safetensors")) and "missing tensors ['text']" in p for p in problems)


def test_manifest_line_points_at_missing_file(tmp_path, capsys):
    from faceturn.cli import main

    build(tmp_path)
    (tmp_path / "c1.safetensors").unlink()
    manifest = tmp_path / "manifest.jsonl"
    pattern = rf"{manifest}:2: file 'c1.safetensors' of conversation 'c1' is missing"
    with pytest.raises(CorpusError, match=pattern):
        Corpus(tmp_path)
    assert Corpus(tmp_path, validate=False).ids() == ["c0", "c2", "c3"]
    assert main(["inspect", str(tmp_path)]) == 1
    assert __import__("re").search(pattern, capsys.readouterr().err)


def test_duplicate_conversation_id(tmp_path, capsys):
    from faceturn.cli import main

    build(tmp_path)
    manifest = tmp_path / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([*lines, lines[0]]) + "\n")
    pattern = rf"{manifest}:5: duplicate conversation id 'c0' \(first on line 1\)"
    with pytest.raises(CorpusError, match=pattern):
        Corpus(tmp_path)
    assert main(["inspect", str(tmp_path)]) == 1
    assert __import__("re").search(pattern, capsys.readouterr().err)


def test_header_id_must_match_manifest(tmp_path):
    build(tmp_path)
    (tmp_path / "c1.safetensors").write_bytes((tmp_path / "c2.safetensors").read_bytes())
    with pytest.raises(CorpusError, match=r"c1\.safetensors: header entry \(id 'c2'"):
        Corpus(tmp_path).load("c1")


def test_bad_manifest_fields_are_named(tmp_path):
    build(tmp_path)
    manifest = tmp_path / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    bad = json.loads(lines[1]) | {"n_frames": "forty"}
    manifest.write_text("\n".join([lines[0], json.dumps(bad), "{not json", *lines[2:]]) + "\n")
    problems = Corpus(tmp_path, validate=False).manifest_problems
    assert problems[0].startswith(f"{manifest}:2: manifest field 'n_frames' is 'forty', expected int")
    assert problems[1].startswith(f"{manifest}:3: not valid JSON")


def test_missing_audio_is_reported_and_no_validate_skips_only_the_value_scan(tmp_path, capsys):
    from faceturn.cli import main

    w = CorpusWriter(tmp_path, corpus="toy")
    conv = make_conv("c0")
    w.write(conv, ManifestEntry(**{**make_entry(conv).to_json(), "framing": "", "audio": "audio/c0.wav"}))
    w.finalize()
    problems = Corpus(tmp_path).validate_all(progress=False)
    wav, manifest = tmp_path / "audio/c0.wav", tmp_path / "manifest.jsonl"
    assert problems == [f"{wav}: audio of conversation 'c0' not found ({manifest})"]
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio/c0.wav").write_bytes(b"RIFF")
    assert Corpus(tmp_path).validate_all(progress=False) == []
    face = np.array(conv.face)
    face[0, 0, 0] = np.nan
    rewrite(tmp_path / "c0.safetensors", face=face)
    assert main(["inspect", str(tmp_path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False and "non-finite face values" in report["problems"][0]
    assert main(["inspect", str(tmp_path), "--no-validate"]) == 0  # structure is fine; values are not scanned
    capsys.readouterr()
    rewrite(tmp_path / "c0.safetensors", va=np.zeros((2, 40), np.float32))
    assert main(["inspect", str(tmp_path), "--no-validate"]) == 1  # structure is always checked
    assert "tensor 'va' has dtype float32" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("codes", 2048, r"1 codes outside \[0, 2047\]"),
        ("codes", -3, r"1 codes outside \[0, 2047\]"),
        ("va", 1.5, r"1 va values outside \[0, 1\]"),
        ("va", np.nan, r"1 va values outside \[0, 1\]"),
        ("face", np.inf, "tensor 'face': 1 non-finite face values"),
        ("face_present", 2, "face_present values other than 0/1"),
        ("text", -2, "text tokens below -1"),
    ],
)
def test_writer_refuses_bad_values_and_writes_nothing(tmp_path, field, value, pattern):
    conv = make_conv("bad")
    arr = np.array(getattr(conv, field))
    arr.reshape(-1)[5] = value
    setattr(conv, field, arr)
    with pytest.raises(CorpusError, match=rf"bad\.safetensors: {pattern}"):
        CorpusWriter(tmp_path, corpus="toy").write(conv, make_entry(conv))
    assert list(tmp_path.iterdir()) == []


def test_writer_checks_entry_against_conversation(tmp_path):
    conv = make_conv("c0")
    w = CorpusWriter(tmp_path, corpus="toy")
    with pytest.raises(CorpusError, match=r"n_frames=39 \(expected 40\)"):
        w.write(conv, ManifestEntry(**{**make_entry(conv).to_json(), "n_frames": 39}))
    with pytest.raises(ValueError, match="not a safe file name"):
        w.write(make_conv("../evil"), make_entry(make_conv("../evil")))


# face value ranges (faceturn.schema's bounds), content checksum, garbage manifests, manifest vs headers


def _set_face(conv: Conversation, participant: int, frame: int, channels: list[str], values) -> np.ndarray:
    face = np.array(conv.face)
    face[participant, frame, [CHANNEL_INDEX[c] for c in channels]] = values
    return face


@pytest.mark.parametrize(
    ("channels", "values", "pattern"),
    [
        (
            ["jawOpen"],
            60000,
            r"1 blendshape values outside \[0, 1\] \(first at \[participant, frame\] \[1, 7\], "
            r"channel 'jawOpen': 60000\)",
        ),
        (["eyeBlinkLeft"], -0.25, r"1 blendshape values outside \[0, 1\] .*\[1, 7\], channel 'eyeBlinkLeft': -0\.25"),
        (["head_yaw"], 4.0, r"1 head rotation values outside \[-pi, pi\] rad .*\[1, 7\], channel 'head_yaw': 4"),
        (["head_tz"], -900.0, r"1 head translation values beyond \+-500 cm .*\[1, 7\], channel 'head_tz': -900"),
        (GAZE, [0.5, 0.0, 0.5], r"1 gaze vectors not of unit length .*\[1, 7\].*'gaze_z': norm 0\.70"),
        (GAZE, [0.0, 0.0, 0.0], r"1 gaze vectors not of unit length .*\[1, 7\].*norm 0, where the face is present"),
    ],
)
def test_face_values_out_of_range_are_named(tmp_path, capsys, channels, values, pattern):
    build(tmp_path)
    conv = store.read_conversation(tmp_path / "c2.safetensors")
    assert conv.face_present[1, 7] == 1
    rewrite(tmp_path / "c2.safetensors", face=_set_face(conv, 1, 7, channels, values))
    assert_fails(tmp_path, "c2.safetensors", rf"tensor 'face': {pattern}", capsys)
    bad = make_conv("bad", seed=2)
    bad.face = _set_face(bad, 1, 7, channels, values)
    with pytest.raises(CorpusError, match=rf"bad\.safetensors: tensor 'face': {pattern}"):
        CorpusWriter(tmp_path / "w", corpus="toy").write(bad, make_entry(bad))


def test_face_values_within_tolerance_and_absent_faces_pass(tmp_path):
    conv = make_conv("ok")
    face = np.array(conv.face)
    face[0, 3, CHANNEL_INDEX["jawOpen"]] = 1.0005  # float16 rounding above 1 stays within the tolerance
    face[0, 4, CHANNEL_INDEX["head_roll"]] = -np.pi
    face[0, 5, CHANNEL_INDEX["head_tx"]] = 499.0
    conv.face, conv.face_present = face, np.array(conv.face_present)
    conv.face_present[1, 9] = 0
    conv.face[1, 9] = 0  # an absent face is all zeros, gaze included
    CorpusWriter(tmp_path, corpus="toy").write(conv, make_entry(conv))
    assert store.read_conversation(tmp_path / "ok.safetensors").face_present[1, 9] == 0


def test_payload_corruption_is_caught_by_the_checksum(tmp_path):
    """A flipped bit that turns one valid value into another is still caught (validate=True); files written before
    checksums (no 'checksum' in the header) are read with the value scan only."""
    from safetensors.numpy import save

    build(tmp_path)
    path = tmp_path / "c1.safetensors"
    conv = store.read_conversation(path)
    assert conv.meta[store.CHECKSUM_KEY] == store.content_checksum(conv.meta, conv.arrays())
    arrays = {k: np.array(v) for k, v in conv.arrays().items()}  # copies: the file is rewritten below
    meta = dict(conv.meta)
    del conv
    data = bytearray(path.read_bytes())
    offset = 8 + int.from_bytes(data[:8], "little")
    start = offset + json.loads(data[8:offset])["va"]["data_offsets"][0]
    data[start] ^= 0x01  # the lowest mantissa bit of va[0, 0]: still a valid fraction in [0, 1]
    path.write_bytes(bytes(data))
    with pytest.raises(CorpusError, match=rf"{path}: content checksum mismatch"):
        Corpus(tmp_path).load("c1")
    assert Corpus(tmp_path).load("c1", validate=False).va[0, 0] != arrays["va"][0, 0]  # structure only: unverified
    # an older file without a checksum: values are scanned, nothing else is asked of it
    del meta[store.CHECKSUM_KEY]
    path.write_bytes(save(arrays, metadata={store.HEADER_KEY: json.dumps(meta)}))
    old = Corpus(tmp_path).load("c1")
    assert store.CHECKSUM_KEY not in old.meta and np.array_equal(old.va, arrays["va"])


def test_header_metadata_edit_is_caught_by_the_checksum(tmp_path):
    build(tmp_path)
    path = tmp_path / "c0.safetensors"
    data = path.read_bytes()
    assert data.count(b"seed 0") == 1
    path.write_bytes(data.replace(b"seed 0", b"seed 9"))  # same length: the layout still fits
    with pytest.raises(CorpusError, match="content checksum mismatch"):
        store.read_conversation(path)


def test_binary_manifest_names_the_manifest(tmp_path, capsys):
    from faceturn.cli import main

    build(tmp_path)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(CorpusError) as err:
        Corpus(tmp_path)
    assert str(err.value).startswith(f"{manifest}:1: ") and "\n" not in str(err.value)
    problems = Corpus(tmp_path, validate=False).manifest_problems
    assert problems and all(p.startswith(str(tmp_path)) for p in problems)
    assert main(["probe", "--corpus", str(tmp_path), "--out", str(tmp_path.parent / f"{tmp_path.name}-probe")]) == 2
    assert capsys.readouterr().err.startswith(f"faceturn probe: error: {manifest}:1: ")
    manifest.write_text("[" * 100_000 + "\n" + "1" * 5000 + "\n")  # nesting too deep, an integer too long
    problems = Corpus(tmp_path, validate=False).manifest_problems
    assert problems[0].startswith(f"{manifest}:1: not valid JSON") and problems[1].startswith(f"{manifest}:2: ")


def test_manifest_must_agree_with_the_headers_and_list_every_file(tmp_path):
    build(tmp_path)
    manifest = tmp_path / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    edited = json.loads(lines[1]) | {"participants": ["p1", "someone"]}
    manifest.write_text("\n".join([lines[0], json.dumps(edited), *lines[2:]]) + "\n")
    corpus = Corpus(tmp_path)  # the manifest alone looks fine
    with pytest.raises(CorpusError, match=r"c1\.safetensors: the manifest entry differs from the file's header: "
                                          r"participants \['p1', 'someone'\] \(header: \['p1', 'q1'\]\)"):  # fmt: skip
        corpus.load("c1")
    manifest.write_text("\n".join([lines[0], *lines[2:]]) + "\n")  # a conversation dropped from the manifest
    with pytest.raises(CorpusError, match=rf"{tmp_path / 'c1.safetensors'}: conversation file not listed in "):
        Corpus(tmp_path)
    assert Corpus(tmp_path, validate=False).ids() == ["c0", "c2", "c3"]


# ---------------------------------------------------------------------------------------------------------------------
# splits


def entry(conv_id: str, participants, group="", n_frames=100, split="") -> ManifestEntry:
    return ManifestEntry(conv_id, f"{conv_id}.safetensors", split, n_frames, "toy", "", list(participants), group, "")


def test_splits_are_disjoint_by_conversation_and_participant():
    rng = np.random.default_rng(3)
    people = [f"p{i}" for i in range(60)]
    entries = [entry(f"c{i:03d}", rng.choice(people, 2, replace=False)) for i in range(80)]
    entries += [entry(f"s{i}", ("", ""), group="session-7") for i in range(3)]  # unknown ids, one session
    splits = store.assign_splits(entries, seed=1)
    assert set(splits) == {e.id for e in entries}
    assigned = [ManifestEntry(**{**e.to_json(), "split": splits[e.id]}) for e in entries]
    assert store.split_leaks(assigned) == []
    by_person: dict[str, set[str]] = {}
    for e in assigned:
        for p in e.participants:
            by_person.setdefault(p, set()).add(e.split)
    by_person.pop("")
    assert all(len(s) == 1 for s in by_person.values())
    assert len({splits[f"s{i}"] for i in range(3)}) == 1
    assert store.assign_splits(entries, seed=1) == splits  # deterministic


def test_split_fractions_and_pinned_splits():
    entries = [entry(f"c{i}", (f"a{i}", f"b{i}")) for i in range(3000)]
    counts = {}
    for s in store.assign_splits(entries).values():
        counts[s] = counts.get(s, 0) + 1
    assert set(counts) == {"train", "val", "test"}
    for s, share in store.DEFAULT_SPLITS.items():  # expected shares of components (binomial, 4 SD)
        assert abs(counts[s] / 3000 - share) < 4 * np.sqrt(share * (1 - share) / 3000), (s, counts)
    # an official split is kept, and a conversation sharing its participant follows it
    pinned = [entry("x", ("a", "b"), split="test"), entry("y", ("b", "c")), *entries[:20]]
    got = store.assign_splits(pinned)
    assert got["x"] == got["y"] == "test"
    with pytest.raises(ValueError, match="split fractions"):
        store.assign_splits(entries, {"train": -1.0})
    with pytest.raises(ValueError, match=r"split names \['dev'\] are not faceturn's splits"):
        store.assign_splits(entries, {"train": 0.9, "dev": 0.1})


def test_small_corpora_get_train_then_val_then_test():
    """However few components there are, train, then val, then test get one each (as many as there are)."""
    for seed in range(20):
        for n in (1, 2, 3, 4, 7):
            entries = [entry(f"c{seed}-{i}", (f"a{seed}-{i}", f"b{seed}-{i}")) for i in range(n)]
            got = sorted(set(store.assign_splits(entries, seed=seed).values()))
            assert got == sorted(["train", "val", "test"][: min(n, 3)]), (seed, n, got)
    # with train and test only, two components give one each
    two = [entry("c0", ("a", "b")), entry("c1", ("c", "d"))]
    assert sorted(store.assign_splits(two, {"train": 0.9, "test": 0.1}).values()) == ["test", "train"]


def test_splits_stay_put_when_the_corpus_grows():
    """A conversation's split is a function of its component's key and the seed: growing the corpus (more
    conversations, more sessions, another order) never moves one, unlike the old balancing by load."""
    rng = np.random.default_rng(5)
    entries = [
        entry(f"c{i:04d}", (f"a{i}", f"b{i}"), group=f"session{i // 3}", n_frames=int(rng.integers(50, 5000)))
        for i in range(900)
    ]
    entries += [entry(f"solo{i}", ("", "")) for i in range(40)]  # no participant ids: a component each
    whole = store.assign_splits(entries, seed=2)
    for n in (300, 600):  # the corpus before it grew (the last session of the prefix is still incomplete)
        part = store.assign_splits(entries[:n] + entries[900:920], seed=2)
        moved = {k: (v, whole[k]) for k, v in part.items() if whole[k] != v}
        assert moved == {}
    shuffled = [entries[i] for i in rng.permutation(len(entries))]
    assert store.assign_splits(shuffled, seed=2) == whole
    assert store.assign_splits(entries, seed=3) != whole  # the seed does matter
    assigned = [ManifestEntry(**{**e.to_json(), "split": whole[e.id]}) for e in entries]
    assert store.split_leaks(assigned) == []


def test_finalize_keeps_splits_given_at_write_time(tmp_path):
    w = CorpusWriter(tmp_path, corpus="toy")
    for i, split in enumerate(["val", "val", "test"]):
        conv = make_conv(f"c{i}", seed=i)
        w.write(conv, ManifestEntry(**{**make_entry(conv).to_json(), "framing": "", "split": split}))
    assert [e.split for e in w.finalize()] == ["val", "val", "test"]
    assert Corpus(tmp_path).ids("val") == ["c0", "c1"]
    conv = make_conv("c3", seed=3)
    with pytest.raises(CorpusError, match=r"c3\.safetensors: manifest field 'split' is 'dev', expected one of train"):
        w.write(conv, ManifestEntry(**{**make_entry(conv).to_json(), "framing": "", "split": "dev"}))


def test_manifest_split_names_are_checked(tmp_path, capsys):
    """A misspelt split is an error naming the manifest line, not a conversation silently left out of every split."""
    from faceturn.cli import main

    build(tmp_path)
    manifest = tmp_path / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    lines[2] = json.dumps(json.loads(lines[2]) | {"split": "tset"})
    manifest.write_text("\n".join(lines) + "\n")
    pattern = rf"{manifest}:3: manifest field 'split' is 'tset', expected one of train, val, test"
    with pytest.raises(CorpusError, match=pattern):
        Corpus(tmp_path)
    assert main(["inspect", str(tmp_path)]) == 1
    assert __import__("re").search(pattern, capsys.readouterr().err)
    assert main(["probe", "--corpus", str(tmp_path), "--out", str(tmp_path.parent / f"{tmp_path.name}-probe")]) == 2
    assert f"faceturn probe: error: {manifest}:3: manifest field 'split'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# faceturn inspect


def test_inspect_valid_corpus_text_and_json(tmp_path, capsys):
    from faceturn.cli import main

    build(tmp_path, n=3, n_frames=750)
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "conversations: 3" in out and "hours: 0.050" in out
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["conversations"] == 3 and stats["problems"] == []
    assert sum(s["conversations"] for s in stats["splits"].values()) == 3


def test_inspect_missing_folder(tmp_path, capsys):
    from faceturn.cli import main

    assert main(["inspect", str(tmp_path / "nope")]) == 2
    assert f"faceturn inspect: error: {tmp_path / 'nope'}: corpus folder not found" in capsys.readouterr().err


# speaker 0 and 1 speech (s): a gap of 0.22 s, an overlap of 0.10 s, a backchannel by 1 inside 0's turn, a gap of 0.40 s
PLANTED_S = ([(0.5, 3.03), (6.0, 9.0)], [(3.25, 6.1), (7.0, 7.4), (9.4, 12.0)])
PLANTED_OFFSETS_S = [0.22, -0.10, 0.40]


def planted_conv(conv_id: str, swap: bool, seed: int) -> Conversation:
    n_frames = n_frames_for(13.0)
    conv = make_conv(conv_id, n_frames, seed)
    va = np.stack([voiced_fraction(iv, n_frames) for iv in PLANTED_S])
    conv.va = (va[::-1] if swap else va).astype(np.float16)
    return conv


def test_floor_transfer_offsets_have_sub_frame_precision():
    from faceturn.eval.corpus import floor_transfer_offsets_s
    from faceturn.labels import EventConfig, turn_labels

    va = planted_conv("x", False, 0).va.astype(np.float32)
    labels = turn_labels(va, EventConfig())
    assert np.asarray(labels.shift_to).tolist() == [1, 0, 1]
    np.testing.assert_allclose(floor_transfer_offsets_s(va, labels), PLANTED_OFFSETS_S, atol=1e-4)


def test_corpus_statistics_recover_planted_values(tmp_path):
    from faceturn.eval.corpus import corpus_statistics

    w = CorpusWriter(tmp_path, corpus="toy")
    convs = [planted_conv("a", False, 1), planted_conv("b", True, 2)]
    for i, conv in enumerate(convs):
        conv.face_present[i, :50] = 0
        entry = make_entry(conv, participants=(f"{conv.id}0", f"{conv.id}1"))  # no shared people: two splits
        w.write(conv, ManifestEntry(**{**entry.to_json(), "framing": ""}))
    w.finalize({"train": 0.5, "test": 0.5})
    stats = corpus_statistics(Corpus(tmp_path), validate=True)
    n_frames = 2 * convs[0].n_frames
    minutes = n_frames * 0.08 / 60
    assert stats["problems"] == [] and stats["conversations"] == 2
    assert stats["splits"] == {s: {"conversations": 1, "hours": n_frames / 2 * 0.08 / 3600} for s in ("test", "train")}
    active = np.concatenate([c.va.astype(np.float32) >= 0.5 for c in convs], axis=1)
    assert stats["speech_fraction"] == pytest.approx(active.any(0).mean())
    assert stats["overlap_fraction"] == pytest.approx(active.all(0).mean())
    assert stats["silence_fraction"] == pytest.approx(1 - active.any(0).mean())
    assert stats["handovers"] == 6 and stats["handovers_per_minute"] == pytest.approx(6 / minutes)
    assert stats["median_floor_transfer_offset_s"] == pytest.approx(0.22, abs=1e-4)
    assert stats["median_gap_s"] == pytest.approx(0.31, abs=1e-4) and stats["gaps"] == 4
    assert stats["median_overlap_s"] == pytest.approx(-0.10, abs=1e-4) and stats["overlaps"] == 2
    assert stats["backchannels"] == 2 and stats["backchannels_per_minute"] == pytest.approx(2 / minutes)
    present = np.concatenate([c.face_present for c in convs], axis=1) == 1
    assert stats["face_present_rate"] == pytest.approx(present.mean())
    faces = np.concatenate([c.face.astype(np.float64)[c.face_present == 1] for c in convs])
    for group, channels in stats["face_channels"].items():
        assert list(channels) == [FACE_CHANNELS[i] for i in FACE_GROUPS[group]]
        for i in FACE_GROUPS[group]:
            got = channels[FACE_CHANNELS[i]]
            ref = faces[:, i]
            assert got["mean"] == pytest.approx(ref.mean()) and got["std"] == pytest.approx(ref.std())
            assert (got["min"], got["max"]) == (ref.min(), ref.max())
