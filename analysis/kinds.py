"""Study kinds and curves: what the analysis knows about each kind of study, decided here once.

A study's kind is its study.json "study" (`StudyPlan.study`). Its `StudyKind` says which question the analysis
answers for it (`QUESTIONS`; the answer itself, its summary, report sections, tables and figures:
`analysis.answers.answer_of`), which curve labels its runs carry (each run's `group` label: the curve it is drawn
on), and, for the questions that compare curves, which curve is the candidate and which the reference. A `Curve`
says how a label is shown: in words (figures, printed answers) and in one colour.

The analysis reads a study folder without importing its study module (analysis never imports studies/), so the
packaged studies' kinds are registered below; a study module names its kind to its hooks
(`studies.reporting.study_hooks(STUDY, ...)`), which look it up here and fail before anything runs when the
analysis does not know it. A study defined elsewhere calls `register` (and `register_curve` for a new label)
before it runs. tests/test_analysis_kinds.py builds every packaged study's plans and fails on a kind or a curve
label not registered here; a study folder of an unknown kind is refused by name (`of_frame`).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.collect import StudyDataError

OTHER_COLOUR = "#7f7f7f"

# The questions the analysis answers (analysis.answers implements each):
ALLOCATION = "allocation"   # accuracy vs compute per curve; the candidate's teacher share per budget against the reference
TUNED = "tuned"             # the same fits; the verdict compares a factor's values, each at its best tuning value
SELECTION = "selection"     # which label-free metric predicts the student's accuracy (no compute curves)
QUESTIONS = (ALLOCATION, TUNED, SELECTION)


@dataclass(frozen=True)
class Curve:
    label: str                   # the `group` label a study writes on its runs
    words: str                   # in figures and printed answers
    colour: str = OTHER_COLOUR
    short: str = ""              # in a short phrase ("no SALT runs ..."); default: words


CURVES: dict[str, Curve] = {}


def register_curve(curve: Curve) -> Curve:
    """Add a curve label; registering a label again with another definition is an error."""
    known = CURVES.get(curve.label)
    if known is not None and known != curve:
        raise ValueError(f"curve {curve.label!r} is registered already as {known}")
    CURVES[curve.label] = curve
    return curve


def curve(label) -> Curve:
    """The registered curve of a label; a label the registry does not know is shown as itself, in grey."""
    return CURVES.get(label) or Curve(str(label), str(label))


def short_name(label) -> str:
    c = curve(label)
    return c.short or c.words


@dataclass(frozen=True)
class StudyKind:
    name: str                    # study.json "study"
    question: str                # one of QUESTIONS
    curves: tuple[str, ...]      # the curve labels its runs carry (registered curves)
    candidate: str = ""          # ALLOCATION, TUNED: the curve whose teacher share (or factor) is chosen ...
    reference: str = ""          # ... and the one it is judged against (it may be absent from the study)
    factor: str = ""             # TUNED: the factor compared (a label column), each value at its best ...
    tuning: str = ""             # ... value of this one


KINDS: dict[str, StudyKind] = {}


def _check(kind: StudyKind) -> None:
    if kind.question not in QUESTIONS:
        raise ValueError(f"study kind {kind.name!r}: question {kind.question!r} is not one of {', '.join(QUESTIONS)}")
    unknown = [c for c in (*kind.curves, kind.candidate, kind.reference) if c and c not in CURVES]
    if unknown:
        raise ValueError(f"study kind {kind.name!r}: curve label(s) {', '.join(map(repr, unknown))} are not "
                         f"registered (analysis.kinds.register_curve); known: {', '.join(CURVES)}")
    if kind.question != SELECTION and not (kind.candidate and kind.reference):
        raise ValueError(f"study kind {kind.name!r}: the {kind.question} question needs a candidate and a reference "
                         "curve")
    if kind.question == TUNED and not (kind.factor and kind.tuning):
        raise ValueError(f"study kind {kind.name!r}: the tuned question needs a factor and a tuning label")


def register(kind: StudyKind) -> StudyKind:
    """Add a study kind; registering a name again with another definition is an error."""
    _check(kind)
    known = KINDS.get(kind.name)
    if known is not None and known != kind:
        raise ValueError(f"study kind {kind.name!r} is registered already as {known}")
    KINDS[kind.name] = kind
    return kind


def get(name: str, where: str = "") -> StudyKind:
    """The registered kind `name`; an unknown one is a StudyDataError naming it (and `where` it was found)."""
    kind = KINDS.get(name)
    if kind is None:
        raise StudyDataError(f"{where + ': ' if where else ''}study kind {name!r} (study.json \"study\") is not one "
                             f"the analysis knows; known kinds: {', '.join(sorted(KINDS))}. A new kind of study "
                             "registers with analysis.kinds.register")
    return kind


def of_frame(frame: pd.DataFrame) -> StudyKind:
    """The kind of the studies in a loaded frame: theirs when all are of one kind, MIXED when they are of several
    (or the frame names none). Every kind must be registered: an unknown one is refused by name."""
    if "study" not in frame or frame.empty:
        return MIXED
    names = list(dict.fromkeys(frame["study"].astype(str)))
    for name in names:
        folders = frame.loc[frame["study"].astype(str) == name, "study_dir"] if "study_dir" in frame else []
        get(name, ", ".join(dict.fromkeys(map(str, folders))))
    return KINDS[names[0]] if len(names) == 1 else MIXED


for _curve in (Curve("salt", "SALT student", "#1f77b4", short="SALT"), Curve("vjepa", "V-JEPA", "#d62728"),
               Curve("pixel", "pixel teacher alone", "#2ca02c"), Curve("imported", "imported teacher"),
               Curve("random_init", "random-init encoder"), Curve("raw_pixels", "raw pixels")):
    register_curve(_curve)

BASELINES = ("random_init", "raw_pixels")   # the curve labels of salt.study's baselines (PlanBuilder.baseline)

# The packaged studies (studies/*.py, and salt.demo's plan: the demo's runs carry no group label, so each is on
# its method's curve) and the synthetic checkpoint-choice study (analysis.synthetic_choice).
COMPUTE_ALLOCATION = register(StudyKind("compute_allocation", ALLOCATION, ("pixel", "salt", "vjepa", *BASELINES),
                                        candidate="salt", reference="vjepa"))
register(StudyKind("scaling", ALLOCATION, ("pixel", "salt", "vjepa"), candidate="salt", reference="vjepa"))
register(StudyKind("hpo_student", ALLOCATION, ("pixel", "salt"), candidate="salt", reference="vjepa"))
TEACHER_MASKS = register(StudyKind("teacher_masks", TUNED, ("pixel", "salt", *BASELINES), candidate="salt",
                                   reference="vjepa", factor="teacher_mask", tuning="teacher_lr"))
register(StudyKind("teacher_selection", SELECTION, ("pixel", "salt", "imported")))
register(StudyKind("checkpoint_choice", ALLOCATION, ("vjepa",), candidate="salt", reference="vjepa"))
register(StudyKind("demo", ALLOCATION, ("pixel", "salt", "vjepa", *BASELINES), candidate="salt", reference="vjepa"))
# Several studies of different kinds analysed together: the full compute-curve report over all of them.
MIXED = StudyKind("", ALLOCATION, tuple(CURVES), candidate="salt", reference="vjepa")
