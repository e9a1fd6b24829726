"""The study's figures, each a pure function of prediction files or of plain data read from result files.

Every figure is written twice, `<stem>.png` (reports, videos) and `<stem>.svg` (papers), atomically. matplotlib is
imported inside the functions and draws on an Agg canvas directly (no pyplot, so no global figure state).

**Interval series**, the input of the summary charts: a mapping from corpus name to a list of rows,

    {"tight": [{"name": "face", "value": 0.905, "lo": 0.89, "hi": 0.92}, ...], "wide": [...]}

where `value` is a finite number and `lo`/`hi` its confidence interval (both None for a point without one).
`rows_from_bootstrap` turns a `BootstrapResult.to_dict()` block into rows, `rows_from_probe` a `run_probe` result.
"""

from __future__ import annotations

import io
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceturn.config import from_dict
from faceturn.errors import FaceturnError
from faceturn.eval.predict import Predictions
from faceturn.io import atomic_write_bytes
from faceturn.labels import EventConfig, turn_labels
from faceturn.schema import CHANNEL_INDEX, GROUP_NAMES
from faceturn.stats import roc_auc
from faceturn.store import Corpus
from faceturn.timebase import FRAME_S, duration_to_frames, time_to_frame

SELF_COLOR = "#0072B2"  # Okabe-Ito palette (colour-blind safe)
OTHER_COLOR = "#D55E00"
FACE_COLOR = "#009E73"
ZEROED_COLOR = "#666666"
GROUP_COLORS = {"eye_gaze": "#CC79A7", "jaw_mouth": "#E69F00", "head_rot": "#56B4E9"}
SERIES_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
DPI = 150  # PNG resolution of saved figures

_GX, _GY, _GZ = (CHANNEL_INDEX[n] for n in ("gaze_x", "gaze_y", "gaze_z"))
# The face channels the timeline shows (gaze, mouth, head rotation: the cues expected to announce a hand-over), as
# (label with unit, group, function of the face [T, 61] float32). Gaze angles are read back from the head-frame unit
# vector (schema.gaze_vector).
FACE_LANES: tuple[tuple[str, str, Any], ...] = (
    ("gaze yaw (°)", "eye_gaze", lambda f: np.degrees(np.arctan2(f[:, _GX], f[:, _GZ]))),
    ("gaze pitch (°)", "eye_gaze", lambda f: np.degrees(-np.arcsin(np.clip(f[:, _GY], -1.0, 1.0)))),
    ("jawOpen", "jaw_mouth", lambda f: f[:, CHANNEL_INDEX["jawOpen"]]),
    ("head pitch (°)", "head_rot", lambda f: np.degrees(f[:, CHANNEL_INDEX["head_pitch"]])),
    ("head yaw (°)", "head_rot", lambda f: np.degrees(f[:, CHANNEL_INDEX["head_yaw"]])),
)


# ---------------------------------------------------------------------------------------------------------------------
# the demo timeline


@dataclass(frozen=True)
class TimelineData:
    """One conversation window from one perspective, on the 12.5 Hz grid: everything the timeline draws."""

    corpus: str  # corpus name (manifest), for titles
    corpus_root: str  # the corpus folder the streams were read from
    conversation_id: str
    perspective: int  # the participant the model speaks as (self); the face shown is the other's
    participants: tuple[str, str]  # participant ids
    start_frame: int  # first frame of the window
    va: np.ndarray  # [2, T] float32 voiced fraction of each frame, participant 0 and 1
    p_face: np.ndarray  # [T] float32 P(yield) with the face; NaN where the file has no prediction
    p_zeroed: np.ndarray  # [T] float32 P(yield) with the face zeroed
    scored: np.ndarray  # [T] bool scored frames (a floor holder exists and the horizon fits)
    handover_frames: np.ndarray  # [n] int64 hand-over frames inside the window (absolute frame index)
    handover_to: np.ndarray  # [n] int8 incoming participant of each hand-over
    face: dict[str, np.ndarray]  # FACE_LANES label -> [T] float32 of the interlocutor; NaN where no face was tracked

    @property
    def n_frames(self) -> int:
        return int(self.va.shape[1])

    @property
    def start_s(self) -> float:
        return self.start_frame * FRAME_S

    @property
    def end_s(self) -> float:
        return (self.start_frame + self.n_frames) * FRAME_S

    @property
    def time_s(self) -> np.ndarray:
        """[T] start time of each frame, in seconds from the conversation's start."""
        return (self.start_frame + np.arange(self.n_frames)) * FRAME_S


