"""Frame indexes (salt.data.frame_index): built once per file by one demux, kept in memory and on disk, keyed by
the file as it is now; a sample after the first never demuxes its file from the start. Fast decoding: close to,
not equal to, exact decoding. Real H.264 files written with PyAV."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import av
import numpy as np
import pytest

import salt.data.frame_index as fi
from salt.config import load_config, resolve_config
from salt.identity import config_hash
from salt.data.video.dataset import VideoListDataset
from salt.data.video.decode import read_frames
from salt.data.video.lists import VideoListConfig
from salt.schema import RunConfig
from tests.test_video_data import write_list
from tests.test_video_input import encode, full_decode, textured


@pytest.fixture
def index_folder(tmp_path, monkeypatch) -> Path:
    """A fresh index folder and fresh per-process caches for one test."""
    folder = tmp_path / "indexes"
    monkeypatch.setenv("SALT_VIDEO_INDEX", str(folder))
    monkeypatch.setattr(fi, "_CACHES", {})
    return folder


def cache(folder) -> fi.IndexCache:
    return fi._CACHES[folder]


def clip(path: Path, indices: list[int]) -> list[np.ndarray]:
    return read_frames(str(path), lambda info: indices, threads=1)[0]


def test_an_index_is_built_once_then_read_from_memory_and_from_disk(tmp_path, index_folder):
    path = encode(tmp_path / "v.mp4", textured(90), gop=30, bframes=2)
    reference = full_decode(path)
    for indices in ([70, 72, 74], [3, 4], [89]):
        assert all(np.array_equal(f, reference[i]) for f, i in zip(clip(path, indices), indices))
    assert cache(index_folder).built == 1   # the first sample scanned the file; the others used its index
    files = list(index_folder.rglob("*.idx"))
    assert files == [fi.index_file(index_folder, str(path))]
    with av.open(str(path)) as container:   # another process: read from disk, the same index as a scan
        fresh = fi.IndexCache(index_folder)
        from_disk = fresh.get(str(path), container, container.streams.video[0])
        scanned = fi.scan(container, container.streams.video[0])
    assert fresh.built == 0 and from_disk.count == scanned.count == 90 and from_disk.usable
    assert np.array_equal(from_disk.pts, scanned.pts) and np.array_equal(from_disk.keyframes, scanned.keyframes)
    assert from_disk.keyframes[:, 0].tolist() == [scanned.pts[0], scanned.pts[30], scanned.pts[60]]


def test_once_indexed_a_sample_never_scans_its_file(tmp_path, index_folder, monkeypatch):
    path = encode(tmp_path / "v.mp4", textured(120), gop=30, bframes=2)
    cfg = VideoListConfig(list_path=write_list(tmp_path / "l.txt", ["v.mp4 0"]), frames_per_clip=4, frame_step=3,
                          resolution=16)
    dataset = VideoListDataset(cfg, train=True)
    first = dataset[(0, 1)]["video"]

    def no_scan(*args):
        raise AssertionError("the file was demuxed again")
    monkeypatch.setattr(fi, "scan", no_scan)
    assert all(dataset[(0, seed)]["seek_fallbacks"].item() == 0 for seed in range(2, 8))
    monkeypatch.setattr(fi, "_CACHES", {})   # a new worker: memory empty, the index file on disk
    assert np.array_equal(dataset[(0, 1)]["video"], first)


def test_a_changed_file_gets_a_new_index(tmp_path, index_folder):
    path = encode(tmp_path / "v.mp4", textured(60, seed=0), gop=12, bframes=2)
    clip(path, [50])
    old = fi.index_file(index_folder, str(path))
    encode(tmp_path / "new.mp4", textured(40, seed=1), gop=10, bframes=0)
    os.replace(tmp_path / "new.mp4", path)   # same path, other content, other size
    assert fi.index_file(index_folder, str(path)) != old
    reference = full_decode(path)
    assert len(reference) == 40
    assert all(np.array_equal(f, reference[i]) for f, i in zip(clip(path, [30, 35, 39]), [30, 35, 39]))
    assert cache(index_folder).built == 2


def test_a_damaged_index_file_is_rebuilt(tmp_path, index_folder):
    path = encode(tmp_path / "v.mp4", textured(60), gop=12, bframes=2)
    clip(path, [10])
    file = fi.index_file(index_folder, str(path))
    good = file.read_bytes()
    for damaged in (good[:-8], good[:13], b"not an index at all!", good[:8] + (2).to_bytes(8, "little") + good[16:]):
        file.write_bytes(damaged)
        fresh = fi.IndexCache(index_folder)
        with av.open(str(path)) as container:
            index = fresh.get(str(path), container, container.streams.video[0])
        assert fresh.built == 1 and index.count == 60 and file.read_bytes() == good


def test_an_unwritable_folder_warns_once_and_keeps_indexes_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SALT_VIDEO_INDEX", str(blocker / "indexes"))   # under a file: cannot be created
    monkeypatch.setattr(fi, "_CACHES", {})
    paths = [encode(tmp_path / f"v{i}.mp4", textured(30, seed=i), gop=10, bframes=0) for i in range(2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path in paths * 2:
            clip(path, [20])
    messages = [str(w.message) for w in caught if "frame indexes" in str(w.message)]
    assert len(messages) == 1 and "keeping them in memory" in messages[0]
    assert fi._CACHES[blocker / "indexes"].built == 2


def test_none_keeps_indexes_in_memory_only_and_memory_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setenv("SALT_VIDEO_INDEX", "none")
    monkeypatch.setattr(fi, "_CACHES", {})
    paths = [encode(tmp_path / f"v{i}.mp4", textured(30, seed=i), gop=10, bframes=0) for i in range(3)]
    for path in paths:
        clip(path, [5])
    assert fi._CACHES[None].built == 3 and not list(tmp_path.rglob("*.idx"))
    bounded = fi.IndexCache(None, memory_frames=70)   # room for two 30-frame indexes
    for path in paths + paths[-1:]:
        with av.open(str(path)) as container:
            bounded.get(str(path), container, container.streams.video[0])
    assert bounded.built == 3 and len(bounded._memory) == 2   # the oldest dropped; the newest found in memory


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def test_fast_decoding_is_close_to_exact_but_not_equal_and_names_its_runs(tmp_path):
    path = encode(tmp_path / "v.mp4", textured(48, height=96, width=128), gop=24, bframes=2)
    indices = [30, 34, 38, 42]
    exact = read_frames(str(path), lambda info: indices, threads=1)[0]
    fast, fell_back = read_frames(str(path), lambda info: indices, threads=1, fast=True)
    assert not fell_back
    assert any(not np.array_equal(f, e) for f, e in zip(fast, exact))   # the options reach the decoder
    assert min(psnr(f, e) for f, e in zip(fast, exact)) > 30
    configs = [load_config(RunConfig, [resolve_config("micro_teacher")], extra) for extra in
               ([], ["data.video.fast_decode=false"], ["data.video.fast_decode=true"])]
    hashes = [config_hash(c) for c in configs]
    assert hashes[0] == hashes[1] != hashes[2]   # off: the ids runs had before the option existed
