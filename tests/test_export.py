"""The ONNX export of the listening step: onnxruntime's P(yield) equals TurnYieldStream's, and what cannot be
exported or used is refused with one line naming it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from faceturn.schema import N_CODEBOOKS, N_FACE

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")  # micro models: threads only add overhead
CONTEXT = 16


def _save_run(run: Path, step: int, seed: int) -> None:
    from faceturn.checkpoint import save_checkpoint
    from faceturn.model import from_config
    from faceturn.recipe import load_train_config, resolved_config

    cfg = load_train_config("aux", ["model.dim=32", "model.num_layers=2", "model.num_heads=2",
                                    f"model.context={CONTEXT}"])  # fmt: skip
    torch.manual_seed(seed)
    model = from_config(cfg.model)
    with torch.no_grad():  # a trained yield head is not near 0.5 everywhere: spread its logits
        model.yield_head[-1].weight.mul_(20)
    save_checkpoint(run, step, model, torch.optim.AdamW(model.parameters()), {}, resolved_config(cfg), keep_last=2)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A tiny aux run (context 16) exported through the command line, fp32 and int8."""
    from faceturn.cli import main

    run = tmp_path_factory.mktemp("export") / "run"
    _save_run(run, 0, seed=0)
    assert main(["export", "--run", str(run), "--format", "onnx", "--quantize", "int8", "--check-frames", "30"]) == 0
    return run


def _frames(n: int, rows: int, card: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        codes = torch.randint(-1, card, (2, rows, N_CODEBOOKS), generator=g)
        yield codes[0], codes[1], torch.randn(rows, N_FACE, generator=g), torch.rand(rows, generator=g) > 0.3


def test_onnx_step_equals_turn_yield_stream(exported):
    """500 frames past the context, both rows (one reset half-way), random codes (some absent), faces and presence:
    onnxruntime's P(yield) equals the PyTorch stream's within 1e-4; a batch of one works on the same graph."""
    from faceturn.checkpoint import load_model
    from faceturn.export import OnnxStep
    from faceturn.stream import TurnYieldStream

    model, _ = load_model(exported)
    step = OnnxStep(exported / "export", threads=1)
    eager, onnx = TurnYieldStream(model, 2), step.stream(2)
    n = CONTEXT + 500
    p_eager, p_onnx = [], []
    for k, frame in enumerate(_frames(n, 2, model.cfg.card, seed=1)):
        if k == n // 2:
            eager.reset([1])
            onnx.reset([1])
        p_eager.append(eager.step_batch(*frame))
        p_onnx.append(onnx.step_batch(*frame))
    p_eager, p_onnx = torch.stack(p_eager), torch.stack(p_onnx)
    assert torch.equal(onnx.frames, eager.frames) and onnx.frames.tolist() == [n, n - n // 2]
    assert (p_onnx - p_eager).abs().max() <= 1e-4
    assert p_eager.std() > 0.05  # P moves: the comparison can fail
    one_eager, one_onnx = TurnYieldStream(model), step.stream(1)
    for a, b, face, present in _frames(CONTEXT + 4, 1, model.cfg.card, seed=2):
        assert (
            abs(
                one_onnx.step(a[0], b[0], face[0], bool(present[0]))
                - one_eager.step(a[0], b[0], face[0], bool(present[0]))
            )
            <= 1e-4
        )


def test_export_records_its_check_and_int8_runs(exported):
    """export.json names the checkpoint and files and holds the check figures; the int8 graph is another graph whose
    P(yield) stays near the fp32 one (no equality is claimed for it)."""
    from faceturn.export import OnnxStep, compare_streams

    meta = json.loads((exported / "export" / "export.json").read_text())
    assert meta["checkpoint"]["step"] == "step-0000000" and set(meta["files"]) == {"step.onnx", "step.int8.onnx"}
    assert meta["check"]["frames"] == 30 and meta["check"]["max_abs_diff_p_fp32"] <= 1e-4
    fp32, int8 = OnnxStep(exported / "export", threads=1), OnnxStep(exported / "export", int8=True, threads=1)
    worst = compare_streams(fp32.stream(2), {"int8": int8.stream(2)}, CONTEXT + 50, seed=3)
    assert 0 < worst["int8"] < 0.1


def test_refusals(exported, tmp_path, capsys, monkeypatch):
    """One line, exit status 2, naming the run and the reason: no checkpoint; an existing export without --force;
    a stream from an export of other weights, or of an altered file; a shape one ONNX file cannot hold; missing
    onnxruntime."""
    from faceturn.cli import main
    from faceturn.export import ExportError, OnnxStep, check_exportable, yield_stream
    from faceturn.model import load_model_config

    def refused(argv: list[str], *needles: str) -> None:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(n in err for n in needles), err

    empty = tmp_path / "empty-run"
    empty.mkdir()
    refused(["export", "--run", str(empty), "--format", "onnx"], str(empty), "no checkpoint")
    refused(["export", "--run", str(exported), "--format", "onnx"], "step.onnx", "--force")
    with pytest.raises(ExportError, match="one ONNX file holds at most 2 GiB"):
        check_exportable(load_model_config("moshi-7b"), "moshi")

    bare = tmp_path / "bare"
    _save_run(bare, 0, seed=0)
    with pytest.raises(ExportError, match="faceturn export --run .* --format onnx"):
        yield_stream(bare, "onnx")
    run = tmp_path / "run"
    shutil.copytree(exported, run)
    assert yield_stream(run, "onnx-int8", batch_size=2).batch_size == 2  # the weights it was made from: accepted
    _save_run(run, 1, seed=5)  # the run's newest checkpoint now holds other weights
    with pytest.raises(ExportError, match="other weights"):
        yield_stream(run, "onnx")
    assert isinstance(yield_stream(run, "eager"), type(yield_stream(exported, "eager")))

    altered = run / "export"
    with open(altered / "step.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ExportError, match="does not match its sha256"):
        OnnxStep(altered)

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    refused(["export", "--run", str(exported), "--format", "onnx", "--force"], "pip install 'faceturn[onnx]'")