def frame_window(n_frames: int, start_s: float | None, end_s: float | None, source: str) -> tuple[int, int]:
    """[start, stop) frames of a window given in seconds (None: the conversation's start or end)."""
    duration_s = n_frames * FRAME_S
    start = 0 if start_s is None else time_to_frame(start_s)
    stop = n_frames if end_s is None else duration_to_frames(end_s)
    if start_s is not None and not 0 <= start_s < duration_s:
        raise FaceturnError(f"{source}: start {start_s} s is outside the conversation (0 to {duration_s:.2f} s)")
    if end_s is not None and not 0 < end_s <= duration_s + 1e-9:
        raise FaceturnError(f"{source}: end {end_s} s is outside the conversation (0 to {duration_s:.2f} s)")
    if stop <= start or (start_s is not None and end_s is not None and end_s <= start_s):
        raise FaceturnError(f"{source}: the window [{start_s}, {end_s}] s is empty")
    return start, stop


def load_timeline(
    pred: str | Path | Any,
    conversation_id: str,
    *,
    perspective: int = 0,
    start_s: float | None = None,
    end_s: float | None = None,
    corpus: str | Path | None = None,
) -> TimelineData:
    """Read one conversation's predictions (a `faceturn predict` file or a loaded `Predictions`) and its corpus
    streams (`corpus`, default: the corpus the file names; another corpus than the one the predictions were made
    from is refused) into a TimelineData for [start_s, end_s)."""
    source = str(pred) if isinstance(pred, str | Path) else f"predictions for {pred.meta.get('corpus')}"
    p = Predictions.load(pred) if isinstance(pred, str | Path) else pred
    if perspective not in (0, 1):
        raise FaceturnError(f"{source}: perspective must be 0 or 1, got {perspective!r}")
    ids = list(p.meta.get("conversations", []))
    if conversation_id not in ids:
        some = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        raise FaceturnError(f"{source}: no conversation {conversation_id!r} (the file has {len(ids)}: {some})")
    ci = ids.index(conversation_id)
    rows = (p.conversation == ci) & (p.perspective == perspective)
    if not rows.any():
        raise FaceturnError(f"{source}: no rows for conversation {conversation_id!r} from perspective {perspective}")
    store = Corpus(p.corpus_root(corpus))  # the corpus the predictions were made from (manifest fingerprint)
    conv = store.load(conversation_id)
    n = conv.n_frames
    frames = p.frame[rows]
    if frames.min() < 0 or frames.max() >= n:
        raise FaceturnError(
            f"{source}: conversation {conversation_id!r} has frames up to {int(frames.max())} but the corpus file "
            f"{store.root / store.entry(conversation_id).file} has {n} (predictions for another corpus?)"
        )
    start, stop = frame_window(n, start_s, end_s, source)
    p_face = np.full(n, np.nan, np.float32)
    p_zeroed = np.full(n, np.nan, np.float32)
    scored = np.zeros(n, bool)
    p_face[frames], scored[frames] = p.p_face[rows], p.m[rows]
    p_zeroed[frames] = p.require_zeroed("the timeline")[rows]
    labels_cfg = p.meta.get("train_config", {}).get("labels")
    event_cfg = from_dict(EventConfig, labels_cfg) if labels_cfg else EventConfig()
    lab = turn_labels(np.asarray(conv.va, np.float32), event_cfg)
    inside = (lab.shift_frames >= start) & (lab.shift_frames < stop)
    other = 1 - perspective
    face = np.asarray(conv.face[other, start:stop], np.float32)
    absent = np.asarray(conv.face_present[other, start:stop]) == 0
    lanes = {}
    for label, _, fn in FACE_LANES:
        x = fn(face).astype(np.float32)
        x[absent] = np.nan
        lanes[label] = x
    entry = store.entry(conversation_id)
    return TimelineData(
        corpus=entry.corpus,
        corpus_root=str(store.root),
        conversation_id=conversation_id,
        perspective=perspective,
        participants=(entry.participants[0], entry.participants[1]),
        start_frame=start,
        va=np.asarray(conv.va[:, start:stop], np.float32),
        p_face=p_face[start:stop],
        p_zeroed=p_zeroed[start:stop],
        scored=scored[start:stop],
        handover_frames=lab.shift_frames[inside].astype(np.int64),
        handover_to=lab.shift_to[inside].astype(np.int8),
        face=lanes,
    )


