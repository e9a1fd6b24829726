"""Outputs never clobber inputs, and files are paired only with the corpus they were made from.

Every command checks its output paths before any work: never one of its inputs or inside one, never inside a corpus
folder (unless it writes corpora), never an existing file of another kind, and an earlier output of its own kind only
with --force (re-running the same `predict` is the resume of an interrupted study). Prediction files and run folders
record the corpus' manifest fingerprint; evaluate, plot, view, render and `train --resume` refuse another corpus."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from faceturn.cli import main
from faceturn.store import Corpus, CorpusWriter

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY = ["model.dim=32", "model.num_layers=1", "model.num_heads=2", "model.context=40", "optim.max_steps=1",
        "optim.warmup_steps=1", "data.window_s=4.0", "data.batch_size=2", "data.val_max_windows=4",
        "eval_every_steps=0", "checkpoint_every_steps=0", "progress=false"]  # fmt: skip


@dataclass(frozen=True)
class World:
    a: Path  # corpus the run was trained on
    b: Path  # the same ids, lengths and splits, other faces and another corpus name: another corpus
    run: Path
    test_pred: Path  # the run on a's test split
    val_pred: Path  # the run on a's val split
    val_pred_b: Path  # the run on b's val split


def _set(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    from faceturn.synth import generate_corpus, load_preset

    root = tmp_path_factory.mktemp("outputs")
    base = ["floor.duration_min_s=20", "floor.duration_max_s=24", "conversations_per_group=1"]
    generate_corpus(load_preset("tight", base), root / "a", 8, seed=5, progress=False)
    other = load_preset("tight", [*base, "framing.dropouts_per_min=12.0"])
    generate_corpus(other, root / "b", 8, seed=5, corpus_name="other", progress=False)
    for name, corpus in (("a", "tight"), ("b", "other")):  # two conversations each for val and test
        CorpusWriter(root / name, corpus).finalize({"train": 0.3, "val": 0.25, "test": 0.45})
    a, b = Corpus(root / "a"), Corpus(root / "b")
    assert min(len(a.ids(s)) for s in ("train", "val", "test")) >= 2
    assert [(e.id, e.n_frames, e.split) for e in a.entries] == [(e.id, e.n_frames, e.split) for e in b.entries]
    assert a.manifest_path.read_bytes() != b.manifest_path.read_bytes()
    run = root / "run"
    assert main(["train", "--config", "aux", "--corpus", str(root / "a"), "--out", str(run), *_set(TINY)]) == 0
    preds = {}
    for name, corpus, split in (("test", "a", "test"), ("val", "a", "val"), ("val_b", "b", "val")):
        preds[name] = root / f"{name}.npz"
        assert main(["predict", "--run", str(run), "--corpus", str(root / corpus), "--split", split,
                     "--out", str(preds[name]), "--batch-size", "4"]) == 0  # fmt: skip
    return World(root / "a", root / "b", run, preds["test"], preds["val"], preds["val_b"])


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("faceturn "), err
    for needle in needles:
        assert needle in err, err
    return err


def _no_work(monkeypatch, module: str, name: str) -> None:
    def fail(*args, **kwargs):
        raise AssertionError(f"{module}.{name} ran: the output should have been refused before any work")

    monkeypatch.setattr(f"{module}.{name}", fail)


# ---------------------------------------------------------------------------------------------- outputs vs inputs


def test_view_never_replaces_the_predictions_it_reads(tmp_path, viz_data, capsys):
    pred = tmp_path / "P.npz"
    shutil.copy(viz_data.pred, pred)
    before = pred.read_bytes()
    for extra in ([], ["--force"]):  # an input is never replaced, not even with --force
        assert main(["view", "--pred", str(pred), "--conversation", viz_data.ids[0], "--out", str(pred), *extra]) == 2
        _one_line_error(capsys, f"{pred}: --out is the --pred input")
    assert pred.read_bytes() == before


def test_predict_checks_its_output_before_any_work(world, tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch, "faceturn.commands.predict", "predict_zero_sets")
    manifest = world.a / "manifest.jsonl"
    before = manifest.read_bytes()
    args = ["predict", "--run", str(world.run), "--corpus", str(world.a), "--out"]
    assert main([*args, str(manifest)]) == 2
    _one_line_error(capsys, "--out is inside the --corpus folder")
    assert main([*args, str(manifest), "--force"]) == 2
    assert manifest.read_bytes() == before
    capsys.readouterr()
    folder = tmp_path / "results"
    folder.mkdir()
    assert main([*args, str(folder)]) == 2  # used to fail with IsADirectoryError after the whole pass
    _one_line_error(capsys, f"{folder}: --out is an existing empty folder; it takes a file (a prediction file)")
    assert main([*args, str(world.run / "checkpoints" / "p.npz")]) == 2  # among the checkpoints it reads
    _one_line_error(capsys, "--out is inside the --run folder")


def test_render_never_writes_into_a_corpus(tmp_path, viz_data, monkeypatch, capsys):
    corpus = tmp_path / "corpus"
    shutil.copytree(viz_data.corpus, corpus)
    conversation = corpus / f"{viz_data.ids[0]}.safetensors"
    before = conversation.read_bytes()
    _no_work(monkeypatch, "faceturn.commands.render", "render_video")
    args = ["render", "--pred", str(viz_data.pred), "--conversation", viz_data.ids[0], "--corpus", str(corpus),
            "--out", str(conversation)]  # fmt: skip
    assert main(args) == 2
    _one_line_error(capsys, "--out is inside the --corpus folder")
    assert main([*args, "--force"]) == 2  # an input is never replaced, not even with --force
    _one_line_error(capsys, "--out is inside the --corpus folder")
    assert main(["render", "--pred", str(viz_data.pred), "--conversation", viz_data.ids[0],
                 "--out", str(Path(viz_data.corpus) / "clip.mp4")]) == 2  # fmt: skip
    _one_line_error(capsys, f"is inside the corpus folder {Path(viz_data.corpus).resolve()}")
    assert conversation.read_bytes() == before


def test_evaluate_out_onto_a_file_is_refused_before_the_work(tmp_path, viz_data, monkeypatch, capsys):
    _no_work(monkeypatch, "faceturn.commands.evaluate", "evaluate_predictions")
    _no_work(monkeypatch, "faceturn.commands.evaluate", "check_predictions")
    out = tmp_path / "results.txt"
    out.write_text("notes")
    assert main(["evaluate", "--pred", str(viz_data.pred), "--out", str(out)]) == 2
    _one_line_error(capsys, f"{out}: --out is an existing text file; it takes a folder")
    assert out.read_text() == "notes"


def test_an_earlier_output_needs_force_and_another_kind_is_never_replaced(tmp_path, viz_data, capsys):
    args = ["plot", "timeline", "--pred", str(viz_data.pred), "--conversation", viz_data.ids[0], "--end", "5",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    png = tmp_path / f"timeline_{viz_data.ids[0]}_p0.png"
    first = png.read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    _one_line_error(capsys, f"{png}: exists (a PNG image written earlier); pass --force to overwrite it")
    assert main([*args, "--force"]) == 0 and png.read_bytes()[:8] == first[:8]
    svg = png.with_suffix(".svg")
    svg.write_text('{"not": "a figure"}')
    capsys.readouterr()
    assert main([*args, "--force"]) == 2
    _one_line_error(capsys, f"{svg}: exists and is a file, not a SVG image: refusing to replace it")
    assert svg.read_text() == '{"not": "a figure"}'


def test_corpus_run_and_study_folders_are_not_mixed_up(world, tmp_path, capsys):
    manifest = (world.a / "manifest.jsonl").read_bytes()
    assert main(["synth", "--preset", "tight", "--conversations", "1", "--out", str(world.run)]) == 2
    _one_line_error(capsys, f"{world.run}: --out is a run folder, not a corpus folder")
    assert main(["synth", "--preset", "tight", "--conversations", "1", "--out", str(world.a / "nested")]) == 2
    _one_line_error(capsys, "is inside the corpus folder")
    assert main(["train", "--config", "aux", "--corpus", str(world.b), "--out", str(world.a), "--resume"]) == 2
    _one_line_error(capsys, f"{world.a}: --out is the corpus folder")
    assert main(["probe", "--corpus", str(world.a), "--out", str(world.a / "probe")]) == 2
    _one_line_error(capsys, "--out is inside the --corpus folder")
    plain = tmp_path / "notes"
    plain.mkdir()
    (plain / "todo.txt").write_text("x")
    assert main(["train", "--config", "aux", "--corpus", str(world.a), "--out", str(plain), "--resume"]) == 2
    _one_line_error(capsys, "holds files but no run")
    assert (world.a / "manifest.jsonl").read_bytes() == manifest and not (world.a / "config.json").exists()


def test_predict_again_replaces_its_own_prediction_only(world, tmp_path, capsys):
    """Re-running the very same predict (same checkpoint, corpus and split) reproduces its file, so it replaces it
    without --force: that is how an interrupted attribution study resumes. Anything else needs --force."""
    out = tmp_path / "p.npz"
    shutil.copy(world.test_pred, out)
    args = ["predict", "--run", str(world.run), "--corpus", str(world.a), "--out", str(out), "--batch-size", "4"]
    assert main([*args, "--split", "test"]) == 0
    _same(out, world.test_pred)
    capsys.readouterr()
    assert main([*args, "--split", "val"]) == 2
    _one_line_error(capsys, "pass --force to overwrite it")
    assert main([*args, "--split", "val", "--force"]) == 0
    _same(out, world.val_pred)


def _same(a: Path, b: Path) -> None:
    import numpy as np

    from faceturn.eval.predict import Predictions

    pa, pb = Predictions.load(a), Predictions.load(b)
    assert pa.meta == pb.meta
    for k in ("p_face", "p_zeroed", "y", "m", "holder", "conversation", "perspective", "frame"):
        assert np.array_equal(getattr(pa, k), getattr(pb, k)), k


# ------------------------------------------------------------------------------------------------------ provenance


def test_predictions_record_the_corpus_and_the_run_it_was_trained_on(world):
    from faceturn.eval.predict import Predictions
    from faceturn.store import fingerprint

    meta = Predictions.load(world.val_pred_b).meta
    assert meta["corpus_fingerprint"] == fingerprint(world.b) != fingerprint(world.a)
    assert meta["train_corpus"] == {"path": str(world.a.resolve()), "fingerprint": fingerprint(world.a)}
    config = json.loads((world.run / "config.json").read_text())
    assert config["corpus"] == meta["train_corpus"]


def test_train_resume_on_another_corpus_is_refused(world, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(world.run, run)
    metrics = (run / "metrics.jsonl").read_text()
    assert main(["train", "--config", "aux", "--corpus", str(world.b), "--out", str(run), "--resume",
                 *_set(TINY)]) == 2  # fmt: skip
    _one_line_error(capsys, f"the run was trained on corpus {world.a.resolve()}", f"not on {world.b.resolve()}")
    assert (run / "metrics.jsonl").read_text() == metrics
    moved = tmp_path / "moved"  # the same corpus in another folder is still its corpus
    shutil.copytree(world.a, moved)
    assert main(["train", "--config", "aux", "--corpus", str(moved), "--out", str(run), "--resume", *_set(TINY)]) == 0


def test_val_predictions_must_be_validation_predictions_of_the_same_corpus(world, tmp_path, capsys):
    args = ["evaluate", "--pred", str(world.test_pred), "--resamples", "50", "--out", str(tmp_path / "ev")]
    assert main([*args, "--val-pred", str(world.test_pred)]) == 2  # used to print "threshold from val"
    _one_line_error(capsys, f"{world.test_pred}: --val-pred holds the 'test' split, not the run's validation split")
    assert main([*args, "--val-pred", str(world.val_pred_b)]) == 2
    _one_line_error(capsys, f"made from corpus {world.b.resolve()}", f"{world.test_pred} from {world.a.resolve()}")
    assert not (tmp_path / "ev").exists()
    assert main([*args, "--val-pred", str(world.val_pred), "--corpus", str(world.a)]) == 0
    assert "from val" in capsys.readouterr().out
    assert main([*args, "--val-pred", str(world.val_pred), "--corpus", str(world.b), "--force"]) == 2
    _one_line_error(capsys, f"predictions made from corpus {world.a.resolve()}", f"not from {world.b}")
    moved = tmp_path / "moved"
    shutil.copytree(world.a, moved)
    assert main([*args, "--val-pred", str(world.val_pred), "--corpus", str(moved), "--force"]) == 0


def test_plot_refuses_another_corpus_with_the_same_ids(viz_data, tmp_path, capsys):
    """The silent corpus holds the first conversation of viz_data's corpus under the same id and length: the
    timeline used to draw one corpus' predictions over the other's voices and faces."""
    assert Corpus(viz_data.silent_corpus).ids()[0] == viz_data.ids[0]
    assert main(["plot", "timeline", "--pred", str(viz_data.pred), "--conversation", viz_data.ids[0],
                 "--corpus", str(viz_data.silent_corpus), "--out", str(tmp_path)]) == 2  # fmt: skip
    _one_line_error(capsys, f"predictions made from corpus {Path(viz_data.corpus).resolve()}",
                    f"not from {viz_data.silent_corpus}")  # fmt: skip
    assert not list(tmp_path.iterdir())


def test_a_changed_corpus_is_refused_until_predict_runs_again(viz_data, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    shutil.copytree(viz_data.silent_corpus, corpus)
    pred = tmp_path / "p.npz"
    from faceturn.eval.predict import Predictions

    p = Predictions.load(viz_data.silent_pred)
    Predictions(**{**p.__dict__, "meta": {**p.meta, "corpus": str(corpus.resolve())}}).save(pred)
    manifest = corpus / "manifest.jsonl"
    manifest.write_bytes(manifest.read_bytes().replace(b'"split": "', b'"split":  "', 1))  # same entries, new bytes
    assert main(["plot", "timeline", "--pred", str(pred), "--conversation", viz_data.ids[0], "--out",
                 str(tmp_path / "figs")]) == 2  # fmt: skip
    _one_line_error(capsys, f"the corpus {corpus.resolve()} changed since these predictions were made from it")
