"""Import kyutai's Moshi weights (the `LMModel` of the `moshi` package, 0.2.13) into a faceturn run folder.

faceturn's model keeps kyutai's runtime parameter names, so the mapping is the identity except for the legacy fused
attention layout that released checkpoints use: `…self_attn.in_proj_weight` (or `in_proj.weight`) of shape
[steps·3·D, D] and `…self_attn.out_proj.weight` of shape [steps·D, D] hold every step's q;k;v and output projection,
step-major (kyutai's `StreamingMultiheadAttention._load_hook`); they become `in_projs.{k}` / `out_projs.{k}`.
Streams follow kyutai's order (text, Moshi cb0..7, user cb0..7): the self is Moshi, the interlocutor the user.

The new parts (face encoder, face head, yield head) are created fresh with `face_zero_init`: the encoder's last layer
is zero and the missing-face vector is zero, so with or without a face the imported model's text and audio logits are
exactly Moshi's until training moves them. Tensors are read one at a time from the safetensors file and cast to the
target dtype (bf16 by default) into a model built on the meta device, so the 7B shape needs about 15.4 GB, not 2×.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from faceturn import checkpoint as ckpt_io
from faceturn.config import apply_overrides
from faceturn.errors import CheckpointError, ConfigError, RunDirError
from faceturn.io import atomic_write_json
from faceturn.model import Model, ModelConfig, from_config, load_model_config
from faceturn.recipe import TrainConfig, resolved_config
from faceturn.train import build_optimizer

BASE_CONFIG = "moshi-7b"  # the named model config whose shape is kyutai's released one
NEW_PART_FIELDS = ("face_norm", "zero_groups", "face_hidden", "yield_hidden")  # what `--set` may change on import
NEW_PARTS = ("face_encoder.", "face_head.", "yield_head.")

# kyutai LMModel kwarg -> ModelConfig field of the same meaning.
_SHAPE_KEYS = {
    "dim": "dim",
    "num_layers": "num_layers",
    "num_heads": "num_heads",
    "hidden_scale": "hidden_scale",
    "context": "context",
    "max_period": "max_period",
    "card": "card",
    "text_card": "text_card",
    "delays": "delays",
    "depformer_dim": "depformer_dim",
}
# kwargs faceturn implements only at one value: (that value, kyutai's default when the key is absent). An absent key
# whose kyutai default differs is an error, because kyutai would then build another architecture.
_FIXED: dict[str, tuple[Any, Any]] = {
    "n_q": (16, 8),
    "dep_q": (8, 8),
    "norm": ("rms_norm_f32", "layer_norm"),
    "gating": ("silu", "none"),
    "positional_embedding": ("rope", "sin"),
    "causal": (True, True),
    "layer_scale": (None, None),
    "kv_repeat": (1, 1),
    "bias_proj": (False, False),
    "norm_emb": (False, False),
    "depformer_pos_emb": ("none", "sin"),
    "depformer_multi_linear": (True, False),
    "depformer_weights_per_step": (True, False),
    "depformer_weights_per_step_schedule": (None, None),
    "depformer_low_rank_embeddings": (None, None),
    "depformer_norm": (None, None),
    "text_card_out": (None, None),
    "demux_second_text_stream": (False, False),
    "extra_heads_num_heads": (0, 0),
    "existing_text_padding_id": (3, 3),  # faceturn's LossConfig text_pad_id
    "existing_text_end_padding_id": (0, 0),  # faceturn's LossConfig text_epad_id
    "conditioners": (None, None),
    "fuser": (None, None),
    "cross_attention": (False, False),
}
# kwargs with no effect on the weights or the math of this architecture, and the non-LM keys of kyutai's config.json.
_IGNORED = {
    "depformer_context",  # LMModel forces the depformer's context to None
    "depformer_max_period",  # the depformer has no positional embedding
    "extra_heads_dim",  # no extra heads
    "gradient_checkpointing",
    "moshi_name", "mimi_name", "mimi_config_name", "tokenizer_name", "lora_name", "model_type", "lm_gen_config",
    "tts_config", "stt_config", "model_id",
}  # fmt: skip
_LEGACY_ATTN = re.compile(r"(?P<prefix>.*\.self_attn\.)(?P<name>in_proj_weight|in_proj\.weight|out_proj\.weight)")


def model_config_from_kyutai(kwargs: Mapping[str, Any], source: str, overrides: Iterable[str] = ()) -> ModelConfig:
    """kyutai's LM kwargs (its config.json) → our ModelConfig: the shape from kyutai, the new parts from moshi-7b.toml
    plus `overrides` (only NEW_PART_FIELDS), `face_zero_init` always on. Unsupported options raise, naming the key."""
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"{source}: expected a JSON object of LMModel kwargs")
    unknown = sorted(set(kwargs) - set(_SHAPE_KEYS) - set(_FIXED) - _IGNORED - {k for k in kwargs if _is_dep(k)})
    if unknown:
        raise ConfigError(f"{source}: unknown LMModel option(s) {unknown}; faceturn cannot tell what they change")
    for key, (supported, default) in _FIXED.items():
        value = kwargs.get(key, default)
        if value != supported:
            given = f"{value!r}" if key in kwargs else f"absent (kyutai's default {default!r})"
            raise ConfigError(f"{source}: {key} is {given}; faceturn's model implements only {supported!r}")
    missing = [k for k in _SHAPE_KEYS if k not in kwargs]
    if missing:
        raise ConfigError(f"{source}: missing LMModel option(s) {missing}")
    if kwargs["context"] is None:
        raise ConfigError(f"{source}: context is null (unlimited); faceturn needs a context in frames")
    shape = {field: kwargs[key] for key, field in _SHAPE_KEYS.items()}
    shape["delays"] = tuple(shape["delays"])
    # The depformer inherits the main transformer's option unless a depformer_ key overrides it (as kyutai does).
    for sub in ("gating", "layer_scale", "kv_repeat"):
        dep = kwargs.get(f"depformer_{sub}", kwargs.get(sub, _FIXED[sub][1]))
        if dep != _FIXED[sub][0]:
            supported = _FIXED[sub][0]
            raise ConfigError(f"{source}: the depformer's {sub} is {dep!r}; faceturn implements only {supported!r}")
    shape["depformer_num_heads"] = kwargs.get("depformer_num_heads", kwargs["num_heads"])
    shape["depformer_num_layers"] = kwargs.get("depformer_num_layers", kwargs["num_layers"])
    dim_ff = kwargs.get("depformer_dim_feedforward")
    shape["depformer_dim_feedforward"] = (
        int(kwargs["hidden_scale"] * kwargs["depformer_dim"]) if dim_ff is None else dim_ff
    )
    if not isinstance(shape["depformer_dim_feedforward"], int):
        raise ConfigError(f"{source}: depformer_dim_feedforward must be one integer, got {dim_ff!r}")
    bad = [o.split("=", 1)[0].strip() for o in overrides if o.split("=", 1)[0].strip() not in NEW_PART_FIELDS]
    if bad:
        raise ConfigError(f"cannot override {bad} on import: only the new parts' {list(NEW_PART_FIELDS)} are free")
    try:
        cfg = dataclasses.replace(load_model_config(BASE_CONFIG), **shape, face_zero_init=True)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {e}") from None
    return apply_overrides(cfg, overrides)


def _is_dep(key: str) -> bool:
    """depformer_* shape keys read in model_config_from_kyutai (the fixed ones are in _FIXED)."""
    return key in ("depformer_num_heads", "depformer_num_layers", "depformer_dim_feedforward", "depformer_gating",
                   "depformer_layer_scale", "depformer_kv_repeat")  # fmt: skip


def kyutai_7b_kwargs() -> dict[str, Any]:
    """kyutai's LM kwargs for our moshi-7b shape (what its loader assumes when a repository has no config.json)."""
    cfg = load_model_config(BASE_CONFIG)
    fixed = {k: v for k, (v, default) in _FIXED.items() if v != default}
    return {
        **{key: getattr(cfg, field) for key, field in _SHAPE_KEYS.items()},
        "delays": list(cfg.delays),
        **fixed,
        "depformer_num_heads": cfg.depformer_num_heads,
        "depformer_num_layers": cfg.depformer_num_layers,
        "depformer_dim_feedforward": cfg.depformer_dim_feedforward,
    }


