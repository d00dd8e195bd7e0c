"""Compute accounting (salt.flops) against torch's FLOP counter, known answers, and the paper's ViT-L numbers."""
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from salt.flops import NetworkCost, num_params, total_flops, transformer_cost
from salt.models import MaskedTokenPredictor, VideoViT, size_preset
from tests.micro import make_batch, make_objective


def counted_flops(fn) -> int:
    """FLOPs torch counts for fn(). On CPU the counter sees attention only through the math SDPA kernel."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def train_step_flops(objective, batch) -> int:
    return counted_flops(lambda: objective.loss(batch, 0)["loss"].backward())


def encoder(*, frames: int, img: int, patch: int, width: int, depth: int) -> VideoViT:
    return VideoViT(img_size=img, num_frames=frames, in_chans=1, patch_size=patch, tubelet_size=2,
                    embed_dim=width, depth=depth, num_heads=2)


# -- estimate vs counter -------------------------------------------------------------------------------------

@pytest.mark.parametrize("pos_embed", ["sincos", "rope"])
@pytest.mark.parametrize("method", ["pixel", "salt", "vjepa"])
def test_costs_match_counted_flops(method, pos_embed):
    """Loss + backward of a whole step (both mask pairs, teacher forward) vs costs(): measured estimate/counted
    1.04 (the predictor's input/output layers run on fewer tokens than all of its params are charged for)."""
    torch.manual_seed(0)
    objective, batch = make_objective(method, pos_embed=pos_embed), make_batch()
    counted = train_step_flops(objective, batch)
    estimate = total_flops(objective.costs(batch), count_attention=True)
    assert counted > 0
    assert estimate == pytest.approx(counted, rel=0.10)


def test_paper_method_holds_when_attention_is_negligible():
    """4 tokens of width 256: attention is ~0.3% of the compute, 6ND alone is within 1% of the counter."""
    model = encoder(frames=2, img=8, patch=4, width=256, depth=2)
    video = torch.randn(2, 1, 2, 8, 8)
    counted = counted_flops(lambda: model(video).sum().backward())
    cost = transformer_cost(model, batch=2, seq_len=model.num_tokens, trained=True)
    assert model.num_tokens == 4
    assert cost.flops(count_attention=False) == pytest.approx(counted, rel=0.10)
    assert cost.flops(count_attention=True) == pytest.approx(counted, rel=0.10)


def test_paper_method_undercounts_long_sequences():
    """128 tokens of width 32: attention is L / (6D + L) = 40% of the compute; 6ND misses all of it."""
    model = encoder(frames=4, img=16, patch=2, width=32, depth=1)
    video = torch.randn(2, 1, 4, 16, 16)
    counted = counted_flops(lambda: model(video).sum().backward())
    cost = transformer_cost(model, batch=2, seq_len=model.num_tokens, trained=True)
    with_attention, without = cost.flops(count_attention=True), cost.flops(count_attention=False)
    attention_share = (with_attention - without) / with_attention
    undercount = 1 - without / counted
    assert model.num_tokens == 128 and attention_share == pytest.approx(128 / (6 * 32 + 128), abs=0.02)
    assert with_attention == pytest.approx(counted, rel=0.10)
    assert undercount > 0.3                                   # far outside the 10% the short case meets
    assert undercount == pytest.approx(attention_share, abs=0.03)


# -- known answers -------------------------------------------------------------------------------------------

def test_trained_network_costs_three_forwards():
    for count_attention in (False, True):
        trained = NetworkCost(params=1000, tokens=50, trained=True, depth=2, width=16, seq_len=25)
        forward = NetworkCost(params=1000, tokens=50, trained=False, depth=2, width=16, seq_len=25)
        assert trained.flops(count_attention) == 3 * forward.flops(count_attention)
    assert forward.flops() == 2 * 1000 * 50
    assert forward.flops(count_attention=True) == 2 * 1000 * 50 + 4 * 2 * 25 * 16 * 50
    # torch agrees: backward through a network whose input needs a gradient costs two forwards
    predictor = MaskedTokenPredictor(grid=(2, 4, 4), in_dim=64, out_dim=64, embed_dim=64, depth=2, num_heads=2)
    context = torch.randn(2, 10, 64, requires_grad=True)
    context_idx, target_idx = torch.arange(10).repeat(2, 1), torch.arange(10, 32).repeat(2, 1)
    forward_only = counted_flops(lambda: predictor(context, context_idx, target_idx))
    forward_backward = counted_flops(lambda: predictor(context, context_idx, target_idx).sum().backward())
    assert forward_backward / forward_only == pytest.approx(3.0, rel=0.01)


@pytest.mark.parametrize("method", ["salt", "vjepa"])
def test_target_encoder_costs_2nd(method):
    """The frozen teacher (or EMA target) runs forward once on the full clip: 2 * N * D, D = all tokens."""
    objective, batch = make_objective(method), make_batch(batch_size=3)
    forward_only = [c for c in objective.costs(batch) if not c.trained]
    assert len(forward_only) == 1
    teacher_cost = forward_only[0]
    n, d = num_params(objective.target_encoder), 3 * objective.target_encoder.num_tokens
    assert (teacher_cost.params, teacher_cost.tokens) == (n, d)
    assert teacher_cost.flops() == 2 * n * d
    counted = counted_flops(lambda: objective.targets(batch["video"]))
    assert teacher_cost.flops(count_attention=True) == pytest.approx(counted, rel=0.10)


@pytest.mark.parametrize("method", ["pixel", "salt", "vjepa"])
def test_student_costs_count_context_tokens_only(method):
    objective, batch = make_objective(method), make_batch(batch_size=2)
    trained = [c for c in objective.costs(batch) if c.trained]
    assert len(trained) == 2 * len(batch["masks"])   # encoder + predictor per mask pair
    student_params = num_params(objective.encoder)
    for pair, (enc, pred) in zip(batch["masks"], zip(trained[::2], trained[1::2])):
        num_context, num_target = pair.context.shape[1], pair.target.shape[1]
        assert (enc.params, enc.tokens, enc.seq_len) == (student_params, 2 * num_context, num_context)
        assert (pred.tokens, pred.seq_len) == (2 * (num_context + num_target), num_context + num_target)


# -- the paper's ViT-L ---------------------------------------------------------------------------------------

BATCH = 3072


def paper_student_step(encoder_params: float, teacher_params: float) -> list[NetworkCost]:
    """Per clip: student encoder ~313 tokens (10% context x 2 mask configs), predictor (22M) ~3136 tokens
    (1568 per config), teacher 1568 tokens (one full-clip forward); batch 3072."""
    return [NetworkCost(params=int(encoder_params), tokens=313 * BATCH, trained=True),
            NetworkCost(params=int(22e6), tokens=3136 * BATCH, trained=True),
            NetworkCost(params=int(teacher_params), tokens=1568 * BATCH, trained=False)]


def test_paper_vitl_student_step_flops():
    costs = paper_student_step(0.30e9, 0.303e9)
    assert total_flops(costs) == pytest.approx(5.92e15, rel=0.02)
    assert costs[2].flops() / total_flops(costs) == pytest.approx(0.5, abs=0.02)   # teacher ~half the compute
    assert total_flops(costs[:2]) == pytest.approx(3.0e15, rel=0.02)   # = the teacher stage's step


def test_real_vitl_matches_paper():
    large = size_preset("large")
    with torch.device("meta"):   # shapes only: no memory, no init cost
        vit_l = VideoViT(img_size=224, num_frames=16, in_chans=3, patch_size=16, tubelet_size=2,
                         embed_dim=large.embed_dim, depth=large.depth, num_heads=large.num_heads)
    assert next(vit_l.parameters()).is_meta
    assert vit_l.num_tokens == 1568
    assert num_params(vit_l) == pytest.approx(0.303e9, rel=0.01)
    costs = paper_student_step(num_params(vit_l), num_params(vit_l))
    assert total_flops(costs) == pytest.approx(5.95e15, rel=0.01)   # the paper's rounded "~5.95e15"
