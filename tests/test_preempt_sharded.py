"""A save on preemption under sharding (train.shard=fsdp, 2 gloo processes): SLURM's signal reaches one rank in
the middle of a step; it only marks a request (Trainer.save_on_signal); at the end of that step every rank agrees
through one all-reduce, the sharded weights are saved collectively, and fit stops with SavedOnRequest. The run
resumes from the step it was at and ends with the weights of an uninterrupted run, bit for bit."""
import os
import signal

import pytest
import torch
import torch.multiprocessing as mp

from salt.checkpoint import load_checkpoint
from salt.layout import read_metrics
from salt.train.distributed import DistributedContext
from salt.train.loop import SavedOnRequest, Trainer, run_dir_for, train
from tests.test_distributed import _free_port

STEPS, SIGNAL_AT = 6, 2
SHARDED = ["train.shard=fsdp", "train.checkpoint_every=4"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _rank_main(rank, port, uninterrupted, preempted, out):
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    with DistributedContext.from_env("cpu") as context:
        train(uninterrupted, dist=context)
        trainer = Trainer(preempted, dist=context)
        sent = []

        def preempt_mid_step(module, args):   # rank 1 only, inside step SIGNAL_AT's forward pass
            if rank == 1 and trainer.in_step and trainer.next_step == SIGNAL_AT and not sent:
                sent.append(True)
                os.kill(os.getpid(), signal.SIGUSR2)

        trainer.objective.encoder.register_forward_pre_hook(preempt_mid_step)
        with trainer.save_on_signal(signal.SIGUSR2):
            with pytest.raises(SavedOnRequest) as stopped:
                trainer.fit()
        resumed = Trainer(preempted, resume=True, dist=context)
        torch.save({"stopped_at": stopped.value.step, "resumed_from": resumed.start_step,
                    "handler_restored": signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL}, out / f"rank{rank}.pt")
        resumed.fit()


def test_a_preempted_sharded_run_saves_at_the_step_boundary_and_resumes_exactly(micro_config, tmp_path):
    uninterrupted = micro_config("vjepa", "whole", *SHARDED, steps=STEPS)
    preempted = micro_config("vjepa", "preempted", *SHARDED, steps=STEPS)
    mp.start_processes(_rank_main, args=(_free_port(), uninterrupted, preempted, tmp_path), nprocs=2,
                       start_method="spawn")
    for rank in range(2):   # both ranks stopped after the signalled step and resumed from the next one
        seen = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert seen == {"stopped_at": SIGNAL_AT + 1, "resumed_from": SIGNAL_AT + 1, "handler_restored": True}
    assert [r["step"] for r in read_metrics(run_dir_for(preempted) / "metrics.jsonl")] == list(range(STEPS))
    want, got = load_checkpoint(run_dir_for(uninterrupted)), load_checkpoint(run_dir_for(preempted))
    assert got["step"] == want["step"] == STEPS
    for name, state in want["models"].items():
        for key, value in state.items():
            assert torch.equal(got["models"][name][key], value), f"{name}.{key}"


def test_a_study_job_saves_the_step_under_way_on_the_signal_then_hands_over_to_submitit(tmp_path, monkeypatch):
    """The job code (salt.study.job.RunJob) in one process: the signal arrives during training; the job finishes
    the step under way, saves it, and only then runs the handler it replaced (submitit's: requeue and exit; here a
    stand-in that records the checkpoint it saw). A fresh job resumes from that step and logs each step once."""
    import threading
    import time

    from salt.checkpoint import load_checkpoint as load
    from salt.study.job import RunJob
    from studies.compute_allocation import PRESETS, AllocationDials, build
    dials = AllocationDials(**{**PRESETS["smoke"].__dict__, "total_steps": [60], "teacher_steps": [40],
                               "methods": ("salt",), "baselines": False})
    teacher = build(dials, "smoke", tmp_path / "s", [f"data.moving_digits.cache_dir={tmp_path}/c",
                                                     "train.log_every=1"]).runs[0]
    seen = []

    class Requeued(Exception):
        pass

    def submitit_stand_in(signum, frame):
        seen.append(load(teacher.run_dir)["step"])
        raise Requeued

    def send_when_training():
        while not (teacher.run_dir / "metrics.jsonl").exists() or \
                len((teacher.run_dir / "metrics.jsonl").read_text().splitlines()) < 3:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGUSR2)

    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    previous = signal.signal(signal.SIGUSR2, submitit_stand_in)
    try:
        threading.Thread(target=send_when_training, daemon=True).start()
        with pytest.raises(Requeued):
            RunJob(teacher.to_json())()
        assert signal.getsignal(signal.SIGUSR2) is submitit_stand_in   # restored after training
    finally:
        signal.signal(signal.SIGUSR2, previous)
    logged = [r["step"] for r in read_metrics(teacher.run_dir / "metrics.jsonl")]
    assert seen == [logged[-1] + 1] and 3 <= seen[0] < 40   # the step under way, saved before the handover
    RunJob(teacher.to_json())()
    assert [r["step"] for r in read_metrics(teacher.run_dir / "metrics.jsonl")] == list(range(40))
