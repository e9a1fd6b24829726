"""FSDP2 training (`parallel = "fsdp"`) with two gloo CPU processes against one process, and its sharded checkpoints:
written by two processes, resumed by one, refused when damaged or forged."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from test_train import BASE

from faceturn import checkpoint as ck
from faceturn.errors import CheckpointError, ConfigError
from faceturn.recipe import load_train_config
from faceturn.train import train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

STEPS = ["optim.max_steps=4", "checkpoint_every_steps=2", "eval_every_steps=2"]


def _cfg(*extra: str):
    return load_train_config("aux", [*BASE, *STEPS, *extra])


def _records(run, event="train") -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["event"] == event]


def _params(run) -> dict[str, torch.Tensor]:
    model, _ = ck.load_model(run)
    return model.state_dict()


def _max_diff(a, b) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    from faceturn.synth import generate_corpus, load_preset

    cfg = load_preset("tight", ["floor.duration_min_s=20", "floor.duration_max_s=24", "conversations_per_group=2"])
    out = tmp_path_factory.mktemp("corpus")
    generate_corpus(cfg, out, 10, seed=5, progress=False)
    return out


@pytest.fixture(scope="module")
def runs(corpus_dir, tmp_path_factory):
    """Two gloo processes: 4 steps in one go ("fsdp") and the same run stopped at step 2 ("part"); one process with
    the same global batch (grad_accum 2) and plain DDP-style training ("single")."""
    root = tmp_path_factory.mktemp("fsdp_runs")
    script = root / "fsdp_train.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys
            import torch
            torch.set_num_threads(1)
            from faceturn import dist, fsdp
            from faceturn.model import from_config
            from faceturn.recipe import load_train_config
            from faceturn.train import build_optimizer, train
            corpus, root, sets = sys.argv[1], sys.argv[2], sys.argv[3:]
            info = dist.init_distributed("cpu")  # one process group for all runs (re-joining one is racy in torch)
            train(load_train_config("aux", [*sets, "parallel=fsdp"]), corpus, f"{root}/fsdp")
            part = [*sets, "parallel=fsdp", "stop_at_step=2", "activation_checkpointing=true"]
            train(load_train_config("aux", part), corpus, f"{root}/part")

            # what one process holds of weights, gradients and AdamW moments, for the memory estimate
            cfg = load_train_config("aux", [*sets, "parallel=fsdp"])
            model = from_config(cfg.model)
            fsdp.shard(model, info, bf16=False)
            optimizer = build_optimizer(model, cfg.optim, info.device)
            for p in model.parameters():
                p.grad = torch.zeros_like(p)
            optimizer.step()
            held = [fsdp.local_tensor(t) for p in model.parameters() for t in (p, p.grad)]
            held += [fsdp.local_tensor(v) for s in optimizer.state.values() for k, v in s.items() if k != "step"]
            if info.is_main:  # rank 0 holds the largest shards
                nbytes = sum(t.numel() * t.element_size() for t in held)
                open(f"{root}/held.json", "w").write(json.dumps({"bytes": nbytes}))
            """
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    proc = subprocess.Popen(
        [*cmd, str(corpus_dir), str(root), *BASE, *STEPS], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers, not torchrun alone
        _, err = proc.communicate()
        pytest.fail(f"two FSDP processes did not finish in 300 s: {err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    train(_cfg("optim.grad_accum=2"), corpus_dir, root / "single")
    return root


def test_two_fsdp_processes_follow_the_one_process_trajectory(runs):
    fsdp, single = _records(runs / "fsdp"), _records(runs / "single")
    start = _records(runs / "fsdp", "start")[0]
    assert start["world_size"] == 2 and start["parallel"] == "fsdp" and start["global_batch_windows"] == 4
    assert [r["step"] for r in fsdp] == [r["step"] for r in single] == [1, 2, 3, 4]
    for a, b in zip(fsdp, single, strict=True):
        for key in ("loss", "text", "audio", "face", "yield", "grad_norm", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)
    assert _records(runs / "fsdp")[-1]["loss"] < _records(runs / "fsdp")[0]["loss"]
    val_fsdp, val_single = _records(runs / "fsdp", "val"), _records(runs / "single", "val")
    assert [r["val_loss"] for r in val_fsdp] == pytest.approx([r["val_loss"] for r in val_single], rel=1e-5)
    # 1e-4 (3 % of one step at lr 3e-3): the query and key rows of the depformer's first step get gradients of pure
    # rounding noise (softmax over a single key), which AdamW scales up; every other parameter agrees to 1e-6.
    assert _max_diff(_params(runs / "fsdp"), _params(runs / "single")) <= 1e-4


def test_a_sharded_checkpoint_holds_one_file_per_process_and_consolidated_weights(runs):
    ckpt = ck.latest_checkpoint(runs / "fsdp")
    marker = json.loads((ckpt / ck.COMPLETE).read_text())
    shards = sorted(n for n in marker["files"] if n.startswith(f"{ck.SHARDED_DIR}/"))
    assert shards == ["sharded/.metadata", "sharded/__0_0.distcp", "sharded/__1_0.distcp"]
    assert set(marker["sha256"]) == set(marker["files"]) >= {ck.MODEL_FILE, ck.STATE_FILE, ck.CONFIG_FILE}
    assert not (ckpt / ck.OPTIMIZER_FILE).exists()
    assert json.loads((ckpt / ck.STATE_FILE).read_text())["world_size"] == 2
    assert [p.name for p in ck.complete_checkpoints(runs / "fsdp")] == ["step-0000002", "step-0000004"]
    model, cfg = ck.load_model(runs / "fsdp")  # predict, stream and init_from read the consolidated file
    assert cfg.parallel == "fsdp" and not torch.equal(model.face_encoder.face_mean, torch.zeros(61))


def test_a_two_process_checkpoint_resumes_on_one_process_exactly(runs, corpus_dir, tmp_path):
    run = tmp_path / "part"
    shutil.copytree(runs / "part", run)
    assert ck.latest_checkpoint(run).name == "step-0000002"
    result = train(_cfg("parallel=fsdp", "optim.grad_accum=2"), corpus_dir, run, resume=True)
    assert result.step == 4
    resumed = _records(run, "resume")[0]
    assert resumed["world_size"] == 1 and resumed["step"] == 2
    after = [r for r in _records(run) if r["step"] > 2]
    uninterrupted = [r for r in _records(runs / "fsdp") if r["step"] > 2]
    for a, b in zip(after, uninterrupted, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["grad_norm"] == pytest.approx(b["grad_norm"])
    assert _max_diff(_params(run), _params(runs / "fsdp")) <= 1e-4  # as above
    marker = json.loads((ck.latest_checkpoint(run) / ck.COMPLETE).read_text())
    assert sorted(n for n in marker["files"] if n.endswith(".distcp")) == ["sharded/__0_0.distcp"]


def _reseal(ckpt, name):
    """Record `name`'s current size and sha256 in COMPLETE, as if it had been written so."""
    marker = json.loads((ckpt / ck.COMPLETE).read_text())
    marker["files"][name] = (ckpt / name).stat().st_size
    marker["sha256"][name] = ck.file_sha256(ckpt / name)
    (ckpt / ck.COMPLETE).write_text(json.dumps(marker))


def test_damaged_or_forged_shards_are_refused_before_loading(runs, corpus_dir, tmp_path):
    run = tmp_path / "part"
    shutil.copytree(runs / "part", run)
    ckpt = ck.latest_checkpoint(run)
    shard = ckpt / "sharded" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    cfg = _cfg("parallel=fsdp", "optim.grad_accum=2")
    with pytest.raises(CheckpointError, match=r"sharded/__1_0.distcp does not match its sha256"):
        train(cfg, corpus_dir, run, resume=True)

    shutil.rmtree(run)
    shutil.copytree(runs / "part", run)

    class Payload:  # unpickling this would run a shell command
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    (ckpt / "sharded" / ".metadata").write_bytes(pickle.dumps(Payload()))
    _reseal(ckpt, "sharded/.metadata")
    with pytest.raises(CheckpointError, match=r"posix.system is not allowed in a checkpoint's metadata"):
        train(cfg, corpus_dir, run, resume=True)
    assert not (run / "pwned").exists() and not os.path.exists("pwned")


def test_switching_between_ddp_and_fsdp_or_lora_with_fsdp_is_refused(runs, corpus_dir, tmp_path):
    run = tmp_path / "single"
    shutil.copytree(runs / "single", run)
    with pytest.raises(CheckpointError, match=r"train.parallel \(checkpoint has 'ddp', now 'fsdp'\)"):
        train(_cfg("parallel=fsdp", "optim.grad_accum=2"), corpus_dir, run, resume=True)
    with pytest.raises(ConfigError, match="a LoRA run .* fits one GPU"):
        load_train_config("lora", ["parallel=fsdp"])


def test_the_memory_estimate_counts_what_a_process_holds(runs):
    from faceturn.memory import estimate_fsdp

    cfg = _cfg("parallel=fsdp")
    estimate = estimate_fsdp(cfg.model, 2, cfg.data.window_frames)
    held = json.loads((runs / "held.json").read_text())["bytes"]
    assert estimate.sharded_state == held  # padded shards of fp32 weights, gradients and both moments
    one = estimate_fsdp(cfg.model, 1, cfg.data.window_frames)
    assert one.sharded_state == 16 * one.parameters == 4 * one.startup and held < one.sharded_state
    no_checkpointing = estimate_fsdp(cfg.model, 2, cfg.data.window_frames, activation_checkpointing=False)
    assert 0 < estimate.activations_per_window < no_checkpointing.activations_per_window
    budget = estimate.total(3) + estimate.activations_per_window // 2
    assert estimate.max_batch(budget) == 3 and estimate.total(3) == estimate.fixed + 3 * estimate.activations_per_window
