"""analysis.kinds: every packaged study's plans (each preset, built dry: no training) write a study kind and curve
labels the analysis knows; a study folder of a kind it does not know is refused by name; a kind registered by a
study defined elsewhere is analysed like a packaged one."""
from pathlib import Path

import pytest

from analysis import kinds
from analysis.__main__ import main
from analysis.answers import ANSWERS
from analysis.collect import StudyDataError, load_study
from analysis.report import analyze, summarize
from analysis.synthetic import SyntheticSpec, write_synthetic_study
from studies import compute_allocation, hpo_student, scaling, teacher_masks, teacher_selection

REPO = Path(__file__).resolve().parent.parent
# Each packaged study module and the function that maps one of its presets to its plan (the `build` it hands to
# study_main).
STUDIES = {compute_allocation: compute_allocation.build, scaling: scaling.build, teacher_masks: teacher_masks.build,
           teacher_selection: teacher_selection.build, hpo_student: hpo_student.teacher_plan}
SPEC = SyntheticSpec(budgets=(1000, 2000, 4000), shares=(0.2,), seeds=1, checkpoints=(1.0,))


def _packaged_plans(root: Path):
    """(where, plan) of every preset of every packaged study, and of the demo."""
    from salt.demo import DEMO_PRESETS, demo_plan
    for module, build in STUDIES.items():
        for preset, dials in module.PRESETS.items():
            yield f"{module.__name__} --preset {preset}", build(dials, preset, root / module.STUDY / preset)
    for preset in DEMO_PRESETS:
        yield f"salt.demo --preset {preset}", demo_plan(preset, root / "demo" / preset)


def test_every_study_module_is_checked_here():
    modules = {p.stem for p in (REPO / "studies").glob("*.py") if "\nSTUDY = " in p.read_text()}
    assert modules == {m.__name__.split(".")[-1] for m in STUDIES}, "a new study: add it (and its builder) to STUDIES"


def test_every_packaged_plan_writes_a_kind_and_curve_labels_the_analysis_knows(tmp_path, monkeypatch):
    # The FLOPs estimates (meta-device models, a minute for the paper presets) decide steps, never labels: stubbed.
    import salt.study.estimate as estimate
    monkeypatch.setattr(estimate, "run_flops", lambda cfg: 1e12)
    monkeypatch.setattr(estimate, "step_flops", lambda cfg: 1e9)
    unknown = []
    for where, plan in _packaged_plans(tmp_path):
        try:
            kind = kinds.get(plan.study, where)
        except StudyDataError as e:
            unknown.append(str(e))
            continue
        for spec in plan.runs:
            label = spec.labels.get("group", spec.method)   # the curve analysis.collect puts the run on
            if label not in kind.curves:
                unknown.append(f"{where}: run {spec.run_id} has curve label {label!r}, which the {kind.name!r} kind "
                               f"does not list ({', '.join(kind.curves)}; analysis.kinds)")
    assert not unknown, "\n".join(unknown)


def test_kinds_name_registered_curves_and_every_question_has_its_answer():
    assert set(ANSWERS) == set(kinds.QUESTIONS)
    for kind in [*kinds.KINDS.values(), kinds.MIXED]:
        assert set(kind.curves) <= set(kinds.CURVES), kind
    with pytest.raises(ValueError, match="'teacher' are not registered"):
        kinds.register(kinds.StudyKind("other", kinds.ALLOCATION, ("teacher",), candidate="salt", reference="vjepa"))
    with pytest.raises(ValueError, match="registered already"):
        kinds.register(kinds.StudyKind("scaling", kinds.SELECTION, ("salt",)))
    assert kinds.curve("salt").words == "SALT student" and kinds.curve("mine").words == "mine"   # shown as itself


def test_a_study_of_an_unknown_kind_is_refused_by_name(tmp_path, capsys):
    study = write_synthetic_study(tmp_path / "s", SyntheticSpec(**{**SPEC.__dict__, "study": "my_study"}))
    frame = load_study(study)
    with pytest.raises(StudyDataError, match=f"{study}: study kind 'my_study' .* is not one the analysis knows; "
                                             "known kinds: checkpoint_choice, compute_allocation"):
        analyze(frame, n_boot=0)
    with pytest.raises(StudyDataError, match="'my_study'"):
        summarize(study)
    assert main([str(study), "--no-figures", "--bootstrap", "0"]) == 2
    assert "study kind 'my_study'" in capsys.readouterr().err
    with pytest.raises(StudyDataError, match="'my_study'"):   # among several folders too
        analyze(load_study([write_synthetic_study(tmp_path / "known", SPEC), study]), n_boot=0)


def test_a_kind_registered_elsewhere_is_analysed(tmp_path, monkeypatch):
    monkeypatch.setattr(kinds, "KINDS", dict(kinds.KINDS))   # registrations of this test stay in it
    kinds.register(kinds.StudyKind("my_study", kinds.ALLOCATION, ("pixel", "salt", "vjepa", "random_init"),
                                   candidate="salt", reference="vjepa"))
    study = write_synthetic_study(tmp_path / "s", SyntheticSpec(**{**SPEC.__dict__, "study": "my_study"}))
    assert analyze(load_study(study), n_boot=0).kind.name == "my_study"
    assert "What this study can show" in summarize(study, n_boot=0)