def _edges(data: TimelineData) -> np.ndarray:
    return (data.start_frame + np.arange(data.n_frames + 1)) * FRAME_S


def _steps(x: np.ndarray) -> np.ndarray:
    """Values for `step="post"` drawing over frame edges: the last frame's value holds to the window's end."""
    return np.append(x, x[-1])


def draw_timeline(fig, data: TimelineData, title: str | None = None) -> list:
    """Draw the three panels on a matplotlib Figure; returns the axes (top to bottom), which share the time axis."""
    if data.n_frames < 1:
        raise ValueError(f"conversation {data.conversation_id!r}: the timeline window has no frames")
    ax_va, ax_p, ax_face = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [1.0, 1.6, 1.9]})
    t = _edges(data)
    me, other = data.perspective, 1 - data.perspective
    names = {me: f"self ({data.participants[me]})", other: f"interlocutor ({data.participants[other]})"}
    colors = {me: SELF_COLOR, other: OTHER_COLOR}

    # top: who speaks (self on top), as filled voiced fraction
    for lane, s in ((1, me), (0, other)):
        ax_va.fill_between(t, lane, lane + 0.8 * _steps(data.va[s]), step="post", color=colors[s], linewidth=0)
    ax_va.set_yticks([0.4, 1.4], [names[other], names[me]], fontsize=8)
    ax_va.set_ylim(-0.1, 1.9)
    ax_va.set_title("voice activity", loc="left", fontsize=9)

    # middle: the model's belief
    ax_p.plot(t, _steps(data.p_face), drawstyle="steps-post", color=FACE_COLOR, lw=1.4, label="P(yield) with the face")
    ax_p.plot(t, _steps(data.p_zeroed), drawstyle="steps-post", color=ZEROED_COLOR, lw=1.1, ls="--",
              label="P(yield), face zeroed")  # fmt: skip
    ax_p.set_ylim(-0.02, 1.02)
    ax_p.set_ylabel("P(yield)", fontsize=8)

    # bottom: the interlocutor's face, one lane per channel scaled to its 1–99 % range in the window
    n_lanes = len(FACE_LANES)
    ticks, tick_labels = [], []
    for i, (label, group, _) in enumerate(FACE_LANES):
        lane = n_lanes - 1 - i
        x = data.face[label]
        finite = np.isfinite(x)
        lo, hi = np.percentile(x[finite], [1, 99]) if finite.any() else (0.0, 0.0)
        span = hi - lo if hi - lo > 1e-9 else 1.0
        y = lane + 0.1 + 0.8 * np.clip((x - lo) / span, 0.0, 1.0)
        ax_face.plot(t, _steps(y), drawstyle="steps-post", color=GROUP_COLORS[group], lw=1.0)
        ticks.append(lane + 0.5)
        tick_labels.append(f"{label} [{lo:.3g}, {hi:.3g}]")
    ax_face.set_yticks(ticks, tick_labels, fontsize=7)
    ax_face.set_ylim(-0.1, n_lanes + 0.1)
    ax_face.set_title(f"the interlocutor's face ({data.participants[other]}); gaps: no face tracked", loc="left",
                      fontsize=9)  # fmt: skip
    ax_face.set_xlabel("time (s)", fontsize=8)

    # hand-overs on every panel
    for k, to in zip(data.handover_frames.tolist(), data.handover_to.tolist(), strict=True):
        for ax in (ax_va, ax_p, ax_face):
            ax.axvline(k * FRAME_S, color=colors[to], lw=0.9, ls=":", alpha=0.9)
    from matplotlib.lines import Line2D

    handles, _ = ax_p.get_legend_handles_labels()
    handles += [Line2D([], [], color=colors[s], lw=0.9, ls=":", label=f"hand-over to {names[s].split()[0]}")
                for s in (me, other)]  # fmt: skip
    ax_p.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=7, ncol=4, frameon=False,
                borderaxespad=0.1)  # fmt: skip
    for ax in (ax_va, ax_p, ax_face):
        ax.set_xlim(t[0], t[-1])
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.25)
    fig.suptitle(title or f"{data.corpus} · {data.conversation_id} · the model speaks as participant {me}", fontsize=10)
    return [ax_va, ax_p, ax_face]


