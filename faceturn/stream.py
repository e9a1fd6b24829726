"""Streaming turn-yield prediction and full-duplex generation, one 80 ms frame at a time, with a bounded KV cache.

Why: the full-sequence forward re-reads its whole window for every new frame; a listener that must raise a hand-over
alert within the frame needs constant work per frame. `ListenStream` keeps what every backend shares (the delay
pattern's bookkeeping and the input checks); `TurnYieldStream`, the PyTorch backend, keeps per conversation (a batch
row) the temporal KV cache (`faceturn.model.KVCache`: a ring of the model's `context` positions, absolute positions
counting on past it, as RoPE and the mask need); the tokens of the last max(delays) + 1 frames (Moshi's delay
pattern) and a frame counter are `ListenStream`'s. Its outputs equal `Model.forward` on the frames so far
(tests/test_stream.py: within 1e-5 in fp32 over 500 frames, well past the context). The checkpoint's `zero_groups`
apply inside the model's face encoder.

Two ways to drive it, frame k after frame k (faceturn.model's alignment):
- listening, `step` / `step_batch`: both sides' codes of frame k (the self's text optional) and the interlocutor's
  face → P(yield)[k] = sigmoid(yield_logits[k]), from position k + 1, which reads text, semantic codes and face of
  frame k and the acoustic codes of frame k − 1.
- talking, `generate_step`: Moshi's order. From its output at position k the model first draws its own tokens of
  column k + 1 (text[k], then the depformer: semantic[k] and, through the acoustic delay, acoustic[k − 1]), then reads
  the interlocutor's frame k → P(yield)[k]. Its newest complete frame is k − 1 (80 ms + 80 ms, as Moshi).
  `generate` runs that over whole sequences (greedy by default).
Position 0 (all initial tokens, no face) is the same for every conversation: `reset` computes it once and copies it.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from faceturn.checkpoint import load_model
from faceturn.errors import CheckpointError, ConfigError, FaceturnError
from faceturn.model import N_STREAMS, ZERO_TOKEN, KVCache, Model, ModelConfig
from faceturn.schema import N_CODEBOOKS, N_FACE
from faceturn.timebase import frames_to_seconds


@dataclass(frozen=True)
class Sampling:
    """How the talking side draws its tokens. Temperature 0 = greedy (argmax); top_k 0 = the whole vocabulary.
    Moshi's defaults are audio 0.8 / 250 and text 0.7 / 25 (`MOSHI_SAMPLING`)."""

    audio_temperature: float = 0.0
    audio_top_k: int = 0
    text_temperature: float = 0.0
    text_top_k: int = 0

    def __post_init__(self) -> None:
        for name in ("audio_temperature", "text_temperature"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be finite and >= 0 (0 = greedy), got {value}")
        for name in ("audio_top_k", "text_top_k"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0 = no top-k), got {getattr(self, name)}")


GREEDY = Sampling()
MOSHI_SAMPLING = Sampling(audio_temperature=0.8, audio_top_k=250, text_temperature=0.7, text_top_k=25)


def sample_token(
    logits: Tensor,
    temperature: float,
    top_k: int,
    generator: torch.Generator | None = None,
    uniforms: Tensor | None = None,
) -> Tensor:
    """logits [..., V] → tokens [...]: argmax when temperature is 0, else a draw from softmax(logits / temperature)
    restricted to the top_k largest (0 = all), by inverse transform of one uniform number per row: `uniforms` [...]
    in [0, 1) when given (rows given the same number are paired: common random numbers), else drawn from
    `generator`. Tokens with probability 0 (logits −inf) are never drawn."""
    if temperature == 0:
        return logits.argmax(-1)
    choices = None
    if 0 < top_k < logits.shape[-1]:
        logits, choices = logits.topk(top_k, dim=-1, sorted=False)  # the order is irrelevant to the draw
    probs = torch.softmax(logits.float() / temperature, dim=-1).flatten(0, -2)
    if uniforms is None:
        uniforms = torch.rand(probs.shape[0], generator=generator, device=probs.device)
    cdf = probs.cumsum(-1)
    drawn = (cdf <= uniforms.reshape(-1, 1).to(cdf) * cdf[:, -1:]).sum(-1).clamp(max=probs.shape[-1] - 1)
    drawn = drawn.view(*logits.shape[:-1], 1)
    return (drawn if choices is None else choices.gather(-1, drawn))[..., 0]


class FloorGate:
    """Floor control from the yield head (step 4's `--gate`), for `TurnYieldStream.generate_step`: a gated row that
    is silent may start talking while the interlocutor holds the floor only when its P(yield) of the previous frame
    reached its threshold θ; otherwise it is held silent for this frame (its semantic token is drawn among
    `silence_tokens`, its text is PAD). Talking rows are never cut off, and ungated rows (θ = NaN) never held.

    Causal, from what the talking side knows when it draws frame k: the interlocutor holds the floor when it was
    active more recently than the row spoke (its activity up to frame k − 1, `other_active`: the voice activity of
    the audio being replayed), the row is silent when its semantic token of frame k − 1 is a silence token."""

    def __init__(self, thresholds: Tensor, other_active: Tensor, silence_tokens: Tensor, text_pad: int = 3):
        b = thresholds.shape[0]
        if other_active.dim() != 2 or other_active.shape[0] != b:
            raise ValueError(f"other_active must be [{b}, T], got {tuple(other_active.shape)}")
        self.thresholds = thresholds.float()
        self.other_active = other_active.bool()
        self.silence_tokens = silence_tokens.long().flatten()
        self.text_pad = text_pad
        self.gated = ~torch.isnan(self.thresholds)
        self._last_self = torch.full((b,), -1, dtype=torch.long)
        self._last_other = torch.full((b,), -1, dtype=torch.long)
        self._silent = torch.ones(b, dtype=torch.bool)
        self._p = torch.zeros(b)
        self.held = torch.zeros(b, self.other_active.shape[1], dtype=torch.bool)  # [B, T] frames held silent

    def hold(self, frame: int) -> Tensor:
        """[B] rows that may not start talking at `frame`."""
        other_holds = self._last_other > self._last_self
        held = self.gated & self._silent & other_holds & (self._p < self.thresholds) & (frame > 0)
        if frame < self.held.shape[1]:
            self.held[:, frame] = held
        return held

    def observe(self, step: GeneratedStep) -> None:
        """Update with the frame just talked (its semantic token, P(yield) and the interlocutor's activity)."""
        k = int(step.frame[0])
        self._silent = torch.isin(step.drawn[:, 1], self.silence_tokens)
        self._last_self = torch.where(self._silent, self._last_self, k)
        if k < self.other_active.shape[1]:
            self._last_other = torch.where(self.other_active[:, k], k, self._last_other)
        self._p = step.p_yield.float()


@dataclass
class GeneratedStep:
    """One talking frame k of every row (`TurnYieldStream.generate_step`)."""

    frame: Tensor  # [B] long  k, the frame each row just completed
    p_yield: Tensor  # [B] float32  P(yield) for frame k, after the interlocutor's frame k
    drawn: Tensor  # [B, 9] long  column k + 1's self tokens: text of frame k (-1 when text generation is off) and
    #                codebook j of frame k − delays[1 + j] (Moshi: semantic k, acoustic k − 1); initial before frame 0
    text: Tensor  # [B] long  the self's text token of the newest complete frame, k − max(delays); -1 before frame 0
    codes: Tensor  # [B, 8] long  the self's audio codes of that frame (Moshi: k − 1, ready for the audio decoder)
    text_logits: Tensor | None  # [B, text_card] what drawn[:, 0] came from (None when text generation is off)
    audio_logits: Tensor  # [B, 8, card] what drawn[:, 1:] came from


class ListenStream:
    """Frame-by-frame P(yield) for `batch_size` concurrent conversations: what every backend shares.

    Rows are independent conversations; `reset(rows)` starts new ones on some rows while the others go on. This class
    keeps the delay pattern's bookkeeping (per row the tokens of the last max(delays) + 1 frames and a frame counter),
    builds each position's delayed column and checks the inputs; a backend supplies only the transformer step over its
    KV caches (`_start`: position 0 into the caches of some rows; `_step`: one position per row → yield logits).
    `TurnYieldStream` runs the PyTorch model; `faceturn.export.OnnxYieldStream` runs the exported ONNX step.
    """

    def __init__(self, cfg: ModelConfig, batch_size: int, device: torch.device | str = "cpu"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.cfg = cfg
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_delay = max(cfg.delays)
        self._delays = torch.tensor(cfg.delays, device=self.device)  # [17]
        self._initial = torch.tensor([cfg.text_card] + [cfg.card] * (2 * N_CODEBOOKS), device=self.device)
        self._read_index = (self.max_delay - self._delays).view(1, N_STREAMS, 1).expand(batch_size, -1, -1)
        # Frame-aligned tokens of the last max_delay + 1 frames (newest last), kyutai's stream order; column k + 1 reads
        # stream s from frame k − delays[s], i.e. index max_delay − delays[s].
        self._history = torch.full((batch_size, N_STREAMS, self.max_delay + 1), ZERO_TOKEN, device=self.device)
        self._frames = torch.zeros(batch_size, dtype=torch.long, device=self.device)  # frames consumed per row

    def _start(self, index: Tensor) -> None:
        """Empty the caches of rows `index` [R] and put position 0 (initial tokens, no face) into them."""
        raise NotImplementedError

    def _step(self, column: Tensor, face: Tensor, present: Tensor, positions: Tensor) -> Tensor:
        """One position per row: delayed column [B, 17] long, face [B, 61] float32, present [B] bool, positions [B]
        long → yield logits [B] float32; the caches take the position."""
        raise NotImplementedError

    @property
    def frames(self) -> Tensor:
        """[B] frames each row has consumed since its reset."""
        return self._frames.clone()

    def _row_index(self, rows: Sequence[int] | Tensor | None) -> Tensor:
        if rows is None:
            return torch.arange(self.batch_size, device=self.device)
        index = torch.as_tensor(rows, dtype=torch.long).flatten()
        if index.numel() and (index.min() < 0 or index.max() >= self.batch_size):
            raise ValueError(f"rows must be indices in [0, {self.batch_size}), got {index.tolist()}")
        return index.to(self.device)

    @torch.no_grad()
    def reset(self, rows: Sequence[int] | Tensor | None = None) -> None:
        """Start a new conversation on `rows` (indices; all when None): empty cache and history, frame 0."""
        index = self._row_index(rows)
        self._start(index)
        self._history[index] = ZERO_TOKEN
        self._frames[index] = 0

    # ------------------------------------------------------------------------------------------------------ inputs
    def _codes(self, name: str, value, shape: tuple[int, ...], card: int) -> Tensor:
        t = torch.as_tensor(value)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer tokens, got dtype {t.dtype}")
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {list(shape)}")
        if t.numel() and (int(t.min()) < ZERO_TOKEN or int(t.max()) >= card):
            raise FaceturnError(f"{name} values must lie in [-1, {card}) (-1 = no token), got [{int(t.min())}, "
                             f"{int(t.max())}]")  # fmt: skip
        return t.to(self.device, torch.long)

    def _face(self, other_face, face_present) -> tuple[Tensor, Tensor]:
        B = self.batch_size
        face = torch.as_tensor(other_face)
        present = torch.as_tensor(face_present)
        if not face.is_floating_point() or tuple(face.shape) != (B, N_FACE):
            raise ValueError(f"other_face must be floats of shape {[B, N_FACE]}, got {face.dtype} {tuple(face.shape)}")
        if tuple(present.shape) != (B,) or present.is_complex():
            raise ValueError(f"face_present must have shape {[B]}, got {tuple(present.shape)}")
        if present.dtype != torch.bool:
            if not ((present == 0) | (present == 1)).all():
                raise ValueError(f"face_present must be 0/1 or bool, got {present.tolist()}")
            present = present != 0
        bad = present & ~torch.isfinite(face).all(-1)
        if bad.any():
            rows = bad.nonzero().flatten().tolist()
            raise FaceturnError(f"other_face holds NaN or infinite values where face_present is set (rows {rows})")
        return face.to(self.device, torch.float32), present.to(self.device)

    def _frame_tokens(self, self_codes, other_codes, text) -> Tensor:
        """Frame k's tokens [B, 17], kyutai's order (text, self cb0..7, interlocutor cb0..7), checked."""
        B, cfg = self.batch_size, self.cfg
        if text is None:
            text_t = torch.full((B,), ZERO_TOKEN, device=self.device)
        else:
            text_t = self._codes("text", text, (B,), cfg.text_card)
        self_t = self._codes("self_codes", self_codes, (B, N_CODEBOOKS), cfg.card)
        other_t = self._codes("other_codes", other_codes, (B, N_CODEBOOKS), cfg.card)
        return torch.cat([text_t[:, None], self_t, other_t], dim=1)

    # ---------------------------------------------------------------------------------------------------- the core
    def _consume(self, face: Tensor, present: Tensor) -> Tensor:
        """Read column k + 1 from the history (frame k just pushed) → yield logits [B] of frame k."""
        column = self._history.gather(2, self._read_index)[:, :, 0]
        valid = self._frames[:, None] >= self._delays  # stream s reads frame k − delays[s]; before frame 0: initial
        column = torch.where(valid, column, self._initial)
        logits = self._step(column, face, present, self._frames + 1)
        self._frames += 1
        if not torch.isfinite(logits).all():
            rows = (~torch.isfinite(logits)).nonzero().flatten().tolist()
            raise CheckpointError(
                f"the model produced a non-finite P(yield) on rows {rows}: its weights are not finite"
            )
        return logits

    def _push(self, tokens: Tensor) -> None:
        self._history = torch.cat([self._history[:, :, 1:], tokens[:, :, None]], dim=2)

    @torch.no_grad()
    def step_batch(self, self_codes, other_codes, other_face, face_present, text=None, logits: bool = False) -> Tensor:
        """Listen to frame k of every row: self_codes, other_codes [B, 8] (-1 = no token), other_face [B, 61] (the
        interlocutor's; may hold anything where absent), face_present [B] (bool or 0/1), text [B] or None (absent)
        → P(yield) [B] float32 on the CPU (the yield logits with `logits=True`)."""
        tokens = self._frame_tokens(self_codes, other_codes, text)
        face, present = self._face(other_face, face_present)
        self._push(tokens)
        out = self._consume(face, present)
        return (out if logits else torch.sigmoid(out)).cpu()

    def step(self, self_codes, other_codes, other_face, face_present, text=None) -> float:
        """One conversation (batch_size 1): self_codes, other_codes [8], other_face [61], face_present (bool),
        text (int or None) of frame k → P(yield) for frame k."""
        if self.batch_size != 1:
            raise ValueError(f"step() serves one conversation; this stream has {self.batch_size} rows: use step_batch")
        p = self.step_batch(
            torch.as_tensor(self_codes)[None],
            torch.as_tensor(other_codes)[None],
            torch.as_tensor(other_face)[None],
            torch.as_tensor(face_present).reshape(1),
            None if text is None else torch.as_tensor(text).reshape(1),
        )
        return float(p[0])


class TurnYieldStream(ListenStream):
    """`ListenStream` on the PyTorch model, which can also talk (`generate_step`): the self's next tokens.

    Build a new stream after changing the model's weights (`reset` copies position 0's keys from the model as it is
    then).
    """

    def __init__(self, model: Model, batch_size: int = 1):
        self.model = model.eval()
        cfg = model.cfg
        param = next(model.parameters())
        super().__init__(cfg, batch_size, param.device)
        self.dtype = param.dtype
        self._caches = self._new_caches(batch_size, cfg.context)
        self._depth_caches = [
            KVCache(batch_size, cfg.depformer_num_heads, cfg.depformer_dim // cfg.depformer_num_heads, N_CODEBOOKS,
                    self.device, self.dtype)
            for _ in range(cfg.depformer_num_layers)
        ]  # fmt: skip
        self._h = torch.zeros(batch_size, cfg.dim, device=self.device, dtype=self.dtype)  # output at newest position
        self.reset()

    @classmethod
    def from_run(cls, run_or_checkpoint: str | Path, batch_size: int = 1, device: str = "cpu") -> TurnYieldStream:
        """A stream over a trained model: a run folder (its newest checkpoint) or a checkpoint folder."""
        model, _ = load_model(run_or_checkpoint, device=device)
        return cls(model, batch_size)

    def _new_caches(self, batch: int, capacity: int) -> list[KVCache]:
        cfg = self.model.cfg
        head_dim = cfg.dim // cfg.num_heads
        return [
            KVCache(batch, cfg.num_heads, head_dim, capacity, self.device, self.dtype) for _ in range(cfg.num_layers)
        ]

    def _start(self, index: Tensor) -> None:
        # Position 0 reads only initial tokens and "no face": run it once for one row, then copy it into the rows.
        first = self._new_caches(1, capacity=1)
        zeros = torch.zeros(1, device=self.device)
        h0 = self.model.step(
            self._initial[None], torch.zeros(1, N_FACE, device=self.device), zeros, zeros.long(), first
        )
        for cache, one in zip(self._caches, first, strict=True):
            cache.clear(index)
            cache.keys[index, :, 0] = one.keys[:, :, 0]  # position 0 lives in slot 0
            cache.values[index, :, 0] = one.values[:, :, 0]
            cache.positions[index, 0] = 0
        self._h[index] = h0

    def _step(self, column: Tensor, face: Tensor, present: Tensor, positions: Tensor) -> Tensor:
        self._h = self.model.step(column, face, present, positions, self._caches)
        return self.model.yield_head(self._h)[:, 0].float()

    # ---------------------------------------------------------------------------------------------------- talking
    def _sample(
        self,
        sampling: Sampling,
        text: bool,
        generator: torch.Generator | None,
        uniforms: Tensor | None = None,
        hold: Tensor | None = None,
        gate: FloorGate | None = None,
    ):
        """Draw the self's tokens of column k + 1 from the output at position k → (tokens [B, 9] in column order:
        text of frame k, codebook j of frame k − delays[1 + j]; initial where that frame is < 0), text logits or
        None, audio logits [B, 8, card]). The depformer reads exactly the tokens of the column it writes. Draw j
        (text, then codebooks 0–7) uses uniforms[:, j] when given (else `generator`); rows in `hold` are held silent
        as `gate` says."""
        model, h, B = self.model, self._h, self.batch_size

        def u(j: int) -> Tensor | None:
            return None if uniforms is None else uniforms[:, j]

        held = hold is not None and bool(hold.any())
        if text:
            text_logits = model.text_linear(h).float()
            token = sample_token(text_logits, sampling.text_temperature, sampling.text_top_k, generator, u(0))
            if held:
                token = torch.where(hold, gate.text_pad, token)
        else:
            text_logits, token = None, torch.full((B,), ZERO_TOKEN, device=self.device)
        valid = self._frames[:, None] >= self._delays[: 1 + N_CODEBOOKS]  # [B, 9] the token's frame exists
        tokens = [torch.where(valid[:, 0], token, self._initial[0])]
        all_rows = torch.arange(B, device=self.device)
        for cache in self._depth_caches:
            cache.clear(all_rows)
        audio_logits = []
        for k in range(N_CODEBOOKS):
            step_logits = model.depformer_step(h, tokens[-1], k, self._depth_caches).float()
            audio_logits.append(step_logits)
            if k == 0 and held:  # the semantic token of frame k: silence classes only
                allowed = torch.zeros(step_logits.shape[-1], dtype=torch.bool, device=self.device)
                allowed[gate.silence_tokens.to(self.device)] = True
                step_logits = torch.where(hold[:, None] & ~allowed, float("-inf"), step_logits)
            token = sample_token(step_logits, sampling.audio_temperature, sampling.audio_top_k, generator, u(1 + k))
            tokens.append(torch.where(valid[:, 1 + k], token, self._initial[1 + k]))
        return torch.stack(tokens, dim=1), text_logits, torch.stack(audio_logits, dim=1)

    @torch.no_grad()
    def generate_step(
        self,
        other_codes,
        other_face,
        face_present,
        sampling: Sampling = GREEDY,
        text: bool = True,
        generator: torch.Generator | None = None,
        uniforms: Tensor | None = None,
        gate: FloorGate | None = None,
    ) -> GeneratedStep:
        """Talk for frame k of every row: the model draws its own tokens (text[k] unless `text` is False, then its
        audio codebooks through the depformer), then hears the interlocutor's frame k (other_codes [B, 8],
        other_face [B, 61], face_present [B]) → GeneratedStep. `generator` seeds the draws (on the model's device);
        or `uniforms` [B, 9] in [0, 1) give them (draw j: text, then codebooks 0–7): rows given the same numbers are
        paired (common random numbers), so rows that differ only in an input (the face, zeroed) differ in their
        tokens only where the model's distributions do. `gate` holds rows silent (see `FloorGate`), which it
        observes after the step."""
        other = self._codes("other_codes", other_codes, (self.batch_size, N_CODEBOOKS), self.model.cfg.card)
        face, present = self._face(other_face, face_present)
        if uniforms is not None:
            uniforms = torch.as_tensor(uniforms, dtype=torch.float32, device=self.device)
            if tuple(uniforms.shape) != (self.batch_size, 1 + N_CODEBOOKS):
                raise ValueError(f"uniforms must be [{self.batch_size}, {1 + N_CODEBOOKS}], got {list(uniforms.shape)}")
        hold = None
        if gate is not None:
            if gate.thresholds.shape[0] != self.batch_size:
                raise ValueError(f"the gate has {gate.thresholds.shape[0]} rows, the stream {self.batch_size}")
            hold = gate.hold(int(self._frames[0])).to(self.device)
        column, text_logits, audio_logits = self._sample(sampling, text, generator, uniforms, hold, gate)
        frame_tokens = torch.cat([torch.full_like(column, ZERO_TOKEN), other], dim=1)
        self._push(frame_tokens)
        # Token s of the column belongs to frame k − delays[s]: its history slot is max_delay − delays[s].
        slots = self._read_index[:, : 1 + N_CODEBOOKS, 0]
        self._history[:, : 1 + N_CODEBOOKS].scatter_(2, slots[:, :, None], column[:, :, None])
        frame = self._frames.clone()
        p_yield = torch.sigmoid(self._consume(face, present)).cpu()
        complete = self._history[:, : 1 + N_CODEBOOKS, 0]  # frame k − max_delay: text, self cb0..7
        complete = torch.where((frame >= self.max_delay)[:, None], complete, ZERO_TOKEN).cpu()
        step = GeneratedStep(
            frame=frame.cpu(),
            p_yield=p_yield,
            drawn=column.cpu(),
            text=complete[:, 0],
            codes=complete[:, 1:],
            text_logits=None if text_logits is None else text_logits.cpu(),
            audio_logits=audio_logits.cpu(),
        )
        if gate is not None:
            gate.observe(step)
        return step


@dataclass
class Generation:
    """T talking frames (`generate`), aligned like ModelOutput: text_logits[:, k] and audio_logits[:, j, k] are what
    text[:, k] and codes[:, j, k] were drawn from."""

    text: Tensor  # [B, T] long  the self's text (-1 when text generation is off)
    codes: Tensor  # [B, 8, T] long  the self's audio codes, un-delayed; -1 where a codebook's frame was never drawn
    p_yield: Tensor  # [B, T] float32
    text_logits: Tensor | None  # [B, T, text_card] with keep_logits and text generation
    audio_logits: Tensor | None  # [B, 8, T, card] with keep_logits


@torch.no_grad()
def generate(
    model: Model,
    other_codes: Tensor,
    other_face: Tensor,
    face_present: Tensor,
    sampling: Sampling = GREEDY,
    text: bool = True,
    generator: torch.Generator | None = None,
    keep_logits: bool = False,
    uniforms: Tensor | None = None,
    gate: FloorGate | None = None,
) -> Generation:
    """The model talks as self for T frames while the interlocutor's frames are given: other_codes [B, 8, T],
    other_face [B, T, 61], face_present [B, T]. Greedy by default (`Sampling` for draws).

    `uniforms` [B, T + 1, 9]: the random numbers of every draw (position, then text and codebooks 0–7; rows given
    equal numbers are paired, see `TurnYieldStream.generate_step`); `gate`: floor control (`FloorGate`). Every frame
    is complete: the acoustic codebooks of the last max(delays) frames come from one more draw at
    position T (codebooks with larger delays than that stay -1). `Model.forward(text, codes, other_codes, ...)` on the
    result reproduces `text_logits` and `audio_logits` (the tokens drawn are its teacher forcing) and `p_yield`.

    Against kyutai's `LMGen` (greedy = `use_sampling=False`): its call c ≥ 1 receives the interlocutor's frame c − 1
    (the first call's input is replaced by initial tokens), its output after call c is the self's frame c − 1, and its
    text token of call c is our text[c]; our frame k here is its calls k (draw) and k + 1 (read frame k).
    """
    if other_codes.dim() != 3:
        raise ValueError(f"other_codes must be [B, 8, T], got shape {tuple(other_codes.shape)}")
    B, _, T = other_codes.shape
    if tuple(other_face.shape) != (B, T, N_FACE) or tuple(face_present.shape) != (B, T):
        raise ValueError(
            f"other_face must be {[B, T, N_FACE]} and face_present {[B, T]}, got {tuple(other_face.shape)} and "
            f"{tuple(face_present.shape)}"
        )
    if uniforms is not None and tuple(uniforms.shape) != (B, T + 1, 1 + N_CODEBOOKS):
        raise ValueError(f"uniforms must be {[B, T + 1, 1 + N_CODEBOOKS]}, got {list(uniforms.shape)}")
    cfg = model.cfg
    stream = TurnYieldStream(model, B)
    p_yield, drawn, text_logits, audio_logits = [], [], [], []
    for k in range(T):
        out = stream.generate_step(
            other_codes[:, :, k], other_face[:, k], face_present[:, k], sampling, text, generator,
            None if uniforms is None else uniforms[:, k], gate,
        )  # fmt: skip
        p_yield.append(out.p_yield)
        drawn.append(out.drawn)
        if keep_logits:
            text_logits.append(out.text_logits)
            audio_logits.append(out.audio_logits)
    # position T: the acoustic codebooks of the last frames (the semantic token drawn here belongs to no frame)
    last = None if uniforms is None else uniforms[:, T].to(stream.device)
    column, last_text_logits, last_audio_logits = stream._sample(sampling, text, generator, last)
    drawn.append(column.cpu())
    if keep_logits:
        text_logits.append(None if last_text_logits is None else last_text_logits.cpu())
        audio_logits.append(last_audio_logits.cpu())

    def by_frame(per_position: Tensor, delay: int, fill: float) -> Tensor:
        """[B, T + 1, ...] drawn at positions 0..T → [B, T, ...] by frame: position k holds frame k − delay."""
        out = per_position.new_full((B, T, *per_position.shape[2:]), fill)
        n = max(0, min(T, T + 1 - delay))
        out[:, :n] = per_position[:, delay : delay + n]
        return out

    delays = cfg.delays[: 1 + N_CODEBOOKS]
    positions = torch.stack(drawn, dim=1)  # [B, T + 1, 9]
    tokens = torch.stack([by_frame(positions[:, :, s], d, ZERO_TOKEN) for s, d in enumerate(delays)], dim=1)
    text_out = audio_out = None
    if keep_logits:
        audio = torch.stack(audio_logits, dim=1)  # [B, T + 1, 8, card]
        audio_out = torch.stack([by_frame(audio[:, :, j], d, 0.0) for j, d in enumerate(delays[1:])], dim=1)
        if text:
            text_out = by_frame(torch.stack(text_logits, dim=1), delays[0], 0.0)
    return Generation(
        text=tokens[:, 0],
        codes=tokens[:, 1:],
        p_yield=torch.stack(p_yield, dim=1),
        text_logits=text_out,
        audio_logits=audio_out,
    )


# ------------------------------------------------------------------------------------------------------- alerts
class AlertTrigger:
    """Hand-over alerts from per-frame P(yield) with hysteresis: an alert fires when P rises to `threshold` or above
    and re-arms only once P has fallen below threshold − hysteresis, so a probability hovering at the threshold
    raises one alert, not one per frame."""

    def __init__(self, threshold: float = 0.5, hysteresis: float = 0.1):
        if not 0.0 < threshold < 1.0:
            raise FaceturnError(f"threshold must lie in (0, 1), got {threshold}")
        if not 0.0 <= hysteresis < threshold:
            raise FaceturnError(f"hysteresis must lie in [0, threshold={threshold}), got {hysteresis}")
        self.threshold, self.hysteresis = threshold, hysteresis
        self.armed = True

    def update(self, p: float) -> bool:
        """Feed one frame's P(yield); True when an alert fires on this frame."""
        if not math.isfinite(p):
            raise ValueError(f"P(yield) must be finite, got {p}")
        if self.armed and p >= self.threshold:
            self.armed = False
            return True
        if not self.armed and p < self.threshold - self.hysteresis:
            self.armed = True
        return False


@dataclass(frozen=True)
class AlertScore:
    """Alerts against real hand-overs. An alert at frame a announces the hand-overs in (a, a + horizon] (the turn-
    yield target's window); an alert that announces none is false. A hand-over's lead is the time from the first
    alert announcing it."""

    n_handovers: int
    n_announced: int
    median_lead_s: float | None  # None when no hand-over was announced
    n_alerts: int
    n_false: int
    handover_leads_s: tuple[float | None, ...]  # per hand-over, in order; None where none was announced

    @property
    def leads_s(self) -> tuple[float, ...]:
        """Per announced hand-over, in order."""
        return tuple(lead for lead in self.handover_leads_s if lead is not None)


def score_alerts(alert_frames: Sequence[int], handover_frames: Sequence[int], horizon_frames: int) -> AlertScore:
    """Score alert frames against hand-over frames (both frame indices) with the turn-yield horizon."""
    if horizon_frames < 1:
        raise ValueError(f"horizon_frames must be >= 1, got {horizon_frames}")
    alerts, handovers = sorted(int(a) for a in alert_frames), sorted(int(h) for h in handover_frames)
    handover_leads: list[float | None] = []
    for h in handovers:  # the first alert a with h − horizon <= a < h
        i = bisect_left(alerts, h - horizon_frames)
        handover_leads.append(frames_to_seconds(h - alerts[i]) if i < len(alerts) and alerts[i] < h else None)
    leads = [lead for lead in handover_leads if lead is not None]
    n_true = 0
    for a in alerts:  # the first hand-over after a, within the horizon
        j = bisect_right(handovers, a)
        n_true += j < len(handovers) and handovers[j] <= a + horizon_frames
    return AlertScore(
        n_handovers=len(handovers),
        n_announced=len(leads),
        median_lead_s=float(np.median(leads)) if leads else None,
        n_alerts=len(alerts),
        n_false=len(alerts) - n_true,
        handover_leads_s=tuple(handover_leads),
    )
