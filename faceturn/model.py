"""The face-aware, Moshi-style full-duplex dialogue LM, in one file that reads top to bottom.

Architecture: kyutai's `LMModel` (moshi 0.2.13), with its math and runtime parameter names kept so that kyutai's
weights load unchanged, plus a face encoder and two heads.
- Temporal transformer: pre-norm blocks, no biases, no dropout; RMSNorm computed in fp32 (eps 1e-8, param `alpha`
  [1, 1, D]); RoPE on q and k with interleaved pairs (max_period 10000, fp32 math, absolute positions); causal
  attention with a context limit (a query at position p sees the keys at positions q with 0 ≤ p − q < context);
  SiLU-gated FFN (the first half of `linear_in` is the gate; H = 2·dim_ff//3, or 21·D//8 when dim_ff = 4·D).
- Frame input = Σ 16 audio-codebook embeddings (self cb0..7, then interlocutor cb0..7) + text embedding + face
  encoding. Token −1 (absent text, padding) embeds to exactly 0; no embedding scale, no positional embedding.
- Delay pattern: stream s (kyutai order: text, self cb0..7, interlocutor cb0..7) is shifted right by delays[s]
  (default text 0, semantic 0, acoustic 1) and one all-initial frame is prepended (audio initial = card, text
  initial = text_card); temporal position p reads column p of that delayed grid.
- Depth transformer ("depformer") over the self's 8 codebooks: every layer has per-step attention projections and
  FFN (norms shared), no positional encoding, causal over the 8 steps. Step 0 reads depformer_in[0](h) +
  depformer_text_emb(text token); step k ≥ 1 reads depformer_in[k](h) + depformer_emb[k−1](self codebook k−1), both
  from the next delayed column (teacher forcing). `linears[k]` act directly on its output (no final norm).
- Face encoder (new, `face_encoder.*`): zero `zero_groups`, normalize (`layernorm` across the 61 channels, or
  `standardize` with fixed corpus statistics), MLP to D; frames without a face get a learned `missing` vector
  instead (always, when every group is zeroed: the audio-only model does not even see whether a face was found).
  `forward(zero_groups=...)` zeroes more groups for that call only (post-hoc zeroing at evaluation); the model's
  own state never changes, so an evaluation that fails half-way leaves nothing altered.
  The face of frame k−1 enters at position k like a delay-0 stream (position 0 sees `missing`).
- Heads on the out_norm'ed temporal output: text (`text_linear`), audio (depformer), face next-frame regression
  (`face_head`, in standardized units) and turn yield (`yield_head`, MLP → 1 logit).

Alignment. T input frames, T + 1 temporal positions; every output is indexed by input frame k:
- text_logits[k], face_pred[k]: position k, which has read frames < k.
- semantic logits[k]: position k and depformer step 0, teacher-forced on the self's text[k].
- acoustic logits[k] (codebook j ≥ 1, delay 1): position k + 1, which has read frames ≤ k (acoustic ≤ k − 1), and
  the depformer teacher-forced on codebooks 1..j−1 of frame k. Exactly as in Moshi, steps 0-1 of that depformer
  column read the self's text and semantic token of frame k + 1, which Moshi emits *before* frame k's acoustic
  tokens: this is the only dependence of any output on a later frame. The last frame has no such column (masked).
- yield_logits[k], hidden[k]: position k + 1, everything consumed by the end of frame k (text, semantic and face of
  frame k, acoustic of frame k − 1).
The face and the interlocutor reach every output only through frames ≤ k; tests/test_model.py proves all of this
with exact gradients. Attention takes a position offset and builds its mask from positions, so streaming is the same
math one position at a time: `Model.step` / `Model.depformer_step` with a `KVCache` per layer (a ring of `context`
positions per row, absolute positions counting on past it). faceturn.stream keeps the delay buffers and samples.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from faceturn.config import ConfigError, config_names, from_dict, named_or_path, override_raw, read_raw
from faceturn.errors import FaceturnError, SchemaError
from faceturn.schema import DEFAULT_ZERO_GROUPS, N_CODEBOOKS, N_FACE, group_indices

N_STREAMS = 1 + 2 * N_CODEBOOKS  # text, self cb0..7, interlocutor cb0..7
MOSHI_DELAYS: tuple[int, ...] = (0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1)
ZERO_TOKEN = -1  # embeds to exactly 0 and is never a target
CONFIG_DIR = Path(__file__).parent / "configs" / "model"
FACE_STD_FLOOR = 1e-6  # a face channel with a smaller corpus std (MediaPipe's constant tongueOut) is only centred
SHAPE_FIELDS = (
    "dim", "num_layers", "num_heads", "hidden_scale", "context", "max_period", "card", "text_card", "delays",
    "depformer_dim", "depformer_num_layers", "depformer_num_heads", "depformer_dim_feedforward", "face_hidden",
    "face_zero_init", "yield_hidden",
)  # what a shape file in CONFIG_DIR holds; face_norm and zero_groups are experiment settings  # fmt: skip


@dataclass(frozen=True)
class ModelConfig:
    """The model: a shape (a named TOML in faceturn/configs/model/, which holds only shapes) plus the experiment's
    face settings. Saved with each checkpoint; `zero_groups` applies identically at train and eval.

    In a config table, `shape = "small"` fills every shape field not given explicitly; the defaults are `tiny`."""

    shape: str = "tiny"  # the shape's name (or TOML path) the shape fields were read from
    dim: int = 64  # temporal transformer width D
    num_layers: int = 2  # temporal transformer layers
    num_heads: int = 4  # temporal attention heads (head dim = dim / num_heads, even for RoPE)
    hidden_scale: float = 4.125  # temporal FFN dim_feedforward = int(hidden_scale · dim), as kyutai
    context: int = 500  # attention context in frames (Moshi: 3000 frames = 240 s)
    max_period: float = 10000.0  # RoPE maximum period
    card: int = 2048  # audio codebook size; token `card` is the initial token
    text_card: int = 32000  # text vocabulary; token `text_card` is the initial token
    delays: tuple[int, ...] = MOSHI_DELAYS  # per stream, kyutai order: text, self cb0..7, interlocutor cb0..7
    depformer_dim: int = 32  # depth transformer width
    depformer_num_layers: int = 1
    depformer_num_heads: int = 2
    depformer_dim_feedforward: int = 132  # before gating: H = 2·dim_ff//3 (or 21·dim//8 when dim_ff = 4·dim)
    face_hidden: int = 64  # face encoder MLP hidden width
    face_zero_init: bool = False  # zero the encoder's last layer: an imported Moshi predicts exactly as before
    yield_hidden: int = 64  # turn-yield head MLP hidden width
    face_norm: Literal["layernorm", "standardize"] = "layernorm"  # layernorm across the 61 channels (the paper's)
    zero_groups: tuple[str, ...] = DEFAULT_ZERO_GROUPS  # face groups (faceturn.schema.FACE_GROUPS) always zeroed

    # Setting `shape` by an override replaces every field that a shape file holds.
    reset_on_set: ClassVar[dict[str, tuple[str, ...]]] = {"shape": SHAPE_FIELDS}

    @classmethod
    def resolve_raw(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Fill the shape fields a table does not give from its `shape` file (named config or TOML path)."""
        shape = data.get("shape", cls.shape)
        if not all(k in data for k in SHAPE_FIELDS):
            table = read_raw(named_or_path(shape, CONFIG_DIR, "model shape"))
            extra = sorted(set(table) - set(SHAPE_FIELDS))
            if extra:
                raise ConfigError(f"model shape {shape!r}: {extra} are not shape fields (set them in the train config)")
            data = {**table, **data}
        return {**data, "shape": str(shape)}

    def __post_init__(self) -> None:
        positive = ("dim", "num_layers", "num_heads", "context", "card", "text_card", "depformer_dim",
                    "depformer_num_layers", "depformer_num_heads", "depformer_dim_feedforward", "face_hidden",
                    "yield_hidden")  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.hidden_scale > 0 and self.max_period > 0):
            raise ValueError(f"hidden_scale and max_period must be > 0, got {self.hidden_scale}, {self.max_period}")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.num_heads} heads of even size (RoPE pairs)")
        if self.depformer_dim % self.depformer_num_heads:
            raise ValueError(f"depformer_dim {self.depformer_dim} is not divisible by {self.depformer_num_heads} heads")
        if len(self.delays) != N_STREAMS or min(self.delays) < 0:
            raise ValueError(f"delays must be {N_STREAMS} integers >= 0 (text, self 8, other 8), got {self.delays}")
        if self.face_norm not in ("layernorm", "standardize"):
            raise ValueError(f"face_norm must be 'layernorm' or 'standardize', got {self.face_norm!r}")
        group_indices(self.zero_groups)  # unknown group names raise, listing the valid ones


