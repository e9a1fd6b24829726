"""`faceturn export`: the listening step of a trained model as an ONNX graph for onnxruntime (faceturn.export).

The graph takes one frame's delayed column, the face and the KV caches as explicit tensors and returns the yield
logits and the updated caches; `--backend onnx` (`faceturn live`, `faceturn.export.yield_stream`) runs it. Every
export is checked against the PyTorch stream on random frames past the context before it is written.
"""

from __future__ import annotations

import argparse

from faceturn.commands._args import add_force, add_out, add_run, positive_int
from faceturn.export import INT8_FILE, META_FILE, export_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run(parser)
    parser.add_argument("--format", required=True, choices=("onnx",), help="what to export to (onnx)")
    parser.add_argument("--quantize", choices=("int8",), help="also write an int8 graph (dynamic quantization)")
    add_out(parser, help="export folder (default: RUN/export)")
    add_force(parser)
    parser.add_argument("--check-frames", type=positive_int, default=None, metavar="N",
                        help="random frames the graph is checked on against the PyTorch stream "
                        "(default: the model's context + 500)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the check's random frames (default: 0)")


def run(args: argparse.Namespace) -> int:
    folder, meta = export_run(args.run, args.out, int8=args.quantize == "int8", force=args.force,
                      allow_older=args.allow_older, check_frames=args.check_frames, seed=args.seed)  # fmt: skip
    check = meta["check"]
    diffs = ", ".join(f"{k.removeprefix('max_abs_diff_p_')} {v:.2g}" for k, v in check.items() if k.startswith("max"))
    print(f"faceturn export: {meta['checkpoint']['step']} → {folder} ({', '.join(meta['files'])}, {META_FILE}); "
          f"largest |ΔP(yield)| against the PyTorch stream over {check['frames']} frames: {diffs}")  # fmt: skip
    if INT8_FILE in meta["files"]:
        print("faceturn export: the int8 graph is not checked against a tolerance; see docs/results.md for its AUC")
    return 0
