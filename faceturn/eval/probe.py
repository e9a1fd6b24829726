"""Step 1 of the study: does the interlocutor's face alone predict an upcoming floor hand-over?

A logistic regression reads standardized 13-frame (1.04 s) windows of the interlocutor's raw A61 coefficients ending
at frame k and predicts the turn-yield target y[k]. Cross-validation folds are grouped by conversation, so a
conversation never sits in both the training and the test fold; the AUC of the pooled out-of-fold predictions gets
a cluster-bootstrap CI. Two label controls bound what chance looks like: i.i.d. shuffled labels, and labels
circularly shifted within each conversation, which keeps their autocorrelation (the stricter null). The same probe
runs on each face group alone and with each group left out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from faceturn.errors import CorpusError
from faceturn.labels import EventConfig, turn_labels
from faceturn.results import Estimate, format_estimate, warning_lines
from faceturn.schema import FACE_GROUPS, N_FACE, group_indices
from faceturn.stats import (
    MIN_CONVERSATIONS,
    circular_shift_labels,
    flag_few_conversations,
    paired_cluster_bootstrap,
    shuffled_labels,
)
from faceturn.store import Corpus
from faceturn.timebase import duration_to_frames


@dataclass(frozen=True)
class ProbeConfig:
    window_s: float = 1.0  # window length; 1.0 s → 13 frames ending at frame k
    stride_frames: int = 4  # keep every n-th scored frame (neighbouring frames are nearly identical)
    max_frames: int = 60_000  # cap on probe frames after striding (subsampled by conversation order, seeded)
    folds: int = 5  # conversation-grouped cross-validation folds
    regularization_c: float = 1.0  # inverse L2 strength of the logistic regression
    resamples: int = 1000  # cluster-bootstrap resamples for the CIs
    seed: int = 0
    split: str = "all"  # corpus split to probe ("all" = every conversation)
    min_conversations: int = MIN_CONVERSATIONS  # CIs from fewer conversations carry a warning

    @property
    def window_frames(self) -> int:
        return duration_to_frames(self.window_s)


@dataclass
class ProbeData:
    """Windows of the interlocutor's face with their targets, one row per (conversation, perspective, frame)."""

    windows: np.ndarray  # [N, W, 61] float32
    y: np.ndarray  # [N] uint8
    conversation: np.ndarray  # [N] int64 index into `conversation_ids`
    conversation_ids: list[str] = field(default_factory=list)


def probe_windows(
    corpus: Corpus, config: ProbeConfig = ProbeConfig(), labels_config: EventConfig | None = None
) -> ProbeData:
    """Collect face windows ending at scored frames, from both perspectives of every conversation in the split."""
    labels_config = labels_config or EventConfig()
    ids = corpus.ids(None if config.split == "all" else config.split)
    if not ids:
        raise CorpusError(f"{corpus.root}: no conversations in split {config.split!r}")
    w = config.window_frames
    windows, targets, convs = [], [], []
    for ci, conv_id in enumerate(ids):
        conv = corpus.load(conv_id)
        lab = turn_labels(np.asarray(conv.va, dtype=np.float32), labels_config)
        frames = np.flatnonzero(lab.m)
        frames = frames[frames >= w - 1][:: config.stride_frames]
        if frames.size == 0:
            continue
        idx = frames[:, None] + np.arange(-w + 1, 1)[None, :]  # [n, W]
        for interlocutor in (0, 1):  # the other participant's face, seen from each self
            face = np.asarray(conv.face[interlocutor], dtype=np.float32)
            windows.append(face[idx])
            targets.append(lab.y[frames])
            convs.append(np.full(frames.size, ci, dtype=np.int64))
    if not windows:
        raise CorpusError(f"{corpus.root}: no scored frames with a full {w}-frame window in split {config.split!r}")
    data = ProbeData(np.concatenate(windows), np.concatenate(targets), np.concatenate(convs), list(ids))
    if data.y.size > config.max_frames:
        keep = np.sort(np.random.default_rng(config.seed).choice(data.y.size, config.max_frames, replace=False))
        data = ProbeData(data.windows[keep], data.y[keep], data.conversation[keep], data.conversation_ids)
    return data


