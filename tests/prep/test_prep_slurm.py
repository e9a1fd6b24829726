"""`faceturn prepare --executor slurm --shards N` on a real one-node SLURM (tests/slurm_cluster.py): the shards run
as one job array and the corpus is byte for byte the one a local run writes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers missing: pip install -e '.[prep]'")
pytest.importorskip("silero_vad", reason="silero-vad missing: pip install silero-vad")

from fixtures_prep import speech_track, write_live_link_csv, write_wav

from faceturn.cli import main

pytestmark = pytest.mark.xdist_group("slurm")  # one test cluster: its tests run in one pytest worker


def test_preparation_by_shards_on_slurm_writes_the_local_corpus(slurm_cluster, mimi_dir, tmp_path, capsys):
    root = tmp_path / "takes"
    for session in range(3):
        for name, span, seed in (("alice", (0.5, 1.5), 1), ("bob", (1.8, 2.8), 2)):
            write_wav(root / f"s{session}" / f"{name}.wav", speech_track(3.0, 48000, [span], seed + session), 48000)
            write_live_link_csv(root / f"s{session}" / f"{name}.csv", 90, np.linspace(0, 1, 90), seed / 10)
    common = ["prepare", "livelink", "--root", str(root), "--mimi", str(mimi_dir), "--device", "cpu", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "local")]) == 0
    slurm = ["--executor", "slurm", "--shards", "2", "--cpus-per-run", "1", "--mem-gb", "1", "--poll-s", "0.3"]
    assert main([*common, "--out", str(tmp_path / "slurm"), *slurm]) == 0
    assert "3 conversations" in capsys.readouterr().out
    for name in ("manifest.jsonl", *(f"s{i}.safetensors" for i in range(3))):
        found = list((tmp_path / "slurm").rglob(name))
        assert len(found) == 1, name
        rel = found[0].relative_to(tmp_path / "slurm")
        assert found[0].read_bytes() == (tmp_path / "local" / rel).read_bytes(), rel
    shards = sorted(p.name for p in (tmp_path / "slurm" / "shards").iterdir())
    assert shards == ["0-of-1.json", "0-of-2.json", "1-of-2.json"]  # the two shards, and the manifest's run here
    record = (tmp_path / "slurm" / "slurm" / "jobs.json").read_text()
    assert main([*common, "--out", str(tmp_path / "slurm"), *slurm]) == 0  # again: no shard is submitted
    assert (tmp_path / "slurm" / "slurm" / "jobs.json").read_text() == record
    assert "found 3 already done" in capsys.readouterr().out
