"""The study report: `report.md`, a self-contained `report.html` (every figure embedded) and the per-conversation
media it links to (viewer pages, MP4s), all written from `results.json` and the files it names.

The report is a list of blocks (heading, paragraph, table, figure, links) rendered twice, to Markdown and to HTML,
so both say exactly the same. Paragraph text may use `code` and **bold**; nothing else is interpreted.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from faceturn.eval.predict import Predictions
from faceturn.eval.timing import LABELS as TIMING_LABELS
from faceturn.eval.timing import METRICS as TIMING_METRICS
from faceturn.io import atomic_write_text
from faceturn.results import GroupReading, format_estimate, format_reading, robust_groups
from faceturn.store import Corpus
from faceturn.synth.truth import OBSERVABLE_SNR, planted_expectations
from faceturn.timebase import frames_to_seconds
from faceturn.viz.figures import (
    auc_figure,
    load_timeline,
    logo_figure,
    probe_figure,
    roc_figure,
    rows_from_bootstrap,
    rows_from_probe,
    takeover_figure,
    timeline_figure,
)
from faceturn.viz.video import render_video
from faceturn.viz.viewer import write_viewer

TIMELINE_WINDOW_S = (0.0, 40.0)  # the demo timeline figure shows the first 40 s of a test conversation
MEDIA_WINDOW_S = 60.0  # MP4s cover the first minute; viewer pages the whole conversation


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Figure:
    stem: str  # relative to the study folder, without .png / .svg
    caption: str


@dataclass(frozen=True)
class Links:
    items: tuple[tuple[str, str], ...]  # (text, relative href)


Block = Heading | Para | Table | Figure | Links


# ------------------------------------------------------------------------------------------------------- renderers
def render_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Table):
            out.append("\n".join(["| " + " | ".join(b.header) + " |", "|" + "---|" * len(b.header)]
                                 + ["| " + " | ".join(r) + " |" for r in b.rows]))  # fmt: skip
        elif isinstance(b, Figure):
            out.append(f"![{b.caption}]({b.stem}.png)\n\n*{b.caption}* ([SVG]({b.stem}.svg))")
        else:
            out.append("\n".join(f"- [{text}]({href})" for text, href in b.items))
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Escape, then `code` → <code>, **bold** → <strong>."""
    s = html.escape(text)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f3f3f3; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-style: italic; color: #555; font-size: 0.9em; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def render_html(blocks: list[Block], root: Path, title: str) -> str:
    """A self-contained page: figures are embedded as PNG data URIs read from `root`."""
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Figure):
            png = base64.b64encode((root / f"{b.stem}.png").read_bytes()).decode("ascii")
            img = f'<img alt="{html.escape(b.caption)}" src="data:image/png;base64,{png}">'
            body.append(f'<figure data-stem="{html.escape(b.stem)}">{img}<figcaption>{_inline(b.caption)}</figcaption>'
                        "</figure>")  # fmt: skip
        else:
            items = "".join(f'<li><a href="{html.escape(h)}">{_inline(t)}</a></li>' for t, h in b.items)
            body.append(f"<ul>{items}</ul>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")  # fmt: skip


# ----------------------------------------------------------------------------------------------------- formatting
def fmt_group(block: dict[str, Any] | None) -> str:
    """A leave-one-out cell: the ΔAUC, or for a group zeroed by default its 0 and the measured added-back ΔAUC."""
    if block and block.get("zeroed_by_default"):
        return f"0 (zeroed by default); added back: {format_estimate(block['added_back'], signed=True)}"
    return format_estimate(block, signed=True)


