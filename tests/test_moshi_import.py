"""Parity with kyutai's own implementation: moshi 0.2.13's LMModel at a tiny 7B-shaped config, exported in the legacy
fused layout, imported through `faceturn import-moshi`, loaded with `load_model`: same logits and masks (fp32), same
greedy generation (kyutai's LMGen vs a full recompute of our forward per token, in Moshi's order)."""

import json
import os

os.environ.setdefault("NO_TORCH_COMPILE", "1")  # read when moshi is imported: no 27 s torch.compile on CPU

import pytest
import torch

from faceturn.checkpoint import load_model
from faceturn.cli import main
from faceturn.model import Model
from faceturn.moshi_import import build_imported, kyutai_7b_kwargs, map_state_dict, model_config_from_kyutai
from faceturn.schema import N_FACE

TINY_7B_SHAPED = {  # every 7B option, small sizes; context 10 < the 16-21 positions used, so the limit is exercised
    "dim": 64, "num_layers": 2, "num_heads": 4, "context": 10, "card": 50, "text_card": 100, "depformer_dim": 32,
    "depformer_num_layers": 2, "depformer_num_heads": 2, "depformer_dim_feedforward": int(4.125 * 32),
}  # fmt: skip
TOLERANCE = 1e-5  # fp32
B, T = 2, 15


def _required() -> bool:
    flag = lambda name: os.environ.get(name, "").lower() not in ("", "0", "false", "no")  # noqa: E731
    return flag("CI") or flag("FACETURN_REQUIRE_MOSHI")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def kyutai_lm():
    """kyutai's moshi.models.lm; a failure (not a skip) where CI=1 or FACETURN_REQUIRE_MOSHI=1."""
    try:
        from moshi.models import lm
    except ImportError as e:
        if _required():
            pytest.fail(f"kyutai's moshi does not import ({e}) but CI / FACETURN_REQUIRE_MOSHI requires it: ./setup.sh")
        pytest.skip(f"kyutai's moshi is not installed ({e}); ./setup.sh installs it with the dev extras")
    return lm


def kyutai_kwargs() -> dict:
    return {**kyutai_7b_kwargs(), **TINY_7B_SHAPED}


def legacy_state_dict(lm_model) -> dict[str, torch.Tensor]:
    """kyutai's on-disk layout: per-step attention weights fused step-major into in_proj_weight / out_proj.weight."""
    out, fused = {}, {}
    for name, t in lm_model.state_dict().items():
        prefix, sep, rest = name.partition("self_attn.")
        if sep:
            kind, step, _ = rest.split(".")
            fused.setdefault((prefix + sep, kind), {})[int(step)] = t
        else:
            out[name] = t.clone()
    for (prefix, kind), steps in fused.items():
        name = "in_proj_weight" if kind == "in_projs" else "out_proj.weight"
        out[prefix + name] = torch.cat([steps[k] for k in range(len(steps))])
    return out


@pytest.fixture(scope="module")
def kyutai_model(kyutai_lm):
    torch.manual_seed(1234)
    return kyutai_lm.LMModel(**kyutai_kwargs()).eval()


@pytest.fixture(scope="module")
def imported(kyutai_model, tmp_path_factory) -> Model:
    """Through the command and load_model, as a user would."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("kyutai")
    save_file(legacy_state_dict(kyutai_model), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({**kyutai_kwargs(), "moshi_name": "model.safetensors"}))
    run = folder / "run"
    argv = ["import-moshi", "--weights", str(folder / "model.safetensors"), "--config", str(folder / "config.json"),
            "--out", str(run), "--dtype", "fp32", "--set", "face_hidden=16", "--set", "yield_hidden=8"]  # fmt: skip
    assert main(argv) == 0
    model, _ = load_model(run)
    return model


@pytest.fixture(scope="module")
def codes() -> torch.Tensor:
    """[B, 17, T] in kyutai's order (text, Moshi 8, user 8), with absent (-1) text and a padded tail."""
    g = torch.Generator().manual_seed(0)
    c = torch.cat([torch.randint(0, 100, (B, 1, T), generator=g), torch.randint(0, 50, (B, 16, T), generator=g)], 1)
    c[:, 0][torch.rand(B, T, generator=g) < 0.3] = -1
    c[1, :, -3:] = -1
    return c


