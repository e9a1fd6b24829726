"""Step 2 of the study: does a model use the face it is given? (Meant for a vanilla model, `yield_weight = 0`.)

Three measurements on the same fixed windows, each with a conversation-clustered 95 % CI:

1. **Prediction change.** Next-token NLL of the self's audio (semantic and acoustic codebooks) and text with the
   face as given vs zeroed (ΔNLL = zeroed − face: positive means the face helps), and the mean KL divergence between
   the two predictive distributions of the semantic codebook. Δ≈0 means the LM ignores the face.
2. **Is the face encoded?** Frozen linear probes (logistic regression) read the turn-yield target from the temporal
   hidden states; one is trained and tested with the face present, one with it zeroed (training windows from the
   train split, scores on the evaluation split), and their paired ΔAUC says whether the hidden state carries facial
   turn information even when the LM's predictions ignore it.
3. **Readout gain.** The face-induced change of the hidden state Δh = h(face) − h(zeroed) is pushed through the
   audio/text readout W (the depth transformer's input projections and the text head): ‖W·Δh‖/‖Δh‖, relative to the
   same ratio for random directions. A ratio ≪ 1 means the face moves the hidden state in directions the readout
   barely sees — the "orthogonal subspace" finding of the study.
4. **The implicit yield signal.** The LM's own probability that self is silent at the next frame (its semantic
   distribution summed over the voice reader's silence classes; P(PAD) of its text head when the corpus has text,
   Moshi's only turn signal) used as a turn score: its AUC against the turn-yield target, face vs zeroed, paired. Where
   self holds the floor a hand-over means self falls silent, so P(silent next) is the score; where the interlocutor
   holds it, self starts talking, so the score is P(talking next) = 1 − P(silent next). This asks "does next-token
   prediction ignore the face?" in terms of behaviour, not NLL. A model trained without the audio loss has no
   trained semantic head, and gets a note instead. The voice reader's accuracy and AUC are reported beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from faceturn.checkpoint import load_model, resolve_checkpoint
from faceturn.data import WindowDataset, validation_batches, validation_windows
from faceturn.eval.voice import VoiceConfig, fit_reader, p_silent_next, reader_sentence, score_reader
from faceturn.results import Estimate, format_estimate, warning_lines
from faceturn.stats import (
    MIN_CONVERSATIONS,
    cluster_bootstrap_ratio,
    flag_few_conversations,
    paired_cluster_bootstrap,
)


@dataclass(frozen=True)
class AnalyzeConfig:
    """Where and how much step 2 measures; saved in its result, so a number can be traced to its settings."""

    split: str = "test"  # where the measurements are made
    probe_train_split: str = "train"  # where the hidden-state probes are fitted
    max_windows: int = 256  # fixed windows per split (evenly spaced over a tiling, both perspectives)
    probe_stride_frames: int = 2  # scored frames kept for the probes
    resamples: int = 2000
    seed: int = 0
    batch_size: int = 16
    min_conversations: int = MIN_CONVERSATIONS  # CIs from fewer conversations carry a warning
    voice: VoiceConfig = field(default_factory=VoiceConfig)  # the reader behind the implicit yield signal


def _readouts(model) -> dict[str, torch.Tensor]:
    """The linear maps [R, D] that read the temporal output: audio (every depformer_in) and text (text_linear)."""
    audio = torch.cat([lin.weight for lin in model.depformer_in], dim=0)
    return {"audio": audio.detach().float(), "text": model.text_linear.weight.detach().float()}


@torch.no_grad()
def _collect(model, dataset, windows, batch_size: int, readouts: dict, rng: np.random.Generator, implicit=None):
    """Per-frame measurements over fixed windows; `implicit` = (silence tokens, text PAD id or None) adds the LM's
    P(self silent next) with the face and zeroed."""
    cols: dict[str, list[np.ndarray]] = {}

    def add(key, value):
        cols.setdefault(key, []).append(np.asarray(value))

    for batch in validation_batches(dataset, windows, batch_size):
        out = model(*batch.model_inputs())
        out_z = model(*batch.without_face().model_inputs())
        conv = np.array(batch.conversation)[:, None].repeat(batch.text.shape[1], 1)
        # audio: per codebook-frame NLL and KL on the semantic codebook
        am = out.audio_mask
        logp = F.log_softmax(out.audio_logits.float(), -1)
        logq = F.log_softmax(out_z.audio_logits.float(), -1)
        tgt = out.audio_target.clamp(min=0).unsqueeze(-1)
        nll_f = -logp.gather(-1, tgt).squeeze(-1)
        nll_z = -logq.gather(-1, tgt).squeeze(-1)
        for name, sl in (("semantic", slice(0, 1)), ("acoustic", slice(1, None))):
            m = am[:, sl]
            add(f"nll_{name}_face", nll_f[:, sl][m].numpy())
            add(f"nll_{name}_zeroed", nll_z[:, sl][m].numpy())
            add(f"nll_{name}_conv", np.broadcast_to(conv[:, None, :], m.shape)[m.numpy()])
        m0 = am[:, 0]
        kl = (logp[:, 0].exp() * (logp[:, 0] - logq[:, 0])).sum(-1)
        add("kl_semantic", kl[m0].numpy())
        add("kl_conv", conv[m0.numpy()])
        if out.text_mask.any():
            tm = out.text_mask
            tt = out.text_target.clamp(min=0)
            add("nll_text_face", F.cross_entropy(out.text_logits[tm].float(), tt[tm], reduction="none").numpy())
            add("nll_text_zeroed", F.cross_entropy(out_z.text_logits[tm].float(), tt[tm], reduction="none").numpy())
            add("nll_text_conv", conv[tm.numpy()])
        # hidden states at scored frames: probes and readout gain
        sm = (batch.m & batch.valid).numpy()
        h_f, h_z = out.hidden.float()[batch.m & batch.valid], out_z.hidden.float()[batch.m & batch.valid]
        add("h_face", h_f.numpy().astype(np.float32))
        add("h_zeroed", h_z.numpy().astype(np.float32))
        add("y", batch.y.numpy()[sm].astype(np.uint8))
        add("h_conv", conv[sm])
        if implicit is not None:
            add("holder", batch.holder.numpy()[sm])
            for cond, h in (("face", h_f), ("zeroed", h_z)):
                p = p_silent_next(model, h, *implicit)
                add(f"silent_audio_{cond}", p["audio"])
                if p["text"] is not None:
                    add(f"silent_text_{cond}", p["text"])
        dh = h_f - h_z
        r = torch.from_numpy(rng.standard_normal(dh.shape).astype(np.float32))
        add("norm_face", dh.norm(dim=-1).numpy())
        add("norm_random", r.norm(dim=-1).numpy())
        for name, w in readouts.items():
            add(f"gain_{name}_face", (dh @ w.T).norm(dim=-1).numpy())
            add(f"gain_{name}_random", (r @ w.T).norm(dim=-1).numpy())
    return {k: np.concatenate(v) for k, v in cols.items()}


def _probe_auc(train: dict, test: dict, key: str, stride: int, seed: int):
    sel = np.arange(0, train["y"].size, stride)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    model.fit(train[key][sel], train["y"][sel])
    return model.predict_proba(test[key])[:, 1]


def analyze(
    run: str | Path, corpus: str | Path, config: AnalyzeConfig = AnalyzeConfig(), *, allow_older: bool = False
) -> dict[str, Any]:
    """All step-2 measurements of one trained model on one corpus; a JSON-ready dict."""
    ckpt = resolve_checkpoint(run, allow_older=allow_older)
    model, train_cfg = load_model(ckpt)
    readouts = _readouts(model)
    rng = np.random.default_rng(config.seed)
    reader = fit_reader(corpus, config.voice, train_cfg.labels.voiced_min_fraction)
    implicit = (reader.silence_tokens, train_cfg.loss.text_pad_id if reader.has_text else None)
    data = {}
    for role, split in (("eval", config.split), ("probe_train", config.probe_train_split)):
        ds = WindowDataset(corpus, split, train_cfg.data.window_frames, event_config=train_cfg.labels)
        windows = validation_windows(ds, config.max_windows)
        data[role] = _collect(
            model, ds, windows, config.batch_size, readouts, rng, implicit if role == "eval" else None
        )
    ev = data["eval"]
    boot = {"n_resamples": config.resamples, "seed": config.seed}

    def delta_nll(name: str) -> dict[str, Any]:
        d = ev[f"nll_{name}_zeroed"] - ev[f"nll_{name}_face"]
        res = cluster_bootstrap_ratio(d, np.ones_like(d), ev[f"nll_{name}_conv"], **boot)
        res["nll_face"] = float(ev[f"nll_{name}_face"].mean())
        res["nll_zeroed"] = float(ev[f"nll_{name}_zeroed"].mean())
        return res

    prediction_change = {
        f"delta_nll_{n}": delta_nll(n) for n in ("semantic", "acoustic", "text") if f"nll_{n}_face" in ev
    }
    kl = ev["kl_semantic"]
    prediction_change["kl_semantic"] = cluster_bootstrap_ratio(kl, np.ones_like(kl), ev["kl_conv"], **boot)

    scores = {
        "face": _probe_auc(data["probe_train"], ev, "h_face", config.probe_stride_frames, config.seed),
        "zeroed": _probe_auc(data["probe_train"], ev, "h_zeroed", config.probe_stride_frames, config.seed),
    }
    probe = paired_cluster_bootstrap(ev["y"], scores, ev["h_conv"], n_resamples=config.resamples, seed=config.seed)

    # gain ratio = mean(‖WΔh‖/‖Δh‖) / mean(‖Wr‖/‖r‖) for random r; frames where the face changed nothing (Δh = 0)
    # carry no direction and are left out. The text readout counts only when the data has text: an untrained text
    # head is a random matrix and would pull the ratio to 1.
    moved = ev["norm_face"] > 1e-8 * max(float(ev["norm_face"].max()), 1e-30)
    readout_gain = {}
    for name in ["audio"] + (["text"] if "nll_text_face" in ev else []):
        if not moved.any():
            readout_gain[name] = {"value": None, "note": "the face changes no hidden state"}
            continue
        gain_face = ev[f"gain_{name}_face"][moved] / ev["norm_face"][moved]
        gain_rand = ev[f"gain_{name}_random"][moved] / ev["norm_random"][moved]
        readout_gain[name] = cluster_bootstrap_ratio(gain_face, gain_rand, ev["h_conv"][moved], **boot)
        readout_gain[name].update({"gain_face": float(gain_face.mean()), "gain_random": float(gain_rand.mean())})
    implicit_yield: dict[str, Any] = {
        "reader": score_reader(reader, corpus, config.split, n_resamples=config.resamples, seed=config.seed)
    }
    if train_cfg.loss.audio_weight == 0:
        implicit_yield["note"] = "trained with loss.audio_weight = 0: no trained semantic head to read"
    else:
        for signal in ("audio", "text"):
            if f"silent_{signal}_face" in ev:
                implicit_yield[signal] = _implicit_aucs(ev, signal, config)
    res = {
        "checkpoint": str(ckpt.resolve()),
        "corpus": str(Path(corpus).resolve()),
        "yield_weight": train_cfg.loss.yield_weight,
        "zero_groups": list(model.cfg.zero_groups),
        "config": asdict(config),
        "n_scored_frames": int(ev["y"].size),
        "prediction_change": prediction_change,
        "hidden_probe": probe.to_dict(),
        "readout_gain_ratio": readout_gain,
        "implicit_yield": implicit_yield,
    }
    res["warnings"] = flag_few_conversations(res, config.min_conversations)
    return res


IMPLICIT_SCORES = {  # the score each implicit-yield AUC ranks frames by
    "audio": {"all": "P(self silent next)", "self_holds": "P(self silent next)",
              "interlocutor_holds": "P(self talking next)"},
    "text": {"all": "P(PAD next)", "self_holds": "P(PAD next)", "interlocutor_holds": "1 − P(PAD next)"},
}  # fmt: skip


def _implicit_aucs(ev: dict[str, np.ndarray], signal: str, config: AnalyzeConfig) -> dict[str, Any]:
    """AUC of P(self silent next) (self holds the floor) or P(self talking next) (the interlocutor holds it) against
    y, face vs zeroed, paired; "all" scores every frame with P(silent next)."""
    out = {}
    for part, sel, flip in (("all", np.ones(ev["y"].size, bool), False), ("self_holds", ev["holder"] == 1, False),
                            ("interlocutor_holds", ev["holder"] == 0, True)):  # fmt: skip
        y = ev["y"][sel]
        if y.size == 0 or y.min() == y.max() or np.unique(ev["h_conv"][sel]).size < 2:
            out[part] = {"note": "no frames of both classes from two conversations", "n_frames": int(y.size)}
            continue
        scores = {c: ev[f"silent_{signal}_{c}"][sel] for c in ("face", "zeroed")}
        if flip:
            scores = {c: 1.0 - v for c, v in scores.items()}
        out[part] = paired_cluster_bootstrap(
            y, scores, ev["h_conv"][sel], n_resamples=config.resamples, seed=config.seed
        ).to_dict()
    return out


def format_analysis(res: dict[str, Any]) -> str:
    def cell(value: float, ci, block: dict[str, Any], digits: int, signed: bool = False) -> str:
        return format_estimate(Estimate(value, tuple(ci), warning=block.get("warning")), digits, signed)

    lines = [
        f"Step 2 on {res['corpus']} ({res['config']['split']} split), model yield_weight={res['yield_weight']}",
        "",
        "| measure | value [95% CI] |",
        "|---|---|",
    ]
    for k, v in res["prediction_change"].items():
        lines.append(f"| {k} | {cell(v['value'], v['ci'], v, 5, True)} |")
    p = res["hidden_probe"]
    for c, label in (("face", "present"), ("zeroed", "zeroed")):
        lines.append(f"| hidden-state yield probe AUC, face {label} | {cell(p['auc'][c], p['ci'][c], p, 3)} |")
    lines.append(f"| hidden-state probe ΔAUC (face − zeroed) | {cell(p['delta'], p['delta_ci'], p, 3, True)} |")
    for name, g in res["readout_gain_ratio"].items():
        if g.get("value") is not None:
            lines.append(
                f"| {name} readout-gain ratio (face Δh vs random directions) | {cell(g['value'], g['ci'], g, 3)} |"
            )
    imp = res.get("implicit_yield", {})
    for signal in ("audio", "text"):
        for part, b in imp.get(signal, {}).items():
            if "auc" not in b:
                continue
            label = f"implicit yield signal ({IMPLICIT_SCORES[signal][part]}), {part.replace('_', ' ')}: AUC"
            lines.append(f"| {label} face | {cell(b['auc']['face'], b['ci']['face'], b, 3)} |")
            lines.append(f"| {label} zeroed | {cell(b['auc']['zeroed'], b['ci']['zeroed'], b, 3)} |")
            lines.append(f"| {label} Δ (face − zeroed) | {cell(b['delta'], b['delta_ci'], b, 3, True)} |")
    if "note" in imp:
        lines.append(f"| implicit yield signal | n/a: {imp['note']} |")
    if "reader" in imp:
        lines += ["", reader_sentence(imp["reader"])]
    return "\n".join(lines + warning_lines(res.get("warnings", [])))
