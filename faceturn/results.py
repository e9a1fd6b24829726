"""Typed results shared by every step, the report, the figures and results.json.

An `Estimate` is one reported number: its value, 95 % CI, the number of conversations the CI resamples, and the file
it was read from. A `GroupReading` is the cross-corpus verdict on one face group, decided in one place
(`read_group`) from whether its CI lies above zero on each corpus. Prose is produced only by the formatters here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class Estimate:
    value: float
    ci: tuple[float, float] | None = None  # 95 % percentile CI
    n: int | None = None  # conversations (bootstrap clusters) behind the CI
    source: str = ""  # the file it was read from, relative to the study folder
    warning: str | None = None  # e.g. too few conversations for a meaningful CI (faceturn.stats.few_conversations)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Estimate:
        ci = data.get("ci")
        return cls(float(data["value"]), None if ci is None else (float(ci[0]), float(ci[1])), data.get("n"),
                   data.get("source", ""), data.get("warning"))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": float(self.value), "ci": None if self.ci is None else [*map(float, self.ci)]}
        if self.n is not None:
            out["n"] = int(self.n)
        out["source"] = self.source
        if self.warning:
            out["warning"] = self.warning
        return out

    @property
    def above_zero(self) -> bool:
        """The CI lies above zero: the effect is detectable (and positive)."""
        return self.ci is not None and self.ci[0] > 0


def format_estimate(
    e: Estimate | Mapping[str, Any] | None, digits: int = 3, signed: bool = False, seed_sd: float | None = None
) -> str:
    """The one cell format: '0.812 [0.801, 0.823]' (signed: '+0.067 [+0.057, +0.076]'), with ', seed SD 0.004'
    when the estimate averages training seeds, and ' ⚠' when it carries a warning (see `warning_lines`); 'n/a' when
    absent."""
    if isinstance(e, Mapping):
        e = Estimate.from_json(e) if e.get("value") is not None else None
    if e is None:
        return "n/a"
    f = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    text = f.format(e.value) if e.ci is None else f"{f.format(e.value)} [{f.format(e.ci[0])}, {f.format(e.ci[1])}]"
    return text + (f", seed SD {seed_sd:.3f}" if seed_sd is not None else "") + (" ⚠" if e.warning else "")


def warning_lines(warnings: Sequence[str]) -> list[str]:
    """Footnotes for a table whose cells are marked ⚠."""
    return ["", *(f"⚠ {w}: read the marked CIs as descriptive only." for w in warnings)] if warnings else []


class Reading(StrEnum):
    """The cross-corpus verdict on a face group (leave-one-group-out ΔAUC by retraining)."""

    ROBUST = "robust"  # CI above zero on every corpus
    CORPUS_DEPENDENT = "corpus-dependent"  # above zero on some corpora, not all
    NO_EFFECT = "no detectable effect"  # above zero on none
    DEFAULT_HELPS = "zeroed by default; adding it back helps"  # the model retrained with it added back gains
    DEFAULT_NO_HELP = "zeroed by default; adding it back does not help"


@dataclass(frozen=True)
class GroupReading:
    reading: Reading
    corpora: tuple[str, ...] = ()  # where the CI lies above zero

    def to_json(self) -> dict[str, Any]:
        return {"reading": self.reading.value, "corpora": list(self.corpora)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GroupReading:
        return cls(Reading(data["reading"]), tuple(data["corpora"]))


def read_group(above_zero: Mapping[str, bool], zeroed_by_default: bool) -> GroupReading:
    """The verdict from whether the group's CI is above zero on each corpus (for a group zeroed by default: the
    added-back model's)."""
    where = tuple(c for c, v in above_zero.items() if v)
    if zeroed_by_default:
        return GroupReading(Reading.DEFAULT_HELPS if where else Reading.DEFAULT_NO_HELP, where)
    if where and len(where) == len(above_zero):
        return GroupReading(Reading.ROBUST, where)
    return GroupReading(Reading.CORPUS_DEPENDENT if where else Reading.NO_EFFECT, where)


def format_reading(r: GroupReading) -> str:
    """'robust', 'corpus-dependent (used on tight only)', 'zeroed by default; adding it back helps on wide', ..."""
    where = ", ".join(r.corpora)
    if r.reading is Reading.CORPUS_DEPENDENT:
        return f"corpus-dependent (used on {where} only)"
    if r.reading is Reading.DEFAULT_HELPS:
        return f"zeroed by default; adding it back helps on {where}"
    return r.reading.value


def robust_groups(readings: Mapping[str, GroupReading]) -> list[str]:
    return [g for g, r in readings.items() if r.reading is Reading.ROBUST]


def groups_reading(readings: Mapping[str, GroupReading], *kinds: Reading) -> Sequence[str]:
    return [g for g, r in readings.items() if r.reading in kinds]
