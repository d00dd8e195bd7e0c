"""Evaluation records for runs and baselines, end to end on micro runs."""
import math

import pytest

from salt.eval.evaluate import EvalProtocol, evaluate_baseline, evaluate_run
from salt.eval.features import shifted_views
from salt.eval.record import load_records, read_record, record_path
from salt.train.loop import run_dir_for, train

MICRO_PROTOCOL = EvalProtocol(name="micro", probe_train_clips=60, probe_test_clips=30, shots=[2, 0], draws=2,
                              linear_poolings=["time", "mean"],
                              attentive="fast", attentive_train_clips=60, attentive_epochs=1, metric_clips=40,
                              lidar_views=3, heldout_clips=16)


def test_shifted_views_keep_content():
    import torch
    videos = torch.randn(3, 1, 4, 8, 8)
    views = shifted_views(videos, 4, max_shift=2, seed=0)
    assert views.shape == (3, 4, 1, 4, 8, 8)
    # A roll moves pixels, never changes them: every view holds the clip's values.
    torch.testing.assert_close(views.sum(dim=(-1, -2)), videos.unsqueeze(1).expand_as(views).sum(dim=(-1, -2)))


def test_run_records_chain_and_baselines(micro_config, tmp_path):
    teacher_cfg = micro_config("teacher", "teacher", steps=2)
    train(teacher_cfg)
    student_cfg = micro_config("student", "student", f"objective.teacher_checkpoint={run_dir_for(teacher_cfg)}",
                               steps=2)
    train(student_cfg)
    t = evaluate_run(run_dir_for(teacher_cfg), protocol=MICRO_PROTOCOL)
    s = evaluate_run(run_dir_for(student_cfg), step=2, protocol=MICRO_PROTOCOL)
    assert t.stage == "teacher" and s.stage == "student" and s.teacher_run_id == "teacher" and s.teacher_step == 2
    assert s.flops_teacher_stage == pytest.approx(t.flops_total)
    assert s.flops_total == pytest.approx(s.flops_run + t.flops_total)
    for rec in (t, s):
        assert set(rec.metrics) >= {"rankme", "lidar", "alpha_req", "alpha_req_r2"}
        assert all(math.isfinite(v) for v in rec.metrics.values())
        assert rec.losses["heldout"] > 0
        kinds = {(p.probe, p.label, p.shots) for p in rec.probes}
        assert {("linear", "motion", 2), ("linear", "appearance", 0), ("knn", "motion", 0),
                ("attentive", "appearance", 0)} <= kinds
        assert all(0.0 <= p.test_accuracy <= 1.0 for p in rec.probes)
    # The held-out loss uses fixed clips and masks: evaluating the same checkpoint again gives the same number.
    again = evaluate_run(run_dir_for(teacher_cfg), protocol=MICRO_PROTOCOL)
    assert again.losses["heldout"] == t.losses["heldout"]
    assert read_record(record_path(run_dir_for(student_cfg), 2, "micro")).run_id == "student"

    random_rec = evaluate_baseline("random_init", teacher_cfg, tmp_path, protocol=MICRO_PROTOCOL)
    pixels_rec = evaluate_baseline("raw_pixels", teacher_cfg, tmp_path, protocol=MICRO_PROTOCOL)
    assert random_rec.stage == pixels_rec.stage == "baseline"
    assert {p.pooling for p in pixels_rec.probes} == {"pixels"}
    # Baselines are evaluated once per data/model/protocol and reused.
    assert evaluate_baseline("random_init", teacher_cfg, tmp_path, protocol=MICRO_PROTOCOL) == random_rec

    frame = load_records([tmp_path])
    assert set(frame["run_id"]) >= {"teacher", "student"}
    assert "probe.linear.time.motion.2" in frame.columns and "metrics.lidar" in frame.columns


def test_unknown_protocol_is_a_clear_error(micro_config):
    cfg = micro_config("teacher", "t", steps=1)
    train(cfg)
    with pytest.raises(ValueError, match="systematic"):
        evaluate_run(run_dir_for(cfg), protocol="thorough")


def test_periodic_evaluation_during_training_keeps_resume_exact(micro_config):
    import torch
    from salt.checkpoint import load_checkpoint
    from salt.eval.periodic import evaluation_hooks
    with_eval = micro_config("vjepa", "with-eval", "train.eval_every=2", "train.eval_protocol=smoke", steps=4)
    without = micro_config("vjepa", "without", steps=4)
    with pytest.raises(ValueError, match="train.eval_every=2 needs an evaluation hook"):
        train(with_eval)   # the loop knows nothing of evaluation: the hook is attached by its caller
    train(with_eval, checkpoint_hooks=evaluation_hooks(with_eval))
    train(without)
    frame = load_records([run_dir_for(with_eval)])
    assert sorted(frame["checkpoint_step"]) == [2, 4]
    assert frame["losses.heldout"].notna().all()
    a, b = load_checkpoint(run_dir_for(with_eval))["models"], load_checkpoint(run_dir_for(without))["models"]
    assert all(torch.equal(a["encoder"][k], b["encoder"][k]) for k in a["encoder"])


def test_multi_view_test_clips_are_averaged():
    """Video lists with eval_clips > 1 give test clips [N, V, C, T, H, W]: every probe still scores N clips,
    and a test set whose views are identical copies scores exactly like the single-view set."""
    import torch
    from salt.data import LabelSpec
    from salt.eval.features import ProbeData, clip_features
    from salt.eval.scores import feature_scores
    from tests.micro import make_vit
    g = torch.Generator().manual_seed(0)
    train_videos, test_videos = torch.randn(40, 1, 4, 16, 16, generator=g), torch.randn(20, 1, 4, 16, 16, generator=g)
    labels = {"label": torch.arange(40) % 2}, {"label": torch.arange(20) % 2}
    single = ProbeData(train_videos, labels[0], test_videos, labels[1], [LabelSpec("label", 2)])
    multi = ProbeData(train_videos, labels[0], test_videos.unsqueeze(1).expand(-1, 3, -1, -1, -1, -1).clone(),
                      labels[1], [LabelSpec("label", 2)])
    torch.manual_seed(0)
    encoder = make_vit()
    _, single_scores = feature_scores(clip_features(encoder, single, MICRO_PROTOCOL), MICRO_PROTOCOL)
    _, multi_scores = feature_scores(clip_features(encoder, multi, MICRO_PROTOCOL), MICRO_PROTOCOL)
    assert [(p.column, p.test_accuracy) for p in single_scores] == [(p.column, p.test_accuracy) for p in multi_scores]
    # Every probe's ProbeResult reaches the record whole: a linear probe's draws and spread, the attentive
    # probe's held-out score of its chosen head and the test views it averaged.
    scores = {(p.probe, p.pooling, p.shots): p for p in multi_scores}
    linear = scores[("linear", "mean", 2)]
    assert linear.draws == 2 == len(linear.details["accuracies"]) and linear.protocol == "lbfgs"
    assert linear.test_accuracy == pytest.approx(sum(linear.details["accuracies"]) / 2)
    assert scores[("knn", "time", 0)].protocol == f"k={MICRO_PROTOCOL.knn_k}"
    attentive = scores[("attentive", "tokens", 0)]
    [head] = attentive.details["per_head"]
    assert attentive.selection_score == head["val_accuracy"] and attentive.test_accuracy == head["test_accuracy"]
    assert attentive.details["test_views"] == 3 and attentive.details["num_fit"] + attentive.details["num_val"] == 40
