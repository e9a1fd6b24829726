import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from faceturn import checkpoint as ck
from faceturn.errors import ConfigError, CorpusError, RunDirError
from faceturn.recipe import TrainConfig, load_train_config, resumable_fields
from faceturn.train import lr_at, train

MICRO_MODEL = [
    "model.dim=32", "model.num_layers=1", "model.num_heads=2", "model.text_card=8", "model.depformer_dim=16",
    "model.depformer_num_heads=2", "model.depformer_dim_feedforward=32", "model.face_hidden=16",
    "model.yield_hidden=16", 'model.zero_groups=["head_trans", "brow"]',
]  # fmt: skip
BASE = [
    *MICRO_MODEL,
    "data.window_s=4",
    "data.batch_size=2",
    "data.face_dropout=0.25",
    "data.val_max_windows=4",
    "optim.max_steps=6",
    "optim.warmup_steps=2",
    "optim.lr=3e-3",
    "eval_every_steps=0",
    "checkpoint_every_steps=2",
    "keep_last=2",
    "log_every_steps=1",
    "progress=false",
]


def _cfg(*extra: str) -> TrainConfig:
    return load_train_config("aux", [*BASE, *extra])


def _params(run_dir) -> dict[str, torch.Tensor]:
    model, _ = ck.load_model(run_dir)
    return model.state_dict()


def _max_diff(a, b) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    from faceturn.synth import generate_corpus, load_preset

    cfg = load_preset("tight", ["floor.duration_min_s=20", "floor.duration_max_s=24", "conversations_per_group=2"])
    out = tmp_path_factory.mktemp("corpus")
    generate_corpus(cfg, out, 10, seed=5, progress=False)
    return out


@pytest.fixture(scope="module")
def reference_run(corpus_dir, tmp_path_factory):
    """6 steps in one go (the run the resumed ones must reproduce)."""
    run = tmp_path_factory.mktemp("runs") / "reference"
    result = train(_cfg("eval_every_steps=3"), corpus_dir, run)
    assert result.step == 6 and result.stop_reason == "max_steps"
    return run