def forward_ours(model: Model, codes: torch.Tensor, face_seed: int | None = 0):
    """Our forward on kyutai-ordered codes; the interlocutor's face present (random) or, with None, zeroed."""
    b, _, t = codes.shape
    if face_seed is None:
        face, present = torch.zeros(b, t, N_FACE), torch.zeros(b, t)
    else:
        face, present = torch.randn(b, t, N_FACE, generator=torch.Generator().manual_seed(face_seed)), torch.ones(b, t)
    with torch.no_grad():
        return model(codes[:, 0], codes[:, 1:9], codes[:, 9:], face, present)


def parity_gap(out, ref) -> float:
    """max |Δ| of audio and text logits on the valid positions; inf when any mask differs."""
    text_mask = ref.text_mask[:, 0]
    if not (torch.equal(out.audio_mask, ref.mask) and torch.equal(out.text_mask, text_mask)):
        return float("inf")
    audio = (out.audio_logits - ref.logits)[ref.mask].abs().max()
    text = (out.text_logits - ref.text_logits[:, 0])[text_mask].abs().max()
    return float(torch.maximum(audio, text).detach())


@pytest.fixture(scope="module")
def reference(kyutai_model, codes):
    with torch.no_grad():
        return kyutai_model(codes)


def test_logits_and_masks_equal_kyutais_with_the_face_present(imported, reference, codes):
    assert reference.mask.any() and not reference.mask.all()  # the delay and the padding both mask something
    out = forward_ours(imported, codes)
    gap = parity_gap(out, reference)
    assert gap <= TOLERANCE, gap
    zeroed = forward_ours(imported, codes, face_seed=None)  # zero-initialised face path: the face changes nothing
    assert torch.equal(out.audio_logits, zeroed.audio_logits) and torch.equal(out.text_logits, zeroed.text_logits)


def test_every_mapped_tensor_takes_part_in_the_parity(kyutai_model, reference, codes):
    """Perturbing any single tensor of the mapped state dict breaks the parity: nothing is silently ignored."""
    cfg = model_config_from_kyutai(kyutai_kwargs(), "test", ["face_hidden=16", "yield_hidden=8"])
    legacy = legacy_state_dict(kyutai_model)
    names = list(map_state_dict(legacy.items(), Model(cfg), "test"))
    assert len(names) == len(kyutai_model.state_dict())
    model = build_imported(cfg, legacy.items(), "test", torch.float32)
    assert parity_gap(forward_ours(model, codes), reference) <= TOLERANCE
    g = torch.Generator().manual_seed(1)
    for name in names:
        t = model.get_parameter(name)
        kept = t.detach().clone()
        with torch.no_grad():
            t.add_(0.1 * torch.randn(t.shape, generator=g))
            assert parity_gap(forward_ours(model, codes), reference) > TOLERANCE, name
            t.copy_(kept)


def greedy_ours(model: Model, user: torch.Tensor) -> torch.Tensor:
    """Greedy decoding by recomputing the whole forward for every token, in Moshi's order: at position s the text
    token of frame s, its semantic token, then acoustic codebooks 1..7 of frame s − 1 (their delay). Causality lets
    every forward run on all N + 1 frames, with 0 in what is not generated yet. user [1, 8, N] → [1, 9, N]."""
    n = user.shape[-1]
    text = torch.zeros(1, n + 1, dtype=torch.long)
    moshi = torch.zeros(1, 8, n + 1, dtype=torch.long)
    other = torch.cat([user, torch.zeros(1, 8, 1, dtype=torch.long)], dim=-1)
    face, present = torch.zeros(1, n + 1, N_FACE), torch.ones(1, n + 1)

    def run():
        with torch.no_grad():
            return model(text, moshi, other, face, present)

    for s in range(n + 1):
        text[0, s] = run().text_logits[0, s].argmax()
        moshi[0, 0, s] = run().audio_logits[0, 0, s].argmax()
        for j in range(1, 8) if s > 0 else ():
            moshi[0, j, s - 1] = run().audio_logits[0, j, s - 1].argmax()
    return torch.cat([text[:, None, :n], moshi[:, :, :n]], dim=1)


