"""python -m analysis, summarize, target choice, and the notebooks (executed with nbclient, outputs not stored)."""
import json
from pathlib import Path

import nbformat
import pytest

from analysis.__main__ import main
from analysis.collect import StudyDataError, load_study
from analysis.figures import FIGURES
from analysis.report import DEFAULT_TARGET, choose_evaluation, choose_target, summarize
from analysis.synthetic import SyntheticSpec, write_synthetic_study
from analysis.synthetic_choice import SelectionSpec, write_selection_study

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "analysis" / "notebooks").glob("*.ipynb"))
SPEC = SyntheticSpec(budgets=(1000, 2000, 4000), shares=(0.1, 0.2, 0.4), seeds=2, checkpoints=(0.5, 1.0))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_synthetic_study(tmp_path_factory.mktemp("report") / "study", SPEC)


def test_cli_writes_the_report_and_every_figure(study, tmp_path, capsys):
    assert main([str(study), "--out", str(tmp_path / "out"), "--bootstrap", "30"]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    for heading in ("## Summary", "## Accuracy vs compute", "### Extrapolation", "## L(N, D)",
                    "## Pareto frontier", "## Compute-optimal teacher share", "## FLOPs SALT needs",
                    "## Teacher selection", "## Cost per curve"):
        assert heading in report
    assert f"Target: `{DEFAULT_TARGET}` (evaluation `fast`)" in report
    assert "| salt | c |" in report and "Zero-compute references: random_init-tiny" in report
    for name in FIGURES:
        assert (tmp_path / "out" / "figures" / f"{name}.png").stat().st_size > 1000
        assert (tmp_path / "out" / "figures" / f"{name}.pdf").is_file()
        assert f"(figures/{name}.png)" in report
    assert "wrote" in capsys.readouterr().out


def test_cli_default_output_folder_and_no_figures(study):
    assert main([str(study), "--bootstrap", "0", "--no-figures"]) == 0
    assert (study / "analysis" / "report.md").is_file()
    assert not (study / "analysis" / "figures").exists()


def test_cli_refuses_a_partial_study_unless_asked(tmp_path, capsys):
    spec = SyntheticSpec(budgets=(1000, 2000, 4000), shares=(0.2,), seeds=1, checkpoints=(1.0,))
    partial = write_synthetic_study(tmp_path / "p", spec, skip_done=("salt-tiny-b2000-r0.2-s0",))
    assert main([str(partial), "--bootstrap", "0", "--no-figures"]) == 2
    assert "salt-tiny-b2000-r0.2-s0: lacks done.json" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="incomplete"):
        assert main([str(partial), "--bootstrap", "0", "--no-figures", "--allow-partial"]) == 0
    assert "salt-tiny-b2000-r0.2-s0: lacks done.json" in (partial / "analysis" / "report.md").read_text()
    assert main([str(tmp_path / "empty"), "--no-figures"]) == 2
    assert "no such study folder" in capsys.readouterr().err


def test_summarize_prints_accuracy_at_flops_per_budget_and_curve(study):
    text = summarize(study)
    assert text.splitlines()[0].startswith(f"10-shot motion accuracy (linear probe, per-time-step pooled features) = "
                                           f"{DEFAULT_TARGET} (fast)")
    assert "salt share=0.2" in text and "vjepa" in text and "*" in text
    assert "What this study can show:" in text and "seed(s) per setting" in text and "sd 0.0" in text
    assert "random_init" not in text                     # zero-compute references are not curves


def test_target_and_evaluation_choice(study):
    frame = load_study(study)
    assert choose_target(frame) == DEFAULT_TARGET
    assert choose_target(frame.drop(columns=[DEFAULT_TARGET])) == "probe.attentive.tokens.motion.all"
    probes = [c for c in frame if c.startswith("probe.")]
    with pytest.raises(StudyDataError, match="probe columns with values: probe.attentive"):
        choose_target(frame.drop(columns=[DEFAULT_TARGET]), "probe.knn.time.motion.all")
    with pytest.raises(StudyDataError, match="pass a target"):
        choose_target(frame.drop(columns=probes))
    assert choose_evaluation(frame) == "fast"
    with pytest.raises(StudyDataError, match="there are: fast"):
        choose_evaluation(frame, "systematic")


def test_notebooks_are_stored_without_outputs():
    assert {p.name for p in NOTEBOOKS} == {"compute_allocation.ipynb", "teacher_selection.ipynb"}
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code and all(not c["outputs"] and c["execution_count"] is None for c in code), path.name


def test_notebooks_regenerate_every_figure(study, tmp_path, monkeypatch):
    """Each notebook on a study of its kind (the teacher-selection one on a synthetic teacher-selection study)."""
    from nbclient import NotebookClient

    studies = {"compute_allocation.ipynb": study,
               "teacher_selection.ipynb": write_selection_study(tmp_path / "selection", SelectionSpec())}
    monkeypatch.setenv("SALT_ANALYSIS_BOOTSTRAP", "20")
    monkeypatch.setenv("SALT_FIGURE_DIR", str(tmp_path / "figures"))
    for path in NOTEBOOKS:
        monkeypatch.setenv("SALT_STUDY_DIR", str(studies[path.name]))
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    assert {p.stem for p in (tmp_path / "figures").glob("*.png")} == set(FIGURES)
    assert {p.stem for p in (tmp_path / "figures").glob("*.pdf")} == set(FIGURES)
