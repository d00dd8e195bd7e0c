"""Encoder, predictor and size presets."""
import pytest
import torch

from salt.flops import num_params
from salt.models import MaskedTokenPredictor, VideoViT, gather_tokens, size_preset
from salt.models.tokens import sincos_pos_embed_3d
from salt.models.vit import SIZE_PRESETS


def _vit(size="micro", **kw):
    p = size_preset(size)
    args = dict(img_size=16, num_frames=4, in_chans=1, patch_size=4, tubelet_size=2, embed_dim=p.embed_dim,
                depth=p.depth, num_heads=p.num_heads, mlp_ratio=p.mlp_ratio)
    args.update(kw)
    return VideoViT(**args)


def test_gather_tokens_known_answer():
    x = torch.arange(2 * 5 * 3).reshape(2, 5, 3)
    idx = torch.tensor([[4, 0], [1, 1]])
    out = gather_tokens(x, idx)
    assert torch.equal(out[0, 0], x[0, 4]) and torch.equal(out[0, 1], x[0, 0])
    assert torch.equal(out[1, 0], x[1, 1])
    with pytest.raises(ValueError, match="index"):
        gather_tokens(x, torch.tensor([1, 2]))


def test_sincos_positions_are_distinct_and_fixed():
    pe = sincos_pos_embed_3d(48, (2, 3, 3))
    assert pe.shape == (18, 48)
    assert torch.cdist(pe, pe).add(torch.eye(18) * 1e3).min() > 1e-3   # every position distinguishable


def test_encoder_shapes_and_context_forward():
    m = _vit().eval()
    video = torch.randn(3, 1, 4, 16, 16)
    full = m(video)
    assert full.shape == (3, m.num_tokens, 64) and m.grid == (2, 4, 4)
    keep = torch.stack([torch.randperm(m.num_tokens)[:5].sort().values for _ in range(3)])
    part = m(video, keep=keep)
    assert part.shape == (3, 5, 64)
    # Context-only forward equals running the blocks on the gathered embedded tokens (no leak from the rest).
    x = gather_tokens(m.patch_embed(video).flatten(2).transpose(1, 2) + m.positions.table, keep)
    for b in m.blocks:
        x = b(x)
    torch.testing.assert_close(part, m.norm(x))


def test_intermediate_layer_output():
    m = _vit().eval()
    video = torch.randn(2, 1, 4, 16, 16)
    assert m(video, layer=0).shape == (2, m.num_tokens, 64)
    assert not torch.allclose(m(video, layer=0), m(video, layer=1))
    with pytest.raises(ValueError, match="layer"):
        m(video, layer=5)


def test_encoder_rejects_wrong_input():
    with pytest.raises(ValueError, match="divisible"):
        _vit(img_size=15)
    with pytest.raises(ValueError, match=r"\[B, 1, T, H, W\]"):
        _vit()(torch.randn(2, 3, 4, 16, 16))


def test_predictor_output_width_and_dependence_on_context():
    torch.manual_seed(0)
    p = MaskedTokenPredictor(grid=(2, 4, 4), in_dim=64, out_dim=96, embed_dim=32, depth=2, num_heads=4,
                             num_mask_tokens=2)
    ctx_idx = torch.tensor([[0, 1, 2], [5, 6, 7]])
    tgt_idx = torch.tensor([[8, 9], [10, 31]])
    ctx = torch.randn(2, 3, 64)
    out = p(ctx, ctx_idx, tgt_idx)
    assert out.shape == (2, 2, 96)
    assert not torch.allclose(out, p(ctx + 1.0, ctx_idx, tgt_idx))
    assert not torch.allclose(out, p(ctx, ctx_idx, tgt_idx, mask_token=1))


@pytest.mark.parametrize("name", sorted(SIZE_PRESETS))
def test_every_size_preset_builds(name):
    """Registry-wide smoke test: large presets are built on the meta device (no memory), small ones run."""
    preset = size_preset(name)
    small = preset.embed_dim <= 192
    with torch.device("cpu" if small else "meta"):
        m = _vit(name, img_size=16 if small else 224, num_frames=4 if small else 16,
                 patch_size=4 if small else 16)
    if small:
        assert m(torch.randn(1, 1, 4, 16, 16)).shape == (1, m.num_tokens, preset.embed_dim)
    assert num_params(m) > 0


@pytest.mark.parametrize("name, millions", [("base", 86), ("large", 303), ("huge", 632), ("giant", 1010),
                                            ("gigantic", 1840)])
def test_paper_sizes_match_parameter_counts(name, millions):
    """The SALT paper (arXiv 2509.24317): B 86M, L 303M, H 632M, g 1.01B, G 1.84B (3-channel, 224 px, patch 16,
    tubelet 2)."""
    p = size_preset(name)
    with torch.device("meta"):
        m = VideoViT(img_size=224, num_frames=16, in_chans=3, patch_size=16, tubelet_size=2,
                     embed_dim=p.embed_dim, depth=p.depth, num_heads=p.num_heads, mlp_ratio=p.mlp_ratio)
    assert abs(num_params(m) / 1e6 - millions) / millions < 0.02