def _split_legacy(name: str, tensor: Tensor, steps_of: Mapping[str, int]) -> dict[str, Tensor]:
    """One checkpoint tensor → our runtime name(s); a fused legacy attention weight becomes one tensor per step."""
    m = _LEGACY_ATTN.fullmatch(name)
    if m is None:
        return {name: tensor}
    prefix, kind = m.group("prefix"), "in_projs" if m.group("name") != "out_proj.weight" else "out_projs"
    steps = steps_of.get(prefix + kind)
    if steps is None:
        return {name: tensor}  # reported as unexpected by the caller
    if tensor.dim() != 2 or tensor.shape[0] % steps:
        raise CheckpointError(f"{name}: shape {list(tensor.shape)} does not split into {steps} per-step weights")
    parts = tensor.view(steps, -1, tensor.shape[1])  # step-major: part k is step k's (q;k;v) or output block
    return {f"{prefix}{kind}.{k}.weight": w.clone() if steps > 1 else w for k, w in enumerate(parts)}


def map_state_dict(tensors: Iterable[tuple[str, Tensor]], model: Model, source: str) -> dict[str, Tensor]:
    """kyutai (name, tensor) pairs, runtime or legacy names → our backbone state dict, checked name by name and shape
    by shape against `model` (any device, meta included). Every backbone tensor must be present, nothing else."""
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.startswith(NEW_PARTS)}
    steps_of = {  # "….self_attn.in_projs" → number of per-step weights
        name: len(module)
        for name, module in model.named_modules()
        if name.endswith(("_attn.in_projs", "_attn.out_projs"))
    }
    out: dict[str, Tensor] = {}
    unexpected = []
    for name, tensor in tensors:
        for key, value in _split_legacy(name, tensor, steps_of).items():
            if key not in expected:
                unexpected.append(name)
                continue
            if tuple(value.shape) != tuple(expected[key]):
                raise CheckpointError(
                    f"{source}: {name} has shape {list(value.shape)}, the model expects {list(expected[key])} for "
                    f"{key} (is --config the checkpoint's config.json?)"
                )
            out[key] = value
    missing = sorted(set(expected) - set(out))
    if unexpected or missing:
        raise CheckpointError(
            f"{source}: weights do not fit a Moshi LMModel of this shape: unexpected {sorted(set(unexpected))[:6]}, "
            f"missing {missing[:6]}" + (f" (+{len(missing) - 6} more)" if len(missing) > 6 else "")
        )
    return out


