"""The embedded-data demo: pixel teacher -> SALT student, plus a V-JEPA baseline, then linear probes of each
against a random-init encoder and raw pixels. Re-running skips finished runs and resumes interrupted ones."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from salt.config import load_config, resolve_config
from salt.data import build_dataset
from salt.eval.frozen import clips_and_labels, encoder_from_checkpoint, probe_all, random_encoder, time_pooled_features
from salt.schema import RunConfig
from salt.train.checkpoint import atomic_write_json
from salt.train.loop import run_dir_for, train


@dataclass(frozen=True)
class DemoPreset:
    config_prefix: str            # salt/configs/{prefix}_{teacher,student,vjepa}.yaml
    teacher_steps: int
    student_steps: int
    vjepa_steps: int
    probe_train_clips: int
    probe_test_clips: int
    shots: list = field(default_factory=lambda: [10, None])
    draws: int = 3
    overrides: list = field(default_factory=list)   # applied to all three runs


DEMO_PRESETS = {
    # ~minutes on 2 CPU cores: tests the pipeline, not the science.
    "tiny": DemoPreset("tiny", teacher_steps=500, student_steps=300, vjepa_steps=300,
                       probe_train_clips=3000, probe_test_clips=1000),
    # ~40 minutes on 2 CPU cores: the teacher leaves the mean-prediction plateau (loss / mean-prediction loss
    # 0.99 at step 250, 0.79 at 750, 0.66 at 1750 in calibration) and the student has a teacher worth copying.
    "small": DemoPreset("tiny", teacher_steps=2500, student_steps=2000, vjepa_steps=1500,
                        probe_train_clips=3000, probe_test_clips=2000),
    # seconds: for the tests.
    "smoke": DemoPreset("tiny", teacher_steps=4, student_steps=4, vjepa_steps=4, probe_train_clips=200,
                        probe_test_clips=100, draws=1,
                        overrides=["data.moving_digits.num_train=400", "data.moving_digits.num_test=200",
                                   "model.size=micro", "objective.teacher.size=micro", "train.batch_size=8",
                                   "train.progress=false"]),
}


def _config(preset: DemoPreset, stage: str, out_dir: Path, steps: int, extra: list[str]) -> RunConfig:
    overrides = [f"out_dir={out_dir}", f"name={stage}", f"train.steps={steps}", *preset.overrides, *extra]
    return load_config(RunConfig, [resolve_config(f"{preset.config_prefix}_{stage}")], overrides)


def run_demo(preset_name: str = "tiny", out_dir: str | Path = "runs/demo", extra: list[str] = ()) -> list[dict]:
    if preset_name not in DEMO_PRESETS:
        raise ValueError(f"unknown demo preset {preset_name!r}; valid: {', '.join(DEMO_PRESETS)}")
    preset, out_dir = DEMO_PRESETS[preset_name], Path(out_dir)
    extra = list(extra)
    t0 = time.perf_counter()
    teacher_cfg = _config(preset, "teacher", out_dir, preset.teacher_steps, extra)
    summaries = {"teacher": train(teacher_cfg, resume=True)}
    student_cfg = _config(preset, "student", out_dir, preset.student_steps,
                          [f"objective.teacher_checkpoint={run_dir_for(teacher_cfg)}", *extra])
    summaries["salt student"] = train(student_cfg, resume=True)
    vjepa_cfg = _config(preset, "vjepa", out_dir, preset.vjepa_steps, extra)
    summaries["v-jepa"] = train(vjepa_cfg, resume=True)
    t_train = time.perf_counter() - t0

    train_set, geometry = build_dataset(teacher_cfg.data, "train")
    test_set, _ = build_dataset(teacher_cfg.data, "test")
    train_videos, train_labels = clips_and_labels(train_set, preset.probe_train_clips)
    test_videos, test_labels = clips_and_labels(test_set, preset.probe_test_clips)
    encoders = {"random init": random_encoder(teacher_cfg, geometry, seed=teacher_cfg.train.seed)}
    for name, cfg in (("teacher", teacher_cfg), ("salt student", student_cfg), ("v-jepa", vjepa_cfg)):
        encoders[name] = encoder_from_checkpoint(run_dir_for(cfg))[0]
    features = {"raw pixels": (train_videos.flatten(1), test_videos.flatten(1))}
    for name, encoder in encoders.items():
        features[name] = (time_pooled_features(encoder, train_videos), time_pooled_features(encoder, test_videos))
    rows = probe_all(features, teacher_cfg.data, train_labels, test_labels, shots=preset.shots, draws=preset.draws)
    for row in rows:
        s = summaries.get(row["encoder"])
        row["train_steps"] = s["steps"] if s else 0
        row["flops_total"] = s["flops"]["total"] if s else 0.0
        row["final_loss"] = s["final_metrics"]["loss"] if s and s["final_metrics"] else float("nan")
    result = {"preset": preset_name, "rows": rows, "train_wall_s": t_train,
              "total_wall_s": time.perf_counter() - t0, "torch_threads": torch.get_num_threads()}
    atomic_write_json(out_dir / "demo_results.json", result)
    print(format_table(rows))
    print(f"\ntraining {t_train:.0f} s, total {result['total_wall_s']:.0f} s; results in {out_dir / 'demo_results.json'}")
    return rows


def format_table(rows: list[dict]) -> str:
    keys = [k for k in rows[0] if k.endswith(("shot", "full")) and not k.endswith("_std")]
    header = ["encoder", "steps", "PFLOPs", "final loss", "RankMe", *keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["encoder"], str(r["train_steps"]), f"{r['flops_total'] / 1e15:.3f}",
                 f"{r['final_loss']:.4f}", f"{r['rankme']:.1f}",
                 *(f"{r[k]:.3f} ± {r[k + '_std']:.3f}" for k in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
