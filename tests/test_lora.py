"""LoRA fine-tuning of an imported backbone at tiny scale on CPU: after one step only the adapters, the face encoder and
the yield head have changed; the exported adapters and merged weights reproduce the run; activation checkpointing
changes no gradient; the memory estimate counts what the model really has."""

import json
from dataclasses import replace

import pytest
import torch

from faceturn import checkpoint as ck
from faceturn.config import ConfigError, from_dict
from faceturn.lora import LoraConfig, apply_lora, estimate_memory, is_adapter, merge_lora
from faceturn.model import Model, ModelConfig
from faceturn.moshi_import import import_moshi, kyutai_7b_kwargs, write_run
from faceturn.recipe import load_train_config
from faceturn.schema import N_FACE
from faceturn.train import _checkpoint_layers, train

KYUTAI_TINY = {"dim": 32, "num_layers": 1, "num_heads": 2, "text_card": 8, "context": 100, "depformer_dim": 16,
               "depformer_num_layers": 1, "depformer_num_heads": 2, "depformer_dim_feedforward": 32}  # fmt: skip
NEW_PARTS = ["face_hidden=16", "yield_hidden=16"]
TRAINED = ("face_encoder.", "yield_head.")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def imported_run(tmp_path_factory):
    """A kyutai-shaped backbone (runtime names) through import_moshi and write_run, as `faceturn import-moshi`."""
    from safetensors.torch import save_file

    from faceturn.moshi_import import model_config_from_kyutai

    folder = tmp_path_factory.mktemp("moshi")
    kwargs = {**kyutai_7b_kwargs(), **KYUTAI_TINY}
    torch.manual_seed(0)
    backbone = Model(model_config_from_kyutai(kwargs, "test", NEW_PARTS)).state_dict()
    save_file({k: v for k, v in backbone.items() if not k.startswith(("face_", "yield_"))}, str(folder / "w.st"))
    (folder / "config.json").write_text(json.dumps(kwargs))
    model = import_moshi(folder / "w.st", folder / "config.json", torch.float32, NEW_PARTS)
    write_run(model, folder / "run", {"weights": "w.st"})
    return folder / "run"


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    from faceturn.synth import generate_corpus, load_preset

    cfg = load_preset("tight", ["floor.duration_min_s=12", "floor.duration_max_s=14", "conversations_per_group=2"])
    out = tmp_path_factory.mktemp("corpus")
    generate_corpus(cfg, out, 6, seed=3, progress=False)
    return out


def lora_cfg(imported_run, *extra: str, imported_model: bool = True):
    """The lora preset at test scale; its model is the imported run's (else the preset's moshi-7b shape)."""
    cfg = load_train_config("lora", [
        f"init_from='{imported_run}'", "lora.rank=4",
        "data.window_s=4", "data.batch_size=2", "data.val_max_windows=2", "optim.max_steps=1", "optim.warmup_steps=0",
        "optim.lr=1e-2", "eval_every_steps=0", "checkpoint_every_steps=0", "progress=false", *extra,
    ])  # fmt: skip
    saved = ck.read_json(imported_run, ck.CONFIG_FILE)["train"]["model"]
    return replace(cfg, model=from_dict(ModelConfig, saved)) if imported_model else cfg


@pytest.fixture(scope="module")
def lora_run(imported_run, corpus_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "lora"
    result = train(lora_cfg(imported_run), corpus_dir, run)
    assert result.step == 1
    return run


def test_one_lora_step_changes_only_adapters_face_encoder_and_yield_head(imported_run, lora_run):
    from safetensors.torch import load_file

    before = dict(ck.load_model(imported_run)[0].named_parameters())
    after = load_file(str(ck.latest_checkpoint(lora_run) / ck.MODEL_FILE))
    changed = set()
    for name, value in after.items():
        plain = name.replace(".base_layer.", ".")
        if is_adapter(name):
            if ".lora_B." in name and not name.startswith("text_linear."):  # the synthetic corpus has no text
                assert value.abs().sum() > 0, name  # zero at step 0, trained now
            changed.add(name)
        elif plain in before and not torch.equal(value, before[plain]):
            changed.add(plain)
    assert changed and all(is_adapter(n) or n.startswith(TRAINED) for n in changed), sorted(changed)[:5]
    assert {"yield_head.0.weight", "yield_head.2.weight", "face_encoder.proj.2.weight"} <= changed
    n_frozen = sum(
        1 for n in after if not is_adapter(n) and not n.startswith(TRAINED) and n.replace(".base_layer.", ".") in before
    )
    assert n_frozen == len([n for n in before if not n.startswith(TRAINED)])  # every frozen tensor was compared


def test_exported_adapters_and_merged_weights_reproduce_the_run(lora_run):
    from safetensors.torch import load_file

    adapters = load_file(str(lora_run / "lora" / "adapters.safetensors"))
    merged = load_file(str(lora_run / "lora" / "merged.safetensors"))
    assert adapters and all(is_adapter(k) or k.startswith(TRAINED) for k in adapters)
    assert any(k.startswith("face_encoder.") for k in adapters) and any(k.startswith("yield_head.") for k in adapters)
    model, cfg = ck.load_model(lora_run)  # load_model merges a LoRA run's checkpoint
    assert cfg.lora.rank == 4
    state = model.state_dict()
    assert state.keys() == merged.keys() and all(torch.equal(state[k], merged[k]) for k in state)

    with_adapters = Model(model.cfg)  # the checkpoint read with its adapters unmerged: same outputs
    apply_lora(with_adapters, cfg.lora)
    ck.load_weights(ck.latest_checkpoint(lora_run), with_adapters)
    g = torch.Generator().manual_seed(0)
    codes = [torch.randint(0, 2048, (2, 8, 9), generator=g) for _ in range(2)]
    inputs = (
        torch.randint(-1, 8, (2, 9), generator=g),
        *codes,
        torch.randn(2, 9, N_FACE, generator=g),
        torch.ones(2, 9),
    )
    with torch.no_grad():
        a, b = with_adapters.eval()(*inputs), model(*inputs)
    for x, y in ((a.audio_logits, b.audio_logits), (a.text_logits, b.text_logits), (a.yield_logits, b.yield_logits)):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)


