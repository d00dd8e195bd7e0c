"""Data-parallel training: 2 gloo processes on a global batch B = 1 process on the same batch B."""
import os
import random
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from salt.config import ConfigError
from salt.checkpoint import load_checkpoint
from salt.train.distributed import DistributedContext
from salt.train.loop import Trainer, run_dir_for, train
from salt.layout import read_metrics

STEPS = 6


class Stop(Exception):
    pass


pytestmark = pytest.mark.usefixtures("one_thread")


def _free_port() -> int:
    """A free port below the kernel's ephemeral range: a port the OS hands out (bind to 0) can be handed out again,
    to one of gloo's own connections, before a later rendezvous listens on it (seen: EADDRINUSE on a resume)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]) \
        if Path("/proc/sys/net/ipv4/ip_local_port_range").exists() else 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below {low}")


def _dump_weights(trainer, path):
    torch.save({name: m.state_dict() for name, m in trainer.objective.saved().items()}, path)


def _rank_main(rank, world_size, ports, cfg, out, stop_at):
    """One training process (spawned): env-var rendezvous as torchrun would set it, then `train`. With
    `stop_at`, every rank stops at that step by a callback, then all resume from the checkpoint."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    trainers, stopped = [], []

    def keep(trainer, step, record):
        trainers.append(trainer)
        if step == stop_at and not stopped:   # only the first run stops
            stopped.append(step)
            raise Stop

    os.environ["MASTER_PORT"] = str(ports[0])
    try:
        summary = train(cfg, callbacks=[keep])
    except Stop:
        os.environ["MASTER_PORT"] = str(ports[1])
        assert trainers[-1].next_step == stop_at + 1
        summary = train(cfg, resume=True, callbacks=[keep])
        assert trainers[-1] is not trainers[stop_at] and trainers[stop_at + 1].start_step == stop_at
    assert not torch.distributed.is_initialized()   # train closed the group it started
    _dump_weights(trainers[-1], out / f"rank{rank}.pt")
    torch.save(summary, out / f"summary{rank}.pt")


def _assert_close_weights(got, want, name):
    """allclose, except the attention key bias: its gradient is zero up to rounding (softmax ignores a shift
    shared by all keys), and AdamW turns that rounding noise into steps of up to lr, whatever the summation
    order (1 process with 2 threads vs 1 thread differs there alike). It is held to lr x steps."""
    got, want = got.clone(), want.clone()
    if name.endswith("attn.qkv.bias"):
        d = want.numel() // 3
        torch.testing.assert_close(got[d:2 * d], want[d:2 * d], rtol=0, atol=1e-3 * STEPS, msg=name)
        got[d:2 * d] = want[d:2 * d] = 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)


def _assert_same_run(single_cfg, ddp_cfg, out):
    one = read_metrics(run_dir_for(single_cfg) / "metrics.jsonl")
    two = read_metrics(run_dir_for(ddp_cfg) / "metrics.jsonl")
    assert [r["step"] for r in two] == list(range(STEPS))
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), f"step {a['step']}"
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3), f"step {a['step']}"
        assert b["flops"] == pytest.approx(a["flops"], rel=1e-12)   # counted for the global batch
    worst = max(abs(b["loss"] - a["loss"]) / abs(a["loss"]) for a, b in zip(one, two))
    print(f"max relative loss difference, 2 processes vs 1: {worst:.2e}")
    single = load_checkpoint(run_dir_for(single_cfg))["models"]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    saved = load_checkpoint(run_dir_for(ddp_cfg))["models"]
    for name in single:
        for k, v in single[name].items():
            assert torch.equal(ranks[0][name][k], ranks[1][name][k]), f"ranks differ in {name}.{k}"
            assert torch.equal(saved[name][k], ranks[0][name][k])
            _assert_close_weights(ranks[0][name][k], v, f"{name}.{k}")
    summaries = [torch.load(out / f"summary{r}.pt", weights_only=False) for r in range(2)]
    assert summaries[0]["final_metrics"] == summaries[1]["final_metrics"]


@pytest.mark.parametrize("stage, stop_at", [("teacher", None), ("vjepa", 2)])
def test_two_processes_match_one_process_on_the_global_batch(micro_config, tmp_path, stage, stop_at):
    """pixel: straight through; V-JEPA (EMA target): every rank stopped after step 2, then resumed from the
    step-2 checkpoint that every rank loads. Both: same loss trajectory and final weights as one process, and
    the two ranks' weights (EMA target included) bit-identical."""
    single = micro_config(stage, "single", steps=STEPS)
    train(single)
    ddp = micro_config(stage, "ddp", steps=STEPS)
    mp.start_processes(_rank_main, args=(2, (_free_port(), _free_port()), ddp, tmp_path, stop_at), nprocs=2,
                       start_method="spawn")
    if stop_at is not None:
        assert [r["step"] for r in read_metrics(run_dir_for(ddp) / "metrics.jsonl")] == list(range(STEPS))
    _assert_same_run(single, ddp, tmp_path)
    assert not (run_dir_for(ddp) / "wandb").exists()


def _submitit_task(cfg):
    torch.set_num_threads(1)
    summary = train(cfg)   # ranks from submitit's job environment (2 tasks)
    return summary["final_metrics"]["loss"]


def test_submitit_job_with_two_tasks_trains_data_parallel(micro_config, tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    cfg = micro_config("teacher", "submitit", steps=3)
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="local")
    executor.update_parameters(tasks_per_node=2, timeout_min=2)
    losses = executor.submit(_submitit_task, cfg).results()
    assert len(losses) == 2 and losses[0] == losses[1]
    records = read_metrics(run_dir_for(cfg) / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2] and records[-1]["loss"] == losses[0]
    single = micro_config("teacher", "single", steps=3)
    assert train(single)["final_metrics"]["loss"] == pytest.approx(losses[0], rel=1e-4)


def test_batch_not_divisible_by_the_processes_is_a_clear_error(micro_config):
    cfg = micro_config("teacher", "odd")   # train.batch_size=8
    with pytest.raises(ConfigError, match=r"train\.batch_size=8 is not divisible .* \(3\)"):
        Trainer(cfg, dist=DistributedContext(rank=0, world_size=3))
    assert not run_dir_for(cfg).exists()


def test_one_process_by_default(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)
    assert DistributedContext.from_env() == DistributedContext()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_PORT"):
        DistributedContext.from_env()
