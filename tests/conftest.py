"""Shared fixtures: the packaged micro setting (salt/configs/micro.yaml), trained in a second, with its data cached
under tmp_path."""
import os
import random

import numpy as np
import pytest
import torch

from salt.config import load_config, resolve_config
from salt.schema import RunConfig
from tests import slurm_fixture
from tests.slurm_fixture import pytest_configure, slurm_cluster  # noqa: F401  (the `slurm` marker and cluster)

os.environ.setdefault("WANDB_MODE", "disabled")   # never talk to a wandb server from tests

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest-xdist workers on the two cores: one torch thread each (and for the processes
    # they start), so the workers do not fight over the cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Under `--dist loadgroup` (`make test`) the tests of a module with a module-scoped fixture run on one worker,
    so that fixture is built once, not once per worker (tests on the SLURM cluster keep their own group)."""
    slurm_fixture.pytest_collection_modifyitems(config, items)
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        defs = item._fixtureinfo.name2fixturedefs
        if any(defs[name][-1].scope == "module" for name in item.fixturenames if name in defs):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture(autouse=True)
def _same_random_state():
    """Every test starts from one random state, whatever ran before it on its pytest-xdist worker."""
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True, scope="session")
def _video_indexes(tmp_path_factory):
    """Frame indexes of the tests' videos (salt.data.frame_index) go to a folder of this session, not the user's
    cache; subprocesses inherit it."""
    os.environ["SALT_VIDEO_INDEX"] = str(tmp_path_factory.mktemp("video-index"))


def micro_overrides(tmp_path, name: str, steps: int = 4) -> list[str]:
    """What a test changes on top of a packaged micro_<stage> config: its own folders (runs and data cache under
    tmp_path), fewer clips to generate, a log line every step and a checkpoint every two steps to read back."""
    return [f"out_dir={tmp_path / 'runs'}", f"name={name}", f"train.steps={steps}", "train.log_every=1",
            "train.checkpoint_every=2", f"data.moving_digits.cache_dir={tmp_path / 'cache'}",
            "data.moving_digits.num_train=64", "data.moving_digits.num_test=32"]


@pytest.fixture
def micro_config(tmp_path):
    """micro_config(stage, name, *overrides, steps=4) -> RunConfig from the packaged micro config of that stage."""
    def make(stage: str, name: str, *extra: str, steps: int = 4) -> RunConfig:
        return load_config(RunConfig, [resolve_config(f"micro_{stage}")], [*micro_overrides(tmp_path, name, steps), *extra])
    return make


@pytest.fixture
def one_thread():
    """Tiny tensors (and processes spawned side by side): one torch thread, restored afterwards. Extra threads
    only add sync overhead, and stall badly when other jobs hold the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