def named_configs() -> list[str]:
    """Names of the model shapes shipped in faceturn/configs/model/."""
    return config_names(CONFIG_DIR)


def load_model_config(shape: str | Path, overrides: Iterable[str] = ()) -> ModelConfig:
    """A model of a named shape (`tiny`, `small`, `base`, `moshi-7b`) or a shape TOML file, with `key=value`
    overrides of any field."""
    return from_dict(ModelConfig, override_raw(ModelConfig, {"shape": str(shape)}, overrides))


# ------------------------------------------------------------------------------------------------ building blocks
class RMSNorm(nn.Module):
    """y = x · alpha / sqrt(eps + mean(x²)), computed in at least fp32 (kyutai's `rms_norm_f32`)."""

    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.alpha = nn.Parameter(torch.ones(1, 1, dim))

    def forward(self, x: Tensor) -> Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        x32 = x.to(dtype)
        var = self.eps + torch.mean(x32**2, dim=-1, keepdim=True)
        return (x32 * (self.alpha.to(dtype) * torch.rsqrt(var))).to(x.dtype)


def apply_rope(q: Tensor, k: Tensor, offset: int | Tensor, max_period: float) -> tuple[Tensor, Tensor]:
    """Rotate each pair (x[2i], x[2i+1]) of q, k [B, H, T, d] by angle (offset + t) · max_period^(−2i/d).

    `offset` is one int, or per-row positions [B] (streaming rows that started at different times). Angles are
    computed in fp32 exactly as kyutai's `apply_rope`, the rotation in at least fp32.
    """
    T, d = q.shape[-2], q.shape[-1]
    freqs = torch.exp(torch.arange(d // 2, device=q.device, dtype=torch.float32) * (-math.log(max_period) * 2 / d))
    ts = torch.arange(T, device=q.device, dtype=torch.float32)
    if isinstance(offset, Tensor):
        ts = offset.to(q.device, torch.float32).view(-1, 1, 1) + ts  # [B, 1, T]
    else:
        ts = offset + ts
    angles = freqs * ts.unsqueeze(-1)  # [T, d/2] or [B, 1, T, d/2]
    dtype = torch.promote_types(q.dtype, torch.float32)
    cos, sin = torch.cos(angles).to(dtype), torch.sin(angles).to(dtype)

    def rotate(x: Tensor) -> Tensor:
        xr, xi = x.unflatten(-1, (d // 2, 2)).to(dtype).unbind(-1)
        return torch.stack([xr * cos - xi * sin, xr * sin + xi * cos], dim=-1).flatten(-2).to(x.dtype)

    return rotate(q), rotate(k)


def per_step(modules: nn.ModuleList, x: Tensor, offset: int | Tensor) -> Tensor:
    """Apply modules[offset + t] to position t of x [B, T, C] (kyutai's weights per step); one module applies to all
    (then `offset` may be per-row positions, which only RoPE reads)."""
    if len(modules) == 1:
        return modules[0](x)
    if offset + x.shape[1] > len(modules):
        raise ValueError(f"{x.shape[1]} steps from offset {offset} exceed the {len(modules)} per-step weights")
    if x.shape[1] == 1:  # one streaming step
        return modules[offset](x)
    return torch.cat([modules[offset + t](x[:, t : t + 1]) for t in range(x.shape[1])], dim=1)


class KVCache:
    """Keys and values of one attention layer for streaming: `capacity` slots per batch row, each with the absolute
    position it holds (−1 = empty). Position p lives in slot p mod capacity, so with capacity = context the ring holds
    exactly the keys the newest query may see, memory stays bounded, and positions count on past the limit."""

    def __init__(self, batch: int, num_heads: int, head_dim: int, capacity: int, device=None, dtype=None):
        self.capacity = capacity
        self.keys = torch.zeros(batch, num_heads, capacity, head_dim, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)
        self.positions = torch.full((batch, capacity), -1, dtype=torch.long, device=device)
        self._rows = torch.arange(batch, device=device)

    def append(self, k: Tensor, v: Tensor, positions: Tensor) -> None:
        """Store k, v [B, H, 1, d] of each row's new position (positions [B])."""
        slots = positions % self.capacity
        self.keys[self._rows, :, slots] = k[:, :, 0]
        self.values[self._rows, :, slots] = v[:, :, 0]
        self.positions[self._rows, slots] = positions

    def clear(self, rows: Tensor) -> None:
        """Forget everything rows [R] (indices) hold; the stale keys stay but are never visible."""
        self.positions[rows] = -1


class Attention(nn.Module):
    """Causal multi-head self-attention; `in_projs.{s}` rows are q;k;v, each head-major, as kyutai's layout.

    `num_steps` > 1 gives every position its own projections (the depformer). The mask is built from positions, so a
    KV cache only has to supply cached keys with their positions.
    """

    def __init__(self, dim: int, num_heads: int, num_steps: int, rope_max_period: float | None, context: int | None):
        super().__init__()
        self.num_heads, self.rope_max_period, self.context = num_heads, rope_max_period, context
        self.in_projs = nn.ModuleList(nn.Linear(dim, 3 * dim, bias=False) for _ in range(num_steps))
        self.out_projs = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(num_steps))

    def forward(self, x: Tensor, offset: int | Tensor = 0, cache: KVCache | None = None) -> Tensor:
        """x [B, T, D] at positions offset + t. With a `cache` (streaming), T = 1 and `offset` is an int or per-row
        positions [B]: the new key joins the cache and the query attends to the cached keys the mask allows."""
        B, T, D = x.shape
        q, k, v = per_step(self.in_projs, x, offset).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        if self.rope_max_period is not None:
            q, k = apply_rope(q, k, offset, self.rope_max_period)
        if cache is not None:
            if T != 1:
                raise ValueError(f"a KV cache takes one position per call, got {T}")
            positions = torch.as_tensor(offset, device=x.device).expand(B)
            cache.append(k, v, positions)
            delta = positions[:, None] - cache.positions  # [B, slots] query position − key position
            visible = (cache.positions >= 0) & (delta >= 0)
            if self.context is not None:
                visible = visible & (delta < self.context)
            y = F.scaled_dot_product_attention(q, cache.keys, cache.values, attn_mask=visible[:, None, None])
        elif self.context is None or T <= self.context:  # plain causal: lets SDPA pick its fused kernels
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            positions = offset + torch.arange(T, device=x.device)
            delta = positions[:, None] - positions[None, :]  # query position − key position
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=(delta >= 0) & (delta < self.context))
        return per_step(self.out_projs, y.transpose(1, 2).reshape(B, T, D), offset)


def ffn_hidden(dim: int, dim_feedforward: int) -> int:
    """The gated FFN's hidden width H: 2·dim_ff//3, except 21·dim//8 when dim_ff = 4·dim (kyutai's special case)."""
    return (21 * dim) // 8 if dim_feedforward == 4 * dim else (2 * dim_feedforward) // 3


class Gating(nn.Module):
    """SiLU-gated FFN: linear_in D → 2H viewed [.., 2, H], silu(first half) · second half, linear_out H → D."""

    def __init__(self, dim: int, dim_feedforward: int):
        super().__init__()
        hidden = ffn_hidden(dim, dim_feedforward)
        self.linear_in = nn.Linear(dim, 2 * hidden, bias=False)
        self.linear_out = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.linear_in(x).unflatten(-1, (2, -1))
        return self.linear_out(F.silu(h[..., 0, :]) * h[..., 1, :])


class Layer(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then + ffn(norm2(x)); per-step FFNs when num_steps > 1."""

    def __init__(self, dim, num_heads, dim_feedforward, num_steps, rope_max_period, context):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.self_attn = Attention(dim, num_heads, num_steps, rope_max_period, context)
        self.norm2 = RMSNorm(dim)
        self.gating = (
            Gating(dim, dim_feedforward)
            if num_steps == 1
            else nn.ModuleList(Gating(dim, dim_feedforward) for _ in range(num_steps))
        )

    def forward(self, x: Tensor, offset: int | Tensor = 0, cache: KVCache | None = None) -> Tensor:
        x = x + self.self_attn(self.norm1(x), offset, cache)
        h = self.norm2(x)
        return x + (per_step(self.gating, h, offset) if isinstance(self.gating, nn.ModuleList) else self.gating(h))


class Transformer(nn.Module):
    def __init__(self, dim, num_heads, num_layers, dim_feedforward, num_steps=1, rope_max_period=None, context=None):
        super().__init__()
        self.layers = nn.ModuleList(
            Layer(dim, num_heads, dim_feedforward, num_steps, rope_max_period, context) for _ in range(num_layers)
        )

    def forward(self, x: Tensor, offset: int | Tensor = 0, caches: list[KVCache] | None = None) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, offset, None if caches is None else caches[i])
        return x


class Embedding(nn.Embedding):
    """nn.Embedding where token −1 embeds to exactly 0 (kyutai's ScaledEmbedding without extras)."""

    def forward(self, tokens: Tensor) -> Tensor:
        y = super().forward(tokens.clamp(min=0))
        return torch.where((tokens == ZERO_TOKEN).unsqueeze(-1), 0.0, y)


class FaceEncoder(nn.Module):
    """Zero groups → normalize → MLP to the model width; frames without a face get the learned `missing` vector."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        keep = torch.ones(N_FACE)
        keep[group_indices(cfg.zero_groups)] = 0.0
        self.register_buffer("keep", keep, persistent=False)  # derived from cfg.zero_groups, which is saved
        self.register_buffer("face_mean", torch.zeros(N_FACE))  # corpus statistics (set_face_statistics)
        self.register_buffer("face_std", torch.ones(N_FACE))
        self.norm = nn.LayerNorm(N_FACE) if cfg.face_norm == "layernorm" else None
        self.proj = nn.Sequential(
            nn.Linear(N_FACE, cfg.face_hidden), nn.SiLU(), nn.Linear(cfg.face_hidden, cfg.dim, bias=False)
        )
        self.missing = nn.Parameter(torch.zeros(cfg.dim))
        if cfg.face_zero_init:
            nn.init.zeros_(self.proj[-1].weight)

    def keep_mask(self, zero_groups: Iterable[str] = ()) -> Tensor:
        """The channel mask [61] of one call: the config's `zero_groups` and these as well. A fresh tensor, so
        post-hoc zeroing at evaluation never writes into the model (the `keep` buffer itself when nothing is added)."""
        extra = group_indices(zero_groups)
        if not extra:
            return self.keep
        keep = self.keep.clone()
        keep[extra] = 0.0
        return keep

    def standardize(self, face: Tensor, keep: Tensor | None = None) -> Tensor:
        """(face − mean) / std on kept channels, exactly 0 on zeroed ones: fixed units, also the regression target."""
        keep = self.keep if keep is None else keep
        return (face * keep - self.face_mean) / self.face_std * keep

    def normalize(self, face: Tensor, keep: Tensor | None = None) -> Tensor:
        keep = self.keep if keep is None else keep
        return self.norm(face * keep) if self.norm is not None else self.standardize(face, keep)

    def forward(self, face: Tensor, present: Tensor, keep: Tensor | None = None) -> Tensor:
        """face [B, P, 61], present [B, P] in {0, 1} (float, so it is differentiable for tests), channel mask
        `keep` [61] (`keep_mask`; default the config's) → [B, P, D]."""
        keep = self.keep if keep is None else keep
        p = present.unsqueeze(-1) * keep.any()  # every group zeroed = audio-only: not even face presence
        enc = self.proj(self.normalize(torch.where(p > 0, face, 0.0), keep))  # absent frames may hold anything
        return p * enc + (1 - p) * self.missing

    @torch.no_grad()
    def set_face_statistics(self, mean: Tensor, std: Tensor) -> None:
        mean, std = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64)
        if mean.shape != (N_FACE,) or std.shape != (N_FACE,):
            raise SchemaError(
                f"face statistics must have shape [{N_FACE}], got {tuple(mean.shape)}, {tuple(std.shape)}"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()) or (std < 0).any():
            raise FaceturnError("face statistics must be finite with std >= 0")
        std = torch.where(std < FACE_STD_FLOOR, 1.0, std)
        self.face_mean.copy_(mean)
        self.face_std.copy_(std)


# ----------------------------------------------------------------------------------------------------- the model
@dataclass
class ModelOutput:
    """All tensors are aligned with the input frames (no extra shift); invalid positions hold 0 and mask False."""

    text_hidden: Tensor  # [B, T, D]  the text head's input for frame k (position k); see `text_logits`
    text_mask: Tensor  # [B, T] bool  text[k] present (!= -1)
    text_target: Tensor  # [B, T] long  the input text
    audio_logits: Tensor | None  # [B, 8, T, card]  semantic: position k; acoustic: position k+1 (delay)
    audio_mask: Tensor  # [B, 8, T] bool  code present and a position predicts it (acoustic: k < T-1)
    audio_target: Tensor  # [B, 8, T] long  the self's input codes
    face_pred: Tensor  # [B, T, 61]  face[k] predicted at position k, standardized units, 0 on zeroed groups
    face_target: Tensor  # [B, T, 61]  the input face, standardized (FaceEncoder.standardize), 0 where absent
    face_mask: Tensor  # [B, T] bool  face present and frame not padding
    face_channel_mask: Tensor  # [61] bool  channels not in zero_groups (the face loss averages over these)
    yield_logits: Tensor  # [B, T]  P(yield) logit for frame k from position k+1 (end of frame k)
    hidden: Tensor  # [B, T, D]  out_norm'ed temporal output at position k+1, the yield head's input
    frame_mask: Tensor  # [B, T] bool  frame is not padding (some audio code != -1)
    text_head: nn.Module = field(repr=False)  # the model's text_linear

    @cached_property
    def text_logits(self) -> Tensor:
        """[B, T, text_card], frame k from position k. Computed on first use: the 32k-way head dominates small
        models, and a batch without text (synthetic corpora) never needs it."""
        return self.text_head(self.text_hidden)


def delay_streams(codes: Tensor, delays: Iterable[int], initial: Iterable[int]) -> Tensor:
    """[B, K, T] → [B, K, T+1]: one all-initial frame, then stream k shifted right by delays[k] (gap = initial)."""
    B, _, T = codes.shape
    rows = []
    for k, (d, init) in enumerate(zip(delays, initial, strict=True)):
        head = codes.new_full((B, min(d, T) + 1), init)
        rows.append(torch.cat([head, codes[:, k, : max(T - d, 0)]], dim=1))
    return torch.stack(rows, dim=1)


def _undelay(x: Tensor, delay: int) -> tuple[Tensor, Tensor]:
    """Per-position x [B, T, C] → per-frame: frame k from position k + delay; the last `delay` frames are 0.

    Applied to the hidden states before the (bias-free) output linears, so logits are never copied."""
    T = x.shape[1]
    d = min(delay, T)
    valid = torch.arange(T, device=x.device) < T - d
    if d == 0:
        return x, valid
    return torch.cat([x[:, d:], x.new_zeros(x.shape[0], d, x.shape[2])], dim=1), valid


class Model(nn.Module):
    """Temporal transformer + depformer + face encoder + yield head; see the module docstring."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        D, Dd, K = cfg.dim, cfg.depformer_dim, N_CODEBOOKS
        self.emb = nn.ModuleList(Embedding(cfg.card + 1, D) for _ in range(2 * K))
        self.text_emb = Embedding(cfg.text_card + 1, D)
        self.text_linear = nn.Linear(D, cfg.text_card, bias=False)
        self.transformer = Transformer(
            D, cfg.num_heads, cfg.num_layers, int(cfg.hidden_scale * D), rope_max_period=cfg.max_period,
            context=cfg.context,
        )  # fmt: skip
        self.out_norm = RMSNorm(D)
        self.depformer_in = nn.ModuleList(nn.Linear(D, Dd, bias=False) for _ in range(K))
        self.depformer_emb = nn.ModuleList(Embedding(cfg.card + 1, Dd) for _ in range(K - 1))
        self.depformer_text_emb = Embedding(cfg.text_card + 1, Dd)
        self.depformer = Transformer(
            Dd, cfg.depformer_num_heads, cfg.depformer_num_layers, cfg.depformer_dim_feedforward, num_steps=K
        )
        self.linears = nn.ModuleList(nn.Linear(Dd, cfg.card, bias=False) for _ in range(K))
        self.build_new_parts()
        self._init_weights()

    def build_new_parts(self, device: str | torch.device | None = None) -> None:
        """(Re)create face_encoder, face_head and yield_head, freshly initialised, on `device`. Importing a
        backbone-only (kyutai) checkpoint = build on meta, load_state_dict(strict=False, assign=True), then this."""
        cfg = self.cfg
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.face_encoder = FaceEncoder(cfg)
            self.face_head = nn.Linear(cfg.dim, N_FACE)
            self.yield_head = nn.Sequential(
                nn.Linear(cfg.dim, cfg.yield_hidden), nn.SiLU(), nn.Linear(cfg.yield_hidden, 1)
            )

    @torch.no_grad()
    def _init_weights(self) -> None:
        """kyutai's init: trunc-normal, std 1/√fan_in (±3 std) for embeddings, text_linear, linears and the temporal
        layers; the depformer layers and depformer_in keep PyTorch defaults."""

        def trunc_normal(w: Tensor, fan_in: int) -> None:
            std = 1 / math.sqrt(fan_in)
            nn.init.trunc_normal_(w, std=std, a=-3 * std, b=3 * std)

        for emb in [*self.emb, *self.depformer_emb, self.text_emb, self.depformer_text_emb]:
            trunc_normal(emb.weight, emb.embedding_dim)
        temporal = [m for m in self.transformer.modules() if isinstance(m, nn.Linear)]
        for lin in [self.text_linear, *temporal, *self.linears]:
            trunc_normal(lin.weight, lin.in_features)

    def set_face_statistics(self, mean: Tensor, std: Tensor) -> None:
        """Per-channel corpus mean and std [61]: the `standardize` encoder's input units and the face target's units
        in both modes. Call before training; stored in the state dict (face_encoder.face_mean / face_std)."""
        self.face_encoder.set_face_statistics(mean, std)

    def _check_inputs(self, text, self_codes, other_codes, face, face_present) -> None:
        if text.dim() != 2 or text.is_floating_point():
            raise ValueError(f"text must be an integer tensor [B, T], got {text.dtype} {tuple(text.shape)}")
        B, T = text.shape
        expected = {"self_codes": (B, N_CODEBOOKS, T), "other_codes": (B, N_CODEBOOKS, T), "face": (B, T, N_FACE),
                    "face_present": (B, T)}  # fmt: skip
        given = {"self_codes": self_codes, "other_codes": other_codes, "face": face, "face_present": face_present}
        for name, tensor in given.items():
            if tuple(tensor.shape) != expected[name]:
                raise ValueError(
                    f"{name} has shape {tuple(tensor.shape)}, expected {list(expected[name])} (text is {[B, T]})"
                )
        if self_codes.is_floating_point() or other_codes.is_floating_point():
            raise ValueError("self_codes and other_codes must be integer tensors")
        if text.device.type == "cpu":  # value checks would force a sync on accelerators; corpora are validated on read
            for name, tokens, card in (("text", text, self.cfg.text_card), ("self_codes", self_codes, self.cfg.card),
                                       ("other_codes", other_codes, self.cfg.card)):  # fmt: skip
                if tokens.numel() and (tokens.min() < ZERO_TOKEN or tokens.max() >= card):
                    raise FaceturnError(f"{name} values must lie in [-1, {card}), got [{tokens.min()}, {tokens.max()}]")

    def forward(
        self,
        text: Tensor,
        self_codes: Tensor,
        other_codes: Tensor,
        face: Tensor,
        face_present: Tensor,
        audio: bool = True,
        zero_groups: Iterable[str] = (),
    ):
        """text [B, T] (−1 absent), self_codes / other_codes [B, 8, T] (−1 padding), face [B, T, 61] (the
        interlocutor's), face_present [B, T] (bool or 0/1 float) → ModelOutput. "Face zeroed" = face 0 and
        face_present 0 (the learned missing vector), as faceturn.data.zero_face. `audio=False` skips the depth
        transformer (most of a small model's cost) when only the yield head or hidden states are wanted; the audio
        logits are then None. `zero_groups` (face group names) are zeroed in this call on top of the config's, in
        every place the config's are (encoder input, face target and prediction, face loss channels)."""
        self._check_inputs(text, self_codes, other_codes, face, face_present)
        keep = self.face_encoder.keep_mask(zero_groups)
        cfg, K = self.cfg, N_CODEBOOKS
        B, T = text.shape
        codes = torch.cat([text[:, None], self_codes, other_codes], dim=1).long()  # [B, 17, T]
        initial = [cfg.text_card] + [cfg.card] * (2 * K)
        grid = delay_streams(codes, cfg.delays, initial)  # [B, 17, T+1], position p reads column p

        face_in = torch.cat([face.new_zeros(B, 1, N_FACE), face], dim=1)  # face[k-1] at position k
        present_in = torch.cat([face_present.new_zeros(B, 1), face_present], dim=1)
        h = self.out_norm(self.transformer(self._frame_input(grid, face_in, present_in, keep)))  # [B, T+1, D]
        dtype = self.face_head.weight.dtype

        h_pred = h[:, :T]  # position k predicts the next delayed column, k+1
        h_text, text_valid = _undelay(h_pred, cfg.delays[0])
        if audio:
            audio_logits, audio_valid = self._depformer(h_pred, grid[:, : K + 1, 1:])
        else:
            audio_logits, audio_valid = None, torch.zeros(K, T, dtype=torch.bool, device=h.device)
        frame_mask = (codes[:, 1:] != ZERO_TOKEN).any(dim=1)
        present = face_present.bool()
        face_target = torch.where(present.unsqueeze(-1), self.face_encoder.standardize(face.to(dtype), keep), 0.0)
        hidden = h[:, 1:]
        return ModelOutput(
            text_hidden=h_text,
            text_mask=text_valid & (text != ZERO_TOKEN),
            text_target=text.long(),
            audio_logits=audio_logits,
            audio_mask=audio_valid & (self_codes != ZERO_TOKEN),
            audio_target=self_codes.long(),
            face_pred=self.face_head(h_pred) * keep,
            face_target=face_target,
            face_mask=present & frame_mask,
            face_channel_mask=keep.bool(),
            yield_logits=self.yield_head(hidden).squeeze(-1),
            hidden=hidden,
            frame_mask=frame_mask,
            text_head=self.text_linear,
        )

    def _frame_input(self, grid: Tensor, face_in: Tensor, present_in: Tensor, keep: Tensor | None = None) -> Tensor:
        """Delayed columns grid [B, 17, P] and the face entering at those positions ([B, P, 61], [B, P]) → the
        temporal input [B, P, D]: Σ 16 audio-codebook embeddings + text embedding + face encoding (channel mask
        `keep`, default the config's)."""
        x = self.emb[0](grid[:, 1])
        for i in range(1, 2 * N_CODEBOOKS):
            x = x + self.emb[i](grid[:, 1 + i])
        x = x + self.text_emb(grid[:, 0])
        dtype = self.face_head.weight.dtype
        return x + self.face_encoder(face_in.to(dtype), present_in.to(dtype), keep).to(x.dtype)

    def step(self, column: Tensor, face: Tensor, face_present: Tensor, positions: Tensor, caches: list[KVCache]):
        """One streaming position per row: the delayed column [B, 17] (kyutai order), the face entering there
        [B, 61] with its flag [B], positions [B] → the out_norm'ed temporal output [B, D] (forward's h at those
        positions; its `hidden` when position = frame + 1). faceturn.stream builds the columns; no input checks here."""
        x = self._frame_input(column[:, :, None], face[:, None], face_present[:, None])
        return self.out_norm(self.transformer(x, positions, caches))[:, 0]

    def depformer_step(self, h: Tensor, token: Tensor, k: int, caches: list[KVCache]) -> Tensor:
        """Depth step k of one streaming position: temporal output h [B, D] and the step's input token [B] (text for
        k = 0, the self's codebook k − 1 otherwise, both of the column being generated) → logits [B, card] of
        codebook k. Call k = 0..7 in order with caches of capacity 8, cleared for every position."""
        token_in = self.depformer_text_emb(token) if k == 0 else self.depformer_emb[k - 1](token)
        y = self.depformer((token_in + self.depformer_in[k](h))[:, None], k, caches)
        return self.linears[k](y[:, 0])

    def _depformer(self, h: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced depth transformer: h [B, T, D] at positions 0..T-1, tokens [B, 9, T] the next delayed
        column (text, self cb0..7) → un-delayed logits [B, 8, T, card] and validity [8, T]."""
        B, T, _ = h.shape
        steps = []
        for k in range(N_CODEBOOKS):
            token_in = self.depformer_text_emb(tokens[:, 0]) if k == 0 else self.depformer_emb[k - 1](tokens[:, k])
            steps.append(token_in + self.depformer_in[k](h))
        y = self.depformer(torch.stack(steps, dim=2).reshape(B * T, N_CODEBOOKS, -1)).view(B, T, N_CODEBOOKS, -1)
        logits, valid = [], []
        for k in range(N_CODEBOOKS):
            y_k, ok = _undelay(y[:, :, k], self.cfg.delays[1 + k])
            logits.append(self.linears[k](y_k))
            valid.append(ok)
        return torch.stack(logits, dim=1), torch.stack(valid)

    def num_parameters(self, backbone_only: bool = False) -> int:
        """Parameter count; `backbone_only` leaves out the new parts (face_encoder, face_head, yield_head)."""
        new = ("face_encoder.", "face_head.", "yield_head.")
        return sum(p.numel() for n, p in self.named_parameters() if not (backbone_only and n.startswith(new)))

    def flops_per_frame(self, window_frames: int) -> float:
        """Training FLOPs (forward + backward = 3 × 2 per multiply-add) per input frame for windows of
        `window_frames`, for MFU. Attention counts only the keys a query really attends (causal, context-limited)."""
        cfg, K = self.cfg, N_CODEBOOKS
        D, Dd = cfg.dim, cfg.depformer_dim

        def layer_macs(dim: int, dim_ff: int) -> int:
            return 4 * dim * dim + 3 * dim * ffn_hidden(dim, dim_ff)  # qkv + out, gated FFN

        positions = window_frames + 1
        mean_keys = sum(min(p + 1, cfg.context) for p in range(positions)) / positions
        face_encoder = N_FACE * cfg.face_hidden + cfg.face_hidden * D
        per_position = face_encoder + cfg.num_layers * (layer_macs(D, int(cfg.hidden_scale * D)) + 2 * D * mean_keys)
        heads = D * cfg.text_card + D * N_FACE + D * cfg.yield_hidden + cfg.yield_hidden
        depformer = K * (D * Dd + Dd * cfg.card) + cfg.depformer_num_layers * (
            K * layer_macs(Dd, cfg.depformer_dim_feedforward) + 2 * Dd * K * (K + 1) / 2
        )
        return 6.0 * (per_position * positions / window_frames + heads + depformer)


def from_config(cfg: ModelConfig, device: str | torch.device | None = None) -> Model:
    """Build a model; `device="meta"` allocates nothing (shapes and counts only, or `load_state_dict(assign=True)`)."""
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return Model(cfg)


# ------------------------------------------------------------------------------------------------------- the loss
@dataclass(frozen=True)
class LossConfig:
    """Loss weights. Text and audio are weighted means Σ w·CE / Σ w over unmasked tokens (moshi-finetune)."""

    text_weight: float = 1.0
    audio_weight: float = 1.0
    text_padding_weight: float = 0.5  # weight of PAD / EPAD text targets
    text_pad_id: int = 3  # Moshi's PAD
    text_epad_id: int = 0  # Moshi's EPAD (end of padding, right before a word)
    semantic_weight: float = 100.0  # codebook 0 vs 1 for the acoustic ones (moshi-finetune's example)
    face_weight: float = 1.0  # masked MSE of the next-frame face, standardized units
    yield_weight: float = 0.0  # 0 = "vanilla"; > 0 = "aux": BCE of the turn-yield head on scored frames

    def __post_init__(self) -> None:
        for name in ("text_weight", "audio_weight", "text_padding_weight", "semantic_weight", "face_weight",
                     "yield_weight"):  # fmt: skip
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"loss.{name} must be finite and >= 0, got {value}")


def _weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    return (values * weights).sum() / weights.sum().clamp(min=1e-12)


def compute_loss(
    out: ModelOutput, cfg: LossConfig, yield_target: Tensor | None = None, yield_mask: Tensor | None = None
) -> dict[str, Tensor]:
    """Total and per-term losses. yield_target y [B, T] float and yield_mask m [B, T] bool (scored frames) are the
    turn labels; padding frames are masked in every term. Returns loss, text, audio, semantic, acoustic, face, yield
    (semantic and acoustic only when the forward pass computed audio logits)."""
    text_w = out.text_mask * torch.where(
        (out.text_target == cfg.text_pad_id) | (out.text_target == cfg.text_epad_id), cfg.text_padding_weight, 1.0
    )
    if out.text_mask.any():
        logits = out.text_logits.flatten(0, 1)
        text_ce = F.cross_entropy(logits, out.text_target.clamp(min=0).flatten(), reduction="none")
        text = _weighted_mean(text_ce.view_as(text_w), text_w)
    else:  # no text in the batch: skip the head, but keep it in the graph (an empty product) so DDP sees it used
        text = out.text_head(out.text_hidden[:, :0]).sum()

    audio_terms: dict[str, Tensor] = {}
    if out.audio_logits is None:  # forward(audio=False): the depformer was skipped, legal only without its loss
        if cfg.audio_weight > 0:
            raise ValueError(f"audio_weight is {cfg.audio_weight} but the forward pass skipped the audio logits")
        audio = out.yield_logits.new_zeros(())
    else:
        audio_ce = F.cross_entropy(
            out.audio_logits.flatten(0, 2), out.audio_target.clamp(min=0).flatten(), reduction="none"
        ).view_as(out.audio_mask)
        cb_w = torch.ones(N_CODEBOOKS, device=audio_ce.device)
        cb_w[0] = cfg.semantic_weight
        audio = _weighted_mean(audio_ce, out.audio_mask * cb_w[:, None])
        audio_terms = {
            "semantic": _weighted_mean(audio_ce[:, 0], out.audio_mask[:, 0]).detach(),
            "acoustic": _weighted_mean(audio_ce[:, 1:], out.audio_mask[:, 1:]).detach(),
        }

    face_w = out.face_mask.unsqueeze(-1) * out.face_channel_mask
    face = _weighted_mean((out.face_pred - out.face_target) ** 2, face_w)

    if yield_target is None:
        if cfg.yield_weight > 0:
            raise ValueError(f"yield_weight is {cfg.yield_weight} but no yield_target was given")
        yield_loss = (out.yield_logits * 0).sum()  # keeps the head in the graph, so DDP sees every parameter used
    else:
        if yield_mask is None or yield_target.shape != out.yield_logits.shape or yield_mask.shape != yield_target.shape:
            raise ValueError(f"yield_target and yield_mask must both have shape {list(out.yield_logits.shape)}")
        bce = F.binary_cross_entropy_with_logits(out.yield_logits, yield_target.to(out.yield_logits), reduction="none")
        yield_loss = _weighted_mean(bce, yield_mask & out.frame_mask)

    total = cfg.text_weight * text + cfg.audio_weight * audio + cfg.face_weight * face + cfg.yield_weight * yield_loss
    return {
        "loss": total,
        "text": text,
        "audio": audio,
        **audio_terms,
        "face": face,
        "yield": yield_loss,
    }
