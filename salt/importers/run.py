"""Writing an imported encoder's run folder (`import_encoder`): config.yaml (a VideoViT that computes what the
release computes, on the clips of the run's data), one encoder-only checkpoint and done.json with the provenance,
through the same writer as a trained run (salt.checkpoint). The run's method is `imported` (salt.objectives): it is
never trained, has no loss of its own, and serves as a teacher (`--teacher RUN_DIR`, `PlanBuilder.imported`) and as
an evaluation target."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from salt.checkpoint import Checkpoint, RunSummary, finish_run, load_matching, save_checkpoint, write_run_config
from salt.config import ConfigError, load_config, resolve_config, to_dict
from salt.data import DATA_COUNTERS, clip_geometry, get_source
from salt.flops import num_params
from salt.importers.keymaps import ImportError_
from salt.importers.release import Release, read_release, sha256_of
from salt.layout import LayoutError, RunLayout
from salt.models import CUSTOM_SIZE
from salt.objectives import build_network
from salt.schema import RunConfig, finished_run

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]   # both releases' input statistics
FLOPS_NOTE = ("unknown: the encoder was trained outside this project; its checkpoint carries 0 FLOPs, so a student "
              "trained from it counts its own compute only")


def _mlp_ratio(dim: int, hidden: int) -> float:
    """A ratio r with int(dim * r) == hidden (timm's Mlp width), robust to float rounding."""
    ratio = hidden / dim
    while int(dim * ratio) < hidden:
        ratio = float(torch.nextafter(torch.tensor(ratio, dtype=torch.float64), torch.tensor(float("inf"),
                                                                                             dtype=torch.float64)))
    return ratio


def model_overrides(release: Release, cfg: RunConfig) -> list[str]:
    """`model.*` overrides that make a VideoViT compute what the release computes, on the clips of `cfg.data`
    (their grid, their normalisation)."""
    a = release.arch
    geometry = clip_geometry(cfg.data)
    if geometry.channels != a["in_chans"]:
        raise ImportError_(f"the release takes clips of {a['in_chans']} channels, data.source={cfg.data.source} gives "
                           f"{geometry.channels}: use RGB video (data.source=video_list)")
    values = dict(size=CUSTOM_SIZE, patch_size=a["patch_size"], tubelet_size=a["tubelet_size"],
                  embed_dim=a["embed_dim"], depth=a["depth"], num_heads=a["num_heads"],
                  mlp_ratio=_mlp_ratio(a["embed_dim"], a["mlp_hidden"]), pos_embed=a["pos_embed"],
                  norm_eps=a["norm_eps"], final_norm=a["final_norm"], rope_layout=a.get("rope_layout", "salt"),
                  rope_key_bias=a.get("rope_key_bias", False), init="trunc_normal")
    frames, pixels = release.clip
    source_grid = [frames // a["tubelet_size"], pixels // a["patch_size"], pixels // a["patch_size"]]
    grid = [geometry.frames // a["tubelet_size"], geometry.size // a["patch_size"], geometry.size // a["patch_size"]]
    values["pos_grid"] = source_grid if a["pos_embed"] != "rope" and grid != source_grid else []
    stats = get_source(cfg.data.source).normalisation(cfg.data)
    if stats is not None:
        # The data normalise with their own statistics; re-normalise to the release's (exact, per channel).
        m_d, s_d = stats
        if (m_d, s_d) != (IMAGENET_MEAN, IMAGENET_STD):
            values["input_mean"] = [(me - md) / sd for me, md, sd in zip(IMAGENET_MEAN, m_d, s_d)]
            values["input_std"] = [se / sd for se, sd in zip(IMAGENET_STD, s_d)]
    return [f"model.{k}={_value(v)}" for k, v in values.items()]


def _value(v) -> str:
    """A config value as `key=value` text (parsed back as YAML)."""
    return v if isinstance(v, str) else json.dumps(v)


def teacher_overrides(cfg: RunConfig, run_dir: Path) -> list[str]:
    """What a student's command line needs to use this run as its frozen teacher."""
    return [f"objective.teacher_checkpoint={run_dir}",
            *(f"objective.teacher.{k}={_value(v)}" for k, v in to_dict(cfg.model).items())]


def run_teacher_overrides(run_dir: str | Path) -> list[str]:
    """`teacher_overrides` of a finished run folder (an import, or any earlier run), from its config.yaml: what
    `python -m salt student --teacher RUN_DIR` expands to."""
    try:
        layout, cfg = finished_run(run_dir)
    except LayoutError as e:
        raise ValueError(f"--teacher {run_dir}: {e}") from e
    return teacher_overrides(cfg, layout.root)



def import_encoder(family: str, source: str | Path, out_dir: str | Path, *, configs: list[str] = (),
                   overrides: list[str] = (), entry: str = "", num_heads: int | None = None) -> dict:
    """Import a released encoder into the run folder `out_dir`; -> its done.json summary. An existing run folder
    is refused (never overwritten)."""
    t0 = time.perf_counter()
    layout = RunLayout(Path(out_dir).resolve())
    if layout.is_done():
        raise ImportError_(f"{layout.root} already holds a finished run ({layout.done}); choose another OUT_DIR")
    if layout.root.exists() and any(layout.root.iterdir()):
        raise ImportError_(f"{layout.root} exists and is not empty; choose another OUT_DIR")
    release = read_release(family, source, entry=entry, num_heads=num_heads)
    frames, pixels = release.clip
    files = [resolve_config(c) for c in configs]
    base = ["objective.method=imported", "data.source=video_list", f"data.video.resolution={pixels}",
            f"data.video.frames_per_clip={frames}", f"name={layout.root.name}", f"out_dir={layout.root.parent}"]
    try:
        first = load_config(RunConfig, files, [*base, *overrides])
        cfg = load_config(RunConfig, files, [*base, *model_overrides(release, first), *overrides,
                                             f"name={layout.root.name}", f"out_dir={layout.root.parent}"])
    except ConfigError as e:
        raise ImportError_(str(e)) from e
    encoder = build_network(cfg.model, clip_geometry(cfg.data))
    where = f"{release.files[-1]} ({family}, {release.format} format)"
    own = encoder.state_dict()
    for key, value in release.state.items():
        if key in own and own[key].shape != value.shape:
            raise ImportError_(f"{where}: tensor {release.origin[key]!r} has shape {tuple(value.shape)}, but the "
                               f"encoder its architecture describes expects {tuple(own[key].shape)} (as {key!r})")
    load_matching(encoder, release.state, where)
    counts = dict.fromkeys(DATA_COUNTERS, 0)
    checkpoint = save_checkpoint(layout.root, Checkpoint(step=0, run_id=cfg.name, config=to_dict(cfg),
                                                         models={"encoder": encoder.state_dict()},
                                                         data_counts=counts), keep=1)
    write_run_config(layout, to_dict(cfg))
    params = {"encoder": num_params(encoder)}
    provenance = {
        "family": family, "format": release.format, "source": str(Path(source).resolve()),
        "sha256": {str(p.resolve()): sha256_of(p) for p in release.files}, "entry": release.entry,
        "encoder_parameters": params["encoder"], "num_heads_from": release.num_heads_from,
        "trained_clip": {"frames": frames, "pixels": pixels}, "left_out": release.left_out,
        "teacher_overrides": teacher_overrides(cfg, layout.root)}
    return finish_run(layout, RunSummary(
        run_id=cfg.name, method=cfg.objective.method, steps=0, params=params,
        flops={"run": None, "teacher_stage": None, "total": None}, flops_note=FLOPS_NOTE,
        wall_time_s=time.perf_counter() - t0, device="cpu", checkpoint=str(checkpoint), data_counts=counts,
        imported=provenance))