def _new_figure(width_in: float, height_in: float, dpi: float = DPI):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, out_stem: str | Path) -> tuple[Path, Path]:
    """Write `<out_stem>.png` and `<out_stem>.svg` atomically (the stem is used as given: dots stay)."""
    import matplotlib

    paths = []
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        with matplotlib.rc_context({"svg.hashsalt": "faceturn"}):  # deterministic SVG ids
            fig.savefig(buf, format=ext, dpi=DPI, metadata={"Date": None} if ext == "svg" else None)
        path = Path(f"{out_stem}.{ext}")
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths[0], paths[1]


def timeline_figure(data: TimelineData, out_stem: str | Path, *, title: str | None = None) -> tuple[Path, Path]:
    """The demo figure: voice activity, P(yield) with face and zeroed with hand-overs, the interlocutor's face."""
    width_in = min(16.0, max(9.0, 0.12 * data.n_frames * FRAME_S + 6.0))
    fig = _new_figure(width_in, 6.5)
    draw_timeline(fig, data, title)
    return save_figure(fig, out_stem)


@dataclass(frozen=True)
class TimelineImage:
    """The timeline rendered to pixels, with where its time axis lies (for compositing a playhead)."""

    rgb: np.ndarray  # [H, W, 3] uint8
    start_s: float  # time at x = plot_left_px
    end_s: float  # time at x = plot_right_px
    plot_left_px: float
    plot_right_px: float
    plot_top_px: float  # top of the first panel (row index)
    plot_bottom_px: float  # bottom of the last panel

    def x_px(self, time_s: float | np.ndarray) -> float | np.ndarray:
        """Pixel column of a time (seconds from the conversation's start)."""
        frac = (np.asarray(time_s) - self.start_s) / (self.end_s - self.start_s)
        return self.plot_left_px + frac * (self.plot_right_px - self.plot_left_px)


def timeline_image(data: TimelineData, width_px: int, height_px: int, dpi: float = 100.0) -> TimelineImage:
    """Render the timeline once to an RGB array of exactly width_px × height_px."""
    if width_px < 200 or height_px < 150:
        raise ValueError(f"timeline image of {width_px}×{height_px} px is too small (at least 200×150)")
    fig = _new_figure(width_px / dpi, height_px / dpi, dpi)
    axes = draw_timeline(fig, data)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    h = rgb.shape[0]
    x0, _ = axes[0].transData.transform((data.start_s, 0.0))
    x1, _ = axes[0].transData.transform((data.end_s, 0.0))
    return TimelineImage(
        rgb=rgb,
        start_s=data.start_s,
        end_s=data.end_s,
        plot_left_px=float(x0),
        plot_right_px=float(x1),
        plot_top_px=float(h - axes[0].get_window_extent().y1),
        plot_bottom_px=float(h - axes[-1].get_window_extent().y0),
    )


# ---------------------------------------------------------------------------------------------------------------------
# summary charts (interval series)


def _number(x: Any) -> bool:
    return isinstance(x, int | float | np.floating | np.integer) and not isinstance(x, bool) and math.isfinite(x)


def check_series(series: Any, what: str) -> dict[str, list[dict[str, Any]]]:
    """Validate an interval series (see the module docstring); ValueError names `what`, the corpus and the row."""
    if not isinstance(series, Mapping) or not series:
        raise ValueError(f"{what}: expected a non-empty mapping corpus -> rows, got {type(series).__name__}")
    out = {}
    for corpus, rows in series.items():
        where = f"{what}, corpus {corpus!r}"
        if not isinstance(corpus, str) or not corpus:
            raise ValueError(f"{what}: corpus names must be non-empty strings, got {corpus!r}")
        if isinstance(rows, str | bytes) or not isinstance(rows, Sequence) or not rows:
            raise ValueError(f"{where}: expected a non-empty list of rows")
        checked = []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping) or not isinstance(row.get("name"), str) or "value" not in row:
                raise ValueError(f"{where}, row {i}: expected {{'name': str, 'value': float, 'lo', 'hi'}}, got {row!r}")
            value, lo, hi = row["value"], row.get("lo"), row.get("hi")
            if not _number(value):
                raise ValueError(f"{where}, row {row['name']!r}: value {value!r} is not a finite number")
            if (lo is None) != (hi is None):
                raise ValueError(f"{where}, row {row['name']!r}: give both lo and hi, or neither")
            if lo is not None and not (_number(lo) and _number(hi) and lo <= hi):
                raise ValueError(f"{where}, row {row['name']!r}: CI [{lo!r}, {hi!r}] is not finite with lo <= hi")
            checked.append({"name": row["name"], "value": float(value), "lo": None if lo is None else float(lo),
                            "hi": None if hi is None else float(hi)})  # fmt: skip
        names = [r["name"] for r in checked]
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: row names repeat ({names})")
        out[corpus] = checked
    return out


