"""Per-step metrics: one JSON-lines file per run (one writer), and wandb when enabled; data-wait timing."""
from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from pathlib import Path

from salt.io import append_bytes, atomic_write_text


class MetricsLog:
    """Appends one JSON object per logged step. On resume from step s, records at or after s (written after
    the last checkpoint by the interrupted process) are dropped first, so no step appears twice."""

    def __init__(self, path: Path, resume_step: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and _step_of(line) < resume_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self._file = open(self.path, "ab", buffering=0)   # unbuffered: each line is on disk (or not) when written

    def write(self, record: dict) -> None:
        """One line, whole or not at all: out of space, the log still ends with the previous line (DiskFullError)."""
        append_bytes(self._file, self.path, (json.dumps(record, sort_keys=True) + "\n").encode())

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


class DataWaitWarning(UserWarning):
    """The loop waited for data longer than a fifth of its step time over a log window."""


class StepTimer:
    """Seconds the loop waited for each batch (`data_s`) and spent in each step (`step_s`), as means over the steps
    since the last log line. `window()` gives them and warns (once a run: the log has the numbers of every
    window) when the waiting exceeded `threshold` of the step time, except in the first window, which includes
    the DataLoader's start-up."""

    def __init__(self, num_workers: int, threshold: float = 0.2):
        self.num_workers, self.threshold = num_workers, threshold
        self.data_s = self.step_s = 0.0
        self.steps, self.first, self.warned = 0, True, False

    def batches(self, loader):
        """`loader`'s batches, timing how long each took to arrive."""
        batches = iter(loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.data_s += time.perf_counter() - start
            yield batch

    @contextlib.contextmanager
    def step(self):
        start = time.perf_counter()
        yield
        self.step_s += time.perf_counter() - start
        self.steps += 1

    def window(self) -> dict[str, float]:
        steps = max(self.steps, 1)
        times = {"data_s": self.data_s / steps, "step_s": self.step_s / steps}
        if not (self.first or self.warned) and self.data_s > self.threshold * self.step_s:
            self.warned = True
            warnings.warn(f"the loop waited for data {self.data_s / max(self.step_s, 1e-9):.0%} of its step time "
                          f"over the last {self.steps} steps ({times['data_s']:.3g} s a step against "
                          f"{times['step_s']:.3g} s of compute): decoding does not keep up; raise data.num_workers "
                          f"(now {self.num_workers}). data_s and step_s in metrics.jsonl give every log window",
                          DataWaitWarning, stacklevel=2)
        self.data_s = self.step_s = 0.0
        self.steps, self.first = 0, False
        return times
