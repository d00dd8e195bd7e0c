"""Named benchmarks on real mp4 files written with PyAV: separate train/val lists, stratified draws, the streamed
feature cache (resume, reuse), multi-view testing, strict vs paper selection, EMA vs online encoder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from salt.eval.benchmark import load_benchmark
from salt.eval.cache import TokenRows, extract_split, load_split
from salt.layout import FeatureCacheLayout, RunLayout
from salt.models import VideoViT
from tests.test_video_data import write_video

HEIGHT, WIDTH, FRAMES = 16, 24, 8   # landscape, so three spatial crops differ
CLASSES = 3
CLIP = {"frames_per_clip": 4, "frame_step": 2, "resolution": 16}
VIDEO_OVERRIDES = ["data.source=video_list", "data.video.frames_per_clip=4", "data.video.frame_step=2",
                   "data.video.resolution=16"]


def coloured_frames(label: int, seed: int) -> np.ndarray:
    """Class = the dominant colour channel; a textured background and a square moving right so clips differ."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, (FRAMES, HEIGHT, WIDTH, 3)).astype(np.uint8)
    frames[..., label] += 150
    for t in range(FRAMES):
        left = (2 * t + seed) % (WIDTH - 4)
        frames[t, 6:10, left:left + 4] = 255
    return frames


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory) -> Path:
    """A colour benchmark: 6 train and 3 val videos per class, lists sorted by class (as real lists often are)."""
    root = tmp_path_factory.mktemp("bench")
    for split, per_class in (("train", 6), ("val", 3)):
        lines = []
        for label in range(CLASSES):
            for i in range(per_class):
                name = f"{split}_{label}_{i}.mp4"
                write_video(root / name, coloured_frames(label, seed=100 * label + i + (50 if split == "val" else 0)))
                lines.append(f"{name} {label}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def write_bench(root: Path, name: str = "colours", **extra) -> Path:
    cfg = {"name": name, "train_list": "train.txt", "val_list": "val.txt", "clip": CLIP,
           "test_views": {"clips": 1, "crops": 1}, "probe": {"train_clips": 12, "test_clips": -1,
                                                             "attentive_train_clips": 6},
           "num_workers": 0, "batch_size": 8, "shard_size": 4}
    for key, value in extra.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and key in cfg else value
    path = root / f"{name}.yaml"
    import yaml
    path.write_text(yaml.safe_dump(cfg))
    return path


def micro_encoder(seed: int = 0) -> VideoViT:
    torch.manual_seed(seed)
    return VideoViT(img_size=16, num_frames=4, in_chans=3, patch_size=4, tubelet_size=2, embed_dim=64, depth=2,
                    num_heads=2).eval()


@pytest.fixture
def no_encoding(monkeypatch):
    """Any encoder forward is a test failure: what must happen before (or without) encoding."""
    def refuse(self, *args, **kwargs):
        raise AssertionError("the encoder ran")
    monkeypatch.setattr(VideoViT, "forward", refuse)


def cache_of(run_dir: Path, bench: str, split: str) -> FeatureCacheLayout:
    [root] = (RunLayout(run_dir).features).glob(f"{bench}-{split}-*")
    return FeatureCacheLayout(root)


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def test_cli_evaluates_a_trained_run_on_separate_lists_and_reuses_the_cache(bench_dir, micro_config, monkeypatch):
    from salt.__main__ import main
    from salt.eval.record import load_records, read_record, record_path
    from salt.train.loop import run_dir_for, train
    bench_path = write_bench(bench_dir)
    cfg = micro_config("teacher", "video", *VIDEO_OVERRIDES, f"data.video.list_path={bench_dir / 'train.txt'}",
                       "train.batch_size=4", steps=2)
    train(cfg)
    run_dir = run_dir_for(cfg)
    assert main(["eval", str(run_dir), "--protocol", "smoke", "--benchmark", str(bench_path)]) == 0
    record = read_record(record_path(run_dir, 2, "smoke", "colours"))
    assert record.benchmark == "colours" and record.selection == "strict" and record.encoder == "online"
    assert "heldout" not in record.losses and set(record.metrics) >= {"rankme", "alpha_req"}
    # the split: probes trained on train-list videos only, scored on every val-list video
    train_cache, val_cache = cache_of(run_dir, "colours", "train"), cache_of(run_dir, "colours", "val")
    train_paths = [Path(p).name for p, _ in json.loads(train_cache.key.read_text())["videos"]]
    val_paths = [Path(p).name for p, _ in json.loads(val_cache.key.read_text())["videos"]]
    assert all(p.startswith("train_") for p in train_paths) and len(train_paths) == 12
    assert sorted(val_paths) == sorted(f"val_{c}_{i}.mp4" for c in range(CLASSES) for i in range(3))
    # stratified, not the first 12 of a class-sorted list: 4 of each class; the attentive probe's 6 come first
    train_split = load_split(train_cache)
    assert torch.bincount(train_split.labels).tolist() == [4, 4, 4]
    assert torch.bincount(train_split.labels[:6]).tolist() == [2, 2, 2] and len(train_split.tokens) == 6
    scores = {(p.probe, p.pooling, p.shots): p for p in record.probes}
    linear = scores[("linear", "time", 0)]
    assert linear.details["train_videos"] == 12 and linear.details["test_videos"] == 9
    assert scores[("attentive", "tokens", 0)].details["num_fit"] + scores[("attentive", "tokens", 0)].details[
        "num_val"] == 6
    assert linear.test_accuracy > 1 / CLASSES + 0.2   # colour is an easy signal: well above chance
    # a second evaluation of the same checkpoint reads the cache: the encoder never runs
    monkeypatch.setattr(VideoViT, "forward", lambda *a, **k: (_ for _ in ()).throw(AssertionError("encoded")))
    assert main(["eval", str(run_dir), "--protocol", "smoke", "--benchmark", str(bench_path)]) == 0
    frame = load_records([run_dir])
    assert set(frame["benchmark"]) == {"colours"} and len(frame) == 1


def test_bad_benchmarks_fail_before_any_encoding(bench_dir, micro_config, no_encoding, tmp_path):
    from salt.eval.evaluate import evaluate_baseline
    cfg = micro_config("teacher", "base", *VIDEO_OVERRIDES, f"data.video.list_path={bench_dir / 'train.txt'}")
    (bench_dir / "one_class.txt").write_text("train_0_0.mp4 0\ntrain_0_1.mp4 0\n")
    (bench_dir / "unseen.txt").write_text("val_0_0.mp4 0\nval_1_0.mp4 7\n")
    (bench_dir / "empty.txt").write_text("\n")
    cases = [({"train_list": "one_class.txt"}, "has one class"),
             ({"val_list": "unseen.txt"}, r"label\(s\) 7 that the train list .* lacks \(first at line 2\)"),
             ({"val_list": "empty.txt"}, "has no entries"),
             ({"val_list": "missing.txt"}, "video list not found"),
             ({"val_list": "train.txt"}, "are the same file"),
             ({"clip": {"frames_per_clip": 5}}, "frames_per_clip=5 is not a multiple of the tubelet size 2"),
             ({"clip": {"resolution": 18}}, "resolution=18 is not a multiple of the patch size 4"),
             ({"clip": {"frames_per_clip": 8}}, r"token grid \(4, 4, 4\), the encoder was built for \(2, 4, 4\)")]
    for i, (change, message) in enumerate(cases):
        path = write_bench(bench_dir, f"bad{i}", **change)
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            evaluate_baseline("random_init", cfg, tmp_path, "smoke", benchmark=load_benchmark(path))
    digits = micro_config("teacher", "digits")   # a 1-channel encoder cannot read RGB videos
    with pytest.raises(ValueError, match="1-channel clips"):
        evaluate_baseline("random_init", digits, tmp_path, "smoke", benchmark=load_benchmark(write_bench(bench_dir)))
    with pytest.raises(ValueError, match="unknown config key 'probe.shots'"):
        load_benchmark(write_bench(bench_dir, "typo"), ["probe.shots=3"])
    for reserved in ("default", "all"):   # the run's own data; `python -m analysis --benchmark all`
        with pytest.raises(ValueError, match=f"not 'default' or 'all', got '{reserved}'"):
            load_benchmark(write_bench(bench_dir, reserved))


EXTRACT_ROWS = [8, 0, 3, 5, 1, 7, 2]


def extract_val(bench_dir: Path, root: Path, kill_after: int | None = None):
    """The val split's features (2 clips x 3 crops, 7 videos, shards of 2) into the cache `root`; -> (split,
    videos encoded per call). `kill_after`: SIGKILL this process when encoding the batch after that many."""
    import os
    import signal

    from salt.data.video.dataset import VideoListDataset
    bench = load_benchmark(write_bench(bench_dir), ["test_views.clips=2", "test_views.crops=3", "clip.frame_step=1"])
    dataset = VideoListDataset(bench.split_config("val"), train=False)
    encoder = micro_encoder()
    calls = []

    def encode(x):
        if kill_after is not None and len(calls) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)   # no handler, no finally: the process is gone mid-write
        calls.append(len(x))
        return encoder(x)
    split = extract_split(encode, encoder.grid, dataset, EXTRACT_ROWS, FeatureCacheLayout(root), {"test": 1},
                          views=6, token_rows=5, shard_size=2, batch_size=6, num_workers=0, device="cpu")
    return split, calls


