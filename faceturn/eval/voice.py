"""The voice-activity reader: per frame, whether a speaker is speaking, read from its Mimi codes (and from Moshi's
text stream when the corpus has text). Step 4 reads the generated audio of a talking model with it, and its silence
classes define the LM's implicit yield signal (docs/design.md, "Step 4: turn timing").

It is a measuring instrument fitted on the corpus's own (codes → voice activity) pairs, so its error is part of every
result that uses it: `score_reader` measures its frame accuracy and AUC on the evaluation split, with
conversation-clustered CIs, and every consumer reports them.

The reader is a small two-stage classifier, cheap to fit on any corpus and deterministic:

1. **Token tables.** For every codebook j and token v, the smoothed log-odds log((a + α) / (s + α)) of "active"
   among the training frames whose codebook j holds v (a, s: active and silent counts; α = `smoothing`), so an
   unseen token reads 0. The same for text tokens when the corpus has text (a word's tokens mark speech, PAD and
   EPAD are ambiguous). The **silence classes** are the semantic (codebook 0) tokens seen more often in silence than
   in speech.
2. **Logistic regression** on the table values: the semantic token of frames k − c .. k + c (context c =
   `context_frames`; 0 past the ends), the acoustic tokens of frame k, and the text tokens of frames k − c .. k + c
   when there is text, fitted on a seeded subsample of at most `max_frames` training frames.

The target is the corpus's own voice activity thresholded as the labels threshold it (`voiced_min_fraction`). The
reader looks at neighbouring frames on purpose: it reads finished audio offline, as an annotator would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from faceturn.errors import ConfigError, CorpusError
from faceturn.model import ZERO_TOKEN, KVCache, Model
from faceturn.results import Estimate, format_estimate
from faceturn.schema import CODEBOOK_SIZE, N_CODEBOOKS
from faceturn.stats import cluster_bootstrap_ratio, paired_cluster_bootstrap, roc_auc
from faceturn.store import Corpus


@dataclass(frozen=True)
class VoiceConfig:
    """How the voice-activity reader is fitted; saved with every result that uses it."""

    fit_split: str = "train"  # the corpus split it is fitted on (it is scored on the split under study)
    context_frames: int = 2  # semantic and text tokens of frames k − c .. k + c read frame k
    max_frames: int = 200_000  # training frames for the logistic stage (a seeded subsample; the tables use all)
    smoothing: float = 1.0  # α of the token tables' log-odds
    seed: int = 0

    def __post_init__(self) -> None:
        if self.context_frames < 0:
            raise ConfigError(f"voice.context_frames must be >= 0, got {self.context_frames}")
        if self.max_frames < 100:
            raise ConfigError(f"voice.max_frames must be >= 100, got {self.max_frames}")
        if not self.smoothing > 0:
            raise ConfigError(f"voice.smoothing must be > 0, got {self.smoothing}")


@dataclass
class VoiceReader:
    """A fitted reader (see the module docstring). `read` gives P(active) per frame."""

    config: VoiceConfig
    voiced_min_fraction: float
    audio_log_odds: np.ndarray  # [8, 2048] float64
    text_log_odds: np.ndarray | None  # [text vocabulary] float64, None when the corpus has no text
    coef: np.ndarray  # [F] logistic weights
    intercept: float
    silence_tokens: np.ndarray  # [S] int64 semantic tokens seen more often in silence than in speech
    n_fit_frames: int  # frames behind the tables

    @property
    def has_text(self) -> bool:
        return self.text_log_odds is not None

    def features(self, codes: np.ndarray, text: np.ndarray | None = None) -> np.ndarray:
        """codes [8, T] (−1 = no token) and text [T] (−1 absent) → features [T, F]."""
        codes = np.asarray(codes, np.int64)
        t = codes.shape[1]
        c = self.config.context_frames
        table = np.hstack([self.audio_log_odds, np.zeros((N_CODEBOOKS, 1))])  # column 2048 (−1 → last) reads 0
        per_token = table[np.arange(N_CODEBOOKS)[:, None], np.where(codes < 0, CODEBOOK_SIZE, codes)]  # [8, T]
        cols = [_shifted(per_token[0], o) for o in range(-c, c + 1)] + [per_token[j] for j in range(1, N_CODEBOOKS)]
        if self.text_log_odds is not None:
            tokens = np.full(t, -1, np.int64) if text is None else np.asarray(text, np.int64)
            known = (tokens >= 0) & (tokens < self.text_log_odds.size)
            values = np.where(known, self.text_log_odds[np.where(known, tokens, 0)], 0.0)
            cols += [_shifted(values, o) for o in range(-c, c + 1)]
        return np.stack(cols, axis=1)

    def read(self, codes: np.ndarray, text: np.ndarray | None = None) -> np.ndarray:
        """P(active) per frame [T] float32 of one speaker's codes [8, T] (and text [T])."""
        z = self.features(codes, text) @ self.coef + self.intercept
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def summary(self) -> dict[str, Any]:
        """What results record about the reader (its scores come from `score_reader`)."""
        return {
            "config": asdict(self.config),
            "voiced_min_fraction": self.voiced_min_fraction,
            "text": self.has_text,
            "n_fit_frames": self.n_fit_frames,
            "n_silence_tokens": int(self.silence_tokens.size),
        }


