import dataclasses

import pytest

from faceturn.config import ConfigError, apply_overrides, from_dict, load_toml, to_dict


@dataclasses.dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    groups: tuple[str, ...] = ("head_trans",)


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    steps: int = 10
    name: str = "x"
    compile: bool = False
    dropout: float | None = None


def test_overrides_are_type_checked_and_nested():
    cfg = apply_overrides(Outer(), ["inner.lr=3e-4", "steps=20", "compile=true", 'inner.groups=["brow","eye_gaze"]'])
    assert cfg == Outer(Inner(3e-4, ("brow", "eye_gaze")), 20, "x", True)
    assert apply_overrides(Outer(), ["dropout=0.1"]).dropout == 0.1
    with pytest.raises(ConfigError, match="steps: expected an integer"):
        apply_overrides(Outer(), ["steps=ten"])
    with pytest.raises(ConfigError, match="unknown config key 'inner.lrr'"):
        apply_overrides(Outer(), ["inner.lrr=1"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(Outer(), ["steps"])


def test_round_trip_through_dict_and_toml(tmp_path):
    cfg = Outer(Inner(0.5, ("a",)), 3, "run", True, 0.2)
    assert from_dict(Outer, to_dict(cfg)) == cfg
    path = tmp_path / "c.toml"
    path.write_text('steps = 7\n[inner]\nlr = 0.25\ngroups = ["brow"]\n')
    assert load_toml(Outer, path, ["name=y"]) == Outer(Inner(0.25, ("brow",)), 7, "y")
    path.write_text("stepz = 7\n")
    with pytest.raises(ConfigError, match=r"c\.toml: unknown config key 'stepz'"):
        load_toml(Outer, path)
    with pytest.raises(ConfigError, match="not found"):
        load_toml(Outer, tmp_path / "missing.toml")
