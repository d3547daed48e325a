"""Multi-process training through torchrun: 2 CPU processes on gloo train one step together."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.tsm.store import load_model


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_one_step(tiny_data: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "VCAT_DATA_DIR": str(tmp_path / "var"),
        "VCAT_MODEL_DIR": str(tmp_path / "models"),
        "VCAT_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "vcat.cli", "train", str(tiny_data), "--out", "ddp", "--segments", "2",
        "--input-size", "32", "--batch-size", "2", "--epochs", "1", "--max-steps", "1",
        "--val-fraction", "0",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    _, meta = load_model("ddp", root=tmp_path / "models")
    assert meta.provenance["world_size"] == 2
    assert meta.provenance["steps"] == 1
    # Each process saw its own half of the 8 clips (DistributedSampler), one step of 2 clips.
    assert (tmp_path / "var" / "train" / "ddp" / "checkpoint.pt").is_file()
