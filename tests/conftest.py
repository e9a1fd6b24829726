"""Shared fixtures: a headless Chromium (see browser.py), one torch thread per module, and a small synthetic corpus
with sound plus a prediction file for it, for the figure, video and viewer tests.

The prediction file follows `faceturn predict`'s contract (every frame of both perspectives, the true labels) with
P(yield) made from the labels (higher before hand-overs with the face than zeroed), so the pictures have structure to
check without training a model; the trained path is covered by an end-to-end test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from browser import launch_chromium


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): micro models gain
    nothing from intra-op threads, and on a shared CPU their barriers cost 10x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the session (skips, or fails under CI, when none is available)."""
    with launch_chromium() as browser:
        yield browser


@dataclass(frozen=True)
class VizData:
    corpus: Path  # synthetic corpus with audio/<id>.wav
    pred: Path  # prediction file for all its conversations
    ids: list[str]
    silent_corpus: Path  # the same generator settings without --audio (sound is regenerated)
    silent_pred: Path


def write_label_predictions(corpus: Path, out: Path, seed: int = 0) -> Path:
    """A prediction file for every conversation of `corpus`: true labels, P(yield) derived from them plus noise."""
    from faceturn.eval.predict import FORMAT, Predictions
    from faceturn.labels import turn_labels
    from faceturn.store import Corpus

    store = Corpus(corpus)
    ids = store.ids()
    rng = np.random.default_rng(seed)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("p_face", "p_zeroed", "y", "m", "holder", "conversation",
                                                         "perspective", "frame")}  # fmt: skip
    for ci, conv_id in enumerate(ids):
        lab = turn_labels(np.asarray(store.load(conv_id).va, np.float32))
        n = lab.y.size
        for s in (0, 1):
            cols["p_face"].append(np.clip(0.25 + 0.6 * lab.y + 0.15 * rng.standard_normal(n), 0, 1).astype(np.float32))
            cols["p_zeroed"].append(np.clip(0.35 + 0.2 * lab.y + 0.2 * rng.standard_normal(n), 0, 1).astype(np.float32))
            cols["y"].append(lab.y.astype(np.uint8))
            cols["m"].append(lab.m.astype(bool))
            cols["holder"].append(lab.floor_relative(s))
            cols["conversation"].append(np.full(n, ci, np.int32))
            cols["perspective"].append(np.full(n, s, np.int8))
            cols["frame"].append(np.arange(n, dtype=np.int32))
    meta = {"format": FORMAT, "corpus": str(Path(corpus).resolve()), "split": "all", "checkpoint": "labels+noise",
            "conversations": ids}  # fmt: skip
    Predictions(meta=meta, **{k: np.concatenate(v) for k, v in cols.items()}).save(out)
    return out


@pytest.fixture(scope="session")
def viz_data(tmp_path_factory) -> VizData:
    from faceturn.synth import generate_corpus, load_preset

    root = tmp_path_factory.mktemp("viz")
    overrides = ["floor.duration_min_s=20.0", "floor.duration_max_s=26.0", "framing.dropouts_per_min=6.0"]
    cfg = load_preset("tight", overrides)  # 20-26 s conversations with hand-overs and face dropouts in view
    generate_corpus(cfg, root / "corpus", n_conversations=2, seed=5, audio=True, progress=False)
    generate_corpus(cfg, root / "silent", n_conversations=1, seed=5, audio=False, progress=False)
    from faceturn.store import Corpus

    return VizData(
        corpus=root / "corpus",
        pred=write_label_predictions(root / "corpus", root / "pred.npz"),
        ids=Corpus(root / "corpus").ids(),
        silent_corpus=root / "silent",
        silent_pred=write_label_predictions(root / "silent", root / "silent_pred.npz"),
    )


@dataclass(frozen=True)
class FaceVideo:
    """A 29.97 fps clip whose yellow square moves left to right at constant speed, so its x tells the time."""

    path: Path
    duration_s: float
    width_px: int = 160
    height_px: int = 120
    square_px: int = 20

    def square_x_px(self, time_s: float) -> int:
        """Left edge of the square at `time_s`."""
        return int(float(time_s) / self.duration_s * (self.width_px - self.square_px))


@pytest.fixture(scope="session")
def face_video(tmp_path_factory, viz_data) -> FaceVideo:
    """A face-video stand-in as long as the first conversation of viz_data."""
    from fractions import Fraction

    import av

    from faceturn.store import Corpus

    n_frames = Corpus(viz_data.corpus).entry(viz_data.ids[0]).n_frames
    video = FaceVideo(tmp_path_factory.mktemp("video") / "face.mp4", n_frames * 0.08)
    fps = Fraction(30000, 1001)
    w, h, sq = video.width_px, video.height_px, video.square_px
    with av.open(str(video.path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(int(video.duration_s * fps)):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 1] = 80
            x = video.square_x_px(i / fps)
            img[h // 2 - sq // 2 : h // 2 + sq // 2, x : x + sq] = (255, 255, 0)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, 1 / fps
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return video


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real one-node SLURM cluster on localhost for the session (skips, or fails under CI, when it cannot start);
    see slurm_cluster.py."""
    from slurm_cluster import start_cluster

    with start_cluster() as cluster:
        yield cluster
