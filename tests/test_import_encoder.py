"""Released encoders imported as run folders compute what the reference implementations compute.

The references are transformers' VideoMAEModel and VJEPA2Model with small random configs. Each is saved in the
Hugging Face format (save_pretrained) and rewritten to the original release's key layout (MCG-NJU/VideoMAE's
`model` entry with `encoder.` keys and q/v biases; facebookresearch/vjepa2's `encoder` / `target_encoder` entries
with `module.backbone.` prefixes and fused qkv), imported with `python -m salt import-encoder`, and read back the
way a SALT student reads its teacher (salt.objectives.load_teacher). Every layer a teacher can target
(objective.target_layer: -1 and each block) must match within 1e-4 in fp32.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import transformers  # noqa: E402  (a test dependency: the reference implementations)

from salt.__main__ import main  # noqa: E402
from salt.checkpoint import load_checkpoint  # noqa: E402
from salt.config import from_dict, load_config, resolve_config  # noqa: E402
from salt.data import clip_geometry  # noqa: E402
from salt.importers import ImportError_, import_encoder  # noqa: E402
from salt.layout import RunLayout  # noqa: E402
from salt.models.tokens import resize_table, sincos_1d_table  # noqa: E402
from salt.objectives import load_teacher  # noqa: E402
from salt.schema import RunConfig  # noqa: E402
from tests.test_video_data import write_video  # noqa: E402

FRAMES, PIXELS, HEADS = 4, 16, 4
TOL = 1e-4


def videomae(eps: float = 1e-12, mean_pooling: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.VideoMAEConfig(image_size=PIXELS, patch_size=4, num_channels=3, num_frames=FRAMES,
                                      tubelet_size=2, hidden_size=64, num_hidden_layers=2, num_attention_heads=HEADS,
                                      intermediate_size=160, layer_norm_eps=eps, use_mean_pooling=mean_pooling)
    model = transformers.VideoMAEModel(cfg).eval()
    _randomise(model)
    return model


def vjepa2(seed: int = 0):
    # head_dim 20: V-JEPA 2 rotates 3 x 6 channels per head and leaves 2 unrotated, a case its layout must handle
    torch.manual_seed(seed)
    cfg = transformers.VJEPA2Config(patch_size=4, crop_size=PIXELS, frames_per_clip=FRAMES, tubelet_size=2,
                                    hidden_size=80, num_attention_heads=HEADS, num_hidden_layers=2, mlp_ratio=3.0,
                                    pred_hidden_size=32, pred_num_attention_heads=2, pred_num_hidden_layers=1,
                                    pred_num_mask_tokens=2)
    model = transformers.VJEPA2Model(cfg).eval()
    _randomise(model)
    return model


def _randomise(model) -> None:
    """Random values everywhere (biases and norms too: zero biases or unit norms would hide a mapping error)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.2 if p.dim() > 1 else 0.5))


def reference_outputs(model, video: torch.Tensor) -> list[torch.Tensor]:
    """[block 0, ..., block depth-1, final] outputs of the reference on clips [B, C, T, H, W]."""
    with torch.no_grad():
        clips = video.permute(0, 2, 1, 3, 4)   # transformers takes [B, T, C, H, W]
        if isinstance(model, transformers.VJEPA2Model):
            out = model(pixel_values_videos=clips, skip_predictor=True, output_hidden_states=True)
        else:
            out = model(pixel_values=clips, output_hidden_states=True)
    depth = model.config.num_hidden_layers
    blocks = list(out.hidden_states)[-depth:]   # the outputs of the layers (after the embeddings, if listed)
    return [*blocks, out.last_hidden_state]


def clips(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, FRAMES, PIXELS, PIXELS, generator=torch.Generator().manual_seed(seed))


# -- original release formats, rewritten from the reference's weights ---------------------------------------------