def rows_from_bootstrap(block: Mapping[str, Any], source: str = "bootstrap result") -> list[dict[str, Any]]:
    """Rows for each condition of a `BootstrapResult.to_dict()` block, plus a row named "delta" when it has one."""
    try:
        rows = [
            {"name": c, "value": v, "lo": block["ci"][c][0], "hi": block["ci"][c][1]} for c, v in block["auc"].items()
        ]
        if block.get("delta") is not None:
            rows.append({"name": "delta", "value": block["delta"], "lo": block["delta_ci"][0],
                         "hi": block["delta_ci"][1]})  # fmt: skip
    except (KeyError, TypeError, IndexError) as e:
        raise FaceturnError(f"{source}: not a bootstrap result block (auc, ci, delta, delta_ci): missing {e}") from None
    return rows


def rows_from_probe(result: Mapping[str, Any], source: str = "probe result") -> list[dict[str, Any]]:
    """Rows for the all-channel face probe and its label controls, from a `run_probe` result."""
    try:
        parts = [("face probe", result["probes"]["all"])]
        parts += [(f"control: {k.replace('_', ' ')}", v) for k, v in result["controls"].items()]
        return [{"name": n, "value": r["auc"], "lo": r["ci"][0], "hi": r["ci"][1]} for n, r in parts]
    except (KeyError, TypeError, IndexError) as e:
        raise FaceturnError(f"{source}: not a probe result (probes.all, controls): missing {e}") from None


def _dot_whisker(ax, series: dict[str, list[dict]], x_of: str) -> list[str]:
    """Points with CI whiskers. x_of="name": categories are row names, one colour per corpus; "corpus": the reverse.
    Returns the category labels in x order."""
    pairs = [(c, r) for c, rows in series.items() for r in rows]
    cats = list(dict.fromkeys(r["name"] if x_of == "name" else c for c, r in pairs))
    hues = list(dict.fromkeys(c if x_of == "name" else r["name"] for c, r in pairs))
    width = 0.7 / max(1, len(hues))
    for j, hue in enumerate(hues):
        xs, ys, err_lo, err_hi = [], [], [], []
        for c, r in pairs:
            cat, h = (r["name"], c) if x_of == "name" else (c, r["name"])
            if h != hue:
                continue
            xs.append(cats.index(cat) + (j - (len(hues) - 1) / 2) * width)
            ys.append(r["value"])
            err_lo.append(0.0 if r["lo"] is None else max(0.0, r["value"] - r["lo"]))
            err_hi.append(0.0 if r["hi"] is None else max(0.0, r["hi"] - r["value"]))
        color = SERIES_COLORS[j % len(SERIES_COLORS)]
        ax.errorbar(xs, ys, yerr=[err_lo, err_hi], fmt="o", color=color, capsize=3, ms=5, lw=1.2, label=hue)
    ax.set_xticks(range(len(cats)), cats, fontsize=8)
    ax.set_xlim(-0.6, len(cats) - 0.4)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return cats


