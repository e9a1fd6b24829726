"""The prediction-file reader under damage: `Predictions.load` of a truncated file, flipped bytes, an edited header
or edited arrays either returns exactly the data that was written or raises a FaceturnError naming the file — never
another exception, never a hang, never silently different data (the header's checksum covers header and arrays).
Fast settings in the default suite; `pytest -m slow` runs many more examples."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceturn.cli import main
from faceturn.errors import FaceturnError
from faceturn.eval.predict import _ARRAYS, FORMAT, Predictions

FAST = settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow], database=None)
SLOW = settings(max_examples=1500, deadline=2000, suppress_health_check=[HealthCheck.too_slow], database=None)
COLUMNS = (*_ARRAYS, "p_zeroed", "hidden_face", "hidden_zeroed")


def _original() -> Predictions:
    rng = np.random.default_rng(0)
    n = 60
    meta = {
        "format": FORMAT, "corpus": "/corpora/tight", "corpus_fingerprint": "sha256:" + "ab" * 32, "split": "test",
        "checkpoint": "/runs/aux/checkpoints/step-0000004", "conversations": ["synth-000000", "synth-000001"],
        "window_frames": 100, "zero_groups": ["head_trans"], "eval_zero_groups": ["head_trans"], "valid": True,
        "zeroed": True, "train_config": {"labels": {"horizon_s": 1.0}, "data": {"val_split": "val"}},
    }  # fmt: skip
    return Predictions(
        p_face=rng.random(n, dtype=np.float32), p_zeroed=rng.random(n, dtype=np.float32),
        y=rng.integers(0, 2, n).astype(np.uint8), m=rng.random(n) < 0.8, holder=rng.integers(-1, 2, n).astype(np.int8),
        conversation=np.repeat(np.arange(2, dtype=np.int32), n // 2),
        perspective=np.tile(np.repeat(np.arange(2, dtype=np.int8), n // 4), 2),
        frame=np.tile(np.arange(n // 4, dtype=np.int32), 4), meta=meta,
        hidden_face=rng.standard_normal((n, 3)).astype(np.float16),
        hidden_zeroed=rng.standard_normal((n, 3)).astype(np.float16),
    )  # fmt: skip


ORIGINAL = _original()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def valid(workdir) -> tuple[bytes, dict[str, np.ndarray], dict]:
    """The valid file's bytes, its arrays and its header (with the checksum the writer put there)."""
    path = workdir / "valid.npz"
    ORIGINAL.save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    return path.read_bytes(), arrays, meta


def _pack(arrays: dict[str, np.ndarray], meta_bytes: bytes) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays, meta=np.frombuffer(meta_bytes, dtype=np.uint8))
    return buf.getvalue()


def _same_as_original(p: Predictions) -> bool:
    if {k: v for k, v in p.meta.items() if k != "checksum"} != ORIGINAL.meta:
        return False
    for k in COLUMNS:
        a, b = getattr(p, k), getattr(ORIGINAL, k)
        if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b):
            return False
    return True


def _load(workdir: Path, data: bytes) -> Predictions | None:
    """Predictions.load of `data`: None when refused with a FaceturnError naming the file; any other exception fails
    the test (hypothesis reports it with the smallest damage that causes it)."""
    path = workdir / "damaged.npz"
    path.write_bytes(data)
    try:
        return Predictions.load(path)
    except FaceturnError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
        return None


def _exact_or_refused(workdir: Path, data: bytes) -> None:
    p = _load(workdir, data)
    assert p is None or _same_as_original(p), "damaged file read as other data"


def _usable_or_refused(workdir: Path, data: bytes) -> None:
    """For files whose checksum was recomputed after an edit (a writer's bug, not damage): loading may succeed with
    other data, but what loads keeps the invariants every consumer relies on."""
    p = _load(workdir, data)
    if p is None:
        return
    n = p.p_face.shape[0]
    assert all(getattr(p, k) is None or getattr(p, k).shape[0] == n for k in COLUMNS)
    assert isinstance(p.meta["conversations"], list) and isinstance(p.meta["corpus"], str)
    assert n == 0 or 0 <= p.conversation.min() <= p.conversation.max() < len(p.meta["conversations"])
    assert np.isfinite(p.p_face).all() and set(np.unique(p.perspective).tolist()) <= {0, 1}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
array_values = st.sampled_from(["<f4", "<f8", "|u1", "|b1", "<i4", "<i8", "|i1", "<f2", "<U2"]).flatmap(
    lambda dt: st.tuples(st.just(dt), st.lists(st.integers(0, 70), min_size=0, max_size=2))
)


def _meta_edit(meta: dict, data) -> dict:
    meta = dict(meta)
    key = data.draw(st.sampled_from([*sorted(meta), "extra"]), label="key")
    if data.draw(st.booleans(), label="delete") and key in meta:
        del meta[key]
    else:
        meta[key] = data.draw(json_values, label="value")
    return meta


def _array_edit(arrays: dict[str, np.ndarray], data) -> dict[str, np.ndarray]:
    arrays = dict(arrays)
    name = data.draw(st.sampled_from([*sorted(arrays), "extra"]), label="array")
    action = data.draw(st.sampled_from(["delete", "replace", "rows"]), label="action")
    if action == "delete":
        arrays.pop(name, None)
    elif action == "rows" and name in arrays:
        arrays[name] = arrays[name][: data.draw(st.integers(0, arrays[name].shape[0]), label="keep")]
    else:
        dtype, shape = data.draw(array_values, label="dtype, shape")
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
        arrays[name] = (rng.standard_normal(tuple(shape)) * 3).astype(dtype)
    return arrays


