"""Video input at training speed (issue 10): the seek path against a full decode, crop then resize, V-JEPA 2's
fps / duration / num_clips sampling, mixtures (with exact resume) and the loop's data-wait timing. Real files
written with PyAV's libx264."""

from __future__ import annotations

import fractions
import time
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from salt.config import ConfigError
from salt.data import collate, step_sampler
from salt.data.sampler import Mixture, batch_for_step
from salt.data.video.dataset import VideoListDataset
from salt.data.video.decode import SeekFallbackWarning, VideoInfo, read_frames, read_video, thread_count
from salt.data.video.lists import VideoListConfig
from salt.data.video.transforms import crop_clip
from salt.layout import RunLayout, read_metrics
from salt.train.loop import Trainer, run_dir_for, train
from salt.train.metrics import DataWaitWarning, StepTimer
from tests.test_video_data import counting_frames, frame_numbers, write_list, write_video

H, W = 48, 64


def textured(num_frames: int, height: int = H, width: int = W, seed: int = 0) -> list[np.ndarray]:
    """A moving texture, a moving square and one random dark pixel: every frame differs from every other."""
    ys, xs = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(num_frames):
        img = np.stack([(xs * 4 + 3 * k) % 256, (ys * 5 + 2 * k) % 256, ((xs + ys) * 3 + k) % 256], -1)
        img = img.astype(np.uint8)
        left = (2 * k) % (width - 12)
        img[10:22, left:left + 12] = 255
        img[rng.integers(0, height), rng.integers(0, width)] = 0
        frames.append(img)
    return frames


def encode(path: Path, frames: list[np.ndarray], *, gop: int, bframes: int = 0, open_gop: bool = False,
           vfr: bool = False, fmt: str | None = None, codec: str = "libx264") -> Path:
    """H.264 with a fixed keyframe interval and a fixed number of B-frames (b-adapt=0, no scene cuts), or with
    codec="libvpx-vp9" VP9 in webm (alt-ref frames on: hidden frames packed with shown ones; a 1/1000 time base);
    `vfr` gives uneven timestamps (20-59 ms apart) in a 1/1000 time base."""
    vp9 = codec == "libvpx-vp9"
    time_base = fractions.Fraction(1, 1000) if vfr or vp9 else fractions.Fraction(1, 25)
    x264 = f"b-adapt=0:scenecut=0{':open-gop=1' if open_gop else ''}"
    options = ({"auto-alt-ref": "1", "lag-in-frames": "16", "crf": "30", "b": "0", "deadline": "realtime",
                "cpu-used": "8"} if vp9 else {"bf": str(bframes), "crf": "18", "x264-params": x264})
    rng = np.random.default_rng(1)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.options = {"g": str(gop), "keyint_min": str(gop), **options}
        stream.codec_context.time_base = time_base
        container.start_encoding()
        pts = 0
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = pts, time_base
            pts += int(rng.integers(20, 60)) if vfr else 40 if vp9 else 1
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def cut(source: Path, path: Path, keyframe: int, first: int) -> Path:
    """What `ffmpeg -ss <frame first> -c copy` writes: the packets from the keyframe at frame `keyframe` on, shifted
    so frame `first` is at time 0, into an mp4 whose edit list starts there. The frames before `first` are still in
    the file (the later ones need them to decode), flagged as discarded on reading; a decode from the start gives
    frame `first` first, and the header counts every packet (it overstates the frame count)."""
    with av.open(str(source)) as inp, av.open(str(path), "w") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        packets = [p for p in inp.demux(stream) if p.size]
        order = sorted(p.pts for p in packets)
        start, zero = order[keyframe], order[first]
        for packet in packets[next(i for i, p in enumerate(packets) if p.pts == start):]:
            packet.pts, packet.dts, packet.stream = packet.pts - zero, packet.dts - zero, copy
            out.mux(packet)
    return path