def videomae_original(model, path: Path) -> Path:
    """MCG-NJU/VideoMAE's pretraining checkpoint: {"model": encoder.* + decoder.*, "args": Namespace, ...}."""
    s = model.state_dict()
    out = {"encoder.patch_embed.proj.weight": s["embeddings.patch_embeddings.projection.weight"],
           "encoder.patch_embed.proj.bias": s["embeddings.patch_embeddings.projection.bias"]}
    for i in range(model.config.num_hidden_layers):
        h, b = f"encoder.layer.{i}", f"encoder.blocks.{i}"
        a = f"{h}.attention.attention"
        out[f"{b}.attn.qkv.weight"] = torch.cat([s[f"{a}.{n}.weight"] for n in ("query", "key", "value")])
        out[f"{b}.attn.q_bias"], out[f"{b}.attn.v_bias"] = s[f"{a}.query.bias"], s[f"{a}.value.bias"]
        for ours, theirs in {"attn.proj": "attention.output.dense", "norm1": "layernorm_before",
                             "norm2": "layernorm_after", "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}.items():
            for p in ("weight", "bias"):
                out[f"{b}.{ours}.{p}"] = s[f"{h}.{theirs}.{p}"]
    if "layernorm.weight" in s:
        out["encoder.norm.weight"], out["encoder.norm.bias"] = s["layernorm.weight"], s["layernorm.bias"]
    out.update({"decoder.head.weight": torch.randn(96, 32), "decoder.norm.weight": torch.ones(32),
                "encoder_to_decoder.weight": torch.randn(32, 64), "mask_token": torch.zeros(1, 1, 32)})
    torch.save({"model": out, "epoch": 799, "args": argparse.Namespace(num_frames=FRAMES, input_size=PIXELS)}, path)
    return path


def vjepa2_encoder_keys(model) -> dict[str, torch.Tensor]:
    s = model.state_dict()
    out = {"patch_embed.proj.weight": s["encoder.embeddings.patch_embeddings.proj.weight"],
           "patch_embed.proj.bias": s["encoder.embeddings.patch_embeddings.proj.bias"],
           "norm.weight": s["encoder.layernorm.weight"], "norm.bias": s["encoder.layernorm.bias"]}
    for i in range(model.config.num_hidden_layers):
        h, b = f"encoder.layer.{i}", f"blocks.{i}"
        for p in ("weight", "bias"):
            out[f"{b}.attn.qkv.{p}"] = torch.cat([s[f"{h}.attention.{n}.{p}"] for n in ("query", "key", "value")])
            for ours, theirs in {"attn.proj": "attention.proj", "norm1": "norm1", "norm2": "norm2",
                                 "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}.items():
                out[f"{b}.{ours}.{p}"] = s[f"{h}.{theirs}.{p}"]
    return out


def vjepa2_original(model, path: Path) -> Path:
    """facebookresearch/vjepa2's training checkpoint: encoder / predictor / target_encoder under DDP and the
    multi-sequence wrapper (`module.backbone.`), a pos_embed the RoPE model never uses; the online `encoder` is
    made different so that taking the wrong entry fails."""
    target = {f"module.backbone.{k}": v for k, v in vjepa2_encoder_keys(model).items()}
    target["module.backbone.pos_embed"] = torch.zeros(1, 32, 80)
    online = {k: v + 1.0 for k, v in target.items()}
    torch.save({"encoder": online, "target_encoder": target, "predictor": {"module.backbone.x": torch.ones(1)},
                "opt": {}, "scaler": None, "epoch": 10, "loss": 0.5, "batch_size": 2, "world_size": 1, "lr": 1e-4},
               path)
    return path


# -- helpers ------------------------------------------------------------------------------------------------------

VIDEO_OVERRIDES = [f"data.video.frames_per_clip={FRAMES}", f"data.video.resolution={PIXELS}"]


def imported_teacher(run_dir: Path, *data: str):
    """The run folder's encoder as a SALT student loads its teacher (objective.teacher from done.json)."""
    done = RunLayout(run_dir).read_done()
    cfg = load_config(RunConfig, [resolve_config("micro_student")],
                      [*done["imported"]["teacher_overrides"], "data.source=video_list", *VIDEO_OVERRIDES, *data])
    teacher, _ = load_teacher(cfg.objective, clip_geometry(cfg.data))
    return teacher.eval()


def assert_same_outputs(teacher, reference, video: torch.Tensor) -> float:
    expected = reference_outputs(reference, video)
    worst = 0.0
    with torch.no_grad():
        for layer, want in zip([*range(teacher.depth), -1], expected):
            got = teacher(video, layer=layer)
            diff = (got - want).abs().max().item()
            assert diff <= TOL, f"layer {layer}: max abs difference {diff:.2e} > {TOL}"
            worst = max(worst, diff)
    return worst


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


# -- equivalence --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mean_pooling", [False, True])
def test_videomae_hf_format_matches_reference(tmp_path, mean_pooling):
    ref = videomae(mean_pooling=mean_pooling)
    ref.save_pretrained(tmp_path / "hf")
    done = import_encoder("videomae", tmp_path / "hf", tmp_path / "run", overrides=VIDEO_OVERRIDES)
    teacher = imported_teacher(tmp_path / "run")
    assert_same_outputs(teacher, ref, clips())
    assert teacher.positions.kind == "sincos" and done["imported"]["format"] == "hf"
    cfg = from_dict(RunConfig, load_checkpoint(tmp_path / "run")["config"])
    assert cfg.model.final_norm is not mean_pooling and cfg.model.norm_eps == 1e-12


def test_videomae_original_format_matches_reference(tmp_path):
    ref = videomae(eps=1e-6)   # MCG-NJU/VideoMAE's LayerNorms use eps 1e-6
    source = videomae_original(ref, tmp_path / "checkpoint.pth")
    done = import_encoder("videomae", source, tmp_path / "run", num_heads=HEADS)
    assert_same_outputs(imported_teacher(tmp_path / "run"), ref, clips())
    imported = done["imported"]
    assert imported["entry"] == "model" and imported["trained_clip"] == {"frames": FRAMES, "pixels": PIXELS}
    assert set(imported["left_out"]) == {r"decoder\..*", r"encoder_to_decoder\..*|mask_token"}


def test_vjepa2_hf_format_matches_reference(tmp_path):
    ref = vjepa2()
    ref.save_pretrained(tmp_path / "hf")
    done = import_encoder("vjepa2", tmp_path / "hf", tmp_path / "run")
    assert_same_outputs(imported_teacher(tmp_path / "run"), ref, clips())
    assert r"predictor\..*" in done["imported"]["left_out"]


def test_vjepa2_original_format_matches_reference_and_takes_the_target_encoder(tmp_path):
    ref = vjepa2(seed=3)
    source = vjepa2_original(ref, tmp_path / "vitl.pt")
    done = import_encoder("vjepa2", source, tmp_path / "run", overrides=VIDEO_OVERRIDES, num_heads=HEADS)
    assert done["imported"]["entry"] == "target_encoder"
    assert_same_outputs(imported_teacher(tmp_path / "run"), ref, clips())
    # the online encoder is another entry of the same file, and it is what --entry encoder gives
    import_encoder("vjepa2", source, tmp_path / "online", overrides=VIDEO_OVERRIDES, num_heads=HEADS, entry="encoder")
    with pytest.raises(AssertionError, match="max abs difference"):
        assert_same_outputs(imported_teacher(tmp_path / "online"), ref, clips())


def test_context_only_forward_keeps_grid_positions(tmp_path):
    """A student's encoder sees only context tokens: the imported RoPE encoder on kept tokens equals V-JEPA 2's own
    masked forward (the reference's position ids follow the kept indices)."""
    ref = vjepa2(seed=5)
    ref.save_pretrained(tmp_path / "hf")
    import_encoder("vjepa2", tmp_path / "hf", tmp_path / "run")
    teacher = imported_teacher(tmp_path / "run")
    video, keep = clips(), torch.tensor([[0, 3, 5, 17, 30], [1, 2, 8, 20, 31]])
    with torch.no_grad():
        ours = teacher(video, keep=keep, layer=0)
        x = ref.encoder.embeddings(video.permute(0, 2, 1, 3, 4))
        x = torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        want, _ = ref.encoder.layer[0](x, position_mask=keep)
    assert (ours - want).abs().max().item() <= TOL


# -- run folder, CLI, errors --------------------------------------------------------------------------------------

def test_run_folder_provenance_and_cli(tmp_path, capsys):
    ref = vjepa2()
    ref.save_pretrained(tmp_path / "hf")
    assert main(["import-encoder", "vjepa2", str(tmp_path / "hf"), str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "objective.teacher_checkpoint=" in out and "objective.teacher.rope_layout=vjepa2" in out
    layout = RunLayout(tmp_path / "run")
    done = layout.read_done()
    imported = done["imported"]
    weights = tmp_path / "hf" / "model.safetensors"
    assert imported["sha256"][str(weights.resolve())] == __import__("hashlib").sha256(weights.read_bytes()).hexdigest()
    n_ref = sum(p.numel() for n, p in ref.named_parameters() if n.startswith("encoder."))
    assert imported["encoder_parameters"] == done["params"]["encoder"] == n_ref
    assert done["flops"]["total"] is None and "unknown" in done["flops_note"]
    assert layout.config.is_file() and [s for s, _ in layout.checkpoints()] == [0]
    state = load_checkpoint(tmp_path / "run")
    # a run of its own kind: the encoder alone (no decoder made up for it), nothing to resume
    assert done["method"] == "imported" and set(done["params"]) == {"encoder"}
    assert set(state["models"]) == {"encoder"} and state["flops_total"] == 0.0
    assert state["optimizer"] is None and state["rng"] is None and state["format_version"] == 2
    # never overwritten
    assert main(["import-encoder", "vjepa2", str(tmp_path / "hf"), str(tmp_path / "run")]) == 2
    assert "already holds a finished run" in capsys.readouterr().err


def test_errors_name_the_file_and_tensor(tmp_path):
    ref = videomae(eps=1e-6)
    source = videomae_original(ref, tmp_path / "checkpoint.pth")
    with pytest.raises(ImportError_, match="pass --num-heads"):
        import_encoder("videomae", source, tmp_path / "a")
    # an unknown tensor is named, never dropped
    state = torch.load(source, weights_only=False)
    state["model"]["encoder.blocks.0.gamma_1"] = torch.ones(64)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(ImportError_, match=r"unknown tensors \['blocks.0.gamma_1'\]"):
        import_encoder("videomae", tmp_path / "extra.pth", tmp_path / "b", num_heads=HEADS)
    # a missing one too
    del state["model"]["encoder.blocks.1.mlp.fc2.bias"], state["model"]["encoder.blocks.0.gamma_1"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(ImportError_, match=r"missing tensor 'blocks.1.mlp.fc2.bias'"):
        import_encoder("videomae", tmp_path / "missing.pth", tmp_path / "c", num_heads=HEADS)
    # a mis-shaped one (a wrong head count cannot be seen in shapes; a wrong MLP width can)
    state = torch.load(source, weights_only=False)
    state["model"]["encoder.blocks.1.mlp.fc1.weight"] = torch.randn(128, 64)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(ImportError_, match=r"blocks.1.mlp.fc1.weight' has shape \(128, 64\)"):
        import_encoder("videomae", tmp_path / "shape.pth", tmp_path / "d", num_heads=HEADS)
    # a corrupted file, a file of the other family, a folder of the other family
    (tmp_path / "corrupt.pth").write_bytes(source.read_bytes()[:200])
    with pytest.raises(ImportError_, match="cannot read .*corrupt.pth"):
        import_encoder("videomae", tmp_path / "corrupt.pth", tmp_path / "e", num_heads=HEADS)
    with pytest.raises(ImportError_, match="no 'target_encoder' / 'encoder' entry"):
        import_encoder("vjepa2", source, tmp_path / "f", num_heads=HEADS)
    ref.save_pretrained(tmp_path / "hf")
    with pytest.raises(ImportError_, match="model_type 'videomae', not 'vjepa2'"):
        import_encoder("vjepa2", tmp_path / "hf", tmp_path / "g")
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ImportError_, match="cannot read .*model.safetensors"):
        import_encoder("videomae", tmp_path / "hf", tmp_path / "h")
    assert not any((tmp_path / n).exists() for n in "abcdefgh")   # nothing written for a failed import


# -- options ------------------------------------------------------------------------------------------------------

def test_videomae_table_and_resizing():
    """VideoMAE's table: sine on even channels, cosine on odd, angle pos / 10000^(2*(j//2)/D); resizing to the same
    grid is the identity and to another grid keeps the corners' rows close."""
    table = sincos_1d_table(8, 6)
    assert torch.allclose(table[3, 0], torch.tensor(np.sin(3.0), dtype=torch.float32))
    assert torch.allclose(table[3, 3], torch.tensor(np.cos(3 / 10000 ** (2 / 8)), dtype=torch.float32))
    grid = (2, 4, 4)
    t = sincos_1d_table(16, 32)
    assert torch.equal(resize_table(t, grid, grid), t)
    bigger = resize_table(t, grid, (4, 8, 8))
    assert bigger.shape == (256, 16)
    assert not torch.allclose(bigger[:32], t)


def test_import_at_another_clip_size_resizes_the_table(tmp_path):
    ref = videomae()
    ref.save_pretrained(tmp_path / "hf")
    import_encoder("videomae", tmp_path / "hf", tmp_path / "run", overrides=["data.video.resolution=32"])
    cfg = from_dict(RunConfig, load_checkpoint(tmp_path / "run")["config"])
    assert cfg.model.pos_grid == [2, 4, 4]
    teacher = imported_teacher(tmp_path / "run", "data.video.resolution=32")
    assert teacher.grid == (2, 8, 8) and teacher(torch.randn(1, 3, FRAMES, 32, 32)).shape == (1, 128, 64)


def test_input_normalisation_converts_the_data_statistics(tmp_path):
    """Data normalised with other statistics are re-normalised to the release's: outputs unchanged."""
    ref = vjepa2()
    ref.save_pretrained(tmp_path / "hf")
    mean, std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    stats = [f"data.video.mean={mean}", f"data.video.std={std}"]
    import_encoder("vjepa2", tmp_path / "hf", tmp_path / "run", overrides=stats)
    teacher = imported_teacher(tmp_path / "run", *stats)
    imagenet_video = clips()
    raw = imagenet_video * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1) + torch.tensor(
        [0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1)
    ours_video = (raw - 0.5) / 0.25
    with torch.no_grad():
        want = reference_outputs(ref, imagenet_video)[-1]
        assert (teacher(ours_video) - want).abs().max().item() <= TOL


# -- a student of an imported teacher -------------------------------------------------------------------------------

def test_salt_student_trains_from_an_imported_teacher(tmp_path, capsys):
    from salt.train.loop import train
    rng = np.random.default_rng(0)
    lines = []
    for i in range(4):
        frames = rng.integers(0, 256, size=(8, PIXELS, PIXELS, 3), dtype=np.uint8)
        write_video(tmp_path / f"v{i}.mp4", frames)
        lines.append(f"v{i}.mp4 {i % 2}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    ref = vjepa2()
    ref.save_pretrained(tmp_path / "hf")
    from salt.__main__ import main
    done = import_encoder("vjepa2", tmp_path / "hf", tmp_path / "teacher")
    # the command line takes the teacher's architecture from its run folder (`--teacher`)
    student = ["data.source=video_list", *VIDEO_OVERRIDES, f"data.video.list_path={tmp_path / 'list.txt'}",
               "data.video.frame_step=1", "train.batch_size=2", "train.steps=2", f"out_dir={tmp_path / 'runs'}",
               "name=student", "train.progress=false"]
    assert main(["student", "--config", "micro_student", "--teacher", str(tmp_path / "teacher"), *student]) == 0
    summary = RunLayout(tmp_path / "runs" / "student").read_done()
    cfg = load_config(RunConfig, [tmp_path / "runs" / "student" / "config.yaml"])
    assert cfg.objective.teacher.pos_embed == "rope" and cfg.objective.teacher.rope_layout == "vjepa2"
    assert main(["student", "--config", "micro_student", "--teacher", str(tmp_path / "hf"), *student]) == 2
    assert "is not a finished run folder (needs config.yaml and done.json)" in capsys.readouterr().err
    assert summary["steps"] == 2 and np.isfinite(summary["final_metrics"]["loss"])
    assert summary["flops"]["teacher_stage"] == 0.0 and summary["teacher_checkpoint"] == str(tmp_path / "teacher")
    state = load_checkpoint(tmp_path / "runs" / "student")
    assert json.dumps(state["run_id"]) and state["step"] == 2
    # ... and the imported encoder itself is an evaluation target: `python -m salt eval` on a run folder imported
    # with the data to probe on
    from salt.eval.record import load_records
    import_encoder("vjepa2", tmp_path / "hf", tmp_path / "probe-target", overrides=[
        *VIDEO_OVERRIDES, f"data.video.list_path={tmp_path / 'list.txt'}", "data.video.frame_step=1"])
    assert main(["eval", str(tmp_path / "probe-target"), "--protocol", "smoke"]) == 0
    frame = load_records([tmp_path / "probe-target"])
    assert list(frame["checkpoint_step"]) == [0] and frame["params.encoder"].iloc[0] == done["imported"]["encoder_parameters"]
    # ... with no held-out loss (it has no objective of its own): the record leaves it out, as "not measured"
    assert (frame["method"].iloc[0], frame["stage"].iloc[0]) == ("imported", "teacher")
    assert "losses.heldout" not in frame or frame["losses.heldout"].isna().all()
