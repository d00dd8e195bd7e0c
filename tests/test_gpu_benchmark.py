"""benchmarks/gpu_step.py runs on CPU with tiny models: the script a GPU session runs is exercised here."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_step_benchmark_runs_tiny_on_cpu(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_step", REPO / "benchmarks" / "gpu_step.py")
    gpu_step = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_step)
    out = tmp_path / "rows.json"
    assert gpu_step.main(["--tiny", "--device", "cpu", "--steps", "1", "--warmup", "1", "--compile", "0",
                          "--checkpointing", "0", "1", "--cases", "salt-L<-B", "vjepa-L", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["case"], r["checkpointing"]) for r in rows] == [("salt-L<-B", False), ("salt-L<-B", True),
                                                                ("vjepa-L", False), ("vjepa-L", True)]
    assert all(r["ms"] > 0 and r["tflops"] > 0 and r["mfu"] is None for r in rows)   # no MFU without a known peak
    assert "ms/step" in capsys.readouterr().out
