"""The study dry run's data budget (--loader-rate): the loader cores a GPU needs, computed by hand from step_flops;
the starving runs named; the rate file that benchmarks/video_loader.py --list writes, read back; bad rates refused
before anything is printed."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from salt.config import load_config, resolve_config
from salt.schema import RunConfig
from salt.study import LaunchOptions
from salt.study.cli import describe, parse_loader_rate
from salt.study.estimate import (LOADER_RATE_FORMAT, LoaderRate, clip_settings, loader_cores, read_loader_rate,
                                 step_flops)
from salt.study.spec import StudyError
from studies import compute_allocation
from studies.compute_allocation import PRESETS, build
from tests.test_video_data import moving_square_frames, write_video

REPO = Path(__file__).resolve().parents[1]
# the micro setting on video files: 4 frames of 16 px, what the micro model takes
MICRO_VIDEO = ["data.source=video_list", "data.video.frames_per_clip=4", "data.video.frame_step=2",
               "data.video.resolution=16"]


def micro_video_config(*overrides: str) -> RunConfig:
    return load_config(RunConfig, [resolve_config("micro_student")],
                       ["objective.teacher_checkpoint=teacher", *MICRO_VIDEO, *overrides])


# -- the computation -----------------------------------------------------------------------------------------

def test_loader_cores_known_answer():
    cfg = micro_video_config("train.batch_size=8", "data.num_workers=3")
    clip_flops = step_flops(cfg) / 8
    tflops = 100 * clip_flops / 1e12          # a GPU that trains exactly 100 clips/s of this config
    budget = loader_cores(cfg, 20.0, tflops, cpus_per_task=8)
    assert budget.clip_flops == pytest.approx(clip_flops)
    assert budget.clips_per_s == pytest.approx(100.0)
    assert budget.cores_needed == pytest.approx(5.0)   # 100 clips/s at 20 a core
    assert budget.loader_cores == 3                    # data.num_workers caps it below cpus_per_task - 1 = 7
    assert budget.starves and budget.gpu_busy == pytest.approx(0.6)   # 3 x 20 of 100 clips/s
    # cpus_per_task caps it the other way: 6 workers on 4 cores, one of them the training process
    six_workers = micro_video_config("train.batch_size=8", "data.num_workers=6")
    assert loader_cores(six_workers, 20.0, tflops, cpus_per_task=4).loader_cores == 3
    fed = loader_cores(six_workers, 20.0, tflops, cpus_per_task=8)
    assert fed.loader_cores == 6 and not fed.starves and fed.gpu_busy == 1.0
    # no workers: the training process decodes between steps, so decode and step times add up
    serial = loader_cores(micro_video_config("train.batch_size=8"), 20.0, tflops, 8)
    assert serial.loader_cores == 0 and serial.starves and serial.gpu_busy == pytest.approx(20 / 120)
    # per clip: the batch size does not change what a GPU needs
    assert loader_cores(micro_video_config("train.batch_size=16"), 20.0, tflops, 8).clips_per_s == pytest.approx(
        100.0, rel=0.05)


def test_loader_cores_refuses_embedded_data_and_bad_numbers():
    with pytest.raises(ValueError, match="video_list"):
        loader_cores(load_config(RunConfig, [resolve_config("micro_teacher")]), 20.0, 400.0, 8)
    for rate in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="> 0"):
            loader_cores(micro_video_config(), rate, 400.0, 8)


def test_clip_settings_that_differ_are_named():
    video = micro_video_config().data.video
    rate = LoaderRate(10.0, clip=clip_settings(video))
    assert rate.differences(video) == []
    other = micro_video_config("data.video.resolution=32", "data.video.frames_per_clip=8").data.video
    assert rate.differences(other) == ["frames_per_clip 4 -> 8", "resolution 16 -> 32"]
    # sampling by fps: the frame step does not apply, fps does
    by_fps = micro_video_config("data.video.fps=4").data.video
    assert rate.differences(by_fps) == ["fps 0.0 -> 4.0"]
    assert LoaderRate(10.0).differences(other) == []   # a number given by hand: settings unknown


# -- the dry run ---------------------------------------------------------------------------------------------

def test_describe_names_the_starving_runs(tmp_path):
    plan = build(PRESETS["smoke"], "smoke", tmp_path / "s", [*MICRO_VIDEO, "data.num_workers=2"])
    options = LaunchOptions(executor="slurm", gpus_per_node=4, cpus_per_task=3)
    trained = [s for s in plan.runs if s.role != "baseline"]
    needs = {s.run_id: loader_cores(s.config, 1.0, 1e-3, 3).clips_per_s for s in trained}
    low, high = min(needs.values()), max(needs.values())
    assert low < high   # pixel teachers and SALT/V-JEPA students train at different clips/s
    rate = (low + high) / 2 / 2   # 2 loader cores (data.num_workers=2 of cpus_per_task - 1) deliver the midpoint
    out = describe(plan, options, 1e-3, loader_rate=LoaderRate(rate, source="test"))
    starving = [run_id for run_id, need in needs.items() if need > (low + high) / 2]
    verdict = next(line for line in out.splitlines() if "would starve" in line)
    assert verdict.startswith(f"{len(starving)} of {len(trained)} runs on video files would starve")
    assert sorted(verdict.split(": ", 1)[1].split(", ")) == sorted(starving)
    assert "prepare-videos" in out and "--cpus-per-task" in out and "one of them the training process" in out
    assert "measured with other clip settings" not in out   # a number: no settings to compare


def test_dry_run_with_a_rate_on_embedded_data_says_no_decoding(tmp_path, capsys):
    assert compute_allocation.main(["--preset", "smoke", "--dry-run", "--out", str(tmp_path / "s"),
                                    "--loader-rate", "30"]) == 0
    out = capsys.readouterr().out
    assert "embedded data (moving_digits), no decoding" in out and "no run decodes video files" in out


# -- the rate file -------------------------------------------------------------------------------------------

@pytest.fixture
def video_loader(monkeypatch):
    """benchmarks/video_loader.py as a module (its folder on the path, for its `machine` import)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("video_loader", REPO / "benchmarks" / "video_loader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_writes_a_rate_file_the_dry_run_reads(tmp_path, video_loader, one_thread, capsys):
    for i in range(2):
        write_video(tmp_path / f"v{i}.mp4", moving_square_frames(24))
    (tmp_path / "train.txt").write_text("v0.mp4 0\nv1.mp4 1\n")
    config = tmp_path / "micro_video.yaml"
    config.write_text(f"base: {resolve_config('micro_student')}\n"
                      "data: {source: video_list, video: {frames_per_clip: 4, frame_step: 2, resolution: 16}}\n")
    out = tmp_path / "rate.json"
    assert video_loader.main(["--list", str(tmp_path / "train.txt"), "--config", str(config), "--out", str(out),
                              "--clips", "4", "--rounds", "2", "--workers", "0"]) == 0
    record = json.loads(out.read_text())
    assert record["format"] == LOADER_RATE_FORMAT and record["version"] == 1
    assert record["videos"] == 2 and record["list"] == str(tmp_path / "train.txt") and record["clips_timed"] == 4
    assert "--list" in record["command"] and record["machine"]["cpus"] >= 1
    rate = parse_loader_rate(str(out))   # what --loader-rate FILE gives the dry run
    assert rate.clips_per_s_per_core == record["clips_per_s_per_core"] > 0
    assert rate.clip == clip_settings(micro_video_config().data.video)
    assert rate.differences(micro_video_config().data.video) == []
    assert "cores at this rate" in capsys.readouterr().out
    # the dry run warns when a run's clips are not the measured ones
    plan = build(PRESETS["smoke"], "smoke", tmp_path / "s", [*MICRO_VIDEO, "data.video.resolution=32"])
    text = describe(plan, LaunchOptions(), 400.0, loader_rate=rate)
    assert "measured with other clip settings (rate -> run: resolution 16 -> 32)" in text


# -- bad input -----------------------------------------------------------------------------------------------

BAD_FILES = {
    "not json": ("{", "not a readable JSON file"),
    "other format": (json.dumps({"format": "something-else"}), "not a loader rate file"),
    "newer version": (json.dumps({"format": LOADER_RATE_FORMAT, "version": 2}), "version 2"),
    "no clip": (json.dumps({"format": LOADER_RATE_FORMAT, "version": 1, "clips_per_s_per_core": 3.0}), "'clip'"),
    "zero rate": (json.dumps({"format": LOADER_RATE_FORMAT, "version": 1, "clips_per_s_per_core": 0,
                              "clip": clip_settings(micro_video_config().data.video)}), "> 0"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_rate_files_are_refused_before_anything_is_printed(name, tmp_path, capsys):
    text, message = BAD_FILES[name]
    path = tmp_path / "rate.json"
    path.write_text(text)
    assert compute_allocation.main(["--preset", "smoke", "--dry-run", "--out", str(tmp_path / "s"),
                                    "--loader-rate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"error: --loader-rate {path}: ") and message in captured.err
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        read_loader_rate(path)


@pytest.mark.parametrize("value, message", [("no-such-rate.json", "no such file, and not a number"),
                                            ("0", "> 0"), ("-3", "> 0"), ("nan", "> 0"), ("inf", "> 0")])
def test_bad_rate_values_are_refused(value, message, tmp_path, capsys):
    assert compute_allocation.main(["--preset", "smoke", "--dry-run", "--out", str(tmp_path / "s"),
                                    "--loader-rate", value]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: --loader-rate") and message in captured.err
    with pytest.raises(StudyError, match="--loader-rate"):
        parse_loader_rate(value)


def test_a_rate_without_the_dry_run_is_refused(tmp_path, capsys):
    assert compute_allocation.main(["--preset", "smoke", "--out", str(tmp_path / "s"), "--loader-rate", "30"]) == 2
    assert "add --dry-run" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