def full_decode(path: Path) -> list[np.ndarray]:
    """The reference, with PyAV alone: every frame of a decode from the start, as RGB."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def coded(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("coded")
    return {
        "gop1": encode(root / "gop1.mp4", textured(30), gop=1, bframes=0),
        "gop12_b3": encode(root / "gop12.mp4", textured(72), gop=12, bframes=3),
        "gop250_b3": encode(root / "gop250.mp4", textured(260), gop=250, bframes=3),
        "open_gop": encode(root / "open.mp4", textured(60), gop=12, bframes=3, open_gop=True),
        "vfr_mp4": encode(root / "vfr.mp4", textured(60), gop=12, bframes=2, vfr=True),
        "vfr_mkv": encode(root / "vfr.mkv", textured(60), gop=12, bframes=2, vfr=True),
        "edit_list": cut(encode(root / "whole.mp4", textured(72), gop=12, bframes=3), root / "cut.mp4", 12, 17),
        "vp9_webm": encode(root / "vp9.webm", textured(60), gop=12, codec="libvpx-vp9"),
        "vp9_vfr_webm": encode(root / "vp9_vfr.webm", textured(60), gop=12, vfr=True, codec="libvpx-vp9"),
    }


def plans(num_frames: int) -> list[list[int]]:
    """Clips around keyframes, at the very end, repeated frames (padding), two clips far apart, one frame."""
    last = num_frames - 1
    return [
        [11, 12, 13, 14], [10, 12, 14, 16, 18], list(range(20, 28)), [last - 6, last - 3, last, last, last],
        [1, 3, 5, 7] + [last - 9, last - 7, last - 5, last - 3], [0], [last], [24, 25, 26, 27] + [5, 6],
    ]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", ["gop1", "gop12_b3", "gop250_b3", "open_gop", "vfr_mp4", "vfr_mkv", "edit_list",
                                  "vp9_webm", "vp9_vfr_webm"])
def test_seek_path_gives_the_frames_of_a_full_decode(coded, name, threads):
    path = coded[name]
    reference = full_decode(path)
    for indices in plans(len(reference)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", SeekFallbackWarning)   # every clip here must come from a seek
            frames, fell_back = read_frames(str(path), lambda info: indices, threads=threads)
        assert not fell_back
        for i, frame in zip(indices, frames):
            assert np.array_equal(frame, reference[i]), f"{name}: frame {i} differs from a full decode"


def test_the_test_videos_have_what_they_claim(coded):
    with av.open(str(coded["vfr_mp4"])) as container:
        pts = sorted(p.pts for p in container.demux(video=0) if p.size)
    assert len(set(np.diff(pts))) > 5   # really variable frame spacing
    for name in ("gop12_b3", "gop250_b3", "open_gop"):
        with av.open(str(coded[name])) as container:
            packets = [p for p in container.demux(video=0) if p.size]
        assert any(p.pts != p.dts for p in packets), f"{name} has no reordered (B) frames"
        keyframes = [i for i, p in enumerate(sorted(packets, key=lambda p: p.pts)) if p.is_keyframe]   # frame numbers
        assert keyframes[:2] == ([0, 12] if name != "gop250_b3" else [0, 250])
    with av.open(str(coded["edit_list"])) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        header = stream.frames
    discarded = [p for p in packets if p.is_discard]
    assert len(discarded) == 5 and discarded[0].is_keyframe and header == 60   # its first keyframe is discarded
    whole, cut_file = full_decode(coded["edit_list"].with_name("whole.mp4")), full_decode(coded["edit_list"])
    assert len(cut_file) == 55 and np.array_equal(cut_file[0], whole[17])
    for name in ("vp9_webm", "vp9_vfr_webm"):   # no frame count in a webm header: the frame index counts them
        with av.open(str(coded[name])) as container:
            stream = container.streams.video[0]
            packets = sorted((p for p in container.demux(stream) if p.size), key=lambda p: p.pts)
            assert stream.frames == 0 and stream.codec_context.name == "vp9" and len(packets) == 60
        assert [i for i, p in enumerate(packets) if p.is_keyframe][:3] == [0, 12, 24]


def test_seeking_decodes_fewer_frames(coded):
    """A late clip decodes from its keyframe, and skips the non-reference frames it does not keep."""
    path = str(coded["gop12_b3"])
    late = list(range(60, 72, 3))
    by_seek, from_start = read_video(path, lambda info: late), read_video(path, lambda info: late, seek=False)
    assert from_start.decoded == 70 and by_seek.decoded <= 12
    assert [f.pts for f in by_seek.frames] == [f.pts for f in from_start.frames]


def test_a_file_without_timestamps_falls_back_to_a_full_decode_and_is_counted(tmp_path):
    raw = encode(tmp_path / "raw.h264", textured(30), gop=12, bframes=2, fmt="h264")
    reference = full_decode(raw)
    with pytest.warns(SeekFallbackWarning, match="raw.h264.*timestamps are missing"):
        frames, fell_back = read_frames(str(raw), lambda info: [20, 22, 24])
    assert fell_back and all(np.array_equal(f, reference[i]) for f, i in zip(frames, [20, 22, 24]))
    write_video(tmp_path / "plain.mp4", counting_frames(12))
    dataset = VideoListDataset(VideoListConfig(list_path=write_list(tmp_path / "l.txt", ["raw.h264 0", "plain.mp4 1"]),
                                               frames_per_clip=4, frame_step=2, resolution=16), train=True)
    with pytest.warns(SeekFallbackWarning):
        sample = dataset[(0, 3)]
    assert sample["seek_fallbacks"].item() == 1 and sample["decode_failures"].item() == 0
    assert dataset[(1, 3)]["seek_fallbacks"].item() == 0


def test_one_open_per_sample(counting, monkeypatch):
    import salt.data.video.decode as decode
    opened, real_open = [], av.open
    monkeypatch.setattr(decode.av, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    cfg = VideoListConfig(list_path=write_list(counting / "once.txt", ["count40.mkv 0"]), frames_per_clip=4,
                          frame_step=3, resolution=16)   # matroska: no frame count in the header, counted by demuxing
    VideoListDataset(cfg, train=True)[(0, 5)]
    assert len(opened) == 1


class _ThreadPolicy(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        return thread_count(0)


def test_decode_threads_default_to_one_per_worker_and_ffmpegs_choice_in_the_main_process():
    assert thread_count(0) == 0 and thread_count(3) == 3
    assert [int(t) for t in DataLoader(_ThreadPolicy(), num_workers=1)] == [1, 1]


def smooth(num_frames: int, height: int, width: int) -> list[np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return [np.stack([128 + 90 * np.sin(xs / 23 + k / 5), 128 + 90 * np.cos(ys / 17 - k / 7),
                      128 + 60 * np.sin((xs + ys) / 31)], -1).astype(np.uint8) for k in range(num_frames)]


@pytest.mark.parametrize("box", [(0, 0, 192, 256), (10, 30, 150, 200), (40, 50, 100, 120), (20, 20, 60, 80)])
def test_a_clip_is_its_frames_cropped_then_resized(tmp_path, box):
    """crop_clip (training's and evaluation's one path) crops full-size RGB frames, then resizes them on uint8,
    whatever the crop's size against the output: within a grey level of a float resize of the crop."""
    path = encode(tmp_path / "big.mp4", smooth(6, 192, 256), gop=12, bframes=0)
    cfg = VideoListConfig(resolution=48)
    full, _ = read_frames(str(path), lambda info: list(range(6)))
    reference = crop_clip(full, box, cfg)
    to_grey_levels = torch.tensor(cfg.std).view(3, 1, 1, 1) * 255
    top, left, h, w = box
    crops = torch.from_numpy(np.stack(full)[:, top:top + h, left:left + w]).permute(0, 3, 1, 2).float()
    as_float = torch.nn.functional.interpolate(crops, size=(48, 48), mode="bilinear", antialias=True)
    unnormalised = reference * to_grey_levels + torch.tensor(cfg.mean).view(3, 1, 1, 1) * 255
    assert (unnormalised - as_float.transpose(0, 1)).abs().max() < 1.01


