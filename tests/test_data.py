import json

import numpy as np
import pytest
import torch

from faceturn.data import (
    DataConfig,
    WindowDataset,
    WindowLoader,
    face_statistics,
    validation_batches,
    validation_windows,
    zero_face,
)
from faceturn.labels import EventConfig, turn_labels
from faceturn.store import Corpus
from faceturn.synth import generate_corpus, load_preset

WINDOW = 40  # frames


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    cfg = load_preset("tight", ["floor.duration_min_s=20", "floor.duration_max_s=30", "conversations_per_group=2"])
    out = tmp_path_factory.mktemp("corpus")
    generate_corpus(cfg, out, 10, seed=3, progress=False)
    return out


@pytest.fixture(scope="module")
def train_ds(corpus_dir):
    return WindowDataset(corpus_dir, "train", WINDOW)


def _batches_equal(a, b):
    for name in ("text", "self_codes", "other_codes", "face", "face_present", "y", "m", "holder", "valid"):
        if not torch.equal(getattr(a, name), getattr(b, name)):
            return False
    return a.conversation == b.conversation and torch.equal(a.start_frame, b.start_frame)


def test_a_window_is_one_perspective_with_the_interlocutors_face(corpus_dir, train_ds):
    corpus = Corpus(corpus_dir)
    ci = 1
    conv = corpus.load(train_ds.ids[ci])
    lab = turn_labels(np.asarray(conv.va), EventConfig())
    t = conv.n_frames
    start = 7
    for s in (0, 1):
        b = train_ds.batch([(ci, s, start, False)])
        sl = slice(start, start + WINDOW)
        assert torch.equal(b.text[0], torch.from_numpy(conv.text[s, sl].astype(np.int64)))
        assert torch.equal(b.self_codes[0], torch.from_numpy(conv.codes[s, :, sl].astype(np.int64)))
        assert torch.equal(b.other_codes[0], torch.from_numpy(conv.codes[1 - s, :, sl].astype(np.int64)))
        assert torch.equal(b.face[0], torch.from_numpy(conv.face[1 - s, sl].astype(np.float32)))  # never self's face
        assert torch.equal(b.face_present[0], torch.from_numpy(conv.face_present[1 - s, sl] > 0))
        assert torch.equal(b.y[0], torch.from_numpy(lab.y[sl].astype(np.float32)))
        assert torch.equal(b.m[0], torch.from_numpy(lab.m[sl]))
        assert torch.equal(b.holder[0], torch.from_numpy(lab.floor_relative(s)[sl]))
        assert b.valid.all() and b.self_speaker.tolist() == [s]
    # padding past the conversation's end: -1 tokens, no face, nothing scored, valid False
    b = train_ds.batch([(ci, 0, t - 10, False)])
    assert b.valid[0, :10].all() and not b.valid[0, 10:].any()
    assert (b.self_codes[0, :, 10:] == -1).all() and (b.other_codes[0, :, 10:] == -1).all()
    assert (b.text[0, 10:] == -1).all() and not b.face_present[0, 10:].any() and not b.m[0, 10:].any()
    assert (b.holder[0, 10:] == -1).all() and (b.face[0, 10:] == 0).all()
    with pytest.raises(ValueError, match="outside conversation"):
        train_ds.batch([(ci, 0, t, False)])


def test_the_stream_is_deterministic_for_a_seed(train_ds):
    a = WindowLoader(train_ds, batch_size=3, seed=5, face_dropout=0.3)
    b = WindowLoader(train_ds, batch_size=3, seed=5, face_dropout=0.3)
    c = WindowLoader(train_ds, batch_size=3, seed=6, face_dropout=0.3)
    for _ in range(4):
        ba, bb, bc = a.next_batches()[0], b.next_batches()[0], c.next_batches()[0]
        assert _batches_equal(ba, bb)
    assert not _batches_equal(ba, bc)


