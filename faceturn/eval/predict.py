"""Per-frame predictions, written once; every metric and figure is a pure function of this file.

For every conversation of a split and both perspectives, the model reads the conversation in windows of its
training length with half-window overlap (each frame but the first half-window of a conversation is predicted with
at least half a window of context), once with the face as given and once with the whole face zeroed (values 0,
face_present 0 — the learned missing vector, as in training's face dropout). The checkpoint's own `zero_groups`
apply in both; groups zeroed post hoc are an argument of the model's forward pass, so the loaded model is never
altered. The file is an `.npz` of plain arrays (read with `allow_pickle=False`) plus a JSON header naming the corpus,
split, checkpoint and configs, so `evaluate` can refuse a file that does not match what it is asked about; its zero
sets (`zero_groups` as trained, `eval_zero_groups` as evaluated) are sorted lists of face group names.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from faceturn.checkpoint import load_model, resolve_checkpoint
from faceturn.config import to_dict
from faceturn.data import WindowDataset
from faceturn.errors import FaceturnError
from faceturn.io import atomic_write_bytes
from faceturn.schema import group_indices

FORMAT = "faceturn-predictions/1"


@dataclass
class Predictions:
    """Per-frame rows; one row per (conversation, perspective, frame)."""

    p_face: np.ndarray  # [N] float32 P(yield) with the face as given
    p_zeroed: np.ndarray | None  # [N] float32 P(yield) with the whole face zeroed (None: `predict --no-zeroed`)
    y: np.ndarray  # [N] uint8 turn-yield target
    m: np.ndarray  # [N] bool scored frame
    holder: np.ndarray  # [N] int8 1 self holds the floor, 0 the interlocutor, -1 nobody
    conversation: np.ndarray  # [N] int32 index into meta["conversations"]
    perspective: np.ndarray  # [N] int8 which participant is self
    frame: np.ndarray  # [N] int32 frame index in the conversation
    meta: dict[str, Any]
    hidden_face: np.ndarray | None = None  # [N, D] float16 temporal output (for probes), on request
    hidden_zeroed: np.ndarray | None = None

    def save(self, path: str | Path) -> None:
        arrays = {k: getattr(self, k) for k in _ARRAYS}
        for k in ("p_zeroed", "hidden_face", "hidden_zeroed"):
            if getattr(self, k) is not None:
                arrays[k] = getattr(self, k)
        arrays["meta"] = np.frombuffer(json.dumps(self.meta, sort_keys=True).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> Predictions:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise FaceturnError(f"{path}: not a readable prediction file ({e})") from None
        missing = [k for k in (*_ARRAYS, "meta") if k not in data]
        if missing:
            raise FaceturnError(f"{path}: not a faceturn prediction file (missing {missing})")
        meta = json.loads(bytes(data.pop("meta")).decode())
        if meta.get("format") != FORMAT:
            raise FaceturnError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        n = data["p_face"].shape[0]
        bad = [k for k in _ARRAYS if data[k].shape[0] != n]
        if bad:
            raise FaceturnError(f"{path}: arrays {bad} do not have {n} rows")
        if meta.get("zeroed", True) != ("p_zeroed" in data):
            raise FaceturnError(f"{path}: the header and the arrays disagree on whether p_zeroed was written")
        for k in ("zero_groups", "eval_zero_groups"):
            groups = meta.get(k, [])
            if not (isinstance(groups, list) and all(isinstance(g, str) for g in groups)):
                raise FaceturnError(f"{path}: header {k} must be a list of face group names, got {groups!r}")
        for k in ("p_face", "p_zeroed"):
            if k in data and data[k].shape[0] != n:
                raise FaceturnError(f"{path}: {k} has {data[k].shape[0]} rows, the other arrays {n}")
            if k in data and not np.isfinite(data[k]).all():
                raise FaceturnError(f"{path}: {int((~np.isfinite(data[k])).sum())} non-finite values in {k}")
        return cls(meta=meta, **{"p_zeroed": None, **data})

    def require_zeroed(self, what: str) -> np.ndarray:
        """P(yield) with the face zeroed, or a clear error for a file written without it."""
        if self.p_zeroed is None:
            raise FaceturnError(
                f"predictions of {self.meta.get('checkpoint')} were written with --no-zeroed (face as given only); "
                f"{what} needs P(yield) with the face zeroed: run `faceturn predict` without --no-zeroed"
            )
        return self.p_zeroed


_ARRAYS = ("p_face", "y", "m", "holder", "conversation", "perspective", "frame")  # p_zeroed: unless --no-zeroed


def window_starts(n_frames: int, window_frames: int) -> list[tuple[int, int]]:
    """(start, first frame kept) pairs tiling a conversation with half-window overlap; every frame kept once."""
    if n_frames <= window_frames:
        return [(0, 0)]
    hop = max(1, window_frames // 2)
    out = [(0, 0)]
    start = hop
    while start + window_frames < n_frames:
        out.append((start, start + window_frames - hop))
        start += hop
    last = n_frames - window_frames
    out.append((last, out[-1][0] + window_frames))  # the final window keeps whatever the previous ones did not
    return out


def predict(
    run: str | Path, corpus: str | Path, split: str, *, posthoc_zero_groups: Iterable[str] = (), **options: Any
) -> Predictions:
    """Run a trained model over every conversation of a split, both perspectives, face as given and zeroed
    (`options`: those of `predict_zero_sets`).

    `posthoc_zero_groups` zeroes more face groups at evaluation only, inside the face encoder exactly as training's
    `zero_groups` would (before the normalization). Such predictions carry `meta["valid"] = False` unless the
    checkpoint was trained with exactly that zero set: the model never saw those inputs, so a drop in AUC mixes the
    group's information with the distribution shift (with `layernorm`, zeroing large channels rescales all others).
    """
    return predict_zero_sets(run, corpus, split, [posthoc_zero_groups], **options)[0]


@torch.no_grad()
def predict_zero_sets(
    run: str | Path,
    corpus: str | Path,
    split: str,
    zero_sets: Sequence[Iterable[str]],
    *,
    batch_size: int = 16,
    hidden: bool = False,
    device: str = "cpu",
    progress: bool = True,
    zeroed: bool = True,
) -> list[Predictions]:
    """`predict` for several post-hoc zero sets (face group names) in one pass over the data: one Predictions per
    set, sharing the face-zeroed forward pass (with the whole face absent, which groups are zeroed makes no
    difference). `zeroed=False` skips that pass (p_zeroed None): what the attribution's left-out models need, at half
    the cost."""
    if any(isinstance(z, str) for z in zero_sets):
        raise TypeError(f"each zero set is a collection of face group names, not one string: {list(zero_sets)}")
    ckpt = resolve_checkpoint(run)
    model, train_cfg = load_model(ckpt, device=device)
    trained_zero = sorted(set(model.cfg.zero_groups))
    eval_zero = [sorted(set(trained_zero).union(z)) for z in zero_sets]  # as evaluated: trained plus post hoc
    for z in eval_zero:
        group_indices(z)  # unknown names fail before the pass over the data
    window = train_cfg.data.window_frames
    ds = WindowDataset(corpus, split, window, event_config=train_cfg.labels)
    jobs = []  # (conversation index, self speaker, start, first kept frame)
    for ci in range(len(ds)):
        for s in (0, 1):
            jobs += [(ci, s, start, keep) for start, keep in window_starts(int(ds.n_frames[ci]), window)]
    shared: dict[str, list[np.ndarray]] = {k: [] for k in (*_ARRAYS, "p_zeroed", "hidden_zeroed")}
    per_set: list[dict[str, list[np.ndarray]]] = [{"p_face": [], "hidden_face": []} for _ in zero_sets]
    for i in tqdm(range(0, len(jobs), batch_size), desc=f"predict {split}", disable=not progress, unit="batch"):
        chunk = jobs[i : i + batch_size]
        batch = ds.batch([(ci, s, start, False) for ci, s, start, _ in chunk]).to(device)
        outs = [model(*batch.model_inputs(), audio=False, zero_groups=z) for z in eval_zero]
        if zeroed:
            out_z = model(*batch.without_face().model_inputs(), audio=False)
            p_zero = torch.sigmoid(out_z.yield_logits.float()).cpu().numpy()
        p_faces = [torch.sigmoid(o.yield_logits.float()).cpu().numpy() for o in outs]
        for j, (ci, s, start, keep) in enumerate(chunk):
            n = int(batch.valid[j].sum())
            sel = slice(keep - start, n)
            frames = np.arange(keep, start + n, dtype=np.int32)
            if zeroed:
                shared["p_zeroed"].append(p_zero[j, sel])
            shared["y"].append(batch.y[j, sel].cpu().numpy().astype(np.uint8))
            shared["m"].append(batch.m[j, sel].cpu().numpy().astype(bool))
            shared["holder"].append(batch.holder[j, sel].cpu().numpy().astype(np.int8))
            shared["conversation"].append(np.full(frames.size, ci, np.int32))
            shared["perspective"].append(np.full(frames.size, s, np.int8))
            shared["frame"].append(frames)
            for k, out in enumerate(outs):
                per_set[k]["p_face"].append(p_faces[k][j, sel])
                if hidden:
                    per_set[k]["hidden_face"].append(out.hidden[j, sel].float().cpu().numpy().astype(np.float16))
            if hidden and zeroed:
                shared["hidden_zeroed"].append(out_z.hidden[j, sel].float().cpu().numpy().astype(np.float16))
    meta = {
        "format": FORMAT,
        "corpus": str(Path(corpus).resolve()),
        "split": split,
        "checkpoint": str(ckpt.resolve()),
        "conversations": list(ds.ids),
        "window_frames": window,
        "zero_groups": trained_zero,  # as trained
        "face_dropout": train_cfg.data.face_dropout,
        "yield_weight": train_cfg.loss.yield_weight,
        "train_config": to_dict(train_cfg),
        "zeroed": zeroed,  # whether p_zeroed was computed
    }
    arrays = {k: np.concatenate(v) for k, v in shared.items() if v}
    results = []
    for z, cols in zip(eval_zero, per_set, strict=True):
        own = {k: np.concatenate(v) for k, v in cols.items() if v}
        # eval_zero_groups: as evaluated (trained plus post hoc); valid: the model was trained with exactly that set
        m = {**meta, "eval_zero_groups": z, "valid": z == trained_zero}
        fields = {k: own.get(k, arrays.get(k)) for k in (*_ARRAYS, "p_zeroed", "hidden_face", "hidden_zeroed")}
        results.append(Predictions(meta=m, **fields))
    return results
