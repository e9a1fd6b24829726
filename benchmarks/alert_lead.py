"""How early the listener's alerts announce hand-overs, for a grid of thresholds and hysteresis: the figure behind
the defaults of faceturn.agents (docs/agents.md).

    .venv/bin/python benchmarks/alert_lead.py --run demo/runs/tight/aux-lm --corpus demo/corpora/tight \
        --out docs/figures/alert_lead-tight.json

Every test conversation is replayed frame by frame through `TurnYieldStream`, as the live listener runs it: the
model listens as each participant in turn and sees the other's face, without text (the listener has none), once with
the face and once with it zeroed. Alerts are `AlertTrigger`'s (an alert at threshold, re-armed below threshold −
hysteresis) and are scored by `score_alerts` against the recording's hand-overs with the run's turn-yield horizon (as
`faceturn stream` scores them): the share of hand-overs announced, the median lead of the announced ones, false
alerts per minute. CIs: conversation-cluster percentile bootstrap (paired over face / zeroed for the hand-over
statistics). The JSON written beside the table holds the configuration, the seed and every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def replay(model, conversations) -> list[np.ndarray]:
    """P(yield) [4, T] per conversation: rows (self 0, face), (self 1, face), (self 0, zeroed), (self 1, zeroed)."""
    from faceturn.stream import TurnYieldStream

    rows = []  # (conversation, self, zeroed)
    for c, _ in enumerate(conversations):
        rows += [(c, 0, False), (c, 1, False), (c, 0, True), (c, 1, True)]
    n_max = max(conv.n_frames for conv in conversations)
    stream = TurnYieldStream(model, batch_size=len(rows))
    out = np.zeros((len(rows), n_max), np.float32)
    data = []
    for c, s, zeroed in rows:
        conv, o = conversations[c], 1 - s
        pad = n_max - conv.n_frames
        codes = np.pad(np.asarray(conv.codes, np.int64), ((0, 0), (0, 0), (0, pad)), constant_values=-1)
        face = np.pad(np.asarray(conv.face[o], np.float32), ((0, pad), (0, 0)))
        present = np.pad(np.asarray(conv.face_present[o], bool), (0, pad))
        if zeroed:
            face, present = np.zeros_like(face), np.zeros_like(present)
        data.append((codes[s], codes[o], face, present))
    self_codes = torch.from_numpy(np.stack([d[0] for d in data]))  # [B, 8, T]
    other_codes = torch.from_numpy(np.stack([d[1] for d in data]))
    faces = torch.from_numpy(np.stack([d[2] for d in data]))  # [B, T, 61]
    present = torch.from_numpy(np.stack([d[3] for d in data]))
    with torch.inference_mode():
        for k in range(n_max):
            out[:, k] = stream.step_batch(self_codes[:, :, k], other_codes[:, :, k], faces[:, k], present[:, k]).numpy()
    return [out[4 * c : 4 * c + 4, : conv.n_frames] for c, conv in enumerate(conversations)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--thresholds", default="0.3,0.4,0.5,0.6,0.7")
    parser.add_argument("--hysteresis", default="0,0.05,0.1,0.2")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from faceturn.checkpoint import load_model
    from faceturn.io import atomic_write_text
    from faceturn.labels import turn_labels
    from faceturn.stats import cluster_bootstrap_ratio, paired_cluster_statistic, weighted_median, weighted_ratio
    from faceturn.store import Corpus
    from faceturn.stream import AlertTrigger, score_alerts
    from faceturn.timebase import FRAME_S

    model, train_cfg = load_model(args.run)
    corpus = Corpus(args.corpus)
    ids = corpus.ids(args.split)
    if len(ids) < 2:
        print(f"alert_lead: {args.corpus} has {len(ids)} {args.split} conversations; need 2+", file=sys.stderr)
        return 2
    conversations = [corpus.load(i) for i in ids]
    horizon = train_cfg.labels.horizon_frames
    handovers = [turn_labels(np.asarray(c.va, np.float32), train_cfg.labels).shift_frames for c in conversations]
    probabilities = replay(model, conversations)
    minutes = np.array([c.n_frames * FRAME_S / 60 for c in conversations])

    rows = []
    for threshold in (float(t) for t in args.thresholds.split(",")):
        for hysteresis in (float(h) for h in args.hysteresis.split(",")):
            if not 0 <= hysteresis < threshold:
                continue
            leads = {"face": [], "zeroed": []}  # per (conversation, self, hand-over): lead s or NaN
            false = {"face": np.zeros(len(ids)), "zeroed": np.zeros(len(ids))}
            alerts = {"face": np.zeros(len(ids)), "zeroed": np.zeros(len(ids))}
            clusters = []
            for c, p in enumerate(probabilities):
                for row in range(4):
                    cond = "face" if row < 2 else "zeroed"
                    trigger = AlertTrigger(threshold, hysteresis)
                    fired = [k for k, pk in enumerate(p[row]) if trigger.update(float(pk))]
                    score = score_alerts(fired, handovers[c], horizon)
                    false[cond][c] += score.n_false
                    alerts[cond][c] += score.n_alerts
                    leads[cond] += [np.nan if lead is None else lead for lead in score.handover_leads_s]
                    if cond == "face":
                        clusters += [c] * len(handovers[c])
            lead = {k: np.array(v) for k, v in leads.items()}
            announced = paired_cluster_statistic(
                lambda w, x: weighted_ratio(w, x, np.ones_like(x)),
                {k: (np.isfinite(v).astype(float),) for k, v in lead.items()},
                clusters, n_resamples=args.resamples, seed=args.seed,
            )  # fmt: skip
            median = paired_cluster_statistic(weighted_median, {k: (v,) for k, v in lead.items()}, clusters,
                                              n_resamples=args.resamples, seed=args.seed)  # fmt: skip
            per_minute = {
                k: cluster_bootstrap_ratio(
                    false[k], 2 * minutes, np.arange(len(ids)), n_resamples=args.resamples, seed=args.seed
                )
                for k in false
            }
            rows.append({"threshold": threshold, "hysteresis": hysteresis, "announced": announced,
                         "median_lead_s": median, "false_alerts_per_min": per_minute,
                         "alerts": {k: int(v.sum()) for k, v in alerts.items()}})  # fmt: skip

    def fmt(stat: dict, cond: str, scale: float = 1.0, digits: int = 2) -> str:
        v, ci = stat["value"][cond], stat["ci"][cond]
        if ci is None or v is None:
            return "—"
        lo, hi = ci
        return f"{v * scale:.{digits}f} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"

    n_handovers = sum(len(h) for h in handovers)
    print(f"{args.run} on {args.corpus} ({args.split}: {len(ids)} conversations, {n_handovers} hand-overs, each "
          f"heard from both sides; horizon {horizon * FRAME_S:g} s; 95% CIs, {args.resamples} resamples, seed "
          f"{args.seed})")  # fmt: skip
    print("| threshold | hysteresis | announced, face | announced, zeroed | median lead s, face | median lead s, "
          "zeroed | false alerts/min, face |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        fpm = r["false_alerts_per_min"]["face"]
        print(
            f"| {r['threshold']:g} | {r['hysteresis']:g} | {fmt(r['announced'], 'face', 100, 0)} % | "
            f"{fmt(r['announced'], 'zeroed', 100, 0)} % | {fmt(r['median_lead_s'], 'face')} | "
            f"{fmt(r['median_lead_s'], 'zeroed')} | {fpm['value']:.1f} [{fpm['ci'][0]:.1f}, {fpm['ci'][1]:.1f}] |"
        )
    if args.out is not None:
        config = {"run": str(args.run), "corpus": str(args.corpus), "split": args.split, "conversations": ids,
                  "horizon_frames": horizon, "resamples": args.resamples, "seed": args.seed, "text": None}  # fmt: skip
        atomic_write_text(args.out, json.dumps({"config": config, "rows": rows}, indent=1, default=float))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