def auc_figure(series: Mapping[str, Sequence[Mapping]], out_stem: str | Path, *, title: str | None = None):
    """Face vs face-zeroed ROC-AUC per corpus with CIs (left) and the paired ΔAUC per corpus (right, rows named
    "delta"; the panel is left out when no corpus has one). Rows: e.g. `rows_from_bootstrap(frames["all"])`."""
    checked = check_series(series, "AUC chart")
    aucs = {c: [r for r in rows if r["name"] != "delta"] for c, rows in checked.items()}
    deltas = {c: [{**r, "name": "face − zeroed"} for r in rows if r["name"] == "delta"] for c, rows in checked.items()}
    aucs = {c: rows for c, rows in aucs.items() if rows}
    deltas = {c: rows for c, rows in deltas.items() if rows}
    if not aucs:
        raise ValueError("AUC chart: no AUC rows (only rows named 'delta')")
    fig = _new_figure(4.0 + 1.2 * len(checked) + (3.0 if deltas else 0.0), 3.6)
    axes = fig.subplots(1, 2, width_ratios=[1.6, 1.0]) if deltas else [fig.subplots()]
    _dot_whisker(axes[0], aucs, x_of="corpus")
    axes[0].axhline(0.5, color="#999999", lw=0.8, ls=":")
    axes[0].set_ylabel("ROC-AUC (scored frames)", fontsize=8)
    axes[0].set_title("P(yield) with the face vs face zeroed", fontsize=9)
    if deltas:
        _dot_whisker(axes[1], deltas, x_of="corpus")
        axes[1].axhline(0.0, color="#999999", lw=0.8)
        axes[1].set_ylabel("ΔAUC (paired, 95% CI)", fontsize=8)
        axes[1].set_title("what the face adds", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_stem)