def test_an_epoch_covers_both_perspectives_of_every_conversation(train_ds):
    loader = WindowLoader(train_ds, batch_size=1, seed=0)
    reps = train_ds.windows_per_epoch()
    seen = np.zeros((len(train_ds), 2), dtype=int)
    for i in range(loader.samples_per_epoch):
        ci, s, start, dropped = loader.sample(i)
        seen[ci, s] += 1
        assert 0 <= start <= train_ds.max_start(ci) and not dropped
    assert (seen == reps[:, None]).all()
    # the next epoch is a different permutation with different starts
    first = [loader.sample(i) for i in range(loader.samples_per_epoch)]
    second = [loader.sample(loader.samples_per_epoch + i) for i in range(loader.samples_per_epoch)]
    assert sorted((c, s) for c, s, _, _ in first) == sorted((c, s) for c, s, _, _ in second)
    assert first != second


def test_resumed_loader_yields_exactly_the_batches_it_would_have(train_ds):
    run = WindowLoader(train_ds, batch_size=2, seed=1, face_dropout=0.5, grad_accum=2)
    for _ in range(5):
        run.next_batches()
    state = json.loads(json.dumps(run.state_dict()))  # it travels as JSON in the checkpoint
    resumed = WindowLoader(train_ds, batch_size=2, seed=1, face_dropout=0.5, grad_accum=2)
    resumed.load_state_dict(state)
    for _ in range(3):
        for x, y in zip(run.next_batches(), resumed.next_batches(), strict=True):
            assert _batches_equal(x, y)
    other = WindowLoader(train_ds, batch_size=2, seed=2, face_dropout=0.5, grad_accum=2)
    with pytest.raises(ValueError, match="seed is 1 in the checkpoint but 2 now"):
        other.load_state_dict(state)
    bigger = WindowLoader(train_ds, batch_size=2, seed=1, face_dropout=0.5, grad_accum=3)
    with pytest.raises(ValueError, match="global_batch_size"):
        bigger.load_state_dict(state)


def test_background_workers_cut_the_same_batches_from_any_step(train_ds):
    plain = WindowLoader(train_ds, batch_size=2, seed=3, face_dropout=0.3, grad_accum=2)
    ahead = WindowLoader(train_ds, batch_size=2, seed=3, face_dropout=0.3, grad_accum=2, workers=2)
    for _ in range(3):
        for x, y in zip(plain.next_batches(), ahead.next_batches(), strict=True):
            assert _batches_equal(x, y)
    ahead.load_state_dict({**ahead.state_dict(), "next_step": 7})  # a resume restarts the workers at its step
    for x, y in zip(plain.step_batches(7), ahead.next_batches(), strict=True):
        assert _batches_equal(x, y)
    assert ahead.next_step == 8


def test_windows_are_cut_from_a_few_mapped_files_checked_once(corpus_dir, tmp_path):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    few = WindowDataset(corpus, "train", WINDOW, max_mapped_conversations=2)
    many = WindowDataset(corpus, "train", WINDOW)
    few.validate()
    assert not few._maps  # validation keeps no file open and no conversation in memory, only labels
    loader = WindowLoader(many, batch_size=4, seed=2)
    for step in range(5):
        samples = loader.step_samples(step)[0]
        assert _batches_equal(few.batch(samples), many.batch(samples))
        assert len(few._maps) <= 2
    victim = corpus / few.corpus.entry(few.ids[0]).file
    victim.write_bytes(victim.read_bytes() + b" ")  # replaced after validation
    few.batch([(1, 0, 0, False), (2, 0, 0, False)])  # conversation 0 is no longer mapped
    with pytest.raises(ValueError, match=f"{victim.name}: changed since it was validated"):
        few.batch([(0, 0, 0, False)])
    ahead = WindowLoader(few, batch_size=len(few), seed=0, workers=1)  # every step touches every conversation
    with pytest.raises(ValueError, match=f"{victim.name}: changed since it was validated"):
        ahead.next_batches()  # the worker's error, raised here


