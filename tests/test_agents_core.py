"""The turn decision of faceturn.agents on planted frame sequences, and the bot's playout in step with the user's
microphone. (The frameworks themselves: tests/prep/test_agents.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from faceturn.agents.core import TurnDecider, TurnParams, _AgentPlayout
from faceturn.errors import ConfigError, FaceturnError
from faceturn.live.listener import LiveFrame
from faceturn.prep.media import resample


def frames(p: list[float], user: str, bot: str = "") -> list[LiveFrame]:
    """Frames with P(yield) p; `user`/`bot`: one character per frame, '#' speaking, anything else silent."""
    bot = bot.ljust(len(p))
    return [
        LiveFrame(
            k=k,
            codes=np.zeros((2, 8), np.int16),
            va=np.array([bot[k] == "#", user[k] == "#"], np.float32),
            face=np.zeros(61, np.float32),
            face_present=True,
            p_yield=pk,
            p_yield_zeroed=pk,
            alert=False,
            input_done_s=0.0,
            ready_s=0.001,
            stage_ms={},
        )
        for k, pk in enumerate(p)
    ]


def decide(params: TurnParams, seq: list[LiveFrame]) -> list[tuple[str, int]]:
    decider = TurnDecider(params)
    return [(e.kind, e.k) for f in seq if (e := decider.update(f)) is not None]


def test_the_turn_ends_when_p_is_high_after_the_minimum_silence():
    params = TurnParams(threshold=0.5, hysteresis=0.1, min_silence_s=0.24, fallback_timeout_s=3.0)
    user = "..#####" + "." * 13  # speaks on frames 2-6, silent from 7
    low_then_high = [0.2] * 12 + [0.7] * 8
    assert decide(params, frames(low_then_high, user)) == [("start", 2), ("stop", 12)]
    high = [0.7] * 20  # high all along: the turn ends once 3 frames of silence are in (frame 9)
    assert decide(params, frames(high, user)) == [("start", 2), ("stop", 9)]
    assert decide(TurnParams(min_silence_s=0.0, fallback_timeout_s=1.0), frames(high, user)) == [
        ("start", 2),
        ("stop", 7),
    ]


def test_hysteresis_keeps_p_high_until_it_falls_below_threshold_minus_hysteresis():
    user = "#####" + "." * 15
    dips = [0.6] * 5 + [0.45] * 15  # high during speech, then just under the threshold
    assert decide(TurnParams(hysteresis=0.1), frames(dips, user)) == [("start", 0), ("stop", 7)]
    assert decide(TurnParams(hysteresis=0.01), frames(dips, user)) == [("start", 0)]  # re-armed: no longer high


def test_the_fallback_ends_a_turn_that_p_never_ends_and_a_new_turn_can_end_again():
    params = TurnParams(min_silence_s=0.24, fallback_timeout_s=1.0)  # 13 frames
    user = "###" + "." * 20 + "##" + "." * 5
    p = [0.1] * 25 + [0.9] * 5
    assert decide(params, frames(p, user)) == [("start", 0), ("timeout", 15), ("start", 23), ("stop", 27)]


def test_a_barge_in_needs_the_bot_speaking_the_user_speaking_and_p_high():
    bot = "#" * 20
    user = "....###....####" + "." * 5
    p = [0.2] * 10 + [0.8] * 10  # the first overlap (4-6) has P low: a backchannel; the second (11-14) takes over
    assert decide(TurnParams(), frames(p, user, bot)) == [("barge_in", 11), ("stop", 17)]  # the user's turn ends too
    nobody = decide(TurnParams(), frames([0.9] * 20, "." * 20))
    assert nobody == []  # no turn to end before the user spoke


def test_params_are_checked():
    with pytest.raises(FaceturnError, match="threshold"):
        TurnParams(threshold=1.5)
    with pytest.raises(FaceturnError, match="hysteresis"):
        TurnParams(hysteresis=0.6)
    with pytest.raises(ConfigError, match="fallback_timeout_s"):
        TurnParams(min_silence_s=1.0, fallback_timeout_s=0.5)


def test_the_bot_plays_in_step_with_the_microphone():
    rng = np.random.default_rng(0)
    voice = rng.standard_normal(22_050).astype(np.float32) * 0.1  # 1 s at 22.05 kHz
    play = _AgentPlayout(enabled=True)
    play.add(voice[:10_000], 22_050)
    play.add(voice[10_000:], 22_050)
    out = np.concatenate([play.take(320, 16_000) for _ in range(75)])  # 1.5 s of microphone in 20 ms chunks
    assert out.size == 36_000  # exactly 1.5 s at 24 kHz
    want = resample(voice, 22_050, 24_000)  # the whole voice, then silence
    np.testing.assert_allclose(out[: want.size], want, atol=1e-5)
    assert not out[want.size :].any()
    play.add(voice, 22_050)
    play.clear()  # the bot was interrupted: what was queued never plays
    assert not play.take(1600, 16_000).any()
    with pytest.raises(FaceturnError, match="silent agent"):
        _AgentPlayout(enabled=False).add(voice, 22_050)


def test_the_factory_refuses_an_unknown_backend_and_an_onnx_backend_without_an_export(tmp_path):
    import torch

    from faceturn.agents.core import ListenerFactory
    from faceturn.checkpoint import save_checkpoint
    from faceturn.model import from_config
    from faceturn.recipe import load_train_config, resolved_config

    cfg = load_train_config("aux", ["model.dim=16", "model.num_layers=1", "model.num_heads=1"])
    model = from_config(cfg.model)
    save_checkpoint(tmp_path / "run", 0, model, torch.optim.AdamW(model.parameters()), {}, resolved_config(cfg), 1)
    with pytest.raises(ConfigError, match="backend must be one of eager, onnx, onnx-int8, got 'tensorrt'"):
        ListenerFactory(tmp_path / "run", backend="tensorrt")
    with pytest.raises(FaceturnError, match=r"no ONNX export in .*run `faceturn export --run .* --format onnx` first"):
        ListenerFactory(tmp_path / "run", backend="onnx")
