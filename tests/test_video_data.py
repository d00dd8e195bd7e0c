"""VideoListDataset on real h264 files written with PyAV."""

from __future__ import annotations

import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from salt.data.video.dataset import UnreadableVideoWarning, VideoListDataset
from salt.data.video.lists import VideoListConfig

HEIGHT, WIDTH = 48, 64
COUNT_BASE, COUNT_STEP = 10, 6  # frame k is uniform grey COUNT_BASE + COUNT_STEP * k


def write_video(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    """Encode RGB uint8 [T, H, W, 3] as h264 at qp 0 (lossless in YUV) so pixel values survive."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": "0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def moving_square_frames(num_frames: int) -> np.ndarray:
    """A textured background (so crops differ) with a bright square moving right."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = np.stack([xs * 4 % 256, ys * 5 % 256, (xs + ys) * 3 % 256], axis=-1).astype(np.uint8)
    frames = np.repeat(background[None], num_frames, axis=0)
    for k in range(num_frames):
        left = (2 * k) % (WIDTH - 12)
        frames[k, 10:22, left : left + 12] = 255
    return frames


def counting_frames(num_frames: int) -> np.ndarray:
    values = COUNT_BASE + COUNT_STEP * np.arange(num_frames)
    return np.broadcast_to(values[:, None, None, None], (num_frames, HEIGHT, WIDTH, 3)).astype(np.uint8)


def write_list(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def frame_numbers(video: torch.Tensor, cfg: VideoListConfig) -> list[int]:
    """Undo normalisation of a [3, T, R, R] clip of counting frames and read each frame's number."""
    mean = torch.tensor(cfg.mean).view(3, 1, 1, 1)
    std = torch.tensor(cfg.std).view(3, 1, 1, 1)
    pixels = (video * std + mean) * 255.0
    per_frame = pixels.mean(dim=(0, 2, 3))
    return [round(v) for v in ((per_frame - COUNT_BASE) / COUNT_STEP).tolist()]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "moving_a.mp4", moving_square_frames(24))
    write_video(root / "moving_b.mp4", moving_square_frames(30))
    write_video(root / "count40.mp4", counting_frames(40))
    write_video(root / "count5.mp4", counting_frames(5))
    write_video(root / "grey.mp4", np.full((12, HEIGHT, WIDTH, 3), 128, np.uint8))
    write_video(root / "count40.mkv", counting_frames(40))  # matroska: no frame count in the header
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    with av.open(str(root / "audio_only.mp4"), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return root


def make_dataset(videos: Path, lines: list[str], train: bool, name: str = "list.txt", **cfg_fields):
    cfg = VideoListConfig(list_path=write_list(videos / name, lines), **cfg_fields)
    return VideoListDataset(cfg, train=train), cfg


SMALL = {"frames_per_clip": 8, "frame_step": 2, "resolution": 32}


def test_train_sample_shapes_and_dtypes(videos):
    dataset, _ = make_dataset(videos, ["moving_a.mp4 3", "moving_b.mp4 7"], train=True, **SMALL)
    assert len(dataset) == 2
    sample = dataset[(1, 123)]
    assert sample["video"].shape == (3, 8, 32, 32)
    assert sample["video"].dtype == torch.float32
    assert sample["label"].dtype == torch.int64 and sample["label"].shape == () and sample["label"].item() == 7
    assert sample["decode_failures"].dtype == torch.int64 and sample["decode_failures"].item() == 0


def test_eval_sample_shapes_and_plain_int_index(videos):
    dataset, _ = make_dataset(videos, ["moving_a.mp4 3", "moving_b.mp4 7"], train=False, eval_clips=2, **SMALL)
    sample = dataset[(0, 5)]
    assert sample["video"].shape == (2, 3, 8, 32, 32)
    assert sample["video"].dtype == torch.float32
    assert sample["label"].item() == 3
    # Evaluation is not random: a plain index (default sampler) gives the same tensor, any seed.
    assert torch.equal(dataset[0]["video"], sample["video"])
    assert torch.equal(dataset[(0, 99)]["video"], sample["video"])


def test_training_requires_a_seed(videos):
    dataset, _ = make_dataset(videos, ["moving_a.mp4 3"], train=True, **SMALL)
    with pytest.raises(TypeError, match="sample_seed"):
        dataset[0]
    with pytest.raises(IndexError, match="out of range"):
        dataset[(1, 0)]


@pytest.mark.parametrize("train", [True, False])
def test_uniform_grey_maps_to_normalised_value(videos, train):
    dataset, cfg = make_dataset(videos, ["grey.mp4 0"], train=train, **SMALL)
    video = dataset[(0, 3)]["video"]
    channels = video.movedim(-4, 0).reshape(3, -1)  # train [3,T,R,R], eval [clips,3,T,R,R]
    expected = (128 / 255 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    tolerance = 2 / 255 / min(cfg.std)  # YUV round trip moves a grey level by at most ~1
    assert torch.allclose(channels.mean(dim=1), expected, atol=tolerance)
    assert (channels.amax(dim=1) - channels.amin(dim=1)).max() < tolerance


def test_same_index_and_seed_is_identical_and_seed_changes_crop(videos):
    dataset, _ = make_dataset(videos, ["moving_a.mp4 0", "moving_b.mp4 1"], train=True, **SMALL)
    first = dataset[(1, 42)]["video"]
    assert torch.equal(first, dataset[(1, 42)]["video"])
    fresh, _ = make_dataset(videos, ["moving_a.mp4 0", "moving_b.mp4 1"], train=True, name="again.txt", **SMALL)
    assert torch.equal(first, fresh[(1, 42)]["video"])
    others = [dataset[(1, seed)]["video"] for seed in range(1, 5)]
    assert all(not torch.allclose(first, other) for other in others)


def test_train_clip_honours_frame_step_and_start_varies(videos):
    dataset, cfg = make_dataset(videos, ["count40.mp4 0"], train=True, frames_per_clip=4, frame_step=3, resolution=16)
    starts = set()
    for seed in range(12):
        numbers = frame_numbers(dataset[(0, seed)]["video"], cfg)
        start = numbers[0]
        assert numbers == [start, start + 3, start + 6, start + 9]
        assert 0 <= start <= 40 - 10
        starts.add(start)
    assert len(starts) > 3


def test_eval_clips_are_uniformly_spaced(videos):
    dataset, cfg = make_dataset(
        videos, ["count40.mp4 0"], train=False, frames_per_clip=4, frame_step=3, resolution=16, eval_clips=3
    )
    clips = dataset[0]["video"]
    # Valid starts 0..30 cut into 3 segments whose centres are 5, 15, 25.
    assert [frame_numbers(clip, cfg) for clip in clips] == [[5, 8, 11, 14], [15, 18, 21, 24], [25, 28, 31, 34]]
    single, cfg_one = make_dataset(videos, ["count40.mp4 0"], train=False, name="one.txt",
                                   frames_per_clip=4, frame_step=3, resolution=16)
    assert frame_numbers(single[0]["video"][0], cfg_one) == [15, 18, 21, 24]


def test_short_video_repeats_last_frame(videos):
    for train in (True, False):
        dataset, cfg = make_dataset(
            videos, ["count5.mp4 0"], train=train, frames_per_clip=4, frame_step=3, resolution=16
        )
        video = dataset[(0, 7)]["video"]
        video = video if train else video[0]
        assert frame_numbers(video, cfg) == [0, 3, 4, 4]


def test_container_without_frame_count_in_header(videos):
    dataset, cfg = make_dataset(
        videos, ["count40.mkv 0"], train=False, frames_per_clip=4, frame_step=3, resolution=16
    )
    assert frame_numbers(dataset[0]["video"][0], cfg) == [15, 18, 21, 24]


def test_horizontal_flip(videos):
    # A full-frame "crop" (scale 1, the frame's own aspect) and a video exactly one clip long
    # leave the flip as the only random choice.
    fixed = {"frames_per_clip": 5, "frame_step": 2, "resolution": 16, "crop_scale": [1.0, 1.0],
             "crop_aspect": [WIDTH / HEIGHT, WIDTH / HEIGHT]}
    write_video(videos / "moving_9.mp4", moving_square_frames(9))
    plain, _ = make_dataset(videos, ["moving_9.mp4 0"], train=True, name="noflip.txt", hflip=False, **fixed)
    reference = plain[(0, 0)]["video"]
    assert all(torch.equal(plain[(0, seed)]["video"], reference) for seed in range(6))
    flipping, _ = make_dataset(videos, ["moving_9.mp4 0"], train=True, name="flip.txt", **fixed)
    flipped = []
    for seed in range(12):
        video = flipping[(0, seed)]["video"]
        assert torch.equal(video, reference) or torch.equal(video, reference.flip(-1))
        flipped.append(torch.equal(video, reference.flip(-1)))
    assert any(flipped) and not all(flipped)


def test_unreadable_files_are_skipped_with_warning_and_counted(videos):
    lines = ["moving_a.mp4 0", "corrupt.mp4 1", "missing.mp4 2", "audio_only.mp4 3", "moving_b.mp4 4"]
    dataset, _ = make_dataset(videos, lines, train=True, **SMALL)
    with pytest.warns(UnreadableVideoWarning) as record:
        sample = dataset[(1, 0)]
    messages = [str(w.message) for w in record]
    assert len(messages) == 3
    assert "corrupt.mp4" in messages[0] and "line 2" in messages[0] and "InvalidDataError" in messages[0]
    assert "missing.mp4" in messages[1] and "No such file" in messages[1]
    assert "audio_only.mp4" in messages[2] and "no video stream" in messages[2]
    assert sample["decode_failures"].item() == 3
    assert sample["label"].item() == 4
    with pytest.warns(UnreadableVideoWarning) as record:
        assert dataset[(2, 0)]["decode_failures"].item() == 2
    assert ["missing.mp4" in str(w.message) for w in record] == [True, False]


def test_skipping_wraps_around_to_the_start(videos):
    dataset, _ = make_dataset(videos, ["moving_a.mp4 5", "corrupt.mp4 1"], train=False, **SMALL)
    with pytest.warns(UnreadableVideoWarning, match="corrupt.mp4"):
        sample = dataset[1]
    assert sample["label"].item() == 5 and sample["decode_failures"].item() == 1


def test_all_unreadable_raises(videos):
    list_path = write_list(videos / "bad.txt", ["corrupt.mp4 0", "missing.mp4 1"])
    dataset = VideoListDataset(VideoListConfig(list_path=list_path, **SMALL), train=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableVideoWarning)
        with pytest.raises(RuntimeError, match=r"all 2 files .*bad\.txt.* unreadable"):
            dataset[(0, 0)]


def test_list_errors_name_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        VideoListDataset(VideoListConfig(list_path=str(tmp_path / "nope.txt")), train=True)
    with pytest.raises(ValueError, match="list_path is empty"):
        VideoListDataset(VideoListConfig(), train=True)
    empty = write_list(tmp_path / "empty.txt", ["", "   "])
    with pytest.raises(ValueError, match="empty.txt has no entries"):
        VideoListDataset(VideoListConfig(list_path=empty), train=True)
    malformed = write_list(tmp_path / "malformed.txt", ["a.mp4 0", "just_a_path.mp4"])
    with pytest.raises(ValueError, match=r"malformed.txt, line 2: expected 'path label'"):
        VideoListDataset(VideoListConfig(list_path=malformed), train=True)
    bad_label = write_list(tmp_path / "labels.txt", ["a.mp4 0", "b.mp4 1", "c.mp4 cat"])
    with pytest.raises(ValueError, match=r"labels.txt, line 3: label 'cat' is not an integer"):
        VideoListDataset(VideoListConfig(list_path=bad_label), train=True)


def test_list_formats_and_path_resolution(videos, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths must resolve against the list's folder, not cwd
    spaced = videos / "with space.mp4"
    spaced.write_bytes((videos / "moving_a.mp4").read_bytes())
    csv, _ = make_dataset(videos, ["moving_a.mp4,3", "with space.mp4,4"], train=False, name="list.csv", **SMALL)
    tsv, _ = make_dataset(videos, ["moving_a.mp4\t3", f"{spaced}\t4"], train=False, name="list.tsv", **SMALL)
    for dataset in (csv, tsv):
        assert dataset.labels == [3, 4]
        assert [e.path for e in dataset.entries] == [str(videos / "moving_a.mp4"), str(spaced)]
        assert torch.equal(dataset[0]["video"], dataset[1]["video"])


def test_dataloader_with_workers_and_default_collate(videos):
    lines = ["moving_a.mp4 0", "corrupt.mp4 1", "moving_b.mp4 2", "count40.mp4 3"]
    dataset, _ = make_dataset(videos, lines, train=True, **SMALL)
    items = [(0, 11), (1, 12), (2, 13), (3, 14)]
    loader = DataLoader(dataset, batch_size=2, sampler=items, num_workers=2)
    batches = list(loader)
    assert [b["video"].shape for b in batches] == [(2, 3, 8, 32, 32)] * 2
    assert torch.equal(torch.cat([b["label"] for b in batches]), torch.tensor([0, 2, 2, 3]))
    assert torch.equal(torch.cat([b["decode_failures"] for b in batches]), torch.tensor([0, 1, 0, 0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableVideoWarning)
        direct = torch.stack([dataset[item]["video"] for item in items])
    assert torch.equal(torch.cat([b["video"] for b in batches]), direct)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"frames_per_clip": 0}, "frames_per_clip must be >= 1"),
        ({"frame_step": 0}, "frame_step must be >= 1"),
        ({"resolution": 0}, "resolution must be >= 1"),
        ({"eval_clips": 0}, "eval_clips must be >= 1"),
        ({"crop_scale": [0.5, 1.5]}, "crop_scale must be"),
        ({"crop_scale": [0.9, 0.3]}, "crop_scale must be"),
        ({"crop_aspect": [0.0, 1.0]}, "crop_aspect must be"),
        ({"mean": [0.5, 0.5]}, "mean must have 3 values"),
        ({"std": [0.2, 0.0, 0.2]}, "std must be positive"),
    ],
)
def test_config_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        VideoListConfig(**fields)



def test_a_list_that_is_not_text_is_an_error_naming_it(tmp_path):
    from salt.data.video.lists import read_video_list
    path = tmp_path / "binary.txt"
    path.write_bytes(b"video.mp4 0\n\xf0\x28\x8c\x28 1\n")
    with pytest.raises(ValueError, match=r"video list .*binary.txt is not UTF-8 text"):
        read_video_list(str(path))
