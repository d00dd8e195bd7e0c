"""One method registry: a method defined here, in the test file, trains, is evaluated into a record, is
estimated, runs from the command line and enters a study plan (also as a teacher of a SALT student), without
any other module knowing its name."""
from __future__ import annotations

import json

import pytest
import torch

from salt.flops import transformer_cost
from salt.objectives import Method, Objective, get_method, register, unregister
from salt.objectives.base import mean_over_pairs


class MeanColourObjective(Objective):
    """A toy method: from the context tokens' mean feature, predict each frame's mean intensity (a linear head)."""

    def __init__(self, encoder, frames: int):
        super().__init__()
        self.encoder, self.head = encoder, torch.nn.Linear(encoder.embed_dim, frames)

    def trainable(self):
        return {"encoder": self.encoder, "head": self.head}

    def loss(self, batch, step):
        video = batch["video"]
        target = video.mean(dim=(1, 3, 4))   # [B, T]
        losses = [(self.head(self.encoder(video, keep=pair.context).mean(dim=1)).float() - target).pow(2).mean()
                  for pair in batch["masks"]]
        return {"loss": mean_over_pairs(losses)}

    def costs(self, batch):
        return [transformer_cost(self.encoder, batch=batch["video"].shape[0], seq_len=pair.context.shape[1],
                                 trained=True) for pair in batch["masks"]]


def _build(cfg, geometry, encoder, teacher):
    return MeanColourObjective(encoder, geometry.frames)


@pytest.fixture
def toy_method():
    method = register(Method("meancolour", _build, stage="teacher", command="meancolour",
                             help="a toy method defined in a test"))
    yield method
    unregister(method.name)


def test_registry_refuses_clashes_and_names_unknown_methods(toy_method):
    with pytest.raises(ValueError, match="already registered"):
        register(Method("meancolour", _build, stage="teacher", command="meancolour"))
    with pytest.raises(ValueError, match="command 'teacher' .* belongs to method 'pixel'"):
        register(Method("other", _build, stage="teacher", command="teacher"))
    with pytest.raises(ValueError, match="stage must be one of"):
        Method("x", _build, stage="pupil", command="x")
    with pytest.raises(ValueError, match="unknown objective.method 'nope'; registered: pixel, salt, vjepa, imported, "
                                         "meancolour"):
        get_method("nope")
    with pytest.raises(ValueError, match="command non-empty exactly when the method trains"):
        Method("y", _build, stage="teacher", command="", trains=True)


def test_a_method_defined_in_a_test_runs_through_every_layer(toy_method, micro_config, tmp_path, capsys):
    from salt.__main__ import main
    from salt.eval.evaluate import evaluate_run
    from salt.study.estimate import step_flops
    from salt.study.spec import PlanBuilder
    from salt.train.loop import run_dir_for, train

    # config check and training
    cfg = micro_config("teacher", "toy", "objective.method=meancolour", steps=2)
    summary = train(cfg)
    assert summary["method"] == "meancolour" and summary["flops"]["run"] > 0
    assert summary["params"]["head"] == 64 * 4 + 4   # micro encoder width 64, 4 frames

    # evaluation record: stage from the registry, held-out loss from the method's own objective
    record = evaluate_run(run_dir_for(cfg), protocol="smoke")
    assert (record.method, record.stage) == ("meancolour", "teacher")
    assert record.losses["heldout"] > 0 and record.probes

    # compute estimate on the meta device, from the method's own costs
    assert step_flops(cfg) == pytest.approx(summary["flops"]["run"] / 2, rel=0.5)

    # the command line has a command for it
    args = ["meancolour", "--config", "micro_teacher", f"out_dir={tmp_path / 'cli'}", "name=from-cli",
            "train.steps=1", f"data.moving_digits.cache_dir={tmp_path / 'cache'}",
            "data.moving_digits.num_train=64", "data.moving_digits.num_test=32"]
    assert main(args) == 0
    assert json.loads((tmp_path / "cli" / "from-cli" / "done.json").read_text())["method"] == "meancolour"
    capsys.readouterr()

    # a study plan: the toy run as a teacher of a SALT student
    b = PlanBuilder("toy_study", "smoke", tmp_path / "study", evaluation="smoke")
    teacher = b.run("micro_teacher", ["objective.method=meancolour", "train.steps=3"])
    student = b.student("micro_student", teacher, ["train.steps=2"])
    plan = b.plan()
    assert (teacher.role, teacher.method) == ("teacher", "meancolour") and teacher.run_id.startswith("meancolour-")
    assert teacher.estimated_flops > 0
    assert student.depends_on == [teacher.run_id] and student.method == "salt"
    assert student.estimated_flops_total == pytest.approx(student.estimated_flops + teacher.estimated_flops)
    assert [s.run_id for s in plan.runs] == [teacher.run_id, student.run_id]


def test_an_unregistered_method_is_an_error_naming_the_key(micro_config):
    from salt.config import ConfigError
    with pytest.raises((ConfigError, ValueError), match="unknown objective.method 'meancolour'"):
        micro_config("teacher", "t", "objective.method=meancolour")
