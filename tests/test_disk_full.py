"""A full disk: a size-limited tmpfs mounted by the test, so real write/fsync calls fail with ENOSPC. A failed write
(checkpoint, record, done.json, results table, metrics line, lock log) leaves the previous file valid and no temp
file or partial line, and fails with DiskFullError naming the path and the free space; after space is freed a
training run continues from its last good checkpoint to the same weights as an uninterrupted run."""
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from salt.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from salt.eval.record import read_record, write_record
from salt.io import DiskFullError, append_line, atomic_write_text
from salt.layout import RunLayout, read_metrics
from salt.train.loop import run_dir_for, train
from salt.train.metrics import MetricsLog
from tests.conftest import micro_overrides
from tests.test_record import make_record

REPO = Path(__file__).resolve().parents[1]
FREE = r"\d+\.\d MiB free of \d+\.\d MiB on its filesystem"


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs at tmp_path/disk, unmounted afterwards (skipped where mounting is not permitted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a size-limited tmpfs is mounted as root: not root here")
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True,
                         text=True)
    if out.returncode:
        pytest.skip(f"mounting a tmpfs is not permitted here: {out.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Leave about `leave` bytes free on `disk`: a filler file takes the rest (free it by deleting it)."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, max(shutil.disk_usage(disk).free - leave, 1))
    return filler


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.name.endswith(".tmp")]


def _checkpoint(step: int, size: int) -> Checkpoint:
    return Checkpoint(step=step, run_id="run", config={}, models={"m": {"w": torch.zeros(size)}})


def test_failed_atomic_writes_keep_the_previous_file_and_remove_the_temp_file(small_disk):
    layout = RunLayout(small_disk / "run")
    layout.write_done({"steps": 1})
    save_checkpoint(layout.root, _checkpoint(2, 1000), keep=2)
    record = write_record(layout.root, make_record(run_id="run", step=2))
    results = small_disk / "results.csv"
    atomic_write_text(results, "a,b\n1,2\n")
    before = {p: p.read_bytes() for p in (layout.done, layout.checkpoint(2), record, results)}
    fill(small_disk, 0)
    writes = {layout.done: lambda: layout.write_done({"steps": 2, "pad": "x" * 100_000}),
              layout.checkpoint(4): lambda: save_checkpoint(layout.root, _checkpoint(4, 1 << 20), keep=1),
              record: lambda: write_record(layout.root, make_record(run_id="run", step=2, hardware="x" * 100_000)),
              results: lambda: atomic_write_text(results, "a,b\n" + "1,2\n" * 100_000)}
    for path, write in writes.items():
        with pytest.raises(DiskFullError, match=rf"^\[Errno 28\] no space left on the device writing {path} "
                                                rf"\({FREE}\): the previous file is unchanged") as error:
            write()
        assert isinstance(error.value, OSError) and error.value.errno == errno.ENOSPC
    assert {p: p.read_bytes() for p in before} == before   # every previous file as it was, and still readable
    assert layout.read_done()["steps"] == 1 and load_checkpoint(layout.checkpoint(2))["models"]["m"]["w"].shape == (1000,)
    assert read_record(record).checkpoint_step == 2
    assert [step for step, _ in layout.checkpoints()] == [2]   # the old one is not deleted for a failed new one
    assert temp_files(small_disk) == []


def test_a_metrics_line_that_does_not_fit_leaves_the_log_ending_with_a_whole_line(small_disk):
    path = small_disk / "metrics.jsonl"
    log = MetricsLog(path, 0)
    fill(small_disk, 64 * 1024)
    written = 0
    with pytest.raises(DiskFullError, match=rf"writing {path} \({FREE}\)"):
        for step in range(100_000):
            log.write({"step": step, "pad": "x" * 1000})
            written += 1
    log.close()
    assert path.read_text().endswith("}\n")
    assert [r["step"] for r in read_metrics(path)] == list(range(written)) and written > 10
    with pytest.raises(DiskFullError, match=f"writing {small_disk / 'lock.jsonl'}"):   # any appended log alike
        append_line(small_disk / "lock.jsonl", "x" * 100_000)
    assert (small_disk / "lock.jsonl").read_text() == ""


def test_a_run_whose_checkpoint_does_not_fit_fails_naming_it_and_resumes_after_space_is_freed(small_disk, tmp_path,
                                                                                               micro_config):
    extra = ["train.keep_checkpoints=1"]
    straight = micro_config("teacher", "straight", *extra, steps=6)   # the uninterrupted run, on the real disk
    train(straight)
    size = RunLayout(run_dir_for(straight)).latest_checkpoint().stat().st_size
    overrides = [*micro_overrides(tmp_path, "full", steps=6), f"out_dir={small_disk / 'runs'}", *extra]
    filler = fill(small_disk, size + size // 2)   # the step-2 checkpoint fits, a second one beside it does not
    run = subprocess.run([sys.executable, "-m", "salt", "teacher", "--config", "micro_teacher", *overrides],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    layout = RunLayout(small_disk / "runs" / "full")
    assert run.returncode == 2, run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: no space left on the device writing {layout.checkpoint(4)} ("), line
    assert "MiB free" in line and "--resume" in line
    assert [step for step, _ in layout.checkpoints()] == [2] and load_checkpoint(layout.checkpoint(2))["step"] == 2
    assert temp_files(small_disk) == [] and not layout.is_done()
    assert [r["step"] for r in read_metrics(layout.metrics)] == [0, 1, 2, 3]
    assert layout.lock_log.read_text().splitlines()[-1].startswith('{"event": "release"')   # the lock was let go
    filler.unlink()   # space freed: the rerun continues from step 2
    cfg = micro_config("teacher", "full", f"out_dir={small_disk / 'runs'}", *extra, steps=6)
    train(cfg, resume=True)
    assert [r["step"] for r in read_metrics(layout.metrics)] == list(range(6))
    got = load_checkpoint(layout.latest_checkpoint())["models"]
    want = load_checkpoint(RunLayout(run_dir_for(straight)).latest_checkpoint())["models"]
    for name in want:
        for key, value in want[name].items():
            assert torch.equal(got[name][key], value), f"{name}.{key}"