def out_of_fold_scores(
    windows: np.ndarray, y: np.ndarray, groups: np.ndarray, channels: list[int], config: ProbeConfig
) -> np.ndarray:
    """Pooled out-of-fold P(y=1) of a standardized logistic regression on the chosen channels, folds by group."""
    x = windows[:, :, channels].reshape(len(windows), -1)
    n_groups = np.unique(groups).size
    if n_groups < 2:
        raise CorpusError(f"need at least 2 conversations for grouped cross-validation, got {n_groups}")
    scores = np.empty(len(y), dtype=np.float64)
    for train, test in GroupKFold(n_splits=min(config.folds, n_groups)).split(x, y, groups):
        if np.unique(y[train]).size < 2:
            raise CorpusError("a training fold has only one class; use more conversations or fewer folds")
        model = make_pipeline(StandardScaler(), LogisticRegression(C=config.regularization_c, max_iter=1000))
        model.fit(x[train], y[train])
        scores[test] = model.predict_proba(x[test])[:, 1]
    return scores


def _auc_with_ci(y, scores, groups, config: ProbeConfig) -> dict[str, Any]:
    res = paired_cluster_bootstrap(y, {"auc": scores}, groups, n_resamples=config.resamples, seed=config.seed)
    return {"auc": res.auc["auc"], "ci": list(res.ci["auc"]), "n_frames": res.n_frames, "n_positive": res.n_positive,
            "n_clusters": res.n_clusters}  # fmt: skip


def run_probe(
    corpus: Corpus, config: ProbeConfig = ProbeConfig(), *, groups: bool = True, progress: bool = True
) -> dict[str, Any]:
    """The full step-1 analysis: all channels, both controls, each group alone and each group left out."""
    data = probe_windows(corpus, config)
    g = data.conversation
    all_channels = list(range(N_FACE))
    variants: list[tuple[str, str, list[int]]] = [("all", "all channels", all_channels)]
    if groups:
        for name in FACE_GROUPS:
            variants.append((f"only:{name}", f"{name} alone", group_indices([name])))
        for name in FACE_GROUPS:
            variants.append((f"without:{name}", f"all but {name}", sorted(set(all_channels) - set(FACE_GROUPS[name]))))
    results: dict[str, Any] = {}
    for key, _, channels in tqdm(variants, desc="probe", disable=not progress, unit="variant"):
        results[key] = _auc_with_ci(data.y, out_of_fold_scores(data.windows, data.y, g, channels, config), g, config)
    controls = {
        "shuffled": shuffled_labels(data.y, config.seed),
        "circular_shift": circular_shift_labels(data.y, g, config.seed),
    }
    control_results = {}
    for name, y_ctrl in controls.items():
        scores = out_of_fold_scores(data.windows, y_ctrl, g, all_channels, config)
        control_results[name] = _auc_with_ci(y_ctrl, scores, g, config)
    out = {
        "config": asdict(config),
        "corpus": str(corpus.root),
        "n_conversations": int(np.unique(g).size),
        "n_frames": int(data.y.size),
        "positive_rate": float(data.y.mean()),
        "probes": results,
        "controls": control_results,
    }
    out["warnings"] = flag_few_conversations(out, config.min_conversations)
    return out


def format_probe(result: dict) -> str:
    """A Markdown table of the probe results."""
    lines = [
        f"Face probe on {result['corpus']}: {result['n_conversations']} conversations, {result['n_frames']} frames, "
        f"{100 * result['positive_rate']:.1f}% positive",
        "",
        "| probe | AUC [95% CI] |",
        "|---|---|",
    ]
    rows = list(result["probes"].items()) + [(f"control:{k}", v) for k, v in result["controls"].items()]
    for key, r in rows:
        lines.append(f"| {key} | {format_estimate(Estimate(r['auc'], tuple(r['ci']), warning=r.get('warning')))} |")
    return "\n".join(lines + warning_lines(result.get("warnings", [])))