def test_training_and_evaluation_clips_come_from_one_crop_path(tmp_path):
    """A training crop that is the whole (square) frame, unflipped, gives the evaluation's centre clip bit for bit."""
    path = encode(tmp_path / "square.mp4", smooth(7, 40, 40), gop=12, bframes=0)
    cfg = VideoListConfig(list_path=write_list(tmp_path / "square.txt", [f"{path.name} 0"]), frames_per_clip=4,
                          frame_step=2, resolution=24, crop_scale=[1.0, 1.0], crop_aspect=[1.0, 1.0], hflip=False)
    trained = VideoListDataset(cfg, train=True)[(0, 11)]["video"]   # 7 frames: the clip starts at 0 either way
    evaluated = VideoListDataset(cfg, train=False)[0]["video"]
    assert evaluated.shape == (1, *trained.shape) and torch.equal(trained, evaluated[0])


# ---------------------------------------------------------------- V-JEPA 2's sampling


@pytest.fixture(scope="module")
def counting(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("counting")
    write_video(root / "count40.mp4", counting_frames(40), fps=25)
    write_video(root / "count40_30fps.mp4", counting_frames(40), fps=30)
    write_video(root / "count40.mkv", counting_frames(40))
    return root


@pytest.mark.parametrize(("fields", "name", "step"), [
    ({"fps": 5.0}, "count40.mp4", 5),             # 25 // 5
    ({"fps": 4.0}, "count40_30fps.mp4", 7),       # 30 // 4, as V-JEPA 2 rounds
    ({"duration": 0.8}, "count40.mp4", 5),        # int(0.8 s * 25 / 4 frames)
    ({"fps": 50.0}, "count40.mp4", 1),            # faster than the video: every frame
])
def test_frame_step_from_a_target_fps_or_a_clip_duration(counting, fields, name, step):
    cfg = VideoListConfig(list_path=write_list(counting / f"{name}.txt", [f"{name} 0"]), frames_per_clip=4,
                          resolution=16, **fields)
    train_set, test_set = VideoListDataset(cfg, train=True), VideoListDataset(cfg, train=False)
    for seed in range(4):
        numbers = frame_numbers(train_set[(0, seed)]["video"], cfg)
        assert numbers == [numbers[0] + i * step for i in range(4)]
    middle = (40 - 3 * step - 1) // 2
    assert frame_numbers(test_set[0]["video"][0], cfg) == [middle + i * step for i in range(4)]


def test_several_clips_per_video_come_from_its_segments_and_collate_into_the_batch(counting):
    cfg = VideoListConfig(list_path=write_list(counting / "two.txt", ["count40.mp4 3", "count40.mp4 4"]),
                          frames_per_clip=4, frame_step=2, resolution=16, num_clips=2)
    dataset = VideoListDataset(cfg, train=True)
    starts = set()
    for seed in range(8):
        video = dataset[(0, seed)]["video"]
        assert video.shape == (2, 3, 4, 16, 16)
        first, second = (frame_numbers(clip, cfg) for clip in video)
        assert first == [first[0] + 2 * i for i in range(4)] and second == [second[0] + 2 * i for i in range(4)]
        assert 0 <= first[0] <= 20 - 7 and 20 <= second[0] <= 40 - 7   # segments of 20 frames, spans of 7
        starts.add((first[0], second[0]))
    assert len(starts) > 3
    sampler = step_sampler(_data(cfg), dataset, batch_size=4, seed=0, start_step=0, end_step=1)
    batch = next(iter(DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)))
    assert batch["video"].shape == (4, 3, 4, 16, 16)
    assert batch["label"].tolist() in ([3, 3, 4, 4], [4, 4, 3, 3])
    assert batch["seek_fallbacks"].tolist() == [0] * 4
    with pytest.raises(ValueError, match="not a multiple of data.video.num_clips=2"):
        step_sampler(_data(cfg), dataset, batch_size=3, seed=0, start_step=0, end_step=1)


