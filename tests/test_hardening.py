"""Bad input at the command line ends in one line naming the problem, never a traceback: a device that is not
there, a non-positive batch size, a reader that closes the pipe."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from faceturn.cli import main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from faceturn.synth import generate_corpus, load_preset

    out = tmp_path_factory.mktemp("hardening") / "corpus"
    cfg = load_preset("tight", ["floor.duration_min_s=20", "floor.duration_max_s=24", "conversations_per_group=2"])
    generate_corpus(cfg, out, 10, seed=5, progress=False)
    return out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_missing_cuda_device_is_a_one_line_error(corpus, tmp_path, capsys):
    from faceturn.checkpoint import save_checkpoint
    from faceturn.model import from_config
    from faceturn.recipe import load_train_config, resolved_config

    cfg = load_train_config("aux")
    model = from_config(cfg.model)
    save_checkpoint(tmp_path / "run", 0, model, torch.optim.AdamW(model.parameters()), {}, resolved_config(cfg), 1)
    args = ["--run", str(tmp_path / "run"), "--corpus", str(corpus), "--device", "cuda"]
    assert main(["predict", *args, "--split", "test", "--out", str(tmp_path / "p.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["faceturn predict: error: device 'cuda' requested but CUDA is not available"]
    out = str(tmp_path / "r")
    assert main(["train", "--config", "aux", "--corpus", str(corpus), "--out", out, "--set", "device=cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_a_batch_size_of_zero_is_refused_by_the_parser(corpus, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--run", str(tmp_path), "--corpus", str(corpus), "--split", "test", "--out",
              str(tmp_path / "p.npz"), "--batch-size", "0"])  # fmt: skip
    assert exit_info.value.code == 2 and "must be at least 1, got 0" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly(corpus):
    """`faceturn inspect --json | head -c 0`: the reader is gone before the output comes (the read end is closed
    before the command has even loaded), so the write fails with EPIPE; no BrokenPipeError traceback."""
    inspect = subprocess.Popen([sys.executable, "-m", "faceturn", "inspect", str(corpus), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert inspect.stdout is not None and inspect.stderr is not None
    inspect.stdout.close()
    err = inspect.stderr.read().decode()
    assert inspect.wait(timeout=120) in (0, 141) and "Traceback" not in err and "BrokenPipe" not in err, err
