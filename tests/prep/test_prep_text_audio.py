"""Text tokens in Moshi's PAD/EPAD layout, Mimi codes from a tiny random MimiModel, and Silero voice activity."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers missing: pip install -e '.[prep]'")
pytest.importorskip("sentencepiece", reason="sentencepiece missing: pip install -e '.[prep]'")

from fixtures_prep import babble, tiny_mimi

from faceturn.prep.audio_tokens import MimiEncoder, MimiSettings, mimi_frames
from faceturn.prep.text import TextSettings, TextTokenizer, Word

PAD, EPAD = 3, 0


@pytest.fixture(scope="module")
def tok(spm_model):
    return TextTokenizer(TextSettings(tokenizer=str(spm_model)))


def test_words_land_on_their_start_frames_with_epad_before(tok):
    words = [Word("Hi", 0.5, 0.8), Word("there", 0.9, 1.9), Word("okay", None, None)]
    out, untimed = tok.frames(words, 30)
    hi, there = tok.sp.encode("Hi"), tok.sp.encode("there")
    assert untimed == 1
    assert list(out[6 : 6 + len(hi)]) == hi  # 0.5 s is in frame 6
    assert out[5] == EPAD and out[10] == EPAD  # the frame before each word (0.9 s is in frame 11)
    assert list(out[11 : 11 + len(there)]) == there
    others = np.ones(30, bool)
    others[[5, 10, *range(6, 6 + len(hi)), *range(11, 11 + len(there))]] = False
    assert (out[others] == PAD).all()
    assert out.dtype == np.int32


def test_a_word_starting_before_the_previous_is_out_replaces_it(tok):
    long_word = "okaysowhatdoyouthink"  # many tokens
    n_long = len(tok.sp.encode(long_word))
    assert n_long > 3
    out, _ = tok.frames([Word(long_word, 0.0, 0.3), Word("hi", 0.16, 0.3)], 12)
    hi = tok.sp.encode("hi")
    assert list(out[:2]) == tok.sp.encode(long_word)[:2]  # frame 1 held a token, so no EPAD there
    assert list(out[2 : 2 + len(hi)]) == hi
    assert (out[2 + len(hi) :] == PAD).all()
    assert tok.frames([Word("hi", 5.0, 5.2)], 10)[0].tolist() == [PAD] * 10  # beyond the audio: dropped


@pytest.fixture(scope="module")
def encoder():
    return MimiEncoder(MimiSettings(model="tiny-random"), model=tiny_mimi(seed=0))


@pytest.mark.parametrize("n_samples", [1920, 1921, 24000 + 17])
def test_mimi_frame_count_is_ceil_of_samples_over_1920(encoder, n_samples):
    rng = np.random.default_rng(n_samples)
    codes = encoder.encode([0.1 * rng.standard_normal(n_samples).astype(np.float32)], 24000)
    assert codes.shape == (1, 8, mimi_frames(n_samples)) == (1, 8, -(-n_samples // 1920))
    assert codes.dtype == np.int16
    assert codes.min() >= 0 and codes.max() < 64  # the tiny model's codebook size


def test_mimi_codes_vary_are_deterministic_and_streaming_is_exact(encoder):
    rng = np.random.default_rng(0)
    waves = [babble(1.5, 16000, 1), 0.2 * rng.standard_normal(24000).astype(np.float32)]
    codes = encoder.encode(waves, 16000)  # resampled to 24 kHz inside
    assert codes.shape == (2, 8, 19)
    assert all(len(np.unique(codes[0, q])) >= 3 for q in range(8)) and (codes[0] != codes[1]).any()
    assert np.array_equal(codes, encoder.encode(waves, 16000))
    chunked = MimiEncoder(MimiSettings(model="tiny-random", chunk_s=0.4), model=encoder.model)
    assert np.array_equal(codes, chunked.encode(waves, 16000))  # 0.4 s streaming chunks == one forward pass
    assert np.array_equal(codes[1:], encoder.encode(waves[1:], 16000))  # batching changes nothing
    with pytest.raises(ValueError, match="equally long"):
        encoder.encode([waves[0], waves[1][:100]], 16000)


def test_silero_finds_speech_and_not_silence():
    pytest.importorskip("silero_vad", reason="silero-vad missing: pip install silero-vad")
    import torch

    from faceturn.prep.vad import silero_intervals
    from faceturn.timebase import voiced_fraction

    threads = torch.get_num_threads()
    rate = 16000
    wave = np.zeros(8 * rate, dtype=np.float32)
    wave[rate : 3 * rate] = babble(2.0, rate, 5)
    wave[5 * rate : 7 * rate] = babble(2.0, rate, 6)
    va = voiced_fraction(silero_intervals(wave, rate), 100)
    assert torch.get_num_threads() == threads  # importing silero_vad must not leave torch single-threaded
    speech = np.zeros(100, bool)
    speech[13:37] = speech[63:87] = True
    near = np.convolve(speech, np.ones(7), mode="same") > 0  # speech ± 3 frames (Silero pads and smooths)
    assert va[~near].max() == 0  # nothing voiced in the silences
    assert (va[speech] >= 0.5).mean() > 0.5 and (va[63:87] >= 0.5).any() and (va[13:37] >= 0.5).any()
