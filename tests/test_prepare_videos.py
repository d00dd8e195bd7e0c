"""`python -m salt prepare-videos` (salt.data.prepare, salt.study.prepare): a small raw collection (mp4, mkv, webm,
one long video that is chunked, a garbage file and a truncated mp4) re-encoded once; what comes out is checked
against the inputs (size, keyframes, chunks, pixels), trains a teacher, resumes after SIGKILL byte for byte, and
comes out the same through a job array (submitit's debug executor here, SLURM in the `slurm` test)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from salt.__main__ import main
from salt.data.prepare import chunk_lengths, kept_frames, output_rate, output_size
from salt.layout import PrepareLayout
from salt.train.loop import train

REPO = Path(__file__).resolve().parents[1]
FPS = 25
# inputs: name -> (codec, width, height, frames); the long one is cut into 2 s chunks
VIDEOS = {"a.mp4": ("libx264", 320, 240, 75), "b.mkv": ("libx264", 300, 200, 50),
          "c.webm": ("libvpx-vp9", 256, 144, 40), "long.mp4": ("libx264", 320, 240, 170)}
OPTIONS = ["--short-side", "128", "--gop", "8", "--chunk-seconds", "2"]
GOP, PER_CHUNK = 8, 2 * FPS


def _scene(t: int, width: int, height: int) -> np.ndarray:
    """Smooth moving gradients and a moving square: content a wrong frame or offset would not match."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([128 + 60 * np.sin(0.05 * xs + 0.1 * t), 128 + 60 * np.cos(0.04 * ys - 0.07 * t),
                      128 + 40 * np.sin(0.03 * (xs + ys) + 0.05 * t)], -1)
    top, left = (10 + 2 * t) % (height - 40), (10 + 3 * t) % (width - 40)
    image[top:top + 40, left:left + 40] = (240, 30, 30)
    return image.clip(0, 255).astype(np.uint8)