def _data(video_cfg: VideoListConfig):
    from salt.schema import DataConfig
    return DataConfig(source="video_list", video=video_cfg)


# ---------------------------------------------------------------- mixtures


def test_mixture_batches_are_a_function_of_seed_and_step_and_follow_the_weights():
    mixture = Mixture(sizes=(5, 20, 3), weights=(0.6, 0.3, 0.1))
    first = batch_for_step(28, 8, seed=4, step=11, mixture=mixture)
    assert first == batch_for_step(28, 8, seed=4, step=11, mixture=mixture)
    assert first != batch_for_step(28, 8, seed=4, step=12, mixture=mixture)
    assert first != batch_for_step(28, 8, seed=5, step=11, mixture=mixture)
    items = [i for step in range(400) for i, _ in batch_for_step(28, 8, seed=0, step=step, mixture=mixture)]
    parts = np.digitize(items, [5, 25])
    shares = np.bincount(parts, minlength=3) / len(items)
    assert np.allclose(shares, mixture.weights, atol=0.03)
    assert set(items) == set(range(28))   # every video of every list is drawn
    with pytest.raises(ValueError, match="the dataset 30"):
        batch_for_step(30, 8, seed=0, step=0, mixture=mixture)


def _mixture_lists(root: Path) -> list[str]:
    lines = {"a": [], "b": []}
    for i in range(6):
        frames = np.stack(textured(8, 32, 32, seed=i))
        write_video(root / f"m{i}.mp4", frames, fps=8)
        lines["a" if i < 4 else "b"].append(f"m{i}.mp4 {i % 2}")
    return [write_list(root / f"{name}.txt", entries) for name, entries in lines.items()]


