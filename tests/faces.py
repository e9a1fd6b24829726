"""Random A61 faces that pass the schema's range checks, for tests that write corpora."""

from __future__ import annotations

import numpy as np

from faceturn.schema import CHANNEL_INDEX, GAZE, HEAD_ROTATION, HEAD_TRANSLATION, gaze_vector


def valid_face(rng: np.random.Generator, n_frames: int, present_rate: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Faces of both participants within the schema's ranges, zeros where the face is absent: (face float16 [2, T,
    61], face_present uint8 [2, T])."""
    face = np.zeros((2, n_frames, 61), np.float32)
    face[..., :52] = rng.random((2, n_frames, 52))
    face[..., [CHANNEL_INDEX[c] for c in HEAD_ROTATION]] = rng.normal(0, 0.3, (2, n_frames, 3))
    face[..., [CHANNEL_INDEX[c] for c in HEAD_TRANSLATION]] = rng.normal(0, 40, (2, n_frames, 3))
    face[..., [CHANNEL_INDEX[c] for c in GAZE]] = gaze_vector(*rng.normal(0, 0.3, (2, 2, n_frames)))
    present = (rng.random((2, n_frames)) < present_rate).astype(np.uint8)
    face[present == 0] = 0
    return face.astype(np.float16), present
