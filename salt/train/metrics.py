"""Per-step metrics: one JSON-lines file per run (one writer), and wandb when enabled."""
from __future__ import annotations

import json
import os
from pathlib import Path


class MetricsLog:
    """Appends one JSON object per logged step. On resume from step s, records at or after s (written after
    the last checkpoint by the interrupted process) are dropped first, so no step appears twice."""

    def __init__(self, path: Path, resume_step: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and _step_of(line) < resume_step]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.path)
        self._file = open(self.path, "a")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62   # a torn last line from a killed process: drop it


class WandbLogger:
    """wandb run for a training run; WANDB_MODE wins over the config's mode (offline needs no network)."""

    def __init__(self, wandb_cfg, *, run_dir: Path, run_id: str, config: dict, resume: bool):
        import wandb   # optional dependency: only imported when enabled
        mode = os.environ.get("WANDB_MODE") or wandb_cfg.mode
        self.run = wandb.init(project=wandb_cfg.project, group=wandb_cfg.group or None, name=run_id, id=run_id,
                              dir=str(run_dir), config=config, mode=mode, resume="allow" if resume else None)

    def log(self, record: dict, step: int) -> None:
        self.run.log(record, step=step)

    def close(self) -> None:
        self.run.finish()