def test_a_mixture_trains_and_resumes_exactly(tmp_path, micro_config):
    first, second = _mixture_lists(tmp_path)
    video = ["data.source=video_list", f"data.video.lists=[{first},{second}]", "data.video.list_weights=[1.0,3.0]",
             "data.video.frames_per_clip=4", "data.video.frame_step=2", "data.video.resolution=16",
             "train.batch_size=4"]
    straight = micro_config("teacher", "straight", *video, steps=4)
    summary = train(straight)
    assert summary["decode_failures"] == 0 and summary["seek_fallbacks"] == 0
    records = read_metrics(run_dir_for(straight) / "metrics.jsonl")
    assert all(r["data_s"] >= 0 and r["step_s"] > 0 for r in records)
    interrupted = micro_config("teacher", "resumed", *video, steps=4)

    def stop_at_step_2(trainer, step, record):   # after the checkpoint of step 2, before step 3 computes
        if step == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        Trainer(interrupted, callbacks=[stop_at_step_2]).fit()
    assert [s for s, _ in RunLayout(run_dir_for(interrupted)).checkpoints()] == [2]
    train(interrupted, resume=True)
    a = RunLayout(run_dir_for(straight)).latest_checkpoint()
    b = RunLayout(run_dir_for(interrupted)).latest_checkpoint()
    wa, wb = torch.load(a, weights_only=True)["models"], torch.load(b, weights_only=True)["models"]
    for name in wa:
        for key in wa[name]:
            assert torch.equal(wa[name][key], wb[name][key]), f"{name}.{key} differs after resume"


# ---------------------------------------------------------------- config and timing


@pytest.mark.parametrize(("fields", "message"), [
    ({"fps": 4.0, "duration": 2.0}, "at most one of fps and duration"),
    ({"fps": -1.0}, "at most one of fps and duration"),
    ({"num_clips": 0}, "num_clips must be >= 1"),
    ({"decode_threads": -1}, "decode_threads >= 0"),
    ({"list_path": "a.txt", "lists": ["b.txt"]}, "either list_path or lists"),
    ({"lists": ["a.txt", "b.txt"], "list_weights": [1.0]}, "one weight > 0 per entry"),
    ({"lists": ["a.txt", "b.txt"], "list_weights": [1.0, 0.0]}, "one weight > 0 per entry"),
])
def test_new_fields_are_checked(fields, message):
    with pytest.raises(ValueError, match=message):
        VideoListConfig(**fields)


def test_bad_video_overrides_fail_when_the_config_loads(micro_config):
    with pytest.raises(ConfigError, match="data.video"):
        micro_config("teacher", "bad", "data.video.list_weights=[1.0]", "data.video.lists=[a.txt,b.txt]")
    with pytest.raises(ConfigError, match="batch_size=8 is not a multiple of data.video.num_clips=3"):
        micro_config("teacher", "bad", "data.source=video_list", "data.video.num_clips=3")


def test_data_wait_is_timed_and_a_slow_loader_is_named():
    def slow_loader():
        for i in range(6):
            time.sleep(0.02)
            yield i
    timer = StepTimer(num_workers=0)
    windows = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, _ in enumerate(timer.batches(slow_loader())):
            with timer.step():
                time.sleep(0.002)
            if i % 2 == 1:
                windows.append(timer.window())
    assert all(w["data_s"] >= 0.02 and 0.002 <= w["step_s"] < w["data_s"] for w in windows)
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWaitWarning)]
    assert len(messages) == 1   # once, and not for the first window (the loader's start-up)
    assert "data.num_workers (now 0)" in messages[0]
    quick = StepTimer(num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWaitWarning)
        for _ in quick.batches(range(4)):
            with quick.step():
                time.sleep(0.005)
        quick.window()
        quick.window()


def test_video_info_reaches_the_plan(counting):
    seen = []
    read_video(str(counting / "count40_30fps.mp4"), lambda info: seen.append(info) or [0])
    assert seen == [VideoInfo(num_frames=40, height=48, width=64, rate=30.0)]