def _shifted(x: np.ndarray, offset: int) -> np.ndarray:
    """y[k] = x[k + offset], 0 outside."""
    out = np.zeros_like(x, dtype=np.float64)
    t = x.shape[0]
    if offset >= 0:
        out[: max(t - offset, 0)] = x[offset:]
    else:
        out[-offset:] = x[: t + offset]
    return out


def _speaker_streams(corpus: Corpus, split: str):
    """(conversation id, codes [8, T], text [T] or None, active [T]) for both participants of every conversation."""
    for conv_id in corpus.ids(split):
        conv = corpus.load(conv_id)
        codes = np.asarray(conv.codes, np.int64)
        text = np.asarray(conv.text, np.int64)
        va = np.asarray(conv.va, np.float32)
        for s in (0, 1):
            yield conv_id, codes[s], (text[s] if (text[s] >= 0).any() else None), va[s]


def fit_reader(corpus: str | Corpus, config: VoiceConfig = VoiceConfig(), voiced_min_fraction: float = 0.5):
    """Fit the reader on `config.fit_split` of a corpus (see the module docstring) → VoiceReader."""
    store = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
    if not store.ids(config.fit_split):
        raise CorpusError(f"{store.root}: no conversations in split {config.fit_split!r} to fit the voice reader on")
    counts = np.zeros((2, N_CODEBOOKS, CODEBOOK_SIZE))  # [silent/active, codebook, token]
    text_counts: list[np.ndarray] = [np.zeros(0), np.zeros(0)]
    n_frames = 0
    for _, codes, text, va in _speaker_streams(store, config.fit_split):
        active = va >= voiced_min_fraction
        n_frames += active.size
        for cls in (0, 1):
            sel = active == bool(cls)
            for j in range(N_CODEBOOKS):
                tok = codes[j, sel]
                counts[cls, j] += np.bincount(tok[tok >= 0], minlength=CODEBOOK_SIZE)
            if text is not None:
                tok = text[sel]
                add = np.bincount(tok[tok >= 0])
                grown = np.zeros(max(text_counts[cls].size, add.size))
                grown[: text_counts[cls].size] += text_counts[cls]
                grown[: add.size] += add
                text_counts[cls] = grown
    alpha = config.smoothing
    audio = np.log((counts[1] + alpha) / (counts[0] + alpha))
    text_table = None
    if max(text_counts[0].size, text_counts[1].size):
        size = max(text_counts[0].size, text_counts[1].size)
        silent, active_t = (np.pad(t, (0, size - t.size)) for t in text_counts)
        text_table = np.log((active_t + alpha) / (silent + alpha))
    reader = VoiceReader(
        config=config, voiced_min_fraction=voiced_min_fraction, audio_log_odds=audio, text_log_odds=text_table,
        coef=np.zeros(0), intercept=0.0, silence_tokens=np.flatnonzero(counts[1, 0] < counts[0, 0]).astype(np.int64),
        n_fit_frames=n_frames,
    )  # fmt: skip
    rng = np.random.default_rng(config.seed)
    rate = min(1.0, config.max_frames / max(n_frames, 1))
    xs, ys = [], []
    for _, codes, text, va in _speaker_streams(store, config.fit_split):
        keep = rng.random(va.size) < rate
        xs.append(reader.features(codes, text)[keep])
        ys.append(va[keep] >= voiced_min_fraction)
    x, y = np.concatenate(xs), np.concatenate(ys)
    if y.all() or not y.any():
        raise CorpusError(f"{store.root}: split {config.fit_split!r} has only {'active' if y.all() else 'silent'} "
                          "frames: the voice reader needs both")  # fmt: skip
    lr = LogisticRegression(max_iter=1000).fit(x, y)
    reader.coef, reader.intercept = lr.coef_[0].astype(np.float64), float(lr.intercept_[0])
    return reader