def test_ddp_shards_cover_the_single_process_global_batch(train_ds):
    """Rank r of 2 with grad_accum 2 gets micro-batches 2a + r of one process with grad_accum 4."""
    single = WindowLoader(train_ds, batch_size=2, seed=4, grad_accum=4)
    ranks = [WindowLoader(train_ds, batch_size=2, seed=4, grad_accum=2, world_size=2, rank=r) for r in (0, 1)]
    for step in range(3):
        one = single.step_samples(step)
        for r, loader in enumerate(ranks):
            for a, micro in enumerate(loader.step_samples(step)):
                assert micro == one[2 * a + r]
    assert ranks[0].state_dict()["global_batch_size"] == single.state_dict()["global_batch_size"] == 8
    with pytest.raises(ValueError, match="rank 2 outside world of size 2"):
        WindowLoader(train_ds, batch_size=2, seed=4, world_size=2, rank=2)


def test_face_dropout_removes_the_whole_face_of_a_window(train_ds):
    all_dropped = WindowLoader(train_ds, batch_size=4, seed=0, face_dropout=1.0).next_batches()[0]
    assert (all_dropped.face == 0).all() and not all_dropped.face_present.any()
    kept = WindowLoader(train_ds, batch_size=4, seed=0, face_dropout=0.0).next_batches()[0]
    assert kept.face_present.any() and (kept.face != 0).any()
    # the same windows: only the face differs
    assert torch.equal(kept.self_codes, all_dropped.self_codes) and torch.equal(kept.y, all_dropped.y)
    half = WindowLoader(train_ds, batch_size=1, seed=0, face_dropout=0.5)
    rate = np.mean([half.sample(i)[3] for i in range(2000)])
    assert 0.45 < rate < 0.55
    # zero_face on chosen rows only
    face, present = kept.face.clone(), kept.face_present.clone()
    rows = torch.tensor([True, False, False, True])
    f2, p2 = zero_face(face, present, rows)
    assert (f2[rows] == 0).all() and not p2[rows].any()
    assert torch.equal(f2[~rows], face[~rows]) and torch.equal(p2[~rows], present[~rows])
    z = kept.without_face()
    assert (z.face == 0).all() and not z.face_present.any() and torch.equal(z.text, kept.text)


def test_validation_windows_are_fixed_and_thinned(corpus_dir):
    val = WindowDataset(corpus_dir, "val", WINDOW)
    full = validation_windows(val, 10_000)
    expected = sum(2 * -(-int(n) // WINDOW) for n in val.n_frames)
    assert len(full) == expected and len(set(full)) == len(full)
    thin = validation_windows(val, 5)
    assert len(thin) == 5 and set(thin) <= set(full) and thin == validation_windows(val, 5)
    batches = list(validation_batches(val, thin, batch_size=2))
    assert [b.text.shape[0] for b in batches] == [2, 2, 1]
    assert not any((b.face_present.sum() == 0) and b.face.abs().sum() > 0 for b in batches)


def test_face_statistics_over_face_present_frames(corpus_dir, train_ds):
    mean, std = face_statistics(train_ds)
    corpus = Corpus(corpus_dir)
    rows = []
    for i in train_ds.ids:
        conv = corpus.load(i)
        rows.append(np.asarray(conv.face, dtype=np.float64)[np.asarray(conv.face_present) > 0])
    x = np.concatenate(rows)
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, x.std(0), rtol=1e-4, atol=1e-5)  # as measured: the model floors a constant one


def test_bad_config_and_inputs_are_named():
    with pytest.raises(ValueError, match="data.face_dropout"):
        DataConfig(face_dropout=1.5)
    with pytest.raises(ValueError, match="data.window_s"):
        DataConfig(window_s=0)
    with pytest.raises(ValueError, match="data.workers must be >= 0"):
        DataConfig(workers=-1)
    assert DataConfig(window_s=1.0).window_frames == 13  # the one timebase rule


def test_missing_split_is_an_error_naming_it(corpus_dir):
    with pytest.raises(ValueError, match="no conversations in split 'dev'"):
        WindowDataset(corpus_dir, "dev", WINDOW)