def test_killed_extraction_resumes_to_the_same_features(bench_dir, tmp_path, one_thread):
    """A real SIGKILL (another process, killed while encoding its 4th video) leaves shard 0 only; the rerun
    encodes only the missing videos and its features equal an uninterrupted extraction's bit for bit."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent
    script = ("import sys, torch; from pathlib import Path; sys.path.insert(0, sys.argv[1]); torch.set_num_threads(1); "
              "from tests.test_benchmarks import extract_val; extract_val(Path(sys.argv[2]), Path(sys.argv[3]), 3)")
    killed = subprocess.run([sys.executable, "-c", script, str(root), str(bench_dir), str(tmp_path / "resumed")],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    whole, calls = extract_val(bench_dir, tmp_path / "whole")
    assert sum(calls) == 7 * 6
    done = sorted(p.name for p in (tmp_path / "resumed").glob("shard_*.pt"))
    assert done == ["shard_00000.pt"] and not (tmp_path / "resumed" / "complete.json").exists()
    (tmp_path / "resumed" / ".shard_00001.pt.torn.tmp").write_bytes(b"half a shard")   # a write cut short
    resumed, calls = extract_val(bench_dir, tmp_path / "resumed")
    assert sum(calls) == 5 * 6   # only the videos of the missing shards were encoded again
    assert torch.equal(whole.labels, resumed.labels)
    for how in ("time", "mean"):
        assert torch.equal(whole.pooled[how], resumed.pooled[how])
        assert whole.pooled[how].shape[:2] == (7, 6)
    assert isinstance(resumed.tokens, TokenRows) and resumed.tokens.shape == (5, 6, 32, 64)
    assert torch.equal(whole.tokens.materialize(), resumed.tokens.materialize())
    assert torch.equal(resumed.tokens[torch.tensor([4, 0, 2])], whole.tokens.materialize()[[4, 0, 2]])
    # multi-view: 2 clips x 3 crops differ from each other; linear / k-NN inputs are their mean per video
    views = whole.pooled["mean"][0].float()
    assert torch.cdist(views, views).triu(1)[torch.triu_indices(6, 6, 1).unbind()].min() > 0
    torch.testing.assert_close(whole.averaged("mean"), whole.pooled["mean"].float().mean(dim=1))


def test_spatial_crops_cover_the_long_side():
    from salt.data.video.transforms import eval_crop_boxes
    assert eval_crop_boxes(16, 24, 1) == [(0, 4, 16, 16)]
    assert eval_crop_boxes(16, 24, 3) == [(0, 0, 16, 16), (0, 4, 16, 16), (0, 8, 16, 16)]
    assert eval_crop_boxes(30, 20, 2) == [(0, 0, 20, 20), (10, 0, 20, 20)]


def test_strict_selection_never_reads_test_labels_and_paper_does():
    from salt.eval.attentive import fit_attentive_probes
    from salt.eval.probes import train_linear_probe
    g = torch.Generator().manual_seed(0)
    train_y, test_y = torch.arange(60) % 3, torch.arange(30) % 3
    train_x = torch.randn(60, 16, generator=g) + 0.8 * torch.nn.functional.one_hot(train_y, 16)
    test_x = torch.randn(30, 16, generator=g) + 0.8 * torch.nn.functional.one_hot(test_y, 16)
    shuffled = test_y[torch.randperm(30, generator=g)]
    wds = [1e-4, 1e-2, 1.0, 10.0]
    strict = [train_linear_probe(train_x, train_y, test_x, y, num_classes=3, weight_decays=wds) for y in (test_y,
                                                                                                         shuffled)]
    assert strict[0].weight_decay == strict[1].weight_decay and strict[0].val_accuracy == strict[1].val_accuracy
    for y in (test_y, shuffled):   # paper: the best test accuracy of the grid, so its choice follows test labels
        paper = train_linear_probe(train_x, train_y, test_x, y, num_classes=3, weight_decays=wds, selection="paper")
        each = [train_linear_probe(train_x, train_y, test_x, y, num_classes=3, weight_decays=[wd],
                                   selection="paper").accuracy for wd in wds]
        assert paper.accuracy == max(each) == paper.val_accuracy
    tokens, test_tokens = train_x.view(60, 4, 4), test_x.view(30, 4, 4)
    options = dict(num_classes=3, protocol="systematic", epochs=1, batch_size=30, self_attn_depth=0, num_heads=4,
                   device="cpu")
    chosen = [fit_attentive_probes(tokens, train_y, test_tokens, y, **options) for y in (test_y, shuffled)]
    assert chosen[0].details["selected"] == chosen[1].details["selected"]
    assert chosen[0].details["num_heads"] == 4 and chosen[0].details["selection"] == "strict"
    paper = fit_attentive_probes(tokens, train_y, test_tokens, shuffled, selection="paper", **options)
    best = max(h["test_accuracy"] for h in paper.details["per_head"])
    assert paper.accuracy == best == paper.selection_score and paper.details["num_fit"] == 60


def test_vjepa_is_probed_through_its_ema_encoder_unless_asked(micro_config):
    from salt.eval.evaluate import EvalProtocol, evaluate_run
    from salt.train.loop import run_dir_for, train
    protocol = EvalProtocol(name="micro", probe_train_clips=40, probe_test_clips=20, shots=[0], draws=1,
                            attentive="none", metric_clips=20, lidar_views=2, heldout_clips=8)
    vjepa, pixel = micro_config("vjepa", "v", steps=2), micro_config("teacher", "p", steps=2)
    train(vjepa)
    train(pixel)
    ema = evaluate_run(run_dir_for(vjepa), protocol=protocol)
    online = evaluate_run(run_dir_for(vjepa), protocol=protocol, encoder="online")
    assert (ema.encoder, ema.evaluation, online.encoder, online.evaluation) == ("ema", "micro", "online",
                                                                                "micro-online")
    assert ema.metrics["rankme"] != online.metrics["rankme"]   # two different networks were probed
    assert evaluate_run(run_dir_for(pixel), protocol=protocol).encoder == "online"
    with pytest.raises(ValueError, match="keeps no EMA encoder"):
        evaluate_run(run_dir_for(pixel), protocol=protocol, encoder="ema")
    paper = evaluate_run(run_dir_for(pixel), protocol=protocol, selection="paper")
    assert (paper.selection, paper.evaluation) == ("paper", "micro-paper")


def test_packaged_benchmarks_and_version_1_records(tmp_path):
    from salt.eval.record import SCHEMA_VERSION, EvalRecord, read_record, record_to_json
    for name, views in (("k400", (8, 3)), ("ssv2", (2, 3))):
        with pytest.raises(FileNotFoundError, match=f"/path/to/{name}/train.csv"):
            from salt.eval.benchmark import read_lists
            read_lists(load_benchmark(name))
        bench = load_benchmark(name, [f"train_list={tmp_path}/a.csv", f"val_list={tmp_path}/b.csv"])
        assert (bench.test_views.clips, bench.test_views.crops) == views and bench.clip.frames_per_clip == 16
    data = record_to_json(EvalRecord(run_id="r", method="pixel", stage="teacher", checkpoint_step=1, steps_total=1,
                                     evaluation="fast"))
    for key in ("benchmark", "selection", "encoder"):
        data.pop(key)
    path = RunLayout(tmp_path / "r").record(1, "fast")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**data, "schema_version": 1}))
    old = read_record(path)
    assert (old.benchmark, old.selection, old.encoder, old.schema_version) == ("default", "strict", "online",
                                                                               SCHEMA_VERSION)
    assert RunLayout(tmp_path / "r").record(1, "fast", "k400").name == "step_00000001_fast@k400.json"


def test_analysis_takes_one_benchmark_at_a_time():
    import pandas as pd
    from analysis.collect import StudyDataError, final_records, one_benchmark
    frame = pd.DataFrame({"run_key": ["a", "a", "b", "a", "b"], "evaluation": ["fast"] * 5,
                          "benchmark": ["default", "k400", "k400", "k400", "ssv2"], "checkpoint_step": [2, 2, 2, 4, 4]})
    assert one_benchmark(frame)[0] == "default"
    name, k400 = one_benchmark(frame, "k400")
    assert name == "k400" and set(k400["benchmark"]) == {"k400"} and len(k400) == 3
    assert one_benchmark(frame[frame["benchmark"] != "default"])[0] == "k400"   # the one covering the most runs
    with pytest.raises(StudyDataError, match="no records on benchmark 'coin'; there are: default, k400, ssv2"):
        one_benchmark(frame, "coin")
    # a run's final record per evaluation AND benchmark: its k400 score is never replaced by another benchmark's
    final = final_records(frame)
    assert sorted(zip(final["run_key"], final["benchmark"], final["checkpoint_step"])) == [
        ("a", "default", 2), ("a", "k400", 4), ("b", "k400", 2), ("b", "ssv2", 4)]


def test_a_study_evaluates_every_run_on_every_benchmark(bench_dir, tmp_path, monkeypatch):
    import pdb
    from salt.eval.record import load_records
    from salt.study import LaunchOptions, run_plan
    from salt.study.launch import is_done
    from salt.study.spec import PlanBuilder, read_plan, with_benchmarks
    monkeypatch.setattr(pdb, "post_mortem", lambda *args, **kwargs: None)   # submitit's debug executor
    builder = PlanBuilder("bench", "t", tmp_path / "study", evaluation="smoke",
                          overrides=[*VIDEO_OVERRIDES, f"data.video.list_path={bench_dir / 'train.txt'}",
                                     "train.steps=2", "train.batch_size=4", "train.checkpoint_every=2"])
    teacher = builder.run("micro_teacher")
    builder.baseline("random_init", teacher)
    builder.baseline("raw_pixels", teacher)
    plan = with_benchmarks(builder.plan(), [str(write_bench(bench_dir))])
    run_plan(plan, LaunchOptions(executor="debug"))
    frame = load_records([tmp_path / "study"])
    got = sorted(zip(frame["method"], frame["benchmark"]))
    assert got == [("pixel", "colours"), ("pixel", "default"), ("random_init", "colours"),
                   ("random_init", "default"), ("raw_pixels", "default")]
    again = read_plan(tmp_path / "study")   # the benchmarks travel in study.json: a rerun finds everything done
    assert [s.benchmark_names() for s in again.runs] == [["colours"], ["colours"], []]
    assert all(is_done(spec) for spec in again.runs)
