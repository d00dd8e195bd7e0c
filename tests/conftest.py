"""Shared fixtures: a micro SALT setting that trains in a second, with its data cached under tmp_path."""
import os

import pytest
import torch

from salt.config import load_config, resolve_config
from salt.schema import RunConfig
from tests.slurm_fixture import pytest_configure, slurm_cluster  # noqa: F401  (the `slurm` marker and cluster)

os.environ.setdefault("WANDB_MODE", "disabled")   # never talk to a wandb server from tests


def micro_overrides(tmp_path, name, steps=4):
    return [
        f"out_dir={tmp_path / 'runs'}", f"name={name}", f"train.steps={steps}", "train.batch_size=8",
        "train.progress=false", "train.log_every=1", "train.checkpoint_every=2",
        f"data.moving_digits.cache_dir={tmp_path / 'cache'}", "data.moving_digits.num_train=64",
        "data.moving_digits.num_test=32", "data.moving_digits.canvas=16", "data.moving_digits.digit_size=8",
        "data.moving_digits.frames=4", "data.moving_digits.speeds=[1.0]",
        "model.size=micro", "objective.teacher.size=micro", "predictor.embed_dim=32", "predictor.depth=1",
        "predictor.num_heads=2", "optim.warmup_steps=2",
    ]


@pytest.fixture
def micro_config(tmp_path):
    """micro_config(stage, name, *overrides, steps=4) -> RunConfig from the packaged tiny config of that stage."""
    def make(stage: str, name: str, *extra: str, steps: int = 4) -> RunConfig:
        return load_config(RunConfig, [resolve_config(f"tiny_{stage}")], [*micro_overrides(tmp_path, name, steps), *extra])
    return make


@pytest.fixture
def one_thread():
    """Tiny tensors (and processes spawned side by side): one torch thread, restored afterwards. Extra threads
    only add sync overhead, and stall badly when other jobs hold the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