def logo_figure(
    series: Mapping[str, Sequence[Mapping]],
    out_stem: str | Path,
    *,
    robust: Collection[str] = (),
    title: str | None = None,
):
    """Leave-one-group-out attribution: ΔAUC (all groups − group zeroed by retraining) per face group (row name) and
    corpus, with CIs. The groups named in `robust` (the study's cross-corpus reading, `faceturn.results.read_group`)
    get a bold label."""
    checked = check_series(series, "attribution chart")
    order = {g: i for i, g in enumerate(GROUP_NAMES)}
    ordered = {c: sorted(rows, key=lambda r: order.get(r["name"], len(order))) for c, rows in checked.items()}
    n_groups = len({r["name"] for rows in checked.values() for r in rows})
    fig = _new_figure(3.0 + 1.1 * n_groups, 3.8)
    ax = fig.subplots()
    cats = _dot_whisker(ax, ordered, x_of="name")
    robust = set(robust)
    for label in ax.get_xticklabels():
        if label.get_text() in robust:
            label.set_fontweight("bold")
    ax.axhline(0.0, color="#999999", lw=0.8)
    ax.set_ylabel("ΔAUC when the group is left out", fontsize=8)
    note = "bold: CI above 0 on every corpus" if robust & set(cats) else "no group's CI is above 0 on every corpus"
    ax.set_title(f"leave-one-group-out (retrained) · {note}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_stem)


def probe_figure(series: Mapping[str, Sequence[Mapping]], out_stem: str | Path, *, title: str | None = None):
    """Step 1: the face probe's AUC and its label controls per corpus (rows: `rows_from_probe(result)`), chance 0.5."""
    checked = check_series(series, "probe chart")
    n_names = len({r["name"] for rows in checked.values() for r in rows})
    fig = _new_figure(3.0 + 1.4 * n_names, 3.6)
    ax = fig.subplots()
    _dot_whisker(ax, checked, x_of="name")
    ax.axhline(0.5, color="#999999", lw=0.8, ls=":")
    ax.set_ylabel("ROC-AUC (out-of-fold, 95% CI)", fontsize=8)
    ax.set_title("does the interlocutor's face alone predict a hand-over?", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_stem)


def roc_points(y: np.ndarray, scores: np.ndarray, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) of every distinct threshold, thinned to about `max_points`."""
    order = np.argsort(-scores, kind="stable")
    s, pos = scores[order], y[order].astype(bool)
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(pos)[last_of_tie]
    fp = np.cumsum(~pos)[last_of_tie]
    tpr, fpr = np.r_[0.0, tp / tp[-1]], np.r_[0.0, fp / fp[-1]]
    if fpr.size > max_points:
        keep = np.unique(np.r_[np.linspace(0, fpr.size - 1, max_points).astype(np.int64), fpr.size - 1])
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr


def roc_figure(predictions: Mapping[str, Any], out_stem: str | Path, *, title: str | None = None):
    """ROC curves on scored frames, face (solid) and face zeroed (dashed), one colour per entry of `predictions`
    (label -> prediction file path or loaded `Predictions`)."""
    if not isinstance(predictions, Mapping) or not predictions:
        raise ValueError("ROC chart: expected a non-empty mapping label -> prediction file")
    fig = _new_figure(5.2, 4.8)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls=":")
    for j, (label, pred) in enumerate(predictions.items()):
        source = str(pred) if isinstance(pred, str | Path) else f"predictions {label!r}"
        p = Predictions.load(pred) if isinstance(pred, str | Path) else pred
        scored = p.m.astype(bool)
        y = p.y[scored].astype(bool)
        if y.all() or not y.any():
            raise FaceturnError(f"{source}: {int(y.sum())} of {y.size} scored frames are positive; ROC is undefined")
        color = SERIES_COLORS[j % len(SERIES_COLORS)]
        for cond, scores, ls in (("face", p.p_face, "-"), ("zeroed", p.require_zeroed("the ROC chart"), "--")):
            fpr, tpr = roc_points(y, scores[scored])
            auc = roc_auc(y, scores[scored])
            ax.plot(fpr, tpr, color=color, ls=ls, lw=1.3, label=f"{label}, {cond} (AUC {auc:.3f})")
    ax.set_xlabel("false positive rate", fontsize=8)
    ax.set_ylabel("true positive rate", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.005)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title or "per-frame turn-yield ROC", fontsize=9)
    return save_figure(fig, out_stem)


def takeover_figure(
    series: Mapping[str, Sequence[Mapping[str, Any]]], out_stem: str | Path, *, title: str | None = None
) -> tuple[Path, Path]:
    """Step 4: the take-over rate at the interlocutor's pauses and at its turn ends, one panel per corpus, one point
    with its CI per talker (a model, face or zeroed, gated or not, and the recording's humans).

    `series`: corpus → rows {"name": str, "pause": interval or None, "shift": interval or None}, an interval being
    {"value", "lo", "hi"} as in an interval series (None: undefined, e.g. no eligible event; not drawn); a name ending
    in "zeroed" is drawn hollow. A corpus without any defined rate gets an empty panel saying so."""
    if not isinstance(series, Mapping) or not series:
        raise ValueError("take-over chart: expected a non-empty mapping corpus -> rows")
    checked = {}
    for corpus, rows in series.items():
        flat = [{"name": f"{r['name']} @ {k}", **r[k]} for r in rows for k in ("pause", "shift") if r.get(k)]
        checked[corpus] = check_series({corpus: flat}, "take-over chart")[corpus] if flat else []
    fig = _new_figure(2.5 + 3.6 * len(checked), 4.2)
    axes = fig.subplots(1, len(checked), squeeze=False)[0]
    for ax, (corpus, rows) in zip(axes, checked.items(), strict=True):
        names = list(dict.fromkeys(r["name"].rsplit(" @ ", 1)[0] for r in rows))
        models = list(dict.fromkeys(n.rsplit(",", 1)[0] for n in names))
        width = 0.8 / max(1, len(names))
        for j, name in enumerate(names):
            color = SERIES_COLORS[models.index(name.rsplit(",", 1)[0]) % len(SERIES_COLORS)]
            hollow = name.endswith("zeroed")
            for x, kind in enumerate(("pause", "shift")):
                r = next((r for r in rows if r["name"] == f"{name} @ {kind}"), None)
                if r is None:
                    continue
                lo = 0.0 if r["lo"] is None else max(0.0, r["value"] - r["lo"])
                hi = 0.0 if r["hi"] is None else max(0.0, r["hi"] - r["value"])
                x_shift = x + (j - (len(names) - 1) / 2) * width
                ax.errorbar([x_shift], [r["value"]], yerr=[[lo], [hi]], fmt="o", color=color,
                            mfc="white" if hollow else color, capsize=3, ms=5, lw=1.2, label=name)  # fmt: skip
        if not rows:
            ax.text(0.5, 0.5, "no eligible pause or turn end", ha="center", va="center", fontsize=8,
                    transform=ax.transAxes)  # fmt: skip
        ax.set_xticks([0, 1], ["at pauses (holds)\nlower is better", "at turn ends (shifts)"], fontsize=8)
        ax.set_xlim(-0.6, 1.6)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylabel("take-over rate (95% CI)", fontsize=8)
        ax.set_title(corpus, fontsize=9)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        if unique:
            ax.legend(unique.values(), unique.keys(), fontsize=6, loc="upper left")
    fig.suptitle(title or "does seeing the face change when the model takes the floor? (filled: face; hollow: zeroed)",
                 fontsize=9)  # fmt: skip
    return save_figure(fig, out_stem)