# ------------------------------------------------------------------------------------------------ the properties


def _truncations(workdir, valid, data) -> None:
    raw = valid[0]
    _exact_or_refused(workdir, raw[: data.draw(st.integers(0, len(raw) - 1), label="length")])


def _byte_flips(workdir, valid, data) -> None:
    raw = bytearray(valid[0])
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(1, 255)), min_size=1, max_size=8))
    for at, xor in flips:
        raw[at] ^= xor
    _exact_or_refused(workdir, bytes(raw))


def _header_byte_edits(workdir, valid, data) -> None:
    """Flipped, cut or inserted bytes in the header JSON itself, repacked into a well-formed archive (so the zip's
    CRCs do not catch them first)."""
    _, arrays, meta = valid
    text = bytearray(json.dumps(meta, sort_keys=True).encode())
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(0, len(text) - 1), label="at")
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]), label="kind")
        if kind == "flip":
            text[at] ^= data.draw(st.integers(1, 255), label="xor")
        elif kind == "cut":
            del text[at : at + data.draw(st.integers(1, 20), label="n")]
        else:
            text[at:at] = data.draw(st.binary(min_size=1, max_size=6), label="bytes")
        if not text:
            break
    _exact_or_refused(workdir, _pack(arrays, bytes(text)))


def _header_value_edits(workdir, valid, data) -> None:
    _, arrays, meta = valid
    edited = _meta_edit(meta, data)
    _exact_or_refused(workdir, _pack(arrays, json.dumps(edited).encode()))


def _array_edits(workdir, valid, data) -> None:
    _, arrays, meta = valid
    _exact_or_refused(workdir, _pack(_array_edit(arrays, data), json.dumps(meta).encode()))


def _edits_with_a_recomputed_checksum(workdir, valid, data) -> None:
    from faceturn.eval.predict import array_checksum

    _, arrays, meta = valid
    if data.draw(st.booleans(), label="edit the header"):
        meta = _meta_edit(meta, data)
    else:
        arrays = _array_edit(arrays, data)
    meta = {**meta, "checksum": array_checksum(meta, arrays)}
    _usable_or_refused(workdir, _pack(arrays, json.dumps(meta).encode()))


PROPERTIES = [_truncations, _byte_flips, _header_byte_edits, _header_value_edits, _array_edits,
              _edits_with_a_recomputed_checksum]  # fmt: skip


@pytest.mark.parametrize("prop", PROPERTIES, ids=[p.__name__.strip("_") for p in PROPERTIES])
@FAST
@given(data=st.data())
def test_damaged_prediction_files(workdir, valid, prop, data):
    prop(workdir, valid, data)


@pytest.mark.slow
@pytest.mark.parametrize("prop", PROPERTIES, ids=[p.__name__.strip("_") for p in PROPERTIES])
@SLOW
@given(data=st.data())
def test_damaged_prediction_files_many(workdir, valid, prop, data):
    prop(workdir, valid, data)


# ------------------------------------------------------------------------------------------------- named cases


def test_the_valid_file_round_trips(workdir, valid):
    p = _load(workdir, valid[0])
    assert p is not None and _same_as_original(p)
    assert valid[2]["checksum"].startswith("sha256:")


def test_a_file_of_another_kind_is_named_before_reading(tmp_path, viz_data, capsys):
    """A conversation file given as predictions used to end in numpy's advice to enable pickle."""
    conversation = Path(viz_data.corpus) / f"{viz_data.ids[0]}.safetensors"
    assert main(["evaluate", "--pred", str(conversation)]) == 2
    err = capsys.readouterr().err
    assert err == (f"faceturn evaluate: error: {conversation}: not a readable prediction file: it is a safetensors "
                   "file (expected the .npz that `faceturn predict` writes)\n")  # fmt: skip
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, meta=np.array([{"format": FORMAT}], dtype=object), p_face=np.zeros(2))
    with pytest.raises(FaceturnError, match="it holds pickled Python objects, which faceturn never reads") as e:
        Predictions.load(pickled)
    assert "allow_pickle" not in str(e.value)
    page = tmp_path / "view.npz"
    page.write_text("<!DOCTYPE html><html></html>")
    with pytest.raises(FaceturnError, match="not a readable prediction file: it is a HTML page"):
        Predictions.load(page)


def test_files_of_the_older_format_ask_for_predict_again(workdir, valid):
    _, arrays, meta = valid
    old = {k: v for k, v in meta.items() if k not in ("checksum", "corpus_fingerprint")}
    path = workdir / "old.npz"
    path.write_bytes(_pack(arrays, json.dumps({**old, "format": "faceturn-predictions/1"}).encode()))
    with pytest.raises(FaceturnError, match=r"written by an older faceturn .*re-run `faceturn predict`"):
        Predictions.load(path)
    path.write_bytes(_pack(arrays, json.dumps({**meta, "checksum": "sha256:" + "0" * 64}).encode()))
    with pytest.raises(FaceturnError, match="checksum does not match"):
        Predictions.load(path)