def test_run_folder_layout_metrics_and_falling_loss(reference_run):
    names = [p.name for p in ck.complete_checkpoints(reference_run)]
    assert names == ["step-0000004", "step-0000006"]  # keep_last = 2
    for f in (ck.MODEL_FILE, ck.OPTIMIZER_FILE, ck.STATE_FILE, ck.CONFIG_FILE, ck.COMPLETE):
        assert (reference_run / "checkpoints" / "step-0000006" / f).is_file()
    saved = json.loads((reference_run / "config.json").read_text())
    assert saved["train"]["loss"]["yield_weight"] > 0 and saved["schema"]["version"] == 1
    records = [json.loads(line) for line in (reference_run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in train_records] == [1, 2, 3, 4, 5, 6]
    assert all(r["frames_per_s"] > 0 and r["grad_norm"] > 0 for r in train_records)
    vals = [r for r in records if r["event"] == "val"]
    assert [r["step"] for r in vals] == [3, 6]
    assert vals[1]["val_loss"] < vals[0]["val_loss"]  # fixed validation windows: the model learns
    assert all(0.0 <= r["val_yield_auc"] <= 1.0 and "val_yield_auc_face_zeroed" in r for r in vals)
    state = json.loads((reference_run / "checkpoints" / "step-0000006" / ck.STATE_FILE).read_text())
    assert state["step"] == 6 and state["data"]["next_step"] == 6


def test_checkpoint_stores_zero_groups_face_dropout_and_face_statistics(reference_run):
    model, cfg = ck.load_model(reference_run)
    assert model.cfg.zero_groups == ("head_trans", "brow")
    assert cfg.data.face_dropout == 0.25 and cfg.loss.yield_weight > 0
    assert not model.training
    assert not torch.equal(model.face_encoder.face_mean, torch.zeros(61))  # corpus statistics, not the defaults
    optimizer_state = torch.load(reference_run / "checkpoints" / "step-0000006" / ck.OPTIMIZER_FILE, weights_only=True)
    assert optimizer_state["state"]  # AdamW moments are there


def test_exact_resume_after_stop(reference_run, corpus_dir, tmp_path):
    run = tmp_path / "resumed"
    first = train(_cfg("stop_at_step=3"), corpus_dir, run)
    assert first.step == 3 and first.stop_reason == "stop_at_step"
    assert ck.latest_checkpoint(run).name == "step-0000003"
    with pytest.raises(RunDirError, match="not empty; pass --resume"):
        train(_cfg(), corpus_dir, run)
    second = train(_cfg("data.workers=2"), corpus_dir, run, resume=True)  # batches cut by background processes
    assert second.step == 6
    # ...which end with the run: forked workers left to the garbage collector hold copies of every open pipe
    assert not [p.name for p in multiprocessing.active_children() if p.name.startswith("faceturn-loader")]
    assert _max_diff(_params(run), _params(reference_run)) <= 1e-6
    events = [json.loads(line)["event"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert events.count("resume") == 1


def test_killed_checkpoint_write_is_ignored_and_resume_is_exact(reference_run, corpus_dir, tmp_path, monkeypatch):
    run = tmp_path / "killed"
    real_save = torch.save
    calls = {"n": 0}

    def dies_on_second_checkpoint(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the step-4 write: model.safetensors is already on disk
            raise KeyboardInterrupt("killed while writing optimizer.pt")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dies_on_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(), corpus_dir, run)
    monkeypatch.setattr(torch, "save", real_save)
    partial = run / "checkpoints" / ".tmp-step-0000004"
    assert (partial / ck.MODEL_FILE).is_file() and not (partial / ck.COMPLETE).exists()
    assert ck.latest_checkpoint(run).name == "step-0000002"  # the killed write is not a checkpoint
    # a newest folder without its COMPLETE marker (copied half, or the marker deleted) is damaged: an error naming
    # it, never a silent fall-back to an older checkpoint; --allow-older takes the newest intact one and says so
    fake = run / "checkpoints" / "step-0000005"
    shutil.copytree(run / "checkpoints" / "step-0000002", fake)
    (fake / ck.COMPLETE).unlink()
    with pytest.raises(
        ck.CheckpointError, match=r"step-0000005: damaged checkpoint: no COMPLETE marker.*--allow-older"
    ):
        ck.latest_checkpoint(run)
    assert ck.latest_checkpoint(run, allow_older=True).name == "step-0000002"
    model, _ = ck.load_model(run, allow_older=True)  # the previous checkpoint still loads
    assert sum(p.numel() for p in model.parameters()) > 0
    with pytest.raises(ck.CheckpointError, match="incomplete or damaged checkpoint"):
        ck.load_model(fake)
    shutil.rmtree(fake)
    result = train(_cfg(), corpus_dir, run, resume=True)
    assert result.step == 6 and not partial.exists()
    assert _max_diff(_params(run), _params(reference_run)) <= 1e-6


def test_mismatched_config_or_schema_names_the_field(reference_run, corpus_dir, tmp_path):
    with pytest.raises(ck.CheckpointError, match=r"train\.optim\.lr \(checkpoint has 0\.003, now 0\.001\)"):
        train(_cfg("optim.lr=1e-3"), corpus_dir, reference_run, resume=True)
    with pytest.raises(ck.CheckpointError, match=r"model\.dim \(checkpoint has 32, now 48\)"):
        train(load_train_config("aux", [*BASE, "model.dim=48"]), corpus_dir, reference_run, resume=True)
    bad = tmp_path / "step-0000006"
    shutil.copytree(reference_run / "checkpoints" / "step-0000006", bad)
    config = json.loads((bad / ck.CONFIG_FILE).read_text())

    def rewrite(cfg):  # as another faceturn would have written it, COMPLETE marker included
        (bad / ck.CONFIG_FILE).write_text(json.dumps(cfg))
        marker = json.loads((bad / ck.COMPLETE).read_text())
        marker["files"][ck.CONFIG_FILE] = (bad / ck.CONFIG_FILE).stat().st_size
        (bad / ck.COMPLETE).write_text(json.dumps(marker))

    config["schema"]["face_channels"][0] = "eyeBlink_L"
    rewrite(config)
    with pytest.raises(ck.CheckpointError, match=r"schema\.face_channels differ.*index 0: 'eyeBlink_L'"):
        ck.load_model(bad)
    config["schema"]["version"] = 99
    rewrite(config)
    with pytest.raises(ck.CheckpointError, match=r"schema\.version is 99"):
        ck.load_model(bad)


def test_learning_rate_schedule():
    cfg = _cfg("optim.max_steps=100", "optim.warmup_steps=10", "optim.min_lr_ratio=0.1").optim
    assert lr_at(0, cfg) == pytest.approx(cfg.lr / 10)
    assert lr_at(9, cfg) == pytest.approx(cfg.lr)
    assert lr_at(10, cfg) == pytest.approx(cfg.lr)
    assert lr_at(55, cfg) == pytest.approx(0.55 * cfg.lr)  # halfway down the cosine
    assert lr_at(100, cfg) == pytest.approx(0.1 * cfg.lr)
    assert all(lr_at(s + 1, cfg) <= lr_at(s, cfg) for s in range(10, 100))


def test_presets_differ_only_in_yield_weight():
    from faceturn.config import to_dict

    aux, vanilla = to_dict(load_train_config("aux")), to_dict(load_train_config("vanilla"))
    assert aux["loss"].pop("yield_weight") > 0 and vanilla["loss"].pop("yield_weight") == 0
    assert aux == vanilla


def test_any_field_is_set_alike_from_toml_set_and_python(tmp_path):
    """model.face_norm / model.zero_groups are typed fields of the train config: a TOML table, `--set` and
    `dataclasses.replace` give equal configs; a shape name fills every shape field; resumable fields are derived."""
    from dataclasses import replace

    base = load_train_config("aux")
    by_python = replace(base, model=replace(base.model, face_norm="standardize", zero_groups=("brow",)))
    by_set = load_train_config("aux", ["model.face_norm=standardize", 'model.zero_groups=["brow"]'])
    toml = tmp_path / "mine.toml"
    toml.write_text('inherit = "aux"\n[model]\nface_norm = "standardize"\nzero_groups = ["brow"]\n')
    assert by_python == by_set == load_train_config(toml)
    small = load_train_config("aux", ["model.shape=small"])
    assert (small.model.shape, small.model.dim, small.model.num_layers) == ("small", 384, 6)
    assert small.model.zero_groups == base.model.zero_groups  # experiment fields are not part of a shape
    with pytest.raises(ConfigError, match="unknown face group .ears."):
        load_train_config("aux", ['model.zero_groups=["ears"]'])
    with pytest.raises(ConfigError, match="unknown config key 'model.overrides'"):
        load_train_config("aux", ["model.overrides=[]"])
    assert "train.eval_every_steps" in resumable_fields() and "train.optim.grad_accum" in resumable_fields()
    assert not any(f.startswith(("train.model.", "train.loss.")) for f in resumable_fields())


def test_cli_refuses_a_non_empty_run_folder_and_unknown_presets(reference_run, corpus_dir, capsys):
    from faceturn.cli import main

    assert main(["train", "--config", "aux", "--corpus", str(corpus_dir), "--out", str(reference_run)]) == 2
    assert "not empty; pass --resume" in capsys.readouterr().err
    assert main(["train", "--config", "auxx", "--corpus", str(corpus_dir), "--out", str(reference_run)]) == 2
    assert "unknown train config 'auxx'" in capsys.readouterr().err


def test_tensorboard_is_optional_with_a_clear_message(corpus_dir, tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            train(_cfg("tensorboard=true"), corpus_dir, tmp_path / "tb")
    else:
        pytest.skip("tensorboard is installed")


def test_ddp_two_gloo_processes_equal_one_process(corpus_dir, tmp_path):
    """2 processes × grad_accum 1 and 1 process × grad_accum 2: same global batch, same parameters (≤ 1e-5)."""
    script = tmp_path / "ddp_train.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import torch
            torch.set_num_threads(1)
            from faceturn.recipe import load_train_config
            from faceturn.train import train
            train(load_train_config("aux", sys.argv[3:]), sys.argv[1], sys.argv[2])
            """
        )
    )
    steps = ["optim.max_steps=4", "checkpoint_every_steps=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    proc = subprocess.run(
        [*cmd, str(corpus_dir), str(tmp_path / "ddp"), *BASE, *steps], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    train(_cfg(*steps, "optim.grad_accum=2"), corpus_dir, tmp_path / "single")
    records = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["world_size"] == 2 and records[0]["global_batch_windows"] == 4
    assert _max_diff(_params(tmp_path / "ddp"), _params(tmp_path / "single")) <= 1e-5


def _copy_run(reference_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(reference_run, run)
    return run, run / "checkpoints" / "step-0000006"


def test_damaged_newest_checkpoint_is_an_error_unless_allow_older(reference_run, corpus_dir, tmp_path, capsys):
    from faceturn.cli import main

    run, newest = _copy_run(reference_run, tmp_path)
    weights = newest / ck.MODEL_FILE
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a same-size corruption: sizes agree, the sha256 does not
    weights.write_bytes(bytes(data))
    with pytest.raises(ck.CheckpointError, match=r"step-0000006: damaged checkpoint: model.safetensors does not match"):
        ck.load_model(run)
    out = tmp_path / "pred.npz"
    assert main(["predict", "--run", str(run), "--corpus", str(corpus_dir), "--split", "val", "--out", str(out)]) == 2
    assert "step-0000006: damaged checkpoint" in capsys.readouterr().err
    ck.load_model(run, allow_older=True)
    assert "using " in capsys.readouterr().err  # the chosen (older) step is printed
    with open(weights, "r+b") as fh:  # truncated
        fh.truncate(100)
    with pytest.raises(ck.CheckpointError, match=r"model.safetensors has 100 bytes, \d+ were written"):
        ck.load_model(run)


def test_non_finite_weights_and_broken_headers_are_refused(reference_run, tmp_path):
    from safetensors.torch import load_file, save_file

    run, newest = _copy_run(reference_run, tmp_path)
    weights = load_file(str(newest / ck.MODEL_FILE))
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(newest / ck.MODEL_FILE), metadata={"format": "pt"})
    marker = json.loads((newest / ck.COMPLETE).read_text())  # as if written so: sizes and hashes agree
    marker["files"][ck.MODEL_FILE] = (newest / ck.MODEL_FILE).stat().st_size
    marker["sha256"][ck.MODEL_FILE] = ck.file_sha256(newest / ck.MODEL_FILE)
    (newest / ck.COMPLETE).write_text(json.dumps(marker))
    with pytest.raises(ck.CheckpointError, match=f"tensor {name} holds non-finite values"):
        ck.load_model(run)
    (newest / ck.MODEL_FILE).write_bytes(b"\xff" * 64)  # a broken safetensors header
    marker["files"][ck.MODEL_FILE], marker["sha256"][ck.MODEL_FILE] = 64, ck.file_sha256(newest / ck.MODEL_FILE)
    (newest / ck.COMPLETE).write_text(json.dumps(marker))
    with pytest.raises(ck.CheckpointError, match="cannot be read as safetensors"):
        ck.load_model(run)


def test_a_damaged_validation_file_fails_before_the_first_step(corpus_dir, tmp_path):
    from faceturn.store import Corpus

    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    store = Corpus(corpus)
    victim = corpus / store.entry(store.ids("val")[0]).file
    with open(victim, "r+b") as fh:
        fh.truncate(victim.stat().st_size // 2)
    run = tmp_path / "run"
    with pytest.raises(CorpusError, match=victim.name):
        train(_cfg(), corpus, run)
    assert not run.exists() or not any(run.iterdir())  # nothing trained and lost, nothing left to refuse a rerun


def test_a_diverging_run_is_a_one_line_error(corpus_dir, tmp_path, capsys):
    from faceturn.cli import main

    args = ["train", "--config", "aux", "--corpus", str(corpus_dir), "--out", str(tmp_path / "run")]
    sets = [x for o in [*BASE, "optim.lr=1e12", "optim.warmup_steps=0"] for x in ("--set", o)]
    assert main([*args, *sets]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the training loss became" in err[0] and "lower optim.lr" in err[0]
