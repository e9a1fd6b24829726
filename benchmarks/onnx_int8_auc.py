"""What the ONNX export (fp32 and int8) does to the demo model's test AUC, with paired conversation-bootstrap CIs.

    .venv/bin/python benchmarks/onnx_int8_auc.py --demo /tmp/demo --out /tmp/onnx-auc

For each corpus of a finished `faceturn demo` folder, the model step 3 evaluated (step3/CORPUS/results.json names its
checkpoint) is exported (`faceturn.export.export_run`, fp32 and int8, into OUT/CORPUS/export). P(yield) with the face
is computed on the test split exactly as `faceturn predict` computes it (the same windows, half-window overlap, the
same frames kept), three ways: eager (`faceturn.eval.predict.predict` itself, the full-window forward), and the ONNX
graphs frame by frame (`OnnxYieldStream`, each window a fresh stream row). Printed and written to OUT/results.json
and OUT/results.md: AUC on scored frames per backend with its 95 % CI, the paired ΔAUC (ONNX − eager) with its CI
(2,000 conversation resamples, seed 0, the same resamples for every backend), and the largest |ΔP| per backend.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def onnx_p_face(step, run: Path, corpus: Path, split: str, batch_rows: int) -> np.ndarray:
    """P(yield) with the face, on `predict`'s windows in `predict`'s order, from the exported step."""
    from faceturn.checkpoint import load_model
    from faceturn.data import WindowDataset
    from faceturn.eval.predict import window_starts

    _, train_cfg = load_model(run)
    window = train_cfg.data.window_frames
    ds = WindowDataset(corpus, split, window, event_config=train_cfg.labels)
    jobs = []
    for ci in range(len(ds)):
        for s in (0, 1):
            jobs += [(ci, s, start, keep) for start, keep in window_starts(int(ds.n_frames[ci]), window)]
    out = []
    for i in range(0, len(jobs), batch_rows):
        chunk = jobs[i : i + batch_rows]
        batch = ds.batch([(ci, s, start, False) for ci, s, start, _ in chunk])
        stream = step.stream(len(chunk))
        text, self_codes, other_codes, face, present = batch.model_inputs()
        p = torch.stack([stream.step_batch(self_codes[:, :, t], other_codes[:, :, t], face[:, t], present[:, t],
                                           text[:, t]) for t in range(text.shape[1])], dim=1)  # fmt: skip
        for j, (_, _, start, keep) in enumerate(chunk):
            out.append(p[j, keep - start : int(batch.valid[j].sum())].numpy())
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="a finished `faceturn demo` output folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for the exports and results.json / .md")
    parser.add_argument("--corpora", default="tight,wide", help="corpora of the demo (default: tight,wide)")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads (default: 2)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument("--force", action="store_true", help="replace exports written earlier into --out")
    args = parser.parse_args(argv)

    from faceturn.eval.predict import predict
    from faceturn.export import OnnxStep, export_run
    from faceturn.io import atomic_write_json, atomic_write_text
    from faceturn.results import Estimate, format_estimate
    from faceturn.stats import paired_cluster_bootstrap

    torch.set_num_threads(args.threads)
    results = {"demo": str(args.demo.resolve()), "resamples": args.resamples, "seed": args.seed, "corpora": {}}
    lines = ["| corpus | backend | test AUC (face) | ΔAUC vs eager | max abs ΔP |", "|---|---|---|---|---|"]
    for corpus_name in args.corpora.split(","):
        step3 = json.loads((args.demo / "step3" / corpus_name / "results.json").read_text())
        ckpt, corpus = Path(step3["predictions"]["checkpoint"]), Path(step3["predictions"]["corpus"])
        folder, meta = export_run(ckpt, args.out / corpus_name / "export", int8=True, force=args.force)
        pred = predict(ckpt, corpus, "test", progress=False, zeroed=False)
        p = {"eager": pred.p_face}
        for backend, int8 in (("onnx", False), ("onnx-int8", True)):
            p[backend] = onnx_p_face(OnnxStep(folder, int8=int8, threads=args.threads), ckpt, corpus, "test", 64)
            print(f"# {corpus_name} {backend}: {p[backend].size} frames", file=sys.stderr)
        scored = pred.m.astype(bool)
        row = {"checkpoint": str(ckpt), "corpus": str(corpus), "export_check": meta["check"],
               "step3_auc_face": step3["frames"]["all"]["auc"]["face"], "backends": {}}  # fmt: skip
        for backend in ("eager", "onnx", "onnx-int8"):
            scores = {backend: p[backend][scored], "eager": p["eager"][scored]} if backend != "eager" else {
                "eager": p["eager"][scored]}  # fmt: skip
            b = paired_cluster_bootstrap(pred.y[scored], scores, pred.conversation[scored],
                                         n_resamples=args.resamples, seed=args.seed)  # fmt: skip
            auc = Estimate(b.auc[backend], b.ci[backend], b.n_clusters)
            delta = None if b.delta is None else Estimate(b.delta, b.delta_ci, b.n_clusters)
            max_dp = float(np.abs(p[backend] - p["eager"]).max())
            row["backends"][backend] = {"auc": auc.to_json(), "delta_vs_eager": None if delta is None else
                                        delta.to_json(), "max_abs_diff_p": max_dp}  # fmt: skip
            shown = "—" if delta is None else format_estimate(delta, 4, signed=True)
            lines.append(f"| {corpus_name} | {backend} | {format_estimate(auc, 4)} | {shown} | {max_dp:.2g} |")
        results["corpora"][corpus_name] = row
    table = "\n".join(lines)
    print(table)
    atomic_write_json(args.out / "results.json", results)
    atomic_write_text(args.out / "results.md", table + "\n")
    print(f"onnx_int8_auc: wrote {args.out / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