def test_merge_folds_adapters_into_plain_linears():
    from peft.tuners.lora import LoraLayer

    torch.manual_seed(0)
    model = Model(_micro_cfg()).eval()
    plain_keys = set(model.state_dict())
    apply_lora(model, LoraConfig(rank=2))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_(std=0.05)  # the size of a trained adapter
    inputs = _inputs()
    with torch.no_grad():
        expected = model(*inputs)
        merge_lora(model)
        got = model(*inputs)
    assert set(model.state_dict()) == plain_keys and not any(isinstance(m, LoraLayer) for m in model.modules())
    torch.testing.assert_close(got.audio_logits, expected.audio_logits, rtol=1e-5, atol=1e-5)


def test_activation_checkpointing_keeps_gradients_and_names():
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = Model(_micro_cfg())
        if checkpointing:
            _checkpoint_layers(model)
        out = model(*_inputs())
        (out.audio_logits.logsumexp(-1).mean() + out.yield_logits.mean()).backward()
        grads.append({n.replace("._checkpoint_wrapped_module", ""): p.grad for n, p in model.named_parameters()})
        names = set(model.state_dict())
    assert names == set(Model(_micro_cfg()).state_dict())
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        if g is not None:
            torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7)


def test_memory_estimate_counts_the_real_parameters():
    cfg, lora = _micro_cfg(), LoraConfig(rank=3)
    model = apply_lora(Model(cfg), lora)
    linears = [m for n, m in Model(cfg).named_modules() if isinstance(m, torch.nn.Linear)
               and not n.startswith(("face_", "yield_"))]  # fmt: skip
    trained = sum(p.numel() for n, p in model.named_parameters() if n.startswith(TRAINED))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trained + sum(
        3 * (m.in_features + m.out_features) for m in linears
    )
    estimate = estimate_memory(cfg, lora, window_frames=50)
    assert estimate.trainable_parameters == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert estimate.trainable_state == 16 * estimate.trainable_parameters
    frozen = [(n, p) for n, p in model.named_parameters() if not p.requires_grad]
    assert estimate.frozen_weights == sum(p.numel() * (4 if n.endswith(".alpha") else 2) for n, p in frozen)
    assert 0 < estimate.activations_per_window < estimate_memory(cfg, lora, 50, False).activations_per_window


def test_lora_needs_a_backbone_and_a_matching_one(imported_run, corpus_dir, tmp_path):
    with pytest.raises(ConfigError, match="set init_from"):
        train(lora_cfg(imported_run, "init_from=''"), corpus_dir, tmp_path / "a")
    with pytest.raises(ck.CheckpointError, match="init_from has another model config.*yield_hidden"):
        train(lora_cfg(imported_run, imported_model=False), corpus_dir, tmp_path / "b")
    with pytest.raises(ConfigError, match="lora.train_modules"):
        load_train_config("lora", ["lora.train_modules=['transformer']"])


def _micro_cfg():
    from faceturn.model import ModelConfig

    return ModelConfig(dim=32, num_layers=2, num_heads=2, card=16, text_card=12, depformer_dim=16,
                       depformer_num_heads=2, depformer_dim_feedforward=32, face_hidden=8, yield_hidden=8)  # fmt: skip


def _inputs():
    g = torch.Generator().manual_seed(1)
    codes = [torch.randint(0, 16, (2, 8, 7), generator=g) for _ in range(2)]
    return (
        torch.randint(-1, 12, (2, 7), generator=g),
        *codes,
        torch.randn(2, 7, N_FACE, generator=g),
        torch.ones(2, 7),
    )