def _read_tensors(path: Path, dtype: torch.dtype):
    """(name, tensor) one at a time from a safetensors file; matrices cast to `dtype`, RMSNorm gains kept in fp32."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                if t.is_floating_point():
                    t = t.to(torch.float32 if name.endswith(".alpha") else dtype)
                yield name, t
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: cannot read as safetensors ({e})") from None


def load_kyutai_config(path: str | Path | None) -> tuple[dict[str, Any], str]:
    """kyutai's config.json (its LMModel kwargs), or the 7B's kwargs when no path is given."""
    if path is None:
        return kyutai_7b_kwargs(), f"{BASE_CONFIG} (no --config)"
    path = Path(path)
    try:
        return json.loads(path.read_text()), str(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None


def import_moshi(
    weights: str | Path,
    config: str | Path | None = None,
    dtype: torch.dtype = torch.bfloat16,
    overrides: Iterable[str] = (),
    seed: int = 0,
) -> Model:
    """kyutai's `model.safetensors` (+ its config.json) → our Model on CPU in `dtype` (RMSNorm gains fp32), in eval
    mode, with fresh zero-initialised new parts (seeded by `seed`)."""
    weights = Path(weights)
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file not found")
    kwargs, source = load_kyutai_config(config)
    cfg = model_config_from_kyutai(kwargs, source, overrides)
    return build_imported(cfg, _read_tensors(weights, dtype), str(weights), dtype, seed)


def build_imported(
    cfg: ModelConfig, tensors: Iterable[tuple[str, Tensor]], source: str, dtype: torch.dtype, seed: int = 0
) -> Model:
    """A model of shape `cfg` built on the meta device, filled with kyutai's (name, tensor) pairs, new parts fresh."""
    model = from_config(cfg, device="meta")
    model.load_state_dict(map_state_dict(tensors, model, source), strict=False, assign=True)
    torch.manual_seed(seed)
    model.build_new_parts(device="cpu")
    for name in NEW_PARTS:
        getattr(model, name.rstrip(".")).to(dtype)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # map_state_dict checked every name; this guards the build itself
        raise RuntimeError(f"tensors left unloaded after import: {left[:5]}")
    return model.eval()


def write_run(model: Model, out: str | Path, imported_from: Mapping[str, Any]) -> Path:
    """Save an imported model as a run folder (checkpoint step 0) that `load_model` and `train`'s `init_from` read."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunDirError(f"{out}: exists and is not an empty folder; choose a new --out")
    train_cfg = TrainConfig(model=model.cfg)  # the saved train config rebuilds exactly this model
    resolved = {**resolved_config(train_cfg), "imported_from": dict(imported_from)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / ckpt_io.CONFIG_FILE, resolved)
    optimizer = build_optimizer(model, train_cfg.optim, torch.device("cpu"))  # no state: nothing was trained yet
    state = {"data": None, "loop": {"elapsed_s": 0.0, "frames_seen": 0}, "imported_from": dict(imported_from)}
    return ckpt_io.save_checkpoint(out, 0, model, optimizer, state, resolved, keep_last=1)
