"""Attentive probes: parallel heads equal separate training, selection never sees test, toy tasks are learnt."""
import pytest
import torch

from salt.eval.attentive import (
    AttentiveProbe, CrossAttentionBlock, ParallelAttentiveProbes, fit_attentive_probes,
    protocol_grid, train_parallel_probes, view_averaged_logits,
)

TOKENS, DIM, CLASSES = 8, 16, 4
SMALL = dict(self_attn_depth=1, num_heads=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def toy(n: int, kind: str, seed: int):
    """Noise + a fixed code per token position; the class is a direction added to token 5 ("position")
    or, weaker, to every token ("mean")."""
    directions = torch.randn(CLASSES, DIM, generator=torch.Generator().manual_seed(100)) * 2
    positions = torch.randn(TOKENS, DIM, generator=torch.Generator().manual_seed(101))
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    tokens = torch.randn(n, TOKENS, DIM, generator=g) + positions
    if kind == "position":
        tokens[:, 5] += directions[labels]
    else:
        tokens += 0.5 * directions[labels][:, None]
    return tokens, labels


def accuracy(probes, tokens, labels):
    return (view_averaged_logits(probes.eval(), tokens).argmax(-1) == labels).float().mean(-1)


def test_parallel_heads_equal_heads_trained_alone():
    tokens, labels = toy(48, "position", seed=0)
    grid = [(3e-3, 0.01), (1e-3, 0.4)]
    train = dict(epochs=2, batch_size=16, warmup_epochs=0.5, seed=3)
    together = ParallelAttentiveProbes(DIM, CLASSES, grid, seed=7, **SMALL)
    losses = train_parallel_probes(together, tokens, labels, **train)
    logits = view_averaged_logits(together.eval(), tokens)
    for head, hparams in enumerate(grid):
        alone = ParallelAttentiveProbes(DIM, CLASSES, [hparams], seed=7, **SMALL)
        [loss_alone] = train_parallel_probes(alone, tokens, labels, **train)
        assert loss_alone == pytest.approx(losses[head], abs=1e-6)
        for (name, p_together), p_alone in zip(together.probes[head].named_parameters(), alone.parameters()):
            torch.testing.assert_close(p_together, p_alone, atol=1e-6, rtol=1e-5, msg=name)
        torch.testing.assert_close(logits[head], view_averaged_logits(alone.eval(), tokens)[0])
    # The two heads really trained differently (same init, different lr/wd), so the comparison has teeth.
    assert not torch.allclose(together.probes[0].head.weight, together.probes[1].head.weight, atol=1e-4)


def test_selection_never_looks_at_the_test_split():
    train_tokens, train_labels = toy(80, "mean", seed=1)
    test_tokens, test_labels = toy(40, "mean", seed=2)
    options = dict(num_classes=CLASSES, protocol="systematic", epochs=2, batch_size=16, seed=5,
                   self_attn_depth=0, num_heads=2)
    honest = fit_attentive_probes(train_tokens, train_labels, test_tokens, test_labels, **options)
    noise = torch.randn(test_tokens.shape, generator=torch.Generator().manual_seed(9))
    corrupted = fit_attentive_probes(train_tokens, train_labels, noise, test_labels.roll(1), **options)

    heads, corrupted_heads = honest.details["per_head"], corrupted.details["per_head"]
    assert len(heads) == 20 == len(protocol_grid("systematic"))
    assert corrupted.details["selected"] == honest.details["selected"]
    assert corrupted.selection_score == honest.selection_score
    assert [h["val_accuracy"] for h in corrupted_heads] == [h["val_accuracy"] for h in heads]
    assert [h["test_accuracy"] for h in corrupted_heads] != [h["test_accuracy"] for h in heads]
    # The grid matters on this data (selection is not a no-op) and the reported head is the selected one.
    assert len({h["val_accuracy"] for h in heads}) > 1
    chosen = next(h for h in heads if (h["lr"], h["wd"]) == tuple(honest.details["selected"].values()))
    assert honest.selection_score == chosen["val_accuracy"] == max(h["val_accuracy"] for h in heads)
    assert honest.accuracy == chosen["test_accuracy"]
    assert honest.details["num_fit"] + honest.details["num_val"] == 80 and honest.draws == 1


def test_fast_protocol_learns_a_class_spread_over_all_tokens():
    train_tokens, train_labels = toy(200, "mean", seed=3)
    test_tokens, test_labels = toy(100, "mean", seed=4)
    result = fit_attentive_probes(train_tokens, train_labels, test_tokens, test_labels, num_classes=CLASSES,
                                  epochs=25, batch_size=16, **SMALL)
    assert result.details["selected"] == {"lr": 1e-3, "wd": 0.01} and len(result.details["per_head"]) == 1
    assert result.selection_score >= 0.9 and result.accuracy >= 0.9


def test_probe_finds_the_class_token_at_one_position():
    tokens, labels = toy(256, "position", seed=5)
    test_tokens, test_labels = toy(128, "position", seed=6)
    probes = ParallelAttentiveProbes(DIM, CLASSES, [(1e-2, 0.01)], **SMALL)
    before = accuracy(probes, test_tokens, test_labels)
    train_parallel_probes(probes, tokens, labels, epochs=8, batch_size=16)
    after = accuracy(probes, test_tokens, test_labels)
    assert before < 0.5 and after >= 0.9


def test_views_are_averaged_as_logits_before_the_argmax():
    # A "model" whose logits are the first two channels of the mean token: view 0 votes strongly for class
    # 0, views 1 and 2 weakly for class 1. Averaged logits pick 0; a majority vote would pick 1.
    views = torch.zeros(1, 3, 2, 2)
    views[0, 0, :, 0] = 3.0
    views[0, 1:, :, 1] = 1.0
    logits = view_averaged_logits(lambda x: x.mean(1), views, device="cpu")
    torch.testing.assert_close(logits, torch.tensor([[1.0, 2 / 3]]))
    assert logits.argmax(-1).item() == 0

    probes = ParallelAttentiveProbes(DIM, CLASSES, protocol_grid("fast"), **SMALL).eval()
    clips = torch.randn(5, 3, TOKENS, DIM)
    per_view = torch.stack([view_averaged_logits(probes, clips[:, v]) for v in range(3)]).mean(0)
    torch.testing.assert_close(view_averaged_logits(probes, clips, batch_size=2), per_view)


def test_multi_view_test_set_runs_through_fit():
    train_tokens, train_labels = toy(40, "mean", seed=7)
    test_tokens = torch.randn(6, 2, TOKENS, DIM)
    result = fit_attentive_probes(train_tokens, train_labels, test_tokens, torch.arange(6) % CLASSES,
                                  num_classes=CLASSES, epochs=1, batch_size=16, **SMALL)
    assert result.details["test_views"] == 2 and result.details["num_test"] == 6


def test_cross_attention_output_depends_on_every_token():
    torch.manual_seed(0)
    block = CrossAttentionBlock(DIM, num_heads=2)
    queries = torch.randn(2, 1, DIM)
    tokens = torch.randn(2, TOKENS, DIM, requires_grad=True)
    block(queries, tokens).sum().backward()
    assert (tokens.grad.abs().sum(-1) > 0).all()
    probe = AttentiveProbe(DIM, CLASSES, self_attn_depth=0, num_heads=2, width=8, num_queries=3)
    assert probe(tokens.detach()).shape == (2, CLASSES)


def test_bad_inputs_raise_clear_errors():
    tokens, labels = toy(20, "mean", seed=8)
    fit = dict(num_classes=CLASSES, epochs=1)
    with pytest.raises(ValueError, match="train_tokens have width 16 but test_tokens have 8"):
        fit_attentive_probes(tokens, labels, tokens[..., :8], labels, **fit)
    with pytest.raises(ValueError, match="train_tokens has 20 clips but train_labels has 19"):
        fit_attentive_probes(tokens, labels[:19], tokens, labels, **fit)
    with pytest.raises(ValueError, match="outside"):
        fit_attentive_probes(tokens, labels + CLASSES, tokens, labels, **fit)
    with pytest.raises(ValueError, match=r"\[N, tokens, D\]"):
        fit_attentive_probes(tokens[:, 0], labels, tokens, labels, **fit)
    with pytest.raises(ValueError, match="protocol"):
        fit_attentive_probes(tokens, labels, tokens, labels, protocol="best", **fit)
    with pytest.raises(ValueError, match="val_fraction"):
        fit_attentive_probes(tokens, labels, tokens, labels, val_fraction=1.0, **fit)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        AttentiveProbe(DIM, CLASSES, num_heads=3)