def greedy_kyutai(kyutai_lm, lm_model, user: torch.Tensor) -> torch.Tensor:
    """kyutai's LMGen, greedy. Its step s reads the user frame given at step s at the position of Moshi's frame s − 1,
    so user frame k goes in at step k + 1 and step k + 1 returns Moshi's frame k (text + 8 codebooks)."""
    gen = kyutai_lm.LMGen(lm_model, use_sampling=False)
    frames = []
    with gen.streaming(1):
        n = user.shape[-1]
        for s in range(n + 1):
            out = gen.step(user[:, :, max(s - 1, 0) : max(s - 1, 0) + 1])
            if s > 0:
                frames.append(out)
    return torch.cat(frames, dim=-1)


def test_greedy_generation_of_20_frames_equals_kyutais(kyutai_lm, kyutai_model, imported):
    """Both our full recompute and faceturn.stream's KV-cached generation produce kyutai's 20 frames."""
    from faceturn.stream import generate

    user = torch.randint(0, 50, (1, 8, 20), generator=torch.Generator().manual_seed(3))
    theirs = greedy_kyutai(kyutai_lm, kyutai_model, user)
    assert theirs.shape == (1, 9, 20)
    assert len(torch.unique(theirs[:, 1:])) > 5  # a real sequence, not one repeated token
    assert torch.equal(greedy_ours(imported, user), theirs)
    streamed = generate(imported, user, torch.randn(1, 20, N_FACE), torch.ones(1, 20))
    assert torch.equal(torch.cat([streamed.text[:, None], streamed.codes], dim=1), theirs)


# ----------------------------------------------------------------------------------------- bad input (no kyutai needed)
def test_unsupported_or_missing_options_are_named():
    with pytest.raises(ValueError, match="norm is 'layer_norm'"):
        model_config_from_kyutai({**kyutai_kwargs(), "norm": "layer_norm"}, "cfg.json")
    no_pos = {k: v for k, v in kyutai_kwargs().items() if k != "depformer_pos_emb"}
    with pytest.raises(ValueError, match="depformer_pos_emb is absent"):
        model_config_from_kyutai(no_pos, "cfg.json")
    with pytest.raises(ValueError, match=r"unknown LMModel option\(s\) \['fancy'\]"):
        model_config_from_kyutai({**kyutai_kwargs(), "fancy": 1}, "cfg.json")
    with pytest.raises(ValueError, match=r"cannot override \['dim'\]"):
        model_config_from_kyutai(kyutai_kwargs(), "cfg.json", ["dim=128"])
    cfg = model_config_from_kyutai(kyutai_kwargs(), "cfg.json")
    assert cfg.face_zero_init and cfg.dim == 64 and cfg.context == 10


def test_wrong_missing_or_extra_tensors_are_named(tmp_path, capsys):
    from safetensors.torch import save_file

    cfg = model_config_from_kyutai(kyutai_kwargs(), "cfg.json", ["face_hidden=16", "yield_hidden=8"])
    torch.manual_seed(0)
    state = {k: v for k, v in Model(cfg).state_dict().items() if not k.startswith(("face_", "yield_"))}
    model = Model(cfg)
    with pytest.raises(ValueError, match=r"w.st: text_emb.weight has shape \[3, 64\]"):
        map_state_dict([*state.items(), ("text_emb.weight", torch.zeros(3, 64))], model, "w.st")
    with pytest.raises(ValueError, match=r"unexpected \['extra_heads.0.weight'\], missing \['emb.0.weight'\]"):
        map_state_dict([*list(state.items())[1:], ("extra_heads.0.weight", torch.zeros(6, 64))], model, "w.st")
    save_file(state, str(tmp_path / "w.safetensors"))
    (tmp_path / "c.json").write_text(json.dumps(kyutai_kwargs()))
    argv = ["import-moshi", "--weights", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "run")]
    assert main(argv) == 2  # no --config: the 7B shape, which these weights do not have
    assert "w.safetensors" in capsys.readouterr().err
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    assert main([*argv[:2], str(tmp_path / "bad.safetensors"), *argv[3:]]) == 2
    assert "bad.safetensors: cannot read as safetensors" in capsys.readouterr().err
    assert main([*argv, "--config", str(tmp_path / "c.json")]) == 0  # runtime names import as they are
    assert main([*argv, "--config", str(tmp_path / "c.json")]) == 2  # the run folder is not empty any more
    assert "not an empty folder" in capsys.readouterr().err