def test_unknown_size_lists_valid():
    with pytest.raises(ValueError, match="large"):
        size_preset("enormous")


def test_rope_encoder_context_forward_and_relative_positions():
    from salt.models.tokens import rope_table_3d
    from timm.layers import apply_rot_embed_cat
    m = _vit(pos_embed="rope").eval()
    video = torch.randn(2, 1, 4, 16, 16)
    keep = torch.tensor([[0, 3, 9, 20], [1, 2, 30, 31]])
    assert m(video, keep=keep).shape == (2, 4, 64)
    assert m(video).shape == (2, m.num_tokens, 64)
    # RoPE makes q.k depend only on the offset between positions: shift both tokens by one time step.
    table = rope_table_3d(12, (3, 4, 4))
    q, k = torch.randn(12), torch.randn(12)
    def score(i, j):
        return (apply_rot_embed_cat(q, table[i]) * apply_rot_embed_cat(k, table[j])).sum()
    hw = 16
    torch.testing.assert_close(score(0 * hw + 5, 1 * hw + 6), score(1 * hw + 5, 2 * hw + 6))
    assert not torch.allclose(score(0 * hw + 5, 1 * hw + 6), score(0 * hw + 5, 2 * hw + 6))


def test_rope_predictor_runs():
    p = MaskedTokenPredictor(grid=(2, 4, 4), in_dim=64, out_dim=8, embed_dim=32, depth=1, num_heads=2,
                             pos_embed="rope")
    out = p(torch.randn(2, 3, 64), torch.tensor([[0, 1, 2], [5, 6, 7]]), torch.tensor([[8, 9], [10, 31]]))
    assert out.shape == (2, 2, 8)


def test_rope_attention_matches_timm_eva_attention():
    """The shorter RoPE attention is timm's EvaAttention (same parameters) with its rotation fused: same outputs
    and gradients, with and without a rotated key bias and a padding mask."""
    import copy
    from timm.models.eva import EvaAttention
    from salt.models.tokens import RopeAttention, rope_operands, rope_table_3d, rotate_pairs
    from timm.layers import apply_rot_embed_cat
    x = torch.randn(2, 3, 18, 18)
    for layout, kind in (("salt", torch.complex64), ("vjepa2", torch.float32)):   # a rotation, or V-JEPA 2's
        table = rope_table_3d(18, (2, 3, 3), layout=layout)
        sin, cos = table.chunk(2, -1)   # the salt layout turns each pair by one angle; V-JEPA 2's does not
        assert torch.equal(sin[:, 0::2], sin[:, 1::2]) == (layout == "salt")
        operands = rope_operands(table, layout)
        assert operands.dtype == kind
        torch.testing.assert_close(rotate_pairs(x, operands), apply_rot_embed_cat(x, table))
        half = rotate_pairs(x.bfloat16(), operands)
        assert half.dtype == torch.bfloat16
        torch.testing.assert_close(half, apply_rot_embed_cat(x.bfloat16(), table))
        with torch.device("meta"):   # estimates build encoders without memory
            assert _vit(pos_embed="rope", rope_layout=layout).positions.table.dtype == kind
    for key_bias in (False, True):
        m = _vit(pos_embed="rope", rope_layout="vjepa2" if key_bias else "salt", rope_key_bias=key_bias)
        assert all(type(b.attn) is RopeAttention for b in m.blocks)
        if key_bias:
            with torch.no_grad():
                for b in m.blocks:
                    b.attn.k_bias.normal_()
        ref = copy.deepcopy(m)
        for b in ref.blocks:
            b.attn.__class__ = EvaAttention
        head_dim = m.embed_dim // m.blocks[0].attn.num_heads
        ref.positions.table = rope_table_3d(head_dim, m.grid, layout="vjepa2" if key_bias else "salt")
        assert m.state_dict().keys() == ref.state_dict().keys()
        video = torch.randn(2, 1, 4, 16, 16)
        keep = torch.tensor([[0, 3, 9, 20], [1, 2, 30, 31]])
        # a random read-out: the sum of squares of layer-normed tokens is constant, so its gradient is rounding noise
        readout = torch.randn(2, 4, m.embed_dim)
        for model in (m, ref):
            (model(video, keep=keep) * readout).sum().backward()
        torch.testing.assert_close(m(video, keep=keep), ref(video, keep=keep))
        for (name, a), b in zip(m.named_parameters(), ref.parameters()):
            torch.testing.assert_close(a.grad, b.grad, msg=name)
        x = torch.randn(2, 5, m.embed_dim)
        valid = torch.tensor([[True] * 5, [True, True, True, False, False]])[:, None, None, :]
        rope = m.positions.rope(None, 2)[:, :, :5]
        torch.testing.assert_close(m.blocks[0].attn(x, rope=rope, attn_mask=valid),
                                   ref.blocks[0].attn(x, rope=ref.positions.rope(None, 2)[:, :, :5], attn_mask=valid))
