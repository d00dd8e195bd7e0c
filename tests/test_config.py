"""The one override path: YAML layers + key=value, strict about keys and types."""
import pytest

from salt.config import ConfigError, load_config, parse_override, resolve_config
from salt.schema import RunConfig


def test_defaults_then_yaml_then_overrides(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("train: {steps: 7, batch_size: 4}\noptim: {lr: 0.01}\n")
    cfg = load_config(RunConfig, [f], ["train.steps=9", "optim.betas=[0.8, 0.9]", "mask.kind=random"])
    assert cfg.train.steps == 9 and cfg.train.batch_size == 4
    assert cfg.optim.lr == 0.01 and cfg.optim.betas == [0.8, 0.9]
    assert cfg.mask.kind == "random"


def test_base_include(tmp_path):
    (tmp_path / "common.yaml").write_text("train: {steps: 3, seed: 5}\n")
    (tmp_path / "child.yaml").write_text("base: common.yaml\ntrain: {steps: 4}\n")
    cfg = load_config(RunConfig, [tmp_path / "child.yaml"])
    assert (cfg.train.steps, cfg.train.seed) == (4, 5)


@pytest.mark.parametrize("override, fragment", [
    ("train.stepz=3", "train.stepz"),
    ("nope=1", "nope"),
    ("data.moving_digits.canvaz=3", "data.moving_digits.canvaz"),
])
def test_unknown_key_is_named(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(RunConfig, [], [override])


@pytest.mark.parametrize("override, fragment", [
    ("train.steps=abc", "train.steps"),
    ("train.steps=1.5", "train.steps"),
    ("train.progress=3", "train.progress"),
    ("optim.betas=0.9", "optim.betas"),
    ("mask.blocks=[{num_blocks: x}]", r"mask.blocks\[0\].num_blocks"),
])
def test_wrong_type_is_named(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(RunConfig, [], [override])


def test_invalid_value_names_the_field():
    with pytest.raises(ConfigError, match="method"):
        load_config(RunConfig, [], ["objective.method=byol"])
    with pytest.raises(ConfigError, match="teacher_checkpoint"):
        load_config(RunConfig, [], ["objective.method=salt"])


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.steps")
    with pytest.raises(ConfigError, match="empty key"):
        parse_override("train..steps=3")


def test_packaged_configs_all_load():
    from salt.config import PACKAGED_CONFIGS
    names = sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))
    assert {"tiny_teacher", "tiny_student", "tiny_vjepa", "paper_vitl_teacher", "paper_vitl_student"} <= set(names)
    for name in names:
        extra = ["objective.teacher_checkpoint=some/where"] if "student" in name else []
        cfg = load_config(RunConfig, [resolve_config(name)], extra)
        assert cfg.train.steps >= 1


def test_unknown_config_name_lists_packaged():
    with pytest.raises(ConfigError, match="tiny_teacher"):
        resolve_config("no_such_config")


def test_float_overrides_accept_exponents_without_a_dot():
    """YAML 1.1 reads `1e-4` as a string; a float key takes it, and still refuses text that is not a number."""
    cfg = load_config(RunConfig, [], ["optim.lr=1e-4"])
    assert cfg.optim.lr == 1e-4
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(RunConfig, [], ["optim.lr=fast"])
