"""Faults at study scale (issue 23): benchmarks/study_faults.py on the local SLURM cluster with a few seeded faults
of every kind (cancelled, requeued and SIGKILLed jobs, a second invocation, a truncated checkpoint, a restarted
controller, a full disk): the study is re-invoked until done and matches the fault-free study bit for bit."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slurm


def test_a_micro_study_survives_injected_faults_bit_identical(slurm_cluster, tmp_path):
    kinds = ["scancel", "requeue", "sigkill", "reinvoke", "truncate", "full_disk"]
    if (slurm_cluster.dir / "slurmctld.pid").exists():   # the local cluster's own daemons: restart them too
        kinds.append("restart")
    summary = tmp_path / "summary.json"
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "study_faults.py"), "--faults", "6", "--seed", "0",
                          "--reference", "debug", "--kinds", ",".join(kinds), "--partition", slurm_cluster.partition,
                          "--out", str(tmp_path / "study"), "--timeout", "240", "--json", str(summary)],
                         cwd=REPO, capture_output=True, text=True, timeout=400,
                         env={**slurm_cluster.env, "SLURM_DIR": str(slurm_cluster.dir)})
    assert summary.exists(), out.stderr[-3000:]
    result = json.loads(summary.read_text())
    problems = {run: row["problems"] for run, row in result["per_run"].items() if row["problems"]}
    assert out.returncode == 0 and problems == {}, (problems, out.stderr[-3000:])
    assert result["bit_identical"] == result["runs"] == 5
    assert result["steps_duplicated"] == 0 and result["records_lost"] == 0
    assert sum(result["faults"].values()) >= 3, result["faults"]   # the study may finish before all six
    injected = [json.loads(line) for line in (tmp_path / "study" / "faults.jsonl").read_text().splitlines()]
    assert len(injected) == sum(result["faults"].values()) and all(e["seed"] == 0 for e in injected)
