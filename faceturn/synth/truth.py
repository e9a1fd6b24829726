"""The planted truth of a synthetic corpus (`truth.json`), and how to read it: what the generator put in each face
group and whether the camera framing leaves enough of it for a model to see.

The study checks its findings against this file: a group whose cue is observable should matter to a model, a group
with nothing planted should not.
"""

from __future__ import annotations

import math
from typing import Any

from faceturn.config import to_dict
from faceturn.synth.config import SynthConfig
from faceturn.synth.floor import expected_statistics

TRUTH_FILE = "truth.json"
OBSERVABLE_SNR = 2.0  # planted cue per hand-over × observation gain, over the observation noise SD, to count as seen

_GROUP_CUES = {"eye_gaze": ("gaze_return",), "head_rot": ("turn_end_head", "listener_head"),
               "jaw_mouth": ("listener_mouth",), "brow": (), "cheek_nose": (), "head_trans": ()}  # fmt: skip
_CUE_UNITS = {"gaze_return": "rad of gaze angle", "turn_end_head": "rad of head pitch",
              "listener_head": "rad of head pitch", "listener_mouth": "jawOpen"}  # fmt: skip


def corpus_truth(cfg: SynthConfig, seed: int, n_conversations: int) -> dict[str, Any]:
    """The planted truth of a corpus: per face group the cues (probability, amplitude, units) and the framing's
    observation noise; the audio cue reliability; the expected floor statistics; the full config."""
    groups = {}
    for g, cue_names in _GROUP_CUES.items():
        planted = []
        for name in cue_names:
            cue = getattr(cfg.cues, name)
            amp = cue.amplitude * (cfg.face.avert_yaw_rad if name == "gaze_return" else 1.0)
            planted.append({"cue": name, "probability": cue.probability, "amplitude": amp, "units": _CUE_UNITS[name],
                            "lead_s": [cue.lead_min_s, cue.lead_max_s]})  # fmt: skip
        obs = getattr(cfg.framing, g)
        groups[g] = {
            "cue_strength": sum(c["probability"] * c["amplitude"] for c in planted),  # mean displacement per hand-over
            "cues": planted,
            "observation_gain": obs.gain,
            "observation_noise_sd": obs.noise_sd,
            "observation_drift_sd": obs.drift_sd,
        }
    return {
        "generator": "faceturn.synth",
        "preset": cfg.name,
        "framing": cfg.framing.name,
        "seed": seed,
        "conversations": n_conversations,
        "audio_cue_reliability": cfg.audio.cue_reliability,
        "audio_cue_false_alarm_prob": cfg.audio.cue_false_alarm_prob,
        "groups": groups,
        "expected_statistics": expected_statistics(cfg),
        "config": to_dict(cfg),
    }


def planted_expectations(truth: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per face group, what the generator planted and whether a model can see it: `strength` = expected cue
    displacement per hand-over × the framing's observation gain; `snr` = strength over the observation noise SD
    (drift included). Groups: "none" (nothing planted), "weak" (planted, snr < OBSERVABLE_SNR: no expectation either
    way), "observable" (a model that uses it should show ΔAUC > 0)."""
    out = {}
    for g, t in truth["groups"].items():
        strength = t["cue_strength"] * t["observation_gain"]
        noise = math.hypot(t["observation_noise_sd"], t["observation_drift_sd"])
        snr = strength / noise if noise > 0 else (math.inf if strength > 0 else 0.0)
        kind = "none" if t["cue_strength"] == 0 else ("observable" if snr >= OBSERVABLE_SNR else "weak")
        out[g] = {"cue_strength": t["cue_strength"], "observation_gain": t["observation_gain"],
                  "strength": strength, "snr": snr, "planted": kind}  # fmt: skip
    return out
