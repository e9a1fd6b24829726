"""The model: kyutai-faithful pieces, the exact alignment / causality contract, the face encoder, the loss, configs."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from faceturn.config import ConfigError
from faceturn.errors import SchemaError
from faceturn.model import (
    MOSHI_DELAYS,
    Attention,
    Gating,
    LossConfig,
    Model,
    ModelConfig,
    RMSNorm,
    apply_rope,
    compute_loss,
    delay_streams,
    from_config,
    load_model_config,
    named_configs,
)
from faceturn.schema import FACE_GROUPS, N_FACE

CFG = ModelConfig(
    dim=32, num_layers=2, num_heads=2, context=64, card=16, text_card=24, depformer_dim=16, depformer_num_layers=2,
    depformer_num_heads=2, depformer_dim_feedforward=48, face_hidden=16, yield_hidden=16,
)  # fmt: skip


def make_inputs(cfg: ModelConfig = CFG, B: int = 2, T: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "text": torch.randint(-1, cfg.text_card, (B, T), generator=g),
        "self_codes": torch.randint(0, cfg.card, (B, 8, T), generator=g),
        "other_codes": torch.randint(0, cfg.card, (B, 8, T), generator=g),
        "face": torch.randn(B, T, N_FACE, generator=g),
        "face_present": torch.rand(B, T, generator=g) > 0.25,
    }


def make_model(cfg: ModelConfig = CFG, seed: int = 0, dtype=torch.float32) -> Model:
    torch.manual_seed(seed)
    model = Model(cfg).to(dtype)
    with torch.no_grad():
        model.face_encoder.missing.normal_()  # zero at init; random here so "missing" is visible in every test
    return model.eval()


# ------------------------------------------------------------------------------------------ kyutai's building blocks
def test_rmsnorm_formula_and_fp32_math():
    norm = RMSNorm(8)
    with torch.no_grad():
        norm.alpha.copy_(torch.linspace(0.5, 2.0, 8).view(1, 1, 8))
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    expected = x * norm.alpha.double() / torch.sqrt(1e-8 + (x**2).mean(-1, keepdim=True))
    torch.testing.assert_close(norm.double()(x), expected, rtol=1e-12, atol=1e-12)
    xb = torch.randn(3, 5, 8).to(torch.bfloat16)  # bf16 in: computed in fp32, rounded once at the end
    ref = (xb.float() * norm.alpha.float() * torch.rsqrt(1e-8 + (xb.float() ** 2).mean(-1, keepdim=True))).bfloat16()
    assert torch.equal(norm.float()(xb), ref)


def test_rope_interleaved_pairs_match_complex_rotation():
    B, H, T, d, offset = 2, 3, 7, 8, 5
    q, k = torch.randn(2, B, H, T, d, dtype=torch.float64)
    qr, kr = apply_rope(q, k, offset, 10000.0)
    theta = 10000.0 ** (-torch.arange(d // 2, dtype=torch.float64) * 2 / d)
    rot = torch.polar(torch.ones(T, d // 2, dtype=torch.float64), (offset + torch.arange(T)).double()[:, None] * theta)
    for x, xr in ((q, qr), (k, kr)):
        z = torch.complex(x[..., 0::2], x[..., 1::2]) * rot  # pairs (2i, 2i+1) are (real, imaginary)
        torch.testing.assert_close(xr, torch.stack([z.real, z.imag], -1).flatten(-2), rtol=0, atol=1e-5)
    # The offset is an absolute position: positions 5.. of a longer sequence get the same rotation.
    long_q, _ = apply_rope(
        torch.cat([torch.randn(B, H, offset, d).double(), q], 2), k.repeat(1, 1, 2, 1)[:, :, :12], 0, 1e4
    )
    torch.testing.assert_close(long_q[:, :, offset:], qr, rtol=0, atol=1e-12)


def test_gating_first_half_is_the_gate():
    g = Gating(6, 24 + 3).double()  # H = 2·27//3 = 18
    assert g.linear_in.weight.shape == (36, 6) and g.linear_out.weight.shape == (6, 18)
    assert Gating(8, 32).linear_out.weight.shape == (8, 21)  # kyutai's exception: dim_ff == 4·dim → 21·dim//8
    x = torch.randn(4, 3, 6, dtype=torch.float64)
    h = x @ g.linear_in.weight.T
    torch.testing.assert_close(g(x), (F.silu(h[..., :18]) * h[..., 18:]) @ g.linear_out.weight.T)
    assert not torch.allclose(g(x), (F.silu(h[..., 18:]) * h[..., :18]) @ g.linear_out.weight.T)


def reference_attention(att: Attention, x: torch.Tensor, context: int) -> torch.Tensor:
    """Plain softmax attention with kyutai's layout (rows q;k;v, head-major), RoPE, causal + context mask."""
    B, T, D = x.shape
    H = att.num_heads
    q, k, v = (x @ w.T for w in att.in_projs[0].weight.chunk(3))
    q, k, v = (t.view(B, T, H, D // H).transpose(1, 2) for t in (q, k, v))
    q, k = apply_rope(q, k, 0, 10000.0)
    delta = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(D // H)
    scores = scores.masked_fill(~((delta >= 0) & (delta < context)), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
    return y @ att.out_projs[0].weight.T


@pytest.mark.parametrize("context", [3, 100])  # the masked path (T > context) and the plain causal path
def test_attention_matches_reference_and_respects_context(context):
    torch.manual_seed(0)
    att = Attention(16, 2, 1, 10000.0, context).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64, requires_grad=True)
    y = att(x)
    torch.testing.assert_close(y, reference_attention(att, x, context))
    (grad,) = torch.autograd.grad(y[:, 6].sum(), x)
    seen = grad.abs().sum((0, 2)) > 0
    assert seen.tolist() == [6 - t < context and t <= 6 for t in range(9)]  # exactly keys 0 <= 6 - t < context


def test_delay_pattern_grid():
    codes = torch.tensor([[[10, 11, 12, 13], [20, 21, 22, 23], [30, 31, 32, 33]]])
    grid = delay_streams(codes, [0, 1, 2], [100, 200, 300])
    assert grid.tolist() == [[[100, 10, 11, 12, 13], [200, 200, 20, 21, 22], [300, 300, 300, 30, 31]]]


# ---------------------------------------------------------------------------------------------- shapes and names
def test_output_shapes_and_masks():
    inputs = make_inputs(B=3, T=11)
    inputs["self_codes"][1, :, -3:] = -1  # padding at the end of sample 1
    inputs["other_codes"][1, :, -3:] = -1
    out = make_model()(**inputs)
    B, T = 3, 11
    shapes = {
        "text_logits": (B, T, 24), "text_mask": (B, T), "audio_logits": (B, 8, T, 16), "audio_mask": (B, 8, T),
        "face_pred": (B, T, N_FACE), "face_target": (B, T, N_FACE), "face_mask": (B, T), "face_channel_mask": (N_FACE,),
        "yield_logits": (B, T), "hidden": (B, T, 32), "frame_mask": (B, T),
    }  # fmt: skip
    assert {k: tuple(getattr(out, k).shape) for k in shapes} == shapes
    assert torch.equal(out.text_mask, inputs["text"] != -1)
    assert out.audio_mask[:, 0].sum() == B * T - 3  # semantic: every frame but the padding
    assert not out.audio_mask[:, 1:, -1].any()  # acoustic: the last frame has no position (delay 1)
    assert out.frame_mask[1].tolist() == [True] * 8 + [False] * 3
    assert torch.equal(out.face_mask, inputs["face_present"] & out.frame_mask)
    assert (
        out.face_channel_mask.sum() == N_FACE - 3 and not out.face_channel_mask[list(FACE_GROUPS["head_trans"])].any()
    )
    assert (out.face_pred[..., ~out.face_channel_mask] == 0).all()


def moshi_7b_shapes() -> dict[str, tuple[int, ...]]:
    """The runtime state-dict keys and shapes of kyutai's Moshi 7B checkpoint, written out."""
    s: dict[str, tuple[int, ...]] = {f"emb.{k}.weight": (2049, 4096) for k in range(16)}
    s |= {"text_emb.weight": (32001, 4096), "text_linear.weight": (32000, 4096), "out_norm.alpha": (1, 1, 4096),
          "depformer_text_emb.weight": (32001, 1024)}  # fmt: skip
    for i in range(32):
        p = f"transformer.layers.{i}."
        s |= {p + "self_attn.in_projs.0.weight": (12288, 4096), p + "self_attn.out_projs.0.weight": (4096, 4096),
              p + "norm1.alpha": (1, 1, 4096), p + "norm2.alpha": (1, 1, 4096),
              p + "gating.linear_in.weight": (22528, 4096), p + "gating.linear_out.weight": (4096, 11264)}  # fmt: skip
    s |= {f"depformer_in.{k}.weight": (1024, 4096) for k in range(8)}
    s |= {f"linears.{k}.weight": (2048, 1024) for k in range(8)}
    s |= {f"depformer_emb.{k}.weight": (2049, 1024) for k in range(7)}
    for i in range(6):
        p = f"depformer.layers.{i}."
        s |= {p + "norm1.alpha": (1, 1, 1024), p + "norm2.alpha": (1, 1, 1024)}
        for k in range(8):
            s |= {
                p + f"self_attn.in_projs.{k}.weight": (3072, 1024), p + f"self_attn.out_projs.{k}.weight": (1024, 1024),
                p + f"gating.{k}.linear_in.weight": (5632, 1024), p + f"gating.{k}.linear_out.weight": (1024, 2816),
            }  # fmt: skip
    return s


def test_moshi_7b_on_meta_has_kyutai_names_shapes_and_count():
    cfg = load_model_config("moshi-7b")
    model = from_config(cfg, device="meta")
    sd = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    new = ("face_encoder.", "face_head.", "yield_head.")
    assert {k: v for k, v in sd.items() if not k.startswith(new)} == moshi_7b_shapes()
    backbone = model.num_parameters(backbone_only=True)
    assert backbone == sum(math.prod(s) for s in moshi_7b_shapes().values()) == 7_687_729_152
    assert round(backbone / 1e9, 4) == 7.6877
    assert model.num_parameters() - backbone == sum(p.numel() for n, p in model.named_parameters() if n.startswith(new))
    assert model.num_parameters() > backbone and cfg.face_zero_init


# ------------------------------------------------------------------------------------------ alignment and causality
STREAMS = ["text"] + [f"self{j}" for j in range(8)] + [f"other{j}" for j in range(8)] + ["face", "present"]


def latest_frame(output: str, stream: str, k: int) -> int:
    """The contract (module docstring): the latest frame of `stream` that output `output` at frame k may read."""
    kind, j = stream.rstrip("0123456789"), int(stream[-1]) if stream[-1].isdigit() else -1
    delay = 1 if kind in ("self", "other") and j >= 1 else 0  # acoustic codebooks enter one frame late
    if output in ("text", "face_pred"):  # position k
        return k - 1 - delay
    if output == "cb0":  # position k + depformer step 0, which reads text[k]
        return k if stream == "text" else k - 1 - delay
    if output in ("yield", "hidden"):  # position k + 1
        return k - delay
    cb = int(output[2:])  # acoustic codebook cb ≥ 1: position k + 1 + depformer column of frame k + 1 / k
    if stream in ("text", "self0"):
        return k + 1  # Moshi's order: text and semantic of frame k + 1 come before frame k's acoustic tokens
    if kind == "self" and j < cb:
        return k  # teacher forcing on the earlier codebooks of the same frame
    return k - delay


def probe_token_streams(model: Model, tokens: dict[str, torch.Tensor], B: int, T: int):
    """Add a zero, differentiable probe to every embedding output, keyed by the input frame the token came from.

    Each stream's tokens are distinct per frame, so the hook recovers the frame from the token value alone: the
    test never re-implements the delay pattern, it observes it.
    """
    probes: dict[str, list[torch.Tensor]] = {s: [] for s in STREAMS[:17]}
    readers = [("text", model.text_emb), ("text", model.depformer_text_emb)]
    readers += [(f"self{j}" if j < 8 else f"other{j - 8}", emb) for j, emb in enumerate(model.emb)]
    readers += [(f"self{j}", emb) for j, emb in enumerate(model.depformer_emb)]
    for stream, emb in readers:
        frame_of = torch.full((emb.num_embeddings,), -1)
        frame_of[tokens[stream]] = torch.arange(T)
        probe = torch.zeros(B, T, emb.embedding_dim, dtype=torch.float64, requires_grad=True)
        probes[stream].append(probe)

        def hook(module, args, out, frame_of=frame_of, probe=probe):
            frame = frame_of[args[0].clamp(min=0)]
            rows = torch.arange(out.shape[0])[:, None].expand_as(frame)
            return out + probe[rows, frame.clamp(min=0)] * (frame >= 0).unsqueeze(-1)

        emb.register_forward_hook(hook)
    return probes


def test_exact_causality_by_gradients():
    """grad of every output at frame k w.r.t. every input stream at frames later than the contract allows is exactly
    0, the allowed latest frame really is read (the contract is tight), and samples never mix.

    One backward per output: sample b of T + 1 identical samples carries the output at frame k = b, so its input
    gradients are that output's dependencies; the extra last sample carries none and must get exactly 0.
    """
    T = 10
    B = T + 1
    model = make_model(dtype=torch.float64)
    tokens = {"text": torch.randperm(CFG.text_card)[:T]}
    tokens |= {f"{who}{j}": torch.randperm(CFG.card)[:T] for who in ("self", "other") for j in range(8)}
    probes = probe_token_streams(model, tokens, B, T)
    text = tokens["text"].expand(B, T)
    self_codes = torch.stack([tokens[f"self{j}"] for j in range(8)]).expand(B, 8, T)
    other_codes = torch.stack([tokens[f"other{j}"] for j in range(8)]).expand(B, 8, T)
    face = torch.randn(1, T, N_FACE, dtype=torch.float64).repeat(B, 1, 1).requires_grad_()
    present_bool = torch.ones(B, T, dtype=torch.bool)
    present_bool[:, 4] = False
    present = present_bool.double().requires_grad_()
    out = model(text, self_codes, other_codes, face, present)

    outputs = {"text": out.text_logits, "face_pred": out.face_pred, "yield": out.yield_logits, "hidden": out.hidden}
    outputs |= {f"cb{j}": out.audio_logits[:, j] for j in range(8)}
    leaves = [p for s in STREAMS[:17] for p in probes[s]] + [face, present]
    g = torch.Generator().manual_seed(1)
    for name, tensor in outputs.items():
        selected = tensor[torch.arange(T), torch.arange(T)]  # sample b's output at frame b
        weights = torch.randn(selected.shape, generator=g, dtype=torch.float64)
        grads = torch.autograd.grad((selected * weights).sum(), leaves, retain_graph=True, allow_unused=True)
        grads = [torch.zeros_like(leaf) if gr is None else gr for gr, leaf in zip(grads, leaves, strict=True)]
        per_stream: dict[str, torch.Tensor] = {}  # [B, T]: > 0 where sample b's output reads that frame
        i = 0
        for s in STREAMS[:17]:
            per_stream[s] = sum(grads[i + n].abs().sum(-1) for n in range(len(probes[s])))
            i += len(probes[s])
        per_stream["face"], per_stream["present"] = grads[i].abs().sum(-1), grads[i + 1].abs()
        for s, dep in per_stream.items():
            assert (dep[T] == 0).all(), f"{name}: a sample reads another sample's {s}"
            for k in range(T):
                latest = latest_frame(name, s, k)
                late = dep[k, max(latest + 1, 0) :]
                assert (late == 0).all(), (
                    f"{name}[{k}] reads {s} at frames {(late != 0).nonzero().flatten() + latest + 1}"
                )
                if name.startswith("cb") and name != "cb0" and k == T - 1:
                    continue  # no position predicts the last acoustic frame (masked, constant 0)
                if 0 <= latest < T and not (s == "face" and not present_bool[k, latest]):
                    assert dep[k, latest] > 0, f"{name}[{k}] should read {s}[{latest}]"


def test_forward_perturbation_of_later_frames_changes_nothing_earlier():
    model = make_model(dtype=torch.float64)
    T = 12
    base = make_inputs(T=T, seed=1)
    base["face"] = base["face"].double()
    out = model(**base)
    for k in (0, 4, 10):
        for keep_next in (False, True):  # keep_next: frame k+1's self text and semantic token stay as they were
            other = make_inputs(T=T, seed=2 + k)
            pert = {name: t.clone() for name, t in base.items()}
            pert["text"][:, k + 1 :] = other["text"][:, k + 1 :]
            pert["self_codes"][:, :, k + 1 :] = other["self_codes"][:, :, k + 1 :]
            pert["other_codes"][:, :, k + 1 :] = other["other_codes"][:, :, k + 1 :]
            pert["face"][:, k + 1 :] = other["face"][:, k + 1 :].double()
            pert["face_present"][:, k + 1 :] = other["face_present"][:, k + 1 :]
            if keep_next and k + 1 < T:
                pert["text"][:, k + 1] = base["text"][:, k + 1]
                pert["self_codes"][:, 0, k + 1] = base["self_codes"][:, 0, k + 1]
            new = model(**pert)
            s = slice(0, k + 1)
            assert torch.equal(new.text_logits[:, s], out.text_logits[:, s])
            assert torch.equal(new.audio_logits[:, 0, s], out.audio_logits[:, 0, s])
            assert torch.equal(new.face_pred[:, s], out.face_pred[:, s])
            assert torch.equal(new.yield_logits[:, s], out.yield_logits[:, s])
            assert torch.equal(new.hidden[:, s], out.hidden[:, s])
            acoustic = slice(0, k + 1 if keep_next else k)
            assert torch.equal(new.audio_logits[:, 1:, acoustic], out.audio_logits[:, 1:, acoustic])
            if not keep_next and k + 1 < T:  # frame k's acoustic logits do see frame k+1's text/semantic (Moshi)
                assert not torch.equal(new.audio_logits[:, 1:, k], out.audio_logits[:, 1:, k])
            assert not torch.equal(new.yield_logits[:, k + 1 :], out.yield_logits[:, k + 1 :])


def test_delay_pattern_acoustic_logits():
    """Acoustic logits of frame k never see their own code of frame k (nor later codebooks of it), but do see the
    same codebook at frame k−1 and, by teacher forcing, the earlier codebooks of frame k."""
    model = make_model(dtype=torch.float64)
    base = make_inputs(T=8)
    out = model(**base)
    k = 4

    def changed(frame: int, cb: int) -> torch.Tensor:
        pert = {n: t.clone() for n, t in base.items()}
        pert["self_codes"][:, cb, frame] = (pert["self_codes"][:, cb, frame] + 1) % CFG.card
        new = model(**pert).audio_logits[:, :, k]
        return (new - out.audio_logits[:, :, k]).abs().amax((0, 2)) > 0  # [8] which codebooks moved

    assert changed(k, 3).tolist() == [False] * 4 + [True] * 4  # cb3 of frame k: teacher-forces cb4..7 only
    assert changed(k - 1, 3).tolist() == [False] + [True] * 7  # frame k-1, via position k+1 (semantic: k-2 only)
    assert changed(k, 0).tolist() == [False] + [True] * 7  # semantic of frame k feeds its acoustic tokens only
    assert changed(k + 1, 0).tolist() == [False] + [True] * 7  # Moshi: frame k+1's semantic precedes them
    assert not changed(k + 1, 3).any()


def test_depformer_weights_are_per_step():
    """Step k's own weights move codebook k and, through the causal attention of later layers, codebooks > k only."""
    inputs = make_inputs()
    F_, T_ = False, True
    cases = {
        "depformer.layers.0.gating.5.linear_in.weight": [F_] * 5 + [T_] * 3,
        "depformer.layers.1.gating.5.linear_in.weight": [F_] * 5 + [T_] + [F_] * 2,  # last layer: its step only
        "depformer.layers.0.self_attn.in_projs.2.weight": [F_] * 2 + [T_] * 6,
        "depformer.layers.1.self_attn.out_projs.6.weight": [F_] * 6 + [T_] + [F_],
        "depformer_in.3.weight": [F_] * 3 + [T_] * 5,
        "linears.4.weight": [F_] * 4 + [T_] + [F_] * 3,
    }
    for weight, expected in cases.items():
        model = make_model()
        before = model(**inputs).audio_logits
        with torch.no_grad():
            model.get_parameter(weight).mul_(1.5)
        moved = (model(**inputs).audio_logits - before).abs().amax((0, 2, 3)) > 0
        assert moved.tolist() == expected, weight


# ---------------------------------------------------------------------------------------------------- face encoder
@pytest.mark.parametrize("face_norm", ["layernorm", "standardize"])
def test_zero_groups_remove_their_channels(face_norm):
    for groups in (("head_trans",), ("eye_gaze", "brow")):
        cfg = dataclasses.replace(CFG, face_norm=face_norm, zero_groups=groups)
        model = make_model(cfg)
        inputs = make_inputs()
        out = model(**inputs)
        channels = [c for grp in groups for c in FACE_GROUPS[grp]]
        varied = dict(inputs, face=inputs["face"].clone())
        varied["face"][..., channels] = 100 * torch.randn(varied["face"][..., channels].shape)
        new = model(**varied)
        for name in ("text_logits", "audio_logits", "face_pred", "yield_logits", "hidden", "face_target"):
            assert torch.equal(getattr(new, name), getattr(out, name)), (groups, name)
        other = dict(inputs, face=inputs["face"].clone())
        other["face"][..., FACE_GROUPS["head_rot"]] += 1.0  # a kept group does matter
        assert not torch.equal(model(**other).yield_logits, out.yield_logits)


def test_missing_face_uses_the_learned_missing_vector():
    model = make_model()
    face = torch.randn(2, 5, N_FACE)
    enc = model.face_encoder(face, torch.zeros(2, 5))
    assert torch.equal(enc, model.face_encoder.missing.expand(2, 5, -1))
    inputs = make_inputs()
    inputs["face_present"][:] = False
    out = model(**inputs)
    garbage = dict(inputs, face=torch.full_like(inputs["face"], float("nan")))  # absent faces may hold anything
    assert torch.equal(model(**garbage).yield_logits, out.yield_logits)
    with torch.no_grad():
        model.face_encoder.missing.add_(1.0)
    assert not torch.equal(model(**inputs).yield_logits, out.yield_logits)


def test_standardize_uses_stored_corpus_statistics():
    cfg = dataclasses.replace(CFG, face_norm="standardize")
    model = make_model(cfg)
    mean, std = torch.randn(N_FACE), torch.rand(N_FACE) + 0.5
    std[51] = 0.0  # a constant channel (tongueOut from MediaPipe): only centred
    model.set_face_statistics(mean, std)
    face = torch.randn(3, 4, N_FACE)
    keep = torch.ones(N_FACE)
    keep[list(FACE_GROUPS["head_trans"])] = 0
    expected = (face - mean) / torch.where(std == 0, 1.0, std) * keep
    torch.testing.assert_close(model.face_encoder.normalize(face), expected)
    restored = make_model(cfg, seed=1)
    restored.load_state_dict(model.state_dict())
    torch.testing.assert_close(restored.face_encoder.normalize(face), expected)
    with pytest.raises(ValueError, match="shape"):
        model.set_face_statistics(mean[:60], std)
    with pytest.raises(ValueError, match="finite"):
        model.set_face_statistics(mean * float("nan"), std)


def test_layernorm_normalizes_across_channels_standardize_does_not():
    """LayerNorm makes the model blind to a per-frame offset and scale of the whole face; standardize keeps them."""
    inputs = make_inputs()
    scaled = dict(inputs, face=inputs["face"] * 3.0 + 2.0)
    for face_norm, blind in (("layernorm", True), ("standardize", False)):
        model = make_model(dataclasses.replace(CFG, face_norm=face_norm, zero_groups=())).double()
        a = model(**dict(inputs, face=inputs["face"].double())).yield_logits
        b = model(**dict(scaled, face=scaled["face"].double())).yield_logits
        assert torch.allclose(a, b, atol=1e-6) == blind, face_norm


def test_zero_groups_argument_is_the_wider_config_and_leaves_the_model_alone():
    """`forward(zero_groups=...)` (post-hoc zeroing) gives exactly what a model whose config zeroes those groups too
    gives, in every output, and leaves the model as it was, also when the call fails."""
    base = make_model(dataclasses.replace(CFG, zero_groups=("head_trans",)))
    wider = make_model(dataclasses.replace(CFG, zero_groups=("head_trans", "brow")))
    wider.load_state_dict(base.state_dict())
    inputs = make_inputs()
    keep = base.face_encoder.keep.clone()
    before = base(**inputs)
    posthoc, expected = base(**inputs, zero_groups=("brow",)), wider(**inputs)
    for name in ("text_logits", "audio_logits", "face_pred", "face_target", "face_channel_mask", "yield_logits",
                 "hidden"):  # fmt: skip
        assert torch.equal(getattr(posthoc, name), getattr(expected, name)), name
    assert not torch.equal(posthoc.yield_logits, before.yield_logits)
    with pytest.raises(SchemaError, match="unknown face group 'ears'"):
        base(**inputs, zero_groups=("brow", "ears"))
    assert torch.equal(base.face_encoder.keep, keep)
    assert torch.equal(base(**inputs).yield_logits, before.yield_logits)


def test_face_zero_init_leaves_a_pretrained_model_unchanged():
    model = make_model(dataclasses.replace(CFG, face_zero_init=True))
    with torch.no_grad():
        model.face_encoder.missing.zero_()
    inputs = make_inputs()
    out = model(**inputs)
    other = dict(inputs, face=torch.randn_like(inputs["face"]), face_present=~inputs["face_present"])
    new = model(**other)
    assert torch.equal(new.text_logits, out.text_logits) and torch.equal(new.audio_logits, out.audio_logits)


def test_importing_a_backbone_keeps_its_predictions():
    """kyutai's import path: build on meta, load the backbone only (assign), build the new parts. With
    face_zero_init the face changes nothing the imported model predicts."""
    cfg = dataclasses.replace(CFG, face_zero_init=True)
    source = make_model(cfg)
    new = ("face_encoder.", "face_head.", "yield_head.")
    backbone = {k: v for k, v in source.state_dict().items() if not k.startswith(new)}
    model = from_config(cfg, device="meta")
    missing, unexpected = model.load_state_dict(backbone, strict=False, assign=True)
    assert not unexpected and all(k.startswith(new) for k in missing)
    model.build_new_parts("cpu")
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    inputs = make_inputs()
    with torch.no_grad():
        source.face_encoder.missing.zero_()
    ref = source(**inputs)
    for face, present in (
        (inputs["face"], inputs["face_present"]),
        (3 * torch.randn(2, 10, N_FACE), ~inputs["face_present"]),
    ):
        out = model(**dict(inputs, face=face, face_present=present))
        assert torch.equal(out.text_logits, ref.text_logits) and torch.equal(out.audio_logits, ref.audio_logits)


# ----------------------------------------------------------------------------------------------------------- loss
def test_loss_weights_and_masks_match_a_hand_computation():
    inputs = make_inputs(T=12)
    inputs["text"][0, :6] = torch.tensor([3, 0, 5, -1, 3, 7])  # PAD, EPAD, word, absent, PAD, word
    inputs["self_codes"][1, :, -2:] = -1
    inputs["other_codes"][1, :, -2:] = -1
    out = make_model()(**inputs)
    y = (torch.rand(2, 12) > 0.5).float()
    m = torch.rand(2, 12) > 0.3
    m[1, -1] = True  # a padding frame, scored by mistake: the loss still ignores it
    cfg = LossConfig(yield_weight=0.7, face_weight=0.3)
    loss = compute_loss(out, cfg, y, m)

    tt, tm = out.text_target, out.text_mask
    w = torch.where((tt == 3) | (tt == 0), 0.5, 1.0)[tm]
    ce = F.cross_entropy(out.text_logits[tm], tt[tm], reduction="none")
    torch.testing.assert_close(loss["text"], (w * ce).sum() / w.sum())
    num = den = 0.0
    for b, j, t in out.audio_mask.nonzero().tolist():  # token by token
        w = 100.0 if j == 0 else 1.0
        num, den = num + w * -out.audio_logits[b, j, t].log_softmax(-1)[out.audio_target[b, j, t]], den + w
    torch.testing.assert_close(loss["audio"], num / den)
    assert den == 100 * 22 + 7 * (11 + 10)  # 2 of 24 frames are padding; acoustic: sample 0 loses its last frame
    scored = m & out.frame_mask
    assert not scored[1, -1]
    bce = F.binary_cross_entropy_with_logits(out.yield_logits[scored], y[scored])
    torch.testing.assert_close(loss["yield"], bce)
    fm = out.face_mask
    sq = ((out.face_pred - out.face_target) ** 2)[fm][:, out.face_channel_mask]
    torch.testing.assert_close(loss["face"], sq.mean())
    torch.testing.assert_close(loss["loss"], loss["text"] + loss["audio"] + 0.3 * loss["face"] + 0.7 * loss["yield"])
    plain = compute_loss(out, LossConfig(semantic_weight=1.0, text_padding_weight=1.0))
    torch.testing.assert_close(plain["text"], ce.mean())
    torch.testing.assert_close(
        plain["audio"], F.cross_entropy(out.audio_logits[out.audio_mask], out.audio_target[out.audio_mask])
    )


def test_yield_loss_reads_only_scored_frames_and_vanilla_has_no_yield_gradient():
    model = make_model().train()
    inputs = make_inputs(T=12)
    y = (torch.rand(2, 12) > 0.5).float()
    m = torch.rand(2, 12) > 0.5
    out = model(**inputs)
    base = compute_loss(out, LossConfig(yield_weight=1.0), y, m)["yield"]
    shifted = dataclasses.replace(out, yield_logits=out.yield_logits + 5.0 * (~m))
    assert torch.equal(compute_loss(shifted, LossConfig(yield_weight=1.0), y, m)["yield"], base)
    shifted = dataclasses.replace(out, yield_logits=out.yield_logits + 5.0 * m)
    assert not torch.equal(compute_loss(shifted, LossConfig(yield_weight=1.0), y, m)["yield"], base)

    for weight, has_grad in ((0.0, False), (1.0, True)):
        model.zero_grad()
        compute_loss(model(**inputs), LossConfig(yield_weight=weight), y, m)["loss"].backward()
        grads = [p.grad for p in model.yield_head.parameters()]
        assert all(g is not None for g in grads)  # always in the graph (DDP)
        assert any(g.abs().sum() > 0 for g in grads) == has_grad
    model.zero_grad()
    compute_loss(model(**inputs), LossConfig())["loss"].backward()  # no labels at all: vanilla
    assert all(p.grad.abs().sum() == 0 for p in model.yield_head.parameters())
    with pytest.raises(ValueError, match="yield_target"):
        compute_loss(out, LossConfig(yield_weight=1.0))


def test_padding_frames_are_masked_everywhere():
    model = make_model()
    inputs = make_inputs(T=10)
    for name in ("self_codes", "other_codes"):
        inputs[name][0, :, 7:] = -1
    inputs["text"][0, 7:] = -1
    out = model(**inputs)
    assert not (out.text_mask[0, 7:].any() or out.audio_mask[0, :, 7:].any() or out.face_mask[0, 7:].any())
    y, m = torch.ones(2, 10), torch.ones(2, 10, dtype=torch.bool)
    ref = compute_loss(out, LossConfig(yield_weight=1.0), y, m)
    noisy = dataclasses.replace(out)
    for name in ("text_logits", "face_pred", "yield_logits"):
        t = getattr(out, name).clone()
        t[0, 7:] = 50.0
        setattr(noisy, name, t)
    a = out.audio_logits.clone()
    a[0, :, 7:] = 50.0
    noisy.audio_logits = a
    new = compute_loss(noisy, LossConfig(yield_weight=1.0), y, m)
    assert all(torch.equal(new[k], ref[k]) for k in ref)


def test_one_training_step_reduces_the_loss():
    model = make_model().train()
    inputs = make_inputs(B=4, T=16, seed=3)
    y, m = (torch.rand(4, 16) > 0.5).float(), torch.ones(4, 16, dtype=torch.bool)
    cfg = LossConfig(yield_weight=1.0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = compute_loss(model(**inputs), cfg, y, m)
    before["loss"].backward()
    opt.step()
    after = compute_loss(model(**inputs), cfg, y, m)
    assert after["loss"] < before["loss"]
    assert all(torch.isfinite(v) for v in after.values())


# ------------------------------------------------------------------------------------- inputs, configs, counting
def test_bad_inputs_raise_clear_errors():
    model = make_model()
    inputs = make_inputs()
    with pytest.raises(ValueError, match="face has shape"):
        model(**dict(inputs, face=inputs["face"][..., :60]))
    with pytest.raises(ValueError, match="self_codes has shape"):
        model(**dict(inputs, self_codes=inputs["self_codes"][:, :7]))
    with pytest.raises(ValueError, match=r"other_codes values must lie in \[-1, 16\)"):
        model(**dict(inputs, other_codes=inputs["other_codes"] + 16))
    with pytest.raises(ValueError, match="text must be an integer tensor"):
        model(**dict(inputs, text=inputs["text"].float()))


def test_named_configs_load_build_and_validate():
    assert named_configs() == ["base", "moshi-7b", "small", "tiny"]
    assert load_model_config("tiny") == ModelConfig()  # the defaults are the tiny config
    for name in named_configs():
        cfg = load_model_config(name)
        assert from_config(cfg, device="meta").num_parameters() > 0
        assert cfg.delays == MOSHI_DELAYS
    sizes = [from_config(load_model_config(n), "meta").num_parameters() for n in ("tiny", "small", "base", "moshi-7b")]
    assert sizes == sorted(sizes)
    seven = load_model_config("moshi-7b")
    assert (seven.dim, seven.num_layers, seven.num_heads, seven.hidden_scale, seven.context) == (
        4096,
        32,
        32,
        4.125,
        3000,
    )
    assert (seven.depformer_dim, seven.depformer_num_layers, seven.depformer_num_heads) == (1024, 6, 16)
    assert (seven.depformer_dim_feedforward, seven.text_card, seven.card) == (4224, 32000, 2048)
    assert load_model_config("tiny", ["dim=96", "zero_groups=['brow']"]).dim == 96
    with pytest.raises(ConfigError, match="unknown model shape 'huge'"):
        load_model_config("huge")
    with pytest.raises(ConfigError, match="even size"):
        load_model_config("tiny", ["num_heads=64"])  # head dim 1
    with pytest.raises(ConfigError, match="unknown face group"):
        load_model_config("tiny", ["zero_groups=['ears']"])
    with pytest.raises(ValueError, match="delays"):
        dataclasses.replace(CFG, delays=(0, 1))


@pytest.mark.parametrize("context", [4, 100])
def test_flops_per_frame_agrees_with_torch_flop_counter(context):
    """Matmuls exactly as torch's FlopCounterMode counts them (forward + backward), plus attention (which the counter
    does not see on CPU) over only the keys a query may attend: min(p + 1, context) at position p."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = dataclasses.replace(CFG, context=context)
    model = make_model(cfg).train()
    T = 40
    with FlopCounterMode(display=False) as counter:
        compute_loss(model(**make_inputs(cfg, B=1, T=T)), LossConfig())["loss"].backward()
    keys = sum(min(p + 1, context) for p in range(T + 1))  # T + 1 temporal positions
    attention = 3 * 2 * 2 * (cfg.num_layers * cfg.dim * keys + cfg.depformer_num_layers * cfg.depformer_dim * 36 * T)
    assert model.flops_per_frame(T) * T == pytest.approx(counter.get_total_flops() + attention, rel=1e-12)


def test_audio_false_skips_the_depformer_and_keeps_every_other_output():
    inputs = make_inputs(B=2, T=9)
    model = make_model()
    full, light = model(**inputs), model(**inputs, audio=False)
    assert light.audio_logits is None and not light.audio_mask.any()
    for name in ("yield_logits", "hidden", "face_pred", "text_logits"):
        assert torch.equal(getattr(full, name), getattr(light, name)), name
