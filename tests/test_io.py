"""faceturn.io: atomic writes get the process umask's mode (mkstemp alone gives 0600, unreadable by colleagues), and
`path_kind` tells what an existing path is from its content (what the output checks compare)."""

from __future__ import annotations

import contextlib
import os
import stat

import numpy as np
import pytest

from faceturn import io as fio


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path, mask, mode):
    with umask(mask):
        fio.atomic_write_text(tmp_path / "a.txt", "x")
        fio.atomic_write_json(tmp_path / "sub" / "b.json", {"a": 1})
        fio.atomic_write_bytes(tmp_path / "a.txt", b"again")  # replacing keeps the umask's mode too
    assert _mode(tmp_path / "a.txt") == mode and _mode(tmp_path / "sub" / "b.json") == mode
    assert (tmp_path / "a.txt").read_bytes() == b"again"
    assert not [p for p in tmp_path.rglob("*.tmp")]
    with umask(mask):
        assert fio.current_umask() == mask and fio.default_file_mode() == mode
        assert os.umask(mask) == mask  # reading the umask did not change it


def test_checkpoint_files_and_folders_follow_the_umask(tmp_path):
    """A checkpoint is written into a temporary folder and renamed: every file and folder gets the umask's mode."""
    import torch

    from faceturn.checkpoint import save_checkpoint

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    with umask(0o022):
        ckpt = save_checkpoint(tmp_path / "run", 3, model, optimizer, {"loop": {}}, {"train": {}}, keep_last=1)
    files = [p for p in ckpt.iterdir()]
    assert {p.name for p in files} >= {"model.safetensors", "optimizer.pt", "state.json", "config.json", "COMPLETE"}
    assert {p.name: _mode(p) for p in files} == dict.fromkeys((p.name for p in files), 0o644)
    assert _mode(ckpt) == _mode(ckpt.parent) == 0o755


def test_path_kind_reads_content_not_names(tmp_path):
    from faceturn.eval.predict import FORMAT, Predictions

    n = 4
    pred = Predictions(
        p_face=np.full(n, 0.5, np.float32), p_zeroed=None, y=np.zeros(n, np.uint8), m=np.ones(n, bool),
        holder=np.ones(n, np.int8), conversation=np.zeros(n, np.int32), perspective=np.zeros(n, np.int8),
        frame=np.arange(n, dtype=np.int32),
        meta={"format": FORMAT, "corpus": "/c", "corpus_fingerprint": "sha256:0", "split": "test",
              "conversations": ["a"], "zeroed": False},
    )  # fmt: skip
    pred.save(tmp_path / "looks-like.html")
    assert fio.path_kind(tmp_path / "looks-like.html") == fio.PREDICTION_FILE
    np.savez(tmp_path / "plain.npz", a=np.zeros(2))
    assert fio.path_kind(tmp_path / "plain.npz") == "NumPy archive (.npz)"
    (tmp_path / "page.npz").write_text("<!DOCTYPE html>\n<html></html>")
    assert fio.path_kind(tmp_path / "page.npz") == fio.HTML_PAGE
    (tmp_path / "r.json").write_text('{"format": "faceturn-study-results/2"}')
    (tmp_path / "s.json").write_text('{"frames": {}}')
    assert fio.path_kind(tmp_path / "r.json") == "JSON file (faceturn-study-results/2)"
    assert fio.path_kind(tmp_path / "s.json") == fio.JSON_FILE
    (tmp_path / "e.mp4").write_bytes(b"")
    assert fio.path_kind(tmp_path / "e.mp4") == fio.EMPTY_FILE
    assert fio.path_kind(tmp_path / "nothing") is None
    corpus = tmp_path / "c"
    corpus.mkdir()
    assert fio.path_kind(corpus) == fio.EMPTY_FOLDER
    (corpus / "manifest.jsonl").write_text("")
    assert fio.path_kind(corpus) == fio.CORPUS_FOLDER
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"model_type": "kyutai"}')  # somebody else's config.json: a plain folder
    assert fio.path_kind(run) == fio.FOLDER
    (run / "config.json").write_text('{"train": {}}')
    assert fio.path_kind(run) == fio.RUN_FOLDER


def test_check_output_file_rules(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("input")
    with pytest.raises(fio.FaceturnError, match="is the --pred input"):
        fio.check_output_file(src, fio.HTML_PAGE, inputs={"--pred": src})
    with pytest.raises(fio.FaceturnError, match="is inside the --corpus folder"):
        fio.check_output_file(tmp_path / "x.html", fio.HTML_PAGE, inputs={"--corpus": tmp_path})
    with pytest.raises(fio.FaceturnError, match="exists and is a text file, not a HTML page"):
        fio.check_output_file(src, fio.HTML_PAGE, force=True)
    with pytest.raises(fio.FaceturnError, match="lies under .* which is a file"):
        fio.check_output_file(src / "x.html", fio.HTML_PAGE)
    page = tmp_path / "v.html"
    page.write_text("<!DOCTYPE html><html></html>")
    with pytest.raises(fio.FaceturnError, match="pass --force to overwrite it"):
        fio.check_output_file(page, fio.HTML_PAGE)
    assert fio.check_output_file(page, fio.HTML_PAGE, force=True) == page
    assert fio.check_output_file(page, fio.HTML_PAGE, replaceable=lambda p: True) == page
    link = tmp_path / "link.txt"
    link.symlink_to(src)
    with pytest.raises(fio.FaceturnError, match="is the --pred input"):  # judged where it leads
        fio.check_output_file(link, fio.HTML_PAGE, inputs={"--pred": src})
    assert src.read_text() == "input" and page.read_text().startswith("<!DOCTYPE")