def headline_rows(results: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The study's headline table: one row per figure, one column per corpus."""
    corpora = list(results["corpora"])
    att = results["attribution"]["corpora"]
    rows: list[tuple[str, ...]] = []

    def row(label: str, get, digits: int = 3, signed: bool = False) -> None:
        rows.append((label, *(format_estimate(get(c), digits, signed) for c in corpora)))

    c = results["corpora"]
    row("step 1 · face probe AUC", lambda k: c[k]["step1"]["probe"])
    row("step 1 · control: shuffled labels", lambda k: c[k]["step1"]["controls"]["shuffled"])
    row("step 1 · control: circularly shifted labels", lambda k: c[k]["step1"]["controls"]["circular_shift"])
    row("step 2 · vanilla ΔNLL semantic (zeroed − face, nats)", lambda k: c[k]["step2"].get("delta_nll_semantic"),
        4, True)  # fmt: skip
    row("step 2 · vanilla ΔNLL acoustic (nats)", lambda k: c[k]["step2"].get("delta_nll_acoustic"), 4, True)
    row("step 2 · vanilla KL semantic (nats)", lambda k: c[k]["step2"].get("kl_semantic"), 4)
    row("step 2 · vanilla hidden-state yield probe ΔAUC (face − zeroed)",
        lambda k: c[k]["step2"]["hidden_probe_delta"], 3, True)  # fmt: skip
    row("step 2 · vanilla readout-gain ratio (face Δh / random)", lambda k: c[k]["step2"].get("readout_gain_audio"))
    row("step 3 · aux AUC, face", lambda k: c[k]["step3"]["all"]["face"])
    row("step 3 · aux AUC, face zeroed", lambda k: c[k]["step3"]["all"]["zeroed"])
    row("step 3 · aux ΔAUC (face − zeroed)", lambda k: c[k]["step3"]["all"]["delta"], 3, True)
    for g in results["attribution"]["reading"]:
        rows.append((f"leave-one-out ΔAUC · {g} (retrained)",
                     *(fmt_group(att.get(k, {}).get("groups", {}).get(g)) for k in corpora)))  # fmt: skip
    if all("audio_only" in att.get(k, {}) for k in corpora):
        row("leave-one-out ΔAUC · whole face (audio-only model)", lambda k: att[k]["audio_only"], 3, True)
    for part, what in (("self_holds", "self holds"), ("interlocutor_holds", "interlocutor holds")):
        if all("audio" in c[k]["step2"].get("implicit_yield", {}).get("vanilla", {}) for k in corpora):
            row(f"step 2 · vanilla implicit yield signal ΔAUC (face − zeroed), {what}",
                lambda k, q=part: c[k]["step2"]["implicit_yield"]["vanilla"]["audio"][q].get("delta"),
                3, True)  # fmt: skip
    if all("step4" in c[k] for k in corpora):
        for model, policy, label in STEP4_TALKERS:
            if label == "aux":  # the headline shows the vanilla model and the gated aux model; the rest is below
                continue
            if not all(policy in c[k]["step4"]["models"][model]["policies"] for k in corpora):
                continue
            for metric, what in (("pause_takeover_rate", "take-over at pauses"),
                                 ("shift_takeover_rate", "take-over at turn ends")):  # fmt: skip
                for cond in ("face", "zeroed"):
                    row(f"step 4 · {label}: {what}, {cond}",
                        lambda k, m=model, p=policy, x=metric, q=cond: _step4(c[k], m, p, x, q))  # fmt: skip
        row("step 4 · voice reader frame accuracy", lambda k: c[k]["step4"]["reader"]["accuracy"])
    return ("figure", *corpora), rows


# step 4's talkers in the report: (model, policy, label); Moshi sampling (greedy decoding is reported in results.json)
STEP4_TALKERS = (("vanilla", "moshi", "vanilla"), ("aux-lm", "moshi", "aux"), ("aux-lm", "moshi+gate", "aux + gate"))


def _step4(block: dict[str, Any], model: str, policy: str, metric: str, cond: str) -> dict[str, Any] | None:
    """One step-4 number of a corpus block (None when absent or undefined)."""
    e = block["step4"]["models"][model]["policies"].get(policy, {}).get("metrics", {}).get(metric, {}).get(cond)
    return e if e and e.get("value") is not None else None


# ------------------------------------------------------------------------------------------------------- figures
def make_figures(results: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """Every summary figure and one timeline per corpus, under figures/ (PNG + SVG); returns name → stem."""

    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    corpora = list(results["corpora"])
    stems: dict[str, str] = {}

    def read(rel: str) -> Any:
        return json.loads((out_dir / rel).read_text())

    probe_src = {c: results["corpora"][c]["step1"]["probe"]["source"] for c in corpora}
    probe_figure({c: rows_from_probe(read(s), s) for c, s in probe_src.items()}, fig_dir / "probe")
    stems["probe"] = "figures/probe"
    step3_src = {c: results["corpora"][c]["step3"]["all"]["face"]["source"] for c in corpora}
    auc_figure({c: rows_from_bootstrap(read(s)["frames"]["all"], s) for c, s in step3_src.items()}, fig_dir / "auc")
    stems["auc"] = "figures/auc"
    preds = {c: Predictions.load(out_dir / results["corpora"][c]["step3"]["prediction_file"]) for c in corpora}
    roc_figure(preds, fig_dir / "roc")
    stems["roc"] = "figures/roc"
    att = results["attribution"]["corpora"]
    if att:

        def point(g: str, v: dict[str, Any]) -> dict[str, Any]:  # a group zeroed by default: its added-back model
            m, name = (v["added_back"], f"{g} (added back)") if v["zeroed_by_default"] else (v, g)
            return {"name": name, "value": m["value"], "lo": m["ci"][0], "hi": m["ci"][1]}

        series = {c: [point(g, v) for g, v in att[c]["groups"].items()] for c in att}
        readings = {g: GroupReading.from_json(r) for g, r in results["attribution"]["reading"].items()}
        logo_figure(series, fig_dir / "attribution", robust=robust_groups(readings))
        stems["attribution"] = "figures/attribution"
    if all("step4" in results["corpora"][c] for c in corpora):
        takeover_figure({c: _takeover_rows(results["corpora"][c]) for c in corpora}, fig_dir / "takeover")
        stems["takeover"] = "figures/takeover"
    for c in corpora:
        conv = preds[c].meta["conversations"][0]
        end_s = min(TIMELINE_WINDOW_S[1], _duration_s(preds[c], conv))
        data = load_timeline(preds[c], conv, start_s=TIMELINE_WINDOW_S[0], end_s=end_s)
        timeline_figure(data, fig_dir / f"timeline-{c}")
        stems[f"timeline-{c}"] = f"figures/timeline-{c}"
    return stems


def _takeover_rows(block: dict[str, Any]) -> list[dict[str, Any]]:
    """The take-over chart's rows of one corpus: each talker face and zeroed, and the recording's humans (a rate
    that is undefined, for want of an eligible event, is None and not drawn)."""

    def interval(e: dict[str, Any] | None) -> dict[str, Any] | None:
        if e is None or e.get("value") is None:
            return None
        ci = e.get("ci")
        return {"value": e["value"], "lo": ci[0] if ci else None, "hi": ci[1] if ci else None}

    rows = []
    for model, policy, label in STEP4_TALKERS:
        for cond in ("face", "zeroed"):
            rows.append(
                {
                    "name": f"{label}, {cond}",
                    **{
                        k: interval(_step4(block, model, policy, f"{k}_takeover_rate", cond))
                        for k in ("pause", "shift")
                    },
                }
            )
    ref = block["step4"]["corpus_reference"]
    rows.append({"name": "recording (humans)", **{k: interval(ref.get(f"{k}_takeover_rate"))
                                                  for k in ("pause", "shift")}})  # fmt: skip
    return rows


def _duration_s(pred: Any, conversation_id: str) -> float:
    """Length of a conversation of the corpus a `Predictions` was made for."""

    return frames_to_seconds(Corpus(pred.meta["corpus"]).entry(conversation_id).n_frames)


def make_media(results: dict[str, Any], out_dir: Path, n_conversations: int, progress: bool = True) -> list:
    """A viewer page (whole conversation) and an MP4 (its first minute) for the first `n_conversations` test
    conversations of each corpus, under media/; skipped when they exist. Returns (label, html, mp4) tuples."""

    out_dir = Path(out_dir)
    todo = []
    for c, b in results["corpora"].items():
        pred = Predictions.load(out_dir / b["step3"]["prediction_file"])
        todo += [(c, conv, pred) for conv in pred.meta["conversations"][:n_conversations]]
    made = []
    for c, conv, pred in tqdm(todo, desc="viewer pages and videos", unit="conversation", disable=not progress):
        page, mp4 = out_dir / "media" / f"{c}-{conv}.html", out_dir / "media" / f"{c}-{conv}.mp4"
        if not page.is_file():
            write_viewer(pred, conv, page)
        if not mp4.is_file():
            render_video(pred, conv, mp4, start_s=0.0, end_s=min(MEDIA_WINDOW_S, _duration_s(pred, conv)))
        made.append((f"{c} · {conv}", page.relative_to(out_dir).as_posix(), mp4.relative_to(out_dir).as_posix()))
    return made


# -------------------------------------------------------------------------------------------------------- report
def _planted_section(results: dict[str, Any]) -> list[Block]:

    synthetic = [c for c, b in results["corpora"].items() if b["synthetic"] and b.get("truth")]
    if not synthetic:
        return []
    blocks: list[Block] = [
        Heading("What was planted"),
        Para(f"**The corpora {', '.join(synthetic)} are synthetic**: generated by `faceturn synth`, with facial turn "
             "cues planted per group and observed through a camera-framing model. Their `truth.json` says what was "
             "put there; the table shows it. Strength = expected cue displacement per hand-over × the framing's "
             f"observation gain; SNR = strength / observation noise SD. A group counts as observable when its SNR ≥ "
             f"{OBSERVABLE_SNR:g}. Nothing here is real human behaviour; the point is to check that the study finds "
             "what is known to be there, and nothing else."),
    ]  # fmt: skip
    for c in synthetic:
        t = results["corpora"][c]["truth"]
        exp = planted_expectations(t)
        blocks.append(Para(f"`{c}`: preset `{t['preset']}`, framing `{t['framing']}`, generator seed {t['seed']}; "
                           f"audio turn-end cue reliability {t['audio_cue_reliability']:g}."))  # fmt: skip
        rows = tuple(
            (g, ", ".join(f"{x['cue']} (p {x['probability']:g}, {x['amplitude']:g} {x['units']})" for x in
                          t["groups"][g]["cues"]) or "none", f"{e['observation_gain']:g}", f"{e['strength']:.3f}",
             f"{e['snr']:.1f}", e["planted"])
            for g, e in exp.items()
        )  # fmt: skip
        blocks.append(Table(("group", "planted cues", "observation gain", "strength", "SNR", "class"), rows))
    return blocks


def _recovery_section(results: dict[str, Any]) -> list[Block]:
    checks = results.get("recovery") or []
    if not checks:
        return []
    n_ok = sum(c["ok"] for c in checks)
    verdict = ("The study recovered everything that was planted." if n_ok == len(checks) else
               f"The study recovered {n_ok} of {len(checks)} planted facts; the rows marked ✘ did not come out as "
               "planted (reported as measured, not tuned away).")  # fmt: skip
    rows = tuple((c["corpus"], c["claim"], c["expected"], c["found"], "✔" if c["ok"] else "✘") for c in checks)
    return [Heading("Did the study recover the planted truth?"), Para(f"**{verdict}**"),
            Table(("corpus", "claim", "expected (from truth.json)", "found", "agree"), rows)]  # fmt: skip


def _posthoc_section(results: dict[str, Any]) -> list[Block]:
    att = results["attribution"]["corpora"]
    if not att:
        return []
    corpora = list(att)
    norms = list(next(iter(att.values()))["posthoc"])
    blocks: list[Block] = [
        Heading("INVALID: post-hoc zeroing (shown only to expose the artifact)"),
        Para("**Every number in this section is invalid (`valid: false`)**: each model was trained with the group "
             "present and evaluated with it zeroed, so the drop mixes what the group tells the model with the shock "
             "of an input never seen in training. With the `layernorm` face encoder (the paper's), zeroing a few "
             "large channels, such as head translation (tens of cm, a per-clip constant), rescales every other "
             "channel, so a group that carries no information can show a large drop. The retrained columns are the "
             "valid measurement of the same thing."),
    ]  # fmt: skip
    for norm in norms:
        seeds = att[corpora[0]]["posthoc"][norm]["seeds"]
        blocks += [Para(f"Encoder `{norm}` (training seeds {seeds}):"), posthoc_table(results, norm)]
        for c in corpora:
            for g, r in att[c]["posthoc"][norm]["retrained"].items():
                if norm != results["attribution"]["main_norm"]:
                    blocks.append(Para(
                        f"{c}: the `{norm}` model reaches AUC {r['auc_with']:.3f} with {g} in its input and "
                        f"{r['auc_without']:.3f} when retrained without it; post-hoc zeroing of {g} on it gives "
                        f"{format_estimate(att[c]['posthoc'][norm]['groups'][g], signed=True)} (INVALID)."
                    ))  # fmt: skip
    return blocks


def posthoc_table(results: dict[str, Any], norm: str) -> Table:
    """Post-hoc zeroing (INVALID) next to the retrained value, per group and corpus, for one face encoder."""
    att = results["attribution"]["corpora"]
    corpora = list(att)
    header = ("group", *(h for c in corpora for h in (f"{c} post hoc (INVALID)", f"{c} retrained")))
    rows = tuple(
        (g, *(x for c in corpora for x in (format_estimate(att[c]["posthoc"][norm]["groups"][g], signed=True),
                                            format_estimate(att[c]["posthoc"][norm]["retrained"].get(g), signed=True))))
        for g in att[corpora[0]]["posthoc"][norm]["groups"]
    )  # fmt: skip
    return Table(header, rows)


def _headline_invalid(results: dict[str, Any]) -> list[Block]:
    """The post-hoc comparison for the paper's encoder (layernorm, when trained), labelled invalid."""
    att = results["attribution"]["corpora"]
    if not att:
        return []
    norms = list(next(iter(att.values()))["posthoc"])
    norm = "layernorm" if "layernorm" in norms else norms[0]
    return [Para(f"**INVALID, shown for contrast only**: post-hoc zeroing (ΔAUC when a group is zeroed at evaluation "
                 f"only) with the `{norm}` face encoder, next to the valid retrained value; see the INVALID section "
                 "below for why."), posthoc_table(results, norm)]  # fmt: skip


def _reader_text(reader: dict[str, Any]) -> str:
    """The voice reader's scores, as every result that uses it reports them."""
    return (f"frame accuracy {format_estimate(reader['accuracy'])}, AUC {format_estimate(reader['auc'])} (fitted on "
            f"`{reader['fit_split']}`, scored on `{reader['split']}`)")  # fmt: skip


def _implicit_rows(results: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    """Step 2's implicit-yield rows: per model and floor holder, AUC face, zeroed and Δ."""
    c = results["corpora"]
    corpora = list(c)
    models = list(dict.fromkeys(m for k in corpora for m in c[k]["step2"].get("implicit_yield", {})))
    scores = {
        "audio": {"self_holds": "P(self silent next), self holds",
                  "interlocutor_holds": "P(self talking next), interlocutor holds"},
        "text": {"self_holds": "P(PAD next), self holds", "interlocutor_holds": "1 − P(PAD next), interlocutor holds"},
    }  # fmt: skip
    rows = []
    signals = [x for x in scores if any(x in v for k in corpora for v in c[k]["step2"].get("implicit_yield",
                                                                                        {}).values())]  # fmt: skip
    for m, signal in ((m, x) for m in models for x in signals or ["audio"]):
        for part, what in scores[signal].items():
            for cond in ("face", "zeroed", "delta"):
                cells = []
                for k in corpora:
                    imp = c[k]["step2"].get("implicit_yield", {}).get(m, {})
                    e = imp.get(signal, {}).get(part, {}).get(cond)
                    missing = f"n/a: {imp['note']}" if "note" in imp else "n/a"
                    cells.append(format_estimate(e, 3, cond == "delta") if e else missing)
                rows.append((f"implicit yield AUC, {m}: {what}, {'Δ (face − zeroed)' if cond == 'delta' else cond}",
                             *cells))  # fmt: skip
    return tuple(rows)


def _step4_section(results: dict[str, Any], stems: dict[str, str]) -> list[Block]:
    """Step 4: what was done, the voice reader, one table per corpus, the figure and what changes with the face."""
    c = results["corpora"]
    corpora = [k for k in c if "step4" in c[k]]
    if not corpora:
        return []
    talk = results["study"]["talk"]
    seconds = f"the first {talk['max_seconds']:g} s of" if talk["max_seconds"] else "the whole of"
    blocks: list[Block] = [
        Heading("Step 4: does seeing the face change when the model talks?"),
        Para(f"The vanilla model and its aux twin (the same recipe plus the yield loss, so both have trained audio "
             f"heads) talk as self over {seconds} every `{results['split']}` conversation while the interlocutor's "
             f"recorded audio and face are replayed (open loop: the interlocutor does not react). Moshi's default "
             f"sampling with seeds {list(talk['seeds'])}" + (" and greedy decoding" if talk["greedy"] else "")
             + "; each run is talked with the face and with it zeroed, drawing the same random numbers, so the two "
             "differ only where the model's predictions do. **aux + gate**: the aux model may start talking while "
             "the interlocutor holds the floor only when its P(yield) reaches θ, chosen on the validation split. "
             "The model's speech is read from its generated codes by the voice-activity reader; a take-over is a "
             "non-backchannel IPU starting in the interlocutor's pause (VAP hold) or within "
             f"{results['study']['timing']['response_window_s']:g} s of its turn end (VAP shift). The table shows "
             "Moshi sampling; greedy decoding is in `results.json`."),
    ]  # fmt: skip
    for k in corpora:
        b = c[k]["step4"]
        gate = b["models"].get("aux-lm", {}).get("gate")
        blocks.append(
            Para(
                f"`{k}`: voice-activity reader {_reader_text(b['reader'])}"
                + (f"; gate θ face {gate['face']:.3f}, zeroed {gate['zeroed']:.3f}." if gate else ".")
            )
        )
        talkers = [t for t in STEP4_TALKERS if t[1] in b["models"][t[0]]["policies"]]
        header = ("metric", *(f"{label}: {h}" for _, _, label in talkers for h in ("face", "zeroed", "Δ")), "humans")
        rows = []
        for metric, (_, _, _, digits, signed, own) in TIMING_METRICS.items():
            cells = []
            for model, policy, _ in talkers:
                m = b["models"][model]["policies"][policy]["metrics"][metric]
                cells += [format_estimate(m.get(x) if m.get(x, {}).get("value") is not None else None, digits,
                                          signed or x == "delta") for x in ("face", "zeroed", "delta")]  # fmt: skip
            ref = b["corpus_reference"].get(metric) if own else None
            rows.append((TIMING_LABELS[metric], *cells, format_estimate(ref, digits, signed) if ref else ""))
        blocks.append(Table(header, tuple(rows)))
        blocks.append(Para(_step4_reading(k, b, talkers)))
        greedy = [(label, b["models"][m]["policies"][p.replace("moshi", "greedy")]) for m, p, label in talkers
                  if p.replace("moshi", "greedy") in b["models"][m]["policies"]]  # fmt: skip
        if greedy:
            human = format_estimate(b["corpus_reference"].get("speech_fraction"))
            blocks.append(Para("Greedy decoding, the share of frames the model speaks (face / zeroed): " + "; ".join(
                f"{label} {format_estimate(g['metrics']['speech_fraction']['face'])} / "
                f"{format_estimate(g['metrics']['speech_fraction']['zeroed'])}" for label, g in greedy)
                + f" (the recording's self: {human})."))  # fmt: skip
    if "takeover" in stems:
        blocks.append(Figure(stems["takeover"], "Step 4: take-over rate at the interlocutor's pauses and at its turn "
                             "ends, face (filled) vs zeroed (hollow), per model (Moshi sampling), with the recording's "
                             "humans; 95 % CIs."))  # fmt: skip
    return blocks


def _step4_reading(corpus: str, b: dict[str, Any], talkers) -> str:
    """In words, per talker: where the face changes the take-over rates (Δ CI excludes 0) and where it makes no
    detectable difference."""
    parts = []
    for model, policy, label in talkers:
        found = []
        for metric, what in (("pause_takeover_rate", "at pauses"), ("shift_takeover_rate", "at turn ends")):
            d = b["models"][model]["policies"][policy]["metrics"][metric].get("delta", {})
            if d.get("value") is None or d.get("ci") is None:
                found.append(f"{what} undefined (no eligible event)")
            elif d["ci"][0] > 0 or d["ci"][1] < 0:
                found.append(f"{what} {'higher' if d['value'] > 0 else 'lower'} with the face "
                             f"({format_estimate(d, signed=True)})")  # fmt: skip
            else:
                found.append(f"{what} no detectable difference ({format_estimate(d, signed=True)})")
        parts.append(f"{label}: take-over rate {'; '.join(found)}")
    return (
        f"**Reading, `{corpus}`** (Δ = face − zeroed, a difference only when its CI excludes 0): "
        + ". ".join(parts)
        + "."
    )


def _warnings(obj: Any) -> list[str]:
    """Every `warning` of the reported numbers (e.g. too few conversations for a meaningful CI)."""
    if isinstance(obj, dict):
        own = [obj["warning"]] if isinstance(obj.get("warning"), str) else []
        return own + [w for v in obj.values() for w in _warnings(v)]
    if isinstance(obj, list):
        return [w for v in obj for w in _warnings(v)]
    return []


def build_report(results: dict[str, Any], stems: dict[str, str], media: list) -> list[Block]:
    study = results["study"]
    corpora = list(results["corpora"])
    header, rows = headline_rows(results)
    att = results["attribution"]
    blocks: list[Block] = [
        Heading(f"faceturn study `{study['name']}`: does the model use the face, and which cues?", 1),
        Para(f"Corpora: {', '.join(corpora)}. Every number is a ROC-AUC or a difference with its 95 % CI from "
             f"{results['n_resamples']} conversation-cluster bootstrap resamples (seed {results['seed']}), on the "
             f"`{results['split']}` split unless stated. All numbers are in `results.json`, each with the file it was "
             "read from; the study's configuration is in `study.json`. Re-running the same command into a new folder "
             "reproduces them exactly."),
    ]  # fmt: skip
    warnings = sorted(set(_warnings(results)))
    if warnings:
        blocks.append(Para("⚠ " + "; ".join(warnings) + ". Cells marked ⚠ come from too few conversations for their "
                           "CI to mean much: read them as descriptive only."))  # fmt: skip
    blocks += _planted_section(results)
    blocks += [Heading("Headline"), Table(header, tuple(rows)), *_headline_invalid(results)]
    blocks += _recovery_section(results)

    c = results["corpora"]
    blocks += [
        Heading("Step 1: the face carries the signal"),
        Para("A logistic probe on standardized 13-frame (1.04 s) windows of the interlocutor's raw face, "
             "conversation-grouped cross-validation; label controls: i.i.d. shuffled, and circularly shifted within "
             "each conversation (keeps autocorrelation)."),
        Table(("probe", *corpora), tuple(
            [("all channels", *(format_estimate(c[k]["step1"]["probe"]) for k in corpora))]
            + [(f"control: {n.replace('_', ' ')}", *(format_estimate(c[k]["step1"]["controls"][n]) for k in corpora))
               for n in c[corpora[0]]["step1"]["controls"]]
            + [(f"{kind} {g}", *(format_estimate(c[k]["step1"][kind].get(g)) for k in corpora))
               for kind in ("only", "without") for g in c[corpora[0]]["step1"][kind]]
        )),
        Figure(stems["probe"], "Step 1: face-probe AUC and its label controls per corpus (95 % CIs)."),
        Heading("Step 2: a vanilla LM (no yield head)"),
        Para("Trained with next-token losses only. Zeroing the face: change of the self's audio next-token NLL and "
             "the KL between the two semantic predictions; frozen linear yield probes on hidden states with the face "
             "present vs zeroed; the readout-gain ratio (1 = the face moves hidden states in directions "
             "the audio readout sees as much as random directions; below 1 = in directions it ignores)."),
        Table(("measure", *corpora), tuple(
            (label, *(format_estimate(c[k]["step2"].get(key), d, s) for k in corpora))
            for label, key, d, s in (
                ("ΔNLL semantic (zeroed − face, nats)", "delta_nll_semantic", 4, True),
                ("ΔNLL acoustic (nats)", "delta_nll_acoustic", 4, True),
                ("ΔNLL text (nats)", "delta_nll_text", 4, True),
                ("KL semantic (nats)", "kl_semantic", 4, False),
                ("hidden-state yield probe AUC, face", "hidden_probe_face", 3, False),
                ("hidden-state yield probe AUC, face zeroed", "hidden_probe_zeroed", 3, False),
                ("hidden-state probe ΔAUC", "hidden_probe_delta", 3, True),
                ("readout-gain ratio, audio", "readout_gain_audio", 3, False),
            )
            if any(key in c[k]["step2"] for k in corpora)
        ) + _implicit_rows(results)),
        Para("The implicit yield signal is the LM's own next-token prediction used as a turn score: the probability "
             "that self is silent at the next frame (its semantic distribution summed over the voice reader's "
             "silence classes) where self holds the floor, and that it talks where the interlocutor holds it, "
             "against the turn-yield target; face vs zeroed, paired. Voice reader: " + "; ".join(
                 f"{k} {_reader_text(v['reader'])}" for k in corpora
                 for v in list(c[k]["step2"].get("implicit_yield", {}).values())[:1]) + "."),
        Heading("Step 3: the auxiliary yield head unlocks the face"),
        Para("The same architecture with the turn-yield head. Per-frame AUC with the face as given vs the whole face "
             "zeroed, paired over identical frames, overall and by who holds the floor; VAP-convention event "
             "metrics (shift/hold balanced accuracy with the threshold chosen on the validation split)."),
        Table(("frames", *corpora), tuple(
            (f"{part.replace('_', ' ')}: {cond}",
             *(format_estimate(c[k]["step3"].get(part, {}).get(cond), 3, cond == "delta") for k in corpora))
            for part in ("all", "self_holds", "interlocutor_holds") for cond in ("face", "zeroed", "delta")
        ) + tuple(
            (f"{part.replace('_', ' ')} AUC: {cond}", *(format_estimate(c[k]["step3"].get(part, {}).get(cond))
                                                       for k in corpora))
            for part in ("shift_hold", "shift_prediction") for cond in ("face", "zeroed")
        ) + tuple(
            (f"shift/hold balanced accuracy: {cond}",
             *(format_estimate(c[k]["step3"].get("shift_hold", {}).get(f"balanced_accuracy_{cond}")) for k in corpora))
            for cond in ("face", "zeroed")
        )),
        Figure(stems["auc"], "Step 3: P(yield) AUC with the face vs face zeroed (left) and the paired ΔAUC (right)."),
        Figure(stems["roc"], "Step 3: ROC curves on scored test frames, face (solid) and face zeroed (dashed)."),
    ]  # fmt: skip
    if att["corpora"]:
        acorpora = list(att["corpora"])
        blocks += [
            Heading("Which face groups matter: leave-one-group-out by retraining"),
            Para(f"One model per group with the group zeroed at train and evaluation (`{att['main_norm']}` face "
                 f"encoder), same data, budget and training seeds {att['seeds']}; ΔAUC = AUC(full) − AUC(group left "
                 "out), paired over identical frames. A group is robust only when its CI excludes zero on every "
                 "corpus. " + ("The CIs resample training seeds as well as conversations." if len(att["seeds"]) > 1
                               else "With one training seed the CIs cover the test conversations, not training "
                               "noise: two seeds of one model differ by a few thousandths of AUC, so effects of "
                               "that size are within it.")
                 + (f" The full model zeroes {', '.join(att['default_zero_groups'])} by default (a camera-setup "
                    "constant), so leaving it out changes nothing (0 by construction); the model retrained with it "
                    "added back gives the measured ΔAUC = AUC(with it) − AUC(full)."
                    if att["default_zero_groups"] else "")),
            Table(("group", *acorpora, "reading"), tuple(
                (g, *(fmt_group(att["corpora"][k]["groups"][g]) for k in acorpora),
                 format_reading(GroupReading.from_json(att["reading"][g])))
                for g in att["reading"]
            ) + ((("whole face (audio-only model)", *(format_estimate(att["corpora"][k].get("audio_only"), signed=True)
                                                     for k in acorpora), ""),)
                 if all("audio_only" in att["corpora"][k] for k in acorpora) else ())),
            Para("Ranking per corpus: " + "; ".join(f"{k}: {' > '.join(r)}" for k, r in att["ranking"].items())
                 + "."),
            Figure(stems["attribution"], "Leave-one-group-out ΔAUC per face group and corpus (95 % CIs); bold: "
                   "robust on every corpus; a group zeroed by default is shown added back."),
        ]  # fmt: skip
        blocks += _posthoc_section(results)
    blocks += _step4_section(results, stems)
    blocks += [Heading("Watching the model")]
    for k in corpora:
        stem = stems.get(f"timeline-{k}")
        if stem:
            blocks.append(Figure(stem, f"{k}: voice activity; P(yield) with the face and with it zeroed, hand-overs "
                                       "marked; the interlocutor's gaze, mouth and head rotation (first 40 s of a "
                                       "test conversation)."))  # fmt: skip
    if media:
        blocks.append(Para("Interactive viewers (sound in sync with the timeline, click to seek) and videos:"))
        links = [x for label, page, mp4 in media for x in ((f"{label}: viewer", page), (f"{label}: MP4", mp4))]
        blocks.append(Links(tuple(links)))
    return blocks


def write_report(results: dict[str, Any], out_dir: Path, *, progress: bool = True) -> tuple[Path, Path]:
    """Figures, media, report.md and report.html into `out_dir`; returns the two report paths."""
    out_dir = Path(out_dir)
    stems = make_figures(results, out_dir)
    n_media = int(results["study"].get("render_conversations", 0))
    media = make_media(results, out_dir, n_media, progress=progress) if n_media else []
    blocks = build_report(results, stems, media)
    md, page = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md, render_markdown(blocks))
    atomic_write_text(page, render_html(blocks, out_dir, f"faceturn study {results['study']['name']}"))
    return md, page


def format_headline(results: dict[str, Any]) -> str:
    """The headline table as Markdown, for the terminal."""
    header, rows = headline_rows(results)
    return render_markdown([Table(header, tuple(rows)), *_headline_invalid(results)]).rstrip()