def score_reader(
    reader: VoiceReader, corpus: str | Corpus, split: str, *, n_resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """The reader's frame accuracy (at P ≥ 0.5) and AUC against the corpus's voice activity on `split` (every frame
    of both participants), each with a conversation-clustered 95 % CI, and what it was fitted on."""
    store = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
    ps, ys, conv = [], [], []
    for conv_id, codes, text, va in _speaker_streams(store, split):
        ps.append(reader.read(codes, text))
        ys.append(va >= reader.voiced_min_fraction)
        conv.append(np.full(va.size, conv_id, dtype=object))
    if not ps:
        raise CorpusError(f"{store.root}: no conversations in split {split!r} to score the voice reader on")
    p, y, clusters = np.concatenate(ps), np.concatenate(ys), np.concatenate(conv).astype(str)
    correct = ((p >= 0.5) == y).astype(np.float64)
    n_clusters = int(np.unique(clusters).size)
    both = bool(y.any() and not y.all())
    if n_clusters >= 2:
        boot = {"n_resamples": n_resamples, "seed": seed}
        accuracy = cluster_bootstrap_ratio(correct, np.ones_like(correct), clusters, **boot)
        auc = paired_cluster_bootstrap(y, {"reader": p}, clusters, **boot).to_dict() if both else None
    else:  # one conversation: the numbers, without a CI
        note = "one conversation: no CI"
        accuracy = {"value": float(correct.mean()), "ci": None, "n_frames": int(y.size), "n_clusters": 1, "note": note}
        auc = {"auc": {"reader": roc_auc(y, p)}, "ci": {"reader": None}, "n_frames": int(y.size), "n_clusters": 1,
               "n_resamples": 0, "seed": seed} if both else None  # fmt: skip
    return {
        **reader.summary(),
        "split": split,
        "accuracy": accuracy,
        "auc": {"value": None, "ci": None, "note": "one class only"} if auc is None else {
            "value": auc["auc"]["reader"], "ci": auc["ci"]["reader"], "n_frames": auc["n_frames"],
            "n_clusters": auc["n_clusters"], "n_resamples": auc["n_resamples"], "seed": auc["seed"]},
        "active_fraction": float(y.mean()),
    }  # fmt: skip


def reader_sentence(reader: dict[str, Any]) -> str:
    """How well the voice reader reads real audio: every result that uses it says so."""

    def cell(block: dict[str, Any]) -> str:
        if block.get("value") is None:
            return f"n/a ({block.get('note', 'undefined')})"
        ci = block.get("ci")
        return format_estimate(Estimate(block["value"], None if ci is None else tuple(ci)))

    fit, split = reader["config"]["fit_split"], reader["split"]
    return (
        f"Voice-activity reader (fitted on the {fit!r} split, scored on {split!r}): frame accuracy "
        f"{cell(reader['accuracy'])}, AUC {cell(reader['auc'])} against the recorded voice activity."
    )


# ------------------------------------------------------------------------------------------- implicit yield signal
@torch.no_grad()
def p_silent_next(
    model: Model, hidden: torch.Tensor, silence_tokens: np.ndarray, text_pad_id: int | None
) -> dict[str, np.ndarray | None]:
    """The LM's own probability that self is silent at the next frame, from its temporal output hidden [N, D] at
    position k + 1 (`ModelOutput.hidden[k]`, which reads frames ≤ k): {"audio": Σ of the semantic distribution of
    frame k + 1 over the reader's silence classes [N], "text": its P(PAD) for the text token of frame k + 1 [N], or
    None when `text_pad_id` is None (a corpus without text)}.

    The semantic head also reads the self's text token of frame k + 1 (Moshi emits a frame's text before its audio).
    The recorded token would reveal whether self speaks next, so it is the model's own most likely text token when
    the corpus has text, and the absent token (−1) otherwise, as in generation without text."""
    n = hidden.shape[0]
    dtype = next(model.parameters()).dtype
    h = hidden.to(dtype)
    text_logits = model.text_linear(h).float() if text_pad_id is not None else None
    token = text_logits.argmax(-1) if text_logits is not None else torch.full((n,), ZERO_TOKEN, device=h.device)
    cfg = model.cfg
    head_dim = cfg.depformer_dim // cfg.depformer_num_heads
    caches = [KVCache(n, cfg.depformer_num_heads, head_dim, N_CODEBOOKS, h.device, dtype)
              for _ in range(cfg.depformer_num_layers)]  # fmt: skip
    semantic = torch.softmax(model.depformer_step(h, token, 0, caches).float(), dim=-1)
    silent = torch.as_tensor(silence_tokens, dtype=torch.long, device=h.device)
    return {
        "audio": semantic[:, silent].sum(-1).cpu().numpy(),
        "text": None if text_logits is None else torch.softmax(text_logits, -1)[:, text_pad_id].cpu().numpy(),
    }