def _write(path: Path, codec: str, width: int, height: int, frames: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":   # a long keyframe interval, as raw collections have
            stream.options = {"g": "250", "preset": "ultrafast", "crf": "18"}
        for t in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(_scene(t, width, height), format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """The raw collection and its list (labels 0..5; lines 5 and 6 are the broken files)."""
    root = tmp_path_factory.mktemp("raw")
    for name, spec in VIDEOS.items():
        _write(root / name, *spec)
    (root / "garbage.mp4").write_bytes(os.urandom(20_000))
    whole = (root / "a.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(whole[:len(whole) // 2])   # the moov atom (at the end) is gone
    names = [*VIDEOS, "garbage.mp4", "truncated.mp4"]
    (root / "list.txt").write_text("".join(f"{name} {label}\n" for label, name in enumerate(names)))
    return root


def prepare(raw: Path, out: Path, *extra: str) -> int:
    return main(["prepare-videos", str(raw / "list.txt"), str(out), *OPTIONS, *extra])


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    assert prepare(raw, out, "--workers", "2") == 0
    return out


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def _keyframes(path: Path) -> list[int]:
    """Positions (in presentation order) of the keyframes, from demuxing only."""
    with av.open(str(path)) as container:
        packets = sorted((p.pts, p.is_keyframe) for p in container.demux(video=0) if p.size)
    return [i for i, (_, key) in enumerate(packets) if key]


def _psnr(output: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """PSNR of the output frames against the input frames resized to their size (torch, antialiased)."""
    height, width = output[0].shape[:2]
    ref = torch.from_numpy(np.stack(reference)).permute(0, 3, 1, 2).float()
    ref = F.interpolate(ref, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    out = torch.from_numpy(np.stack(output)).permute(0, 3, 1, 2).float()
    mse = (out - ref.round().clamp(0, 255)).pow(2).mean().item()
    return 10 * np.log10(255 ** 2 / mse)


def _tree(root: Path) -> dict[str, bytes]:
    """Every video and the list, by path: what must be byte-identical between preparations."""
    files = sorted((root / "videos").glob("*.mp4")) + [root / "list.txt"]
    return {str(f.relative_to(root)): f.read_bytes() for f in files}


def test_outputs_match_the_inputs_and_failures_are_reported(raw, prepared):
    report = json.loads((prepared / "report.json").read_text())
    assert sorted((Path(f["path"]).name, f["line"]) for f in report["failed"]) == [("garbage.mp4", 5),
                                                                                     ("truncated.mp4", 6)]
    assert all("Error" in f["reason"] for f in report["failed"]) and report["unfinished"] == []
    assert report["totals"]["inputs_done"] == len(VIDEOS)
    lines = [line.split() for line in (prepared / "list.txt").read_text().splitlines()]
    layout = PrepareLayout(prepared)
    expected_chunks = {name: chunk_lengths(spec[3], PER_CHUNK) for name, spec in VIDEOS.items()}
    assert expected_chunks["long.mp4"] == [50, 50, 70] and expected_chunks["a.mp4"] == [50, 25]
    assert len(lines) == sum(map(len, expected_chunks.values()))
    for label, (name, (codec, width, height, frames)) in enumerate(VIDEOS.items()):
        source = str(raw / name)
        files = [layout.chunk(source, k) for k in range(len(expected_chunks[name]))]
        assert [line for line in lines if line[1] == str(label)] == [
            [f.relative_to(prepared).as_posix(), str(label)] for f in files]
        reference, start = _frames(raw / name), 0
        for file, length in zip(files, expected_chunks[name]):
            output = _frames(file)
            assert len(output) == length, file
            assert min(output[0].shape[:2]) == 128 and output[0].shape[1] == output_size(width, height, 128)[0]
            keys = _keyframes(file)
            assert keys[0] == 0 and max(np.diff([*keys, length])) <= GOP, (file, keys)
            assert _psnr(output, reference[start:start + length]) > 30, file
            start += length
        assert start == frames
        with av.open(str(files[0])) as container:
            assert container.streams.video[0].codec_context.name == "h264" and not container.streams.audio


def test_plan_functions():
    assert chunk_lengths(170, 50) == [50, 50, 70] and chunk_lengths(175, 50) == [50, 50, 50, 25]
    assert chunk_lengths(74, 50) == [74] and chunk_lengths(500, 0) == [500]
    assert output_size(1280, 720, 256) == (454, 256) and output_size(200, 101, 256) == (200, 100)
    rate = output_rate(30, 25.0)
    kept = [next(iter_) for iter_ in [kept_frames(30, rate)] for _ in range(6)]
    assert rate == 25 and kept == [0, 2, 3, 4, 5, 6]   # one frame in six dropped
    assert output_rate(24, 25.0) == 24


@pytest.mark.filterwarnings("ignore:the loop waited for data")   # decoding in the main process, as intended
def test_the_prepared_list_trains_a_teacher(prepared, micro_config):
    cfg = micro_config("teacher", "prepared", "data.source=video_list",
                       f"data.video.list_path={prepared / 'list.txt'}", "data.video.frames_per_clip=4",
                       "data.video.frame_step=2", "data.video.resolution=16", "train.batch_size=2", steps=2)
    summary = train(cfg)
    assert summary["steps"] == 2 and summary["decode_failures"] == 0


def test_rerun_does_nothing_and_other_options_are_refused(raw, prepared, capsys):
    before = {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in [*(prepared / "videos").iterdir(),
                                                                   *(prepared / ".prepare").glob("*.json")]}
    assert prepare(raw, prepared) == 0
    assert json.loads((prepared / "report.json").read_text())["processed_now"] == 0
    assert {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in before} == before
    capsys.readouterr()
    bad = [(["--gop", "4"], "gop=8"), (["--short-side", "255"], "even"), (["--workers", "0"], "--workers")]
    for extra, words in bad:
        assert prepare(raw, prepared, *extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err and err.count("\n") == 1, err
    assert main(["prepare-videos", str(raw / "list.txt"), str(raw)]) == 2
    assert "folder of" in capsys.readouterr().err
    assert main(["prepare-videos", str(raw / "no_such.txt"), str(prepared)]) == 2
    assert "not found" in capsys.readouterr().err


def test_sigkill_midway_then_rerun_redoes_only_the_rest(raw, prepared, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "salt", "prepare-videos", str(raw / "list.txt"), str(out), *OPTIONS,
               "--workers", "1"]
    process = subprocess.Popen(command, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    records = []
    while process.poll() is None and not records:
        records = [p for p in (out / ".prepare").glob("*.json") if p.name != "options.json"]
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, process.stderr.read()
    layout = PrepareLayout(out)
    finished = [p for p in (out / ".prepare").glob("*.json") if p.name != "options.json"]
    kept = {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in finished}
    for record in finished:
        for chunk in json.loads(record.read_text())["chunks"]:
            f = out / chunk["file"]
            kept[f] = (f.stat().st_ino, f.stat().st_mtime_ns)
    assert 1 <= len(finished) < len(VIDEOS) + 2 and not (out / "list.txt").exists()
    assert prepare(raw, out, "--workers", "1") == 0
    report = json.loads(layout.report.read_text())
    assert report["processed_now"] == len(VIDEOS) + 2 - len(finished)
    assert {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in kept} == kept   # the finished ones untouched
    assert _tree(out) == _tree(prepared)
    assert not [p for p in out.rglob(".*.tmp")]


def test_job_array_through_submitit_gives_the_same_files(raw, prepared, tmp_path):
    """The array path (shards, PrepareShard, the report from records) on submitit's in-process executor."""
    profile = tmp_path / "debug.yaml"
    profile.write_text("executor: debug\ncpus_per_task: 1\n")
    out = tmp_path / "array"
    assert prepare(raw, out, "--profile", str(profile), "--shards", "3") == 0
    assert _tree(out) == _tree(prepared)
    assert len(json.loads((out / "report.json").read_text())["failed"]) == 2


@pytest.mark.slurm
def test_slurm_array_gives_the_same_files(raw, prepared, tmp_path, slurm_cluster):
    out = tmp_path / "slurm"
    assert prepare(raw, out, "--profile", str(REPO / "slurm" / "profiles" / "local.yaml"), "--shards", "3") == 0
    assert _tree(out) == _tree(prepared)
    report = json.loads((out / "report.json").read_text())
    assert len(report["failed"]) == 2 and report["unfinished"] == []
    assert list((out / ".prepare" / "logs").iterdir())   # submitit's folders of the array's tasks
