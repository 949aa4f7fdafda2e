"""Tests of the benchmark scripts: the performance report runs end to end at its --quick shapes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "report.py"
STAGES = ["fbank", "forward-beats-b8", "forward-beats-b1", "forward-sslam-b8", "forward-sslam-b1", "finetune-beats",
          "finetune-sslam", "embed-beats", "embed-sslam", "score-knn", "score-gmm", "score-ae", "score-ldn",
          "scoring-stage", "fusion-offline", "fusion-online", "online-clip"]


def test_report_quick_has_every_stage(tmp_path):
    # one thread: the plumbing is under test, and two OpenMP threads on two shared cores can stall on each other
    out = tmp_path / "report.json"
    cmd = [sys.executable, str(REPORT), "--quick", "--reps", "2", "--threads", "1", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    blob = json.loads(out.read_text())
    rows = {r["stage"]: r for r in blob["rows"]}
    assert list(rows) == STAGES
    for name, r in rows.items():
        assert "error" not in r, (name, r.get("error"))
        assert r["flops"] > 0 and r["time_s"] > 0 and r["peak_mb"] > 0, (name, r)
        assert r["floor_s"] == pytest.approx(r["flops"] / blob["matmul_gflops"]["used"]["cpu"] / 1e9)
        assert r["ratio"] == pytest.approx(r["time_s"] / r["floor_s"])
    start, end = blob["matmul_gflops"]["start"]["cpu"], blob["matmul_gflops"]["end"]["cpu"]
    assert blob["matmul_gflops"]["used"]["cpu"] == max(start, end) > 0
    assert {t["target"] for t in blob["targets"]} >= {"scoring time < 90 s", "online median <= 2.0 s per 10 s clip"}
    for name in STAGES:
        assert name in proc.stdout
    assert blob["machine"]["torch"] == torch.__version__


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_report_cuda_without_a_gpu_exits_2():
    proc = subprocess.run([sys.executable, str(REPORT), "--device", "cuda", "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
