"""Evaluation during training, as a checkpoint hook of the Trainer (salt.train.loop), so the training loop
knows nothing of evaluation: `python -m salt` and study jobs attach `evaluation_hooks(cfg)`."""
from __future__ import annotations

from salt.eval.evaluate import ProbeData, eval_protocol, evaluate_run, load_probe_data


class PeriodicEvaluation:
    """Write an evaluation record of the checkpoint just saved every `every` steps and at the last step, so the
    analysis can relate a run's trajectory to its final accuracy. Uses no global RNG: resuming stays exact."""

    def __init__(self, every: int, protocol: str):
        if every < 1:
            raise ValueError(f"train.eval_every must be >= 1 to evaluate periodically, got {every}")
        self.every, self.protocol = every, eval_protocol(protocol)
        self._data: ProbeData | None = None   # probe clips, loaded on first use and kept for later checkpoints

    def __call__(self, trainer, step: int) -> None:
        if step % self.every and step != trainer.cfg.train.steps:
            return   # a checkpoint saved for checkpoint_every only
        if self._data is None:
            self._data = load_probe_data(trainer.cfg.data, self.protocol)
        evaluate_run(trainer.run_dir, step, self.protocol, data=self._data)


def evaluation_hooks(cfg) -> list[PeriodicEvaluation]:
    """The checkpoint hooks that `cfg.train.eval_every` / `eval_protocol` ask for (none when eval_every is 0)."""
    return [PeriodicEvaluation(cfg.train.eval_every, cfg.train.eval_protocol)] if cfg.train.eval_every else []
