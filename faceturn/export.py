"""The listening step as an ONNX graph for onnxruntime: `faceturn export --format onnx`, and `--backend onnx`.

Why: a listener needs one P(yield) per 80 ms frame on a CPU, next to Mimi and the face landmarker; onnxruntime runs
the step with fused kernels and (int8) quantized weights, without PyTorch's per-operator overhead.

The graph is the transformer step of `TurnYieldStream` with its caches as explicit tensors (`StepGraph`): in
`column` [B, 17] int64 (the delayed column: text, self cb0..7, interlocutor cb0..7, −1 = no token), `face` [B, 61]
float32, `face_present` [B] float32 (0/1), `positions` [B] int64 (each row's absolute position), `slot_positions`
[B, C] int64 (the position each of the C = context ring slots holds, −1 empty; the same for every layer) and per layer
`keys_i`, `values_i` [B, H, C, d] float32; out `yield_logits` [B] and the updated caches (`slot_positions_out`,
`keys_out_i`, `values_out_i`: the new position written into slot position mod C by a scatter, the rest unchanged).
B is dynamic. What stays in Python is what `ListenStream` keeps for every backend: the delay pattern's token history,
frame counters, input checks; `OnnxYieldStream` binds each output cache to its input's buffer (onnxruntime's scatter
then writes the one new slot in place instead of copying the cache), so a frame costs what its attention reads.

An export folder (default RUN/export) holds `step.onnx` (fp32), `step.int8.onnx` with `--quantize int8`
(onnxruntime's dynamic quantization: int8 weights of the matrix products, activations quantized per call; the
embedding tables and the attention over the caches stay fp32), and `export.json`: the checkpoint it was made from
(path, step, sha256 of its weights), the model config, the opset, each file's sha256, and the check figures (the
largest |ΔP(yield)| against `TurnYieldStream` over random frames past the context; the fp32 graph must agree within
`CHECK_TOLERANCE` or the export is refused).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from faceturn.checkpoint import CHECKPOINTS, MODEL_FILE, file_sha256, load_model, resolve_checkpoint
from faceturn.config import ConfigError, from_dict, to_dict
from faceturn.errors import FaceturnError
from faceturn.io import JSON_FILE, ONNX_MODEL, atomic_write_json, check_output_dir, default_file_mode
from faceturn.model import N_STREAMS, ZERO_TOKEN, Model, ModelConfig, apply_rope, from_config
from faceturn.schema import N_CODEBOOKS, N_FACE
from faceturn.stream import ListenStream, TurnYieldStream

FORMAT = "faceturn-onnx-export/1"
EXPORT_DIR = "export"  # in the run folder
FP32_FILE = "step.onnx"
INT8_FILE = "step.int8.onnx"
META_FILE = "export.json"
OPSET = 18
CHECK_TOLERANCE = 1e-4  # largest |ΔP(yield)| of the fp32 graph against TurnYieldStream
CHECK_FRAMES_PAST_CONTEXT = 500
MAX_GRAPH_BYTES = 2**31 - 2**26  # one ONNX file (protobuf) holds at most 2 GB; keep some room for the graph itself
BACKENDS = ("eager", "onnx", "onnx-int8")
ONNX_EXTRA = "pip install 'faceturn[onnx]'"


class ExportError(FaceturnError):
    """A run that cannot be exported, or an export that cannot be used here; the message names it and why."""


def require_onnx(exporting: bool) -> Any:
    """onnxruntime (and, to export, onnx and onnxscript), or an ExportError saying which extra to install."""
    missing = []
    for name in ("onnxruntime", "onnx", "onnxscript") if exporting else ("onnxruntime",):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        what = "faceturn export --format onnx" if exporting else "--backend onnx"
        raise ExportError(f"{what} needs {', '.join(missing)}, which is not installed: {ONNX_EXTRA}")
    import onnxruntime

    return onnxruntime


# --------------------------------------------------------------------------------------------------------- graph
class StepGraph(nn.Module):
    """`Model.step` + the yield head as a pure function of explicit caches (see the module docstring), laid out for
    onnxruntime: the 17 embedding tables as one table read by one gather, each layer's keys read by a transposed
    matrix product (no copy of the cache), the ring written by a scatter. Same math as `Model.step`; tests and every
    export check it against `TurnYieldStream`."""

    def __init__(self, model: Model):
        super().__init__()
        self.model = model.eval()
        tables = [model.text_emb.weight, *(e.weight for e in model.emb)]  # column order: text, self 0..7, other 0..7
        self.register_buffer("table", torch.cat([t.detach() for t in tables]))
        starts = np.cumsum([0] + [t.shape[0] for t in tables[:-1]])
        self.register_buffer("offsets", torch.as_tensor(starts, dtype=torch.long))

    def forward(self, column, face, face_present, positions, slot_positions, *caches):
        m, cfg = self.model, self.model.cfg
        B, H = column.shape[0], cfg.num_heads
        d = cfg.dim // H
        rows = self.table[column.clamp(min=0) + self.offsets]  # [B, 17, D]
        x = torch.where((column == ZERO_TOKEN)[..., None], 0.0, rows).sum(1)
        x = (x + m.face_encoder(face, face_present))[:, None]  # [B, 1, D]
        slots = positions % cfg.context  # the ring has `context` slots: the evicted key was just out of sight
        slot_positions = slot_positions.scatter(1, slots[:, None], positions[:, None])
        delta = positions[:, None] - slot_positions
        visible = (slot_positions >= 0) & (delta >= 0) & (delta < cfg.context)
        bias = torch.where(visible, 0.0, -math.inf)[:, None, None]  # [B, 1, 1, C]
        index = slots.view(B, 1, 1, 1).expand(B, H, 1, d)
        out = []
        for i, layer in enumerate(m.transformer.layers):
            attn = layer.self_attn
            q, k, v = attn.in_projs[0](layer.norm1(x)).view(B, 3, H, 1, d).unbind(1)
            q, k = apply_rope(q, k, positions, cfg.max_period)
            keys = caches[2 * i].scatter(2, index, k)
            values = caches[2 * i + 1].scatter(2, index, v)
            scores = torch.matmul(q * d**-0.5, keys.transpose(-1, -2)) + bias  # [B, H, 1, C]
            y = torch.matmul(scores.softmax(-1), values).reshape(B, 1, cfg.dim)
            x = x + attn.out_projs[0](y)
            x = x + layer.gating(layer.norm2(x))
            out += [keys, values]
        logits = m.yield_head(m.out_norm(x))[:, 0, 0]
        return (logits, slot_positions, *out)


def _names(num_layers: int, suffix: str = "") -> list[str]:
    return [f"{kind}{suffix}_{i}" for i in range(num_layers) for kind in ("keys", "values")]


def _cache_shape(cfg: ModelConfig, batch: int) -> tuple[int, int, int, int]:
    return batch, cfg.num_heads, cfg.context, cfg.dim // cfg.num_heads


def graph_bytes(cfg: ModelConfig) -> int:
    """Bytes of the fp32 weights in the step graph (embedding tables, face encoder, temporal layers, yield head),
    counted on a model built on the meta device."""
    meta = from_config(cfg, device="meta")
    parts = [*meta.emb, meta.text_emb, meta.face_encoder, meta.transformer, meta.out_norm, meta.yield_head]
    return 4 * sum(p.numel() for part in parts for p in part.parameters())


def write_onnx(model: Model, path: Path) -> None:
    """Export the step of `model` (fp32, CPU) to the ONNX file `path`, batch dynamic."""
    cfg = model.cfg
    B = 2
    example = (
        torch.full((B, N_STREAMS), 1),
        torch.zeros(B, N_FACE),
        torch.ones(B),
        torch.tensor([1, 2]),
        torch.full((B, cfg.context), -1),
        *(torch.zeros(_cache_shape(cfg, B)) for _ in range(2 * cfg.num_layers)),
    )
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = (*({0: batch},) * 5, ({0: batch},) * 2 * cfg.num_layers)  # the caches are one *args entry
    inputs = ["column", "face", "face_present", "positions", "slot_positions", *_names(cfg.num_layers)]
    outputs = ["yield_logits", "slot_positions_out", *_names(cfg.num_layers, "_out")]
    # torch.onnx narrates its steps on stdout and warns about things that do not concern this graph
    quiet = contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), _logging_off()
    with torch.no_grad(), quiet[0], quiet[1], quiet[2]:
        warnings.simplefilter("ignore")
        torch.onnx.export(
            StepGraph(model).eval(), example, str(path), input_names=inputs, output_names=outputs,
            dynamic_shapes=dynamic, opset_version=OPSET, dynamo=True, optimize=True, external_data=False,
            verbose=False,
        )  # fmt: skip


def quantize_int8(fp32: Path, int8: Path) -> None:
    """onnxruntime's dynamic quantization: int8 weights of the matrix products with constant weights (per tensor);
    activations are quantized per call, the attention over the caches stays fp32."""
    require_onnx(exporting=True)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _logging_off():  # it advises pre-processing, which changes nothing for this graph
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True})


@contextlib.contextmanager
def _logging_off() -> Iterator[None]:
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


# --------------------------------------------------------------------------------------------------- the stream
class OnnxStep:
    """An export folder's graph in an onnxruntime session, shared by any number of `OnnxYieldStream`s (one per
    conversation group, each with its own caches; onnxruntime runs concurrent calls on one session)."""

    def __init__(self, folder: str | Path, *, int8: bool = False, threads: int | None = None):
        ort = require_onnx(exporting=False)
        self.folder = Path(folder)
        self.meta = read_export(self.folder)
        name = INT8_FILE if int8 else FP32_FILE
        self.path = self.folder / name
        if name not in self.meta["files"]:
            raise ExportError(f"{self.folder}: the export has no int8 graph: re-export with `--quantize int8`")
        if not self.path.is_file():
            raise ExportError(f"{self.path}: missing (the export folder is incomplete): export the run again")
        if file_sha256(self.path) != self.meta["files"][name]:
            raise ExportError(f"{self.path}: does not match its sha256 in {META_FILE} (altered or damaged): export "
                              "the run again")  # fmt: skip
        try:
            self.cfg = from_dict(ModelConfig, self.meta["model"], prefix="model.")
        except (ConfigError, KeyError, TypeError) as e:
            raise ExportError(f"{self.folder / META_FILE}: no usable model config ({e})") from None
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        # idle pool threads sleep instead of spinning: they share the CPU with PyTorch, Mimi and the face landmarker
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = threads
        self.int8 = int8
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self._ort = ort
        self.first = self._position_zero()

    @classmethod
    def for_checkpoint(
        cls, ckpt: Path, *, int8: bool = False, threads: int | None = None, folder: Path | None = None
    ) -> OnnxStep:
        """The export of checkpoint `ckpt` (in `folder`, default its run's export folder), refused when it was made
        from other weights."""
        folder = Path(folder) if folder is not None else default_export_dir(ckpt)
        meta_path = folder / META_FILE
        if not meta_path.is_file():
            raise ExportError(f"{ckpt}: no ONNX export in {folder}: run `faceturn export --run {ckpt} --format onnx"
                              f"{' --quantize int8' if int8 else ''}` first")  # fmt: skip
        made = read_export(folder)["checkpoint"]
        if made["weights_sha256"] != file_sha256(Path(ckpt) / MODEL_FILE):
            raise ExportError(f"{folder}: exported from {made['path']}, not from {ckpt} (other weights): export "
                              "again with --force")  # fmt: skip
        return cls(folder, int8=int8, threads=threads)

    def _position_zero(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per layer the key and value [H, d] of position 0 (initial tokens, no face): the same for every
        conversation, computed once."""
        cfg = self.cfg
        feeds = {
            "column": np.array([[cfg.text_card] + [cfg.card] * (2 * N_CODEBOOKS)], np.int64),
            "face": np.zeros((1, N_FACE), np.float32),
            "face_present": np.zeros(1, np.float32),
            "positions": np.zeros(1, np.int64),
            "slot_positions": np.full((1, cfg.context), -1, np.int64),
        }
        feeds.update((n, np.zeros(_cache_shape(cfg, 1), np.float32)) for n in _names(cfg.num_layers))
        out = self.session.run(None, feeds)
        return [(out[2 + 2 * i][0, :, 0].copy(), out[3 + 2 * i][0, :, 0].copy()) for i in range(cfg.num_layers)]

    def stream(self, batch_size: int = 1) -> OnnxYieldStream:
        return OnnxYieldStream(self, batch_size)


class OnnxYieldStream(ListenStream):
    """`ListenStream` on an exported step (`OnnxStep`): listening only (`step`, `step_batch`, `reset`, `frames`).

    The caches are numpy arrays that the session reads and writes in place: each output cache is bound to its input's
    buffer, so onnxruntime's scatter writes the new slot without copying the rest."""

    def __init__(self, step: OnnxStep, batch_size: int = 1):
        super().__init__(step.cfg, batch_size, "cpu")
        cfg, ort = step.cfg, step._ort
        self.onnx = step
        self._inputs = {
            "column": np.zeros((batch_size, N_STREAMS), np.int64),
            "face": np.zeros((batch_size, N_FACE), np.float32),
            "face_present": np.zeros(batch_size, np.float32),
            "positions": np.zeros(batch_size, np.int64),
        }
        self._slot_positions = np.full((batch_size, cfg.context), -1, np.int64)
        self._caches = [np.zeros(_cache_shape(cfg, batch_size), np.float32) for _ in range(2 * cfg.num_layers)]
        self._logits = np.zeros(batch_size, np.float32)
        self._binding = step.session.io_binding()
        for name, array in self._inputs.items():
            self._binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
        self._binding.bind_ortvalue_output("yield_logits", ort.OrtValue.ortvalue_from_numpy(self._logits))
        inputs = ["slot_positions", *_names(cfg.num_layers)]
        outputs = ["slot_positions_out", *_names(cfg.num_layers, "_out")]
        self._values = []  # the OrtValues must live as long as the binding
        for name, out_name, array in zip(inputs, outputs, [self._slot_positions, *self._caches], strict=True):
            value = ort.OrtValue.ortvalue_from_numpy(array)
            self._binding.bind_ortvalue_input(name, value)
            self._binding.bind_ortvalue_output(out_name, value)
            self._values.append(value)
        self.reset()

    def _start(self, index: Tensor) -> None:
        rows = index.numpy()
        self._slot_positions[rows] = -1
        self._slot_positions[rows, 0] = 0  # position 0 lives in slot 0
        for i, (key, value) in enumerate(self.onnx.first):
            self._caches[2 * i][rows, :, 0] = key
            self._caches[2 * i + 1][rows, :, 0] = value

    def _step(self, column: Tensor, face: Tensor, present: Tensor, positions: Tensor) -> Tensor:
        x = self._inputs
        np.copyto(x["column"], column.numpy())
        np.copyto(x["face"], face.numpy())
        np.copyto(x["face_present"], present.numpy())
        np.copyto(x["positions"], positions.numpy())
        self.onnx.session.run_with_iobinding(self._binding)
        return torch.from_numpy(self._logits.copy())


# ---------------------------------------------------------------------------------------------- export and load
def default_export_dir(ckpt: Path) -> Path:
    """RUN/export for a checkpoint RUN/checkpoints/step-N (a checkpoint folder anywhere else needs an explicit one)."""
    ckpt = Path(ckpt)
    if ckpt.parent.name != CHECKPOINTS:
        raise ExportError(f"{ckpt}: not in a run's {CHECKPOINTS} folder: give the export folder (--out)")
    return ckpt.parent.parent / EXPORT_DIR


def read_export(folder: Path) -> dict[str, Any]:
    """An export folder's export.json, checked for its format."""
    path = Path(folder) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{folder}: no {META_FILE} (not an export folder, or the export did not finish)") from None
    except (OSError, ValueError) as e:
        raise ExportError(f"{path}: unreadable ({type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExportError(
            f"{path}: not a {FORMAT} file (format {meta.get('format') if isinstance(meta, dict) else None!r})"
        )
    return meta


def check_exportable(cfg: ModelConfig, where: str) -> None:
    """Refuse a model config the single-file export cannot hold."""
    size = graph_bytes(cfg)
    if size > MAX_GRAPH_BYTES:
        raise ExportError(f"{where}: its step holds {size / 2**30:.1f} GiB of fp32 weights (shape {cfg.shape!r}); "
                          "one ONNX file holds at most 2 GiB")  # fmt: skip


def compare_streams(
    reference: ListenStream, others: dict[str, ListenStream], frames: int, seed: int
) -> dict[str, float]:
    """Feed the same random frames (codes with some −1, faces with some absent) to every stream → the largest
    |ΔP(yield)| of each of `others` against `reference` over all rows and frames."""
    cfg, B = reference.cfg, reference.batch_size
    g = torch.Generator().manual_seed(seed)
    worst = dict.fromkeys(others, 0.0)
    for _ in range(frames):
        codes = torch.randint(-1, cfg.card, (2, B, N_CODEBOOKS), generator=g)
        face = torch.randn(B, N_FACE, generator=g)
        present = torch.rand(B, generator=g) > 0.2
        p = reference.step_batch(codes[0], codes[1], face, present)
        for name, stream in others.items():
            worst[name] = max(
                worst[name], float((stream.step_batch(codes[0], codes[1], face, present) - p).abs().max())
            )
    return worst


def export_run(
    run: str | Path,
    out: str | Path | None = None,
    *,
    int8: bool = False,
    force: bool = False,
    allow_older: bool = False,
    check_frames: int | None = None,
    seed: int = 0,
) -> tuple[Path, dict[str, Any]]:
    """Export the listening step of a run's newest checkpoint (or a checkpoint) into `out` (default RUN/export):
    step.onnx, with `int8` also step.int8.onnx, and export.json (written last) → (the folder, what export.json
    holds). The fp32 graph is checked against `TurnYieldStream` on `check_frames` random frames (default context +
    500) of two rows; the int8 graph's largest difference is recorded."""
    ckpt = resolve_checkpoint(run, allow_older=allow_older)
    require_onnx(exporting=True)
    folder = Path(out) if out is not None else default_export_dir(ckpt)
    files = {FP32_FILE: ONNX_MODEL, META_FILE: f"{JSON_FILE} ({FORMAT})", **({INT8_FILE: ONNX_MODEL} if int8 else {})}
    check_output_dir(folder, files=files, inputs={"--run": ckpt}, force=force)
    model, _ = load_model(ckpt)
    check_exportable(model.cfg, str(ckpt))
    frames = model.cfg.context + CHECK_FRAMES_PAST_CONTEXT if check_frames is None else check_frames
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=folder))
    try:
        write_onnx(model, tmp / FP32_FILE)
        if int8:
            quantize_int8(tmp / FP32_FILE, tmp / INT8_FILE)
        names = [FP32_FILE, INT8_FILE] if int8 else [FP32_FILE]
        meta = {
            "format": FORMAT,
            "checkpoint": {
                "path": str(ckpt.resolve()),
                "step": ckpt.name,
                "weights_sha256": file_sha256(ckpt / MODEL_FILE),
            },
            "model": to_dict(model.cfg),
            "opset": OPSET,
            "files": {name: file_sha256(tmp / name) for name in names},
        }
        atomic_write_json(tmp / META_FILE, meta)
        others = {"fp32": OnnxStep(tmp).stream(2)}
        if int8:
            others["int8"] = OnnxStep(tmp, int8=True).stream(2)
        worst = compare_streams(TurnYieldStream(model, 2), others, frames, seed)
        meta["check"] = {"frames": frames, "rows": 2, "seed": seed, "tolerance": CHECK_TOLERANCE,
                         **{f"max_abs_diff_p_{k}": v for k, v in worst.items()}}  # fmt: skip
        if not worst["fp32"] <= CHECK_TOLERANCE:
            raise ExportError(f"{ckpt}: the exported graph's P(yield) differs from the model's by {worst['fp32']:.2g} "
                              f"(> {CHECK_TOLERANCE:g}) over {frames} frames: not exported")  # fmt: skip
        (folder / META_FILE).unlink(missing_ok=True)  # the old export is gone from here on
        for name in (FP32_FILE, INT8_FILE):
            (folder / name).unlink(missing_ok=True)
        for name in names:
            os.chmod(tmp / name, default_file_mode())
            os.replace(tmp / name, folder / name)
        atomic_write_json(folder / META_FILE, meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, meta


def listening_model(
    run: str | Path, backend: str = "eager", *, device: str = "cpu", threads: int | None = None,
    allow_older: bool = False,
) -> Model | OnnxStep:  # fmt: skip
    """What a listener steps, from a run's newest checkpoint (or a checkpoint folder): with `backend` "eager" the
    PyTorch model, with "onnx" / "onnx-int8" the fp32 / int8 graph of `faceturn export` (made from the same weights;
    onnxruntime on the CPU with `threads` intra-op threads)."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    ckpt = resolve_checkpoint(run, allow_older=allow_older)
    if backend == "eager":
        return load_model(ckpt, device=device)[0]
    if device != "cpu":
        raise ConfigError(f"backend {backend} runs on the CPU, not on {device}")
    return OnnxStep.for_checkpoint(ckpt, int8=backend == "onnx-int8", threads=threads)


def listen_stream(model: Model | OnnxStep, batch_size: int = 1) -> ListenStream:
    """A P(yield) stream of `batch_size` rows on a `listening_model`."""
    return model.stream(batch_size) if isinstance(model, OnnxStep) else TurnYieldStream(model, batch_size)


def yield_stream(
    run: str | Path, backend: str = "eager", batch_size: int = 1, *, threads: int | None = None,
    allow_older: bool = False,
) -> ListenStream:  # fmt: skip
    """A P(yield) stream of `batch_size` rows over a run's newest checkpoint (or a checkpoint folder):
    `backend` "eager" (`TurnYieldStream`, PyTorch), "onnx" (the fp32 graph of `faceturn export`) or "onnx-int8" (its
    int8 graph, `--quantize int8`). All have `step_batch`, `step`, `reset` and `frames`; `threads` sets onnxruntime's
    intra-op threads (PyTorch's are `torch.set_num_threads`). The ONNX backends need the run exported first (in
    RUN/export, made from the same weights)."""
    return listen_stream(listening_model(run, backend, threads=threads, allow_older=allow_older), batch_size)
