"""Run specs and study plans: what a study will run, derived before anything runs.

A study is a pure function from a few dials to a `StudyPlan` (a list of `RunSpec`s in dependency order).
A run's id is `salt.identity.run_id`'s "study" form: a readable prefix plus a hash of its resolved config, with
scheduling options left out and a student's teacher named by the teacher's run id (not by a path), so the same
run gets the same id in any folder, on any cluster, and a teacher shared by several students is one run. study.json
stores the id scheme (`id_scheme`) beside the ids; a folder whose plan has another scheme is refused, not renamed.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from salt import identity
from salt.config import from_dict, load_config, resolve_config, to_dict
from salt.io import atomic_write_json
from salt.layout import LayoutError, RunLayout, StudyLayout
from salt.objectives import get_method
from salt.schema import RunConfig, finished_run

PLAN_SCHEMA_VERSION = 1
ROLES = ("teacher", "student", "baseline")


class StudyError(ValueError):
    """A study that cannot run as defined (empty grid, unknown preset, unavailable executor, ...)."""


@dataclass
class RunSpec:
    run_id: str
    role: str                               # teacher | student | baseline
    method: str                             # a registered method (salt.objectives.registry) or a baseline kind
    config: RunConfig                       # resolved; name = run_id, out_dir = the study's runs/ folder
    depends_on: list[str] = field(default_factory=list)
    labels: dict = field(default_factory=dict)     # the dials that produced it (budget, share, sizes, ...)
    evaluation: str = "fast"                # protocol evaluated at the end (and at eval_steps)
    eval_steps: list[int] = field(default_factory=list)   # extra checkpoints to evaluate (kept, not rotated)
    estimated_flops: float = 0.0            # this run's own training FLOPs ("run" accounting)
    estimated_flops_total: float = 0.0      # plus its teacher chain
    teacher_step: int = -1                  # student: the teacher checkpoint it starts from (-1: the teacher's last)
    external: bool = False                  # a finished run outside the study (an imported encoder): never run here
    # named benchmarks (resolved salt.eval.benchmark configs) each evaluation also runs on, besides the default
    benchmarks: list[dict] = field(default_factory=list)

    def benchmark_names(self) -> list[str]:
        return [b["name"] for b in self.benchmarks]

    @property
    def layout(self) -> RunLayout:
        if self.role == "baseline":   # where salt.eval.evaluate.evaluate_baseline keeps them
            return RunLayout.baseline(self.config.out_dir, self.run_id)
        return RunLayout.of(self.config.out_dir, self.run_id)

    @property
    def run_dir(self) -> Path:
        return self.layout.root

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "role": self.role, "method": self.method, "depends_on": self.depends_on,
                "labels": self.labels, "evaluation": self.evaluation, "eval_steps": self.eval_steps,
                "estimated_flops": self.estimated_flops, "estimated_flops_total": self.estimated_flops_total,
                "teacher_step": self.teacher_step, "external": self.external, "config": to_dict(self.config),
                "benchmarks": self.benchmarks}

    @classmethod
    def from_json(cls, data: dict) -> "RunSpec":
        fields = dict(data)
        fields["config"] = from_dict(RunConfig, data["config"])
        return cls(**fields)


@dataclass
class StudyPlan:
    study: str
    preset: str
    root: Path
    runs: list[RunSpec]
    id_scheme: int = identity.ID_SCHEME    # the scheme its run ids were made with (salt.identity)

    def __post_init__(self):
        if not self.runs:
            raise StudyError(f"study {self.study!r} (preset {self.preset!r}) has no runs: check its grid "
                             "(empty budgets, shares that leave the student no steps, no methods?)")
        seen = set()
        for spec in self.runs:
            missing = [d for d in spec.depends_on if d not in seen]
            if missing:
                raise StudyError(f"run {spec.run_id} depends on {missing}, which are not earlier runs of the plan")
            seen.add(spec.run_id)

    def by_id(self) -> dict[str, RunSpec]:
        return {spec.run_id: spec for spec in self.runs}

    def stages(self) -> list[list[RunSpec]]:
        """Runs grouped by dependency depth: stage k depends only on stages < k."""
        depth: dict[str, int] = {}
        for spec in self.runs:
            depth[spec.run_id] = 1 + max((depth[d] for d in spec.depends_on), default=-1)
        return [[s for s in self.runs if depth[s.run_id] == k] for k in range(max(depth.values()) + 1)]

    def to_json(self) -> dict:
        return {"schema_version": PLAN_SCHEMA_VERSION, "id_scheme": self.id_scheme, "study": self.study,
                "preset": self.preset, "runs": [spec.to_json() for spec in self.runs]}


class PlanBuilder:
    """Collects a study's runs: configs from packaged YAML + overrides, ids from `salt.identity.run_id`, a teacher (or
    any run) requested twice is one run, and every student depends on its teacher."""

    def __init__(self, study: str, preset: str, root: str | Path, *, evaluation: str, overrides: list[str] = (),
                 progress: bool = False):
        self.study, self.preset, self.root = study, preset, Path(root).resolve()
        self.evaluation, self.overrides = evaluation, list(overrides)
        # progress bars: off (a job's log is no terminal), or as each config says where the runs train in this
        # process (the demo)
        self.progress = progress
        self.group = f"{study}-{preset}"   # wandb group of every run
        self._runs: dict[str, RunSpec] = {}

    def config(self, base: str, overrides: list[str] = ()) -> RunConfig:
        """The resolved config of packaged `base` + `overrides` + the study's overrides (not yet placed)."""
        return load_config(RunConfig, [resolve_config(base)], [*overrides, *self.overrides])

    def _add(self, spec: RunSpec) -> RunSpec:
        existing = self._runs.get(spec.run_id)
        if existing is not None:   # the same run asked for by several grid points: merge its labels
            for key, value in spec.labels.items():
                existing.labels.setdefault(key, value)
            existing.eval_steps = sorted(set(existing.eval_steps) | set(spec.eval_steps))
            return existing
        self._runs[spec.run_id] = spec
        return spec

    def run(self, base: str, overrides: list[str] = (), *, role: str = "", labels: dict | None = None,
            eval_steps: list[int] = ()) -> RunSpec:
        """A run with no teacher (pixel teacher, V-JEPA); its role defaults to its method's stage."""
        from salt.study.estimate import run_flops
        cfg = self.config(base, list(overrides))
        method = get_method(cfg.objective.method)
        if method.needs_teacher:
            raise StudyError(f"{base}: method {method.name!r} learns from a teacher; add it with PlanBuilder.student")
        role = role or method.stage
        run_id = identity.run_id(cfg, "study")
        cfg = _placed(cfg, run_id, self.root, eval_steps, self.group, self.progress)
        flops = run_flops(cfg)
        return self._add(RunSpec(run_id, role, cfg.objective.method, cfg, [], dict(labels or {}), self.evaluation,
                                 sorted(eval_steps), flops, flops))

    def student(self, base: str, teacher: RunSpec, overrides: list[str] = (), *, teacher_step: int | None = None,
                labels: dict | None = None, eval_steps: list[int] = ()) -> RunSpec:
        """A student of `teacher` with a method that learns from a frozen teacher (SALT; any registered method with
        needs_teacher), from the teacher's last checkpoint or `teacher_step`, which the teacher then keeps."""
        from salt.study.estimate import run_flops
        t = teacher.config
        source = teacher.run_dir
        teacher_id = teacher.run_id
        if teacher_step is not None and teacher_step != t.train.steps:
            if teacher_step not in teacher.eval_steps:
                raise StudyError(f"student of {teacher.run_id} at step {teacher_step}: the teacher must list that "
                                 "step in eval_steps so its checkpoint is kept")
            source = teacher.layout.checkpoint(teacher_step)
            teacher_id = f"{teacher.run_id}@{teacher_step}"
        cfg = self._student_config(base, t, list(overrides), source)
        if not get_method(cfg.objective.method).needs_teacher:
            raise StudyError(f"{base}: method {cfg.objective.method!r} has no teacher; add it with PlanBuilder.run")
        run_id = identity.run_id(cfg, "study", teacher_id=teacher_id)
        cfg = _placed(cfg, run_id, self.root, eval_steps, self.group, self.progress)
        flops = run_flops(cfg)
        share = teacher.estimated_flops_total * ((teacher_step or t.train.steps) / t.train.steps)
        return self._add(RunSpec(run_id, "student", cfg.objective.method, cfg, [teacher.run_id], dict(labels or {}),
                                 self.evaluation, sorted(eval_steps), flops, flops + share, teacher_step or -1))

    def _student_config(self, base: str, teacher: RunConfig, overrides: list[str], source) -> RunConfig:
        model = [f"objective.teacher.{k}={v}" for k, v in to_dict(teacher.model).items()]
        return self.config(base, [*model, *overrides, f"objective.teacher_checkpoint={source}"])

    def step_flops(self, base: str, overrides: list[str] = (), *, teacher: RunConfig | None = None) -> float:
        """FLOPs of one training step ("run" accounting) of the config `run` (or `student`, given its teacher's
        config) would build from these arguments: studies that size runs by compute divide a budget by it."""
        from salt.study.estimate import step_flops
        cfg = (self._student_config(base, teacher, list(overrides), "teacher") if teacher is not None
               else self.config(base, list(overrides)))
        return step_flops(cfg)

    def imported(self, run_dir: str | Path, *, labels: dict | None = None) -> RunSpec:
        """A finished run made outside this study as a teacher: a released encoder imported with
        `python -m salt import-encoder`, or any earlier run. It is never trained or submitted here, costs the study
        no FLOPs, and stays where it is; its students depend on it like on any teacher. Evaluate it yourself
        (`python -m salt eval RUN_DIR`) for its records to enter the analysis."""
        try:
            layout, cfg = finished_run(run_dir)
        except LayoutError as e:
            raise StudyError(str(e)) from e
        run_id = layout.root.name
        return self._add(RunSpec(run_id, "teacher", cfg.objective.method, cfg, [], dict(labels or {}),
                                 self.evaluation, external=True))

    def baseline(self, kind: str, like: RunSpec) -> RunSpec:
        """A random-init encoder of `like`'s size, or raw pixels, on `like`'s data: evaluated, not trained."""
        if kind not in identity.BASELINE_KINDS:
            raise StudyError(f"baseline must be one of {identity.BASELINE_KINDS}, got {kind!r}")
        cfg = copy.deepcopy(like.config)
        run_id = identity.run_id(cfg, kind)
        return self._add(RunSpec(run_id, "baseline", kind, cfg, [], {"group": kind}, self.evaluation))

    def plan(self) -> StudyPlan:
        return StudyPlan(self.study, self.preset, self.root, list(self._runs.values()))


def _placed(cfg: RunConfig, run_id: str, root: Path, eval_steps, group: str, progress: bool) -> RunConfig:
    """The config as the study runs it: named by its id, in root/runs/, keeping the checkpoints to evaluate,
    in the study's wandb group (when wandb is enabled: one wandb run per training run), progress bars off unless
    `progress` leaves them as the config says (a scheduling field: the run id is the same either way)."""
    cfg = copy.deepcopy(cfg)
    cfg.name, cfg.out_dir = run_id, str(StudyLayout(root).runs)
    cfg.wandb.group = cfg.wandb.group or group
    cfg.train.progress = cfg.train.progress and progress
    if eval_steps:
        bad = [s for s in eval_steps if not 0 < s <= cfg.train.steps]
        if bad:
            raise StudyError(f"eval_steps {bad} of {run_id} are outside 1..{cfg.train.steps}")
        cfg.train.checkpoint_every = math.gcd(*eval_steps, cfg.train.steps)
        cfg.train.keep_checkpoints = cfg.train.steps // cfg.train.checkpoint_every
    return cfg


def with_benchmarks(plan: StudyPlan, benchmarks: list[str]) -> StudyPlan:
    """The plan with every run also evaluated on these benchmarks (salt.eval.benchmark names or YAML files, loaded
    and checked now: a bad one fails before anything is submitted): trained runs and the random-init baseline;
    the raw-pixel baseline stays on the default benchmark, and external runs are the user's to evaluate."""
    from salt.eval.benchmark import load_benchmark
    loaded = [to_dict(load_benchmark(name)) for name in benchmarks]
    names = [b["name"] for b in loaded]
    if len(set(names)) != len(names):
        raise StudyError(f"benchmarks named twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    for spec in plan.runs:
        if not spec.external and spec.method != "raw_pixels":
            spec.benchmarks = copy.deepcopy(loaded)
    return plan


def _id_scheme(data: dict, path: Path) -> int:
    try:
        return identity.stored_scheme(data, path)
    except identity.IdSchemeError as e:
        raise StudyError(str(e)) from e


def write_plan(plan: StudyPlan) -> Path:
    """study.json; unchanged plans are not rewritten (reruns leave the folder as is). A folder planned with another
    run id scheme is refused before anything runs: its finished runs would not be found under the new ids."""
    path = StudyLayout(plan.root).plan
    stored = json.loads(path.read_text()) if path.exists() else None
    if stored is not None and _id_scheme(stored, path) != plan.id_scheme:
        raise StudyError(f"{path} names its runs with id scheme {_id_scheme(stored, path)}, this plan with "
                         f"{plan.id_scheme}: plan it in a new folder, or use the salt that planned it")
    if stored != json.loads(json.dumps(plan.to_json())):
        atomic_write_json(path, plan.to_json())
    return path


def read_plan(root: str | Path) -> StudyPlan:
    path = StudyLayout(root).plan
    if not path.exists():
        raise StudyError(f"{path} does not exist: no study was planned in {root}")
    data = json.loads(path.read_text())
    if data.get("schema_version") != PLAN_SCHEMA_VERSION:
        raise StudyError(f"{path}: schema version {data.get('schema_version')} is not {PLAN_SCHEMA_VERSION}")
    return StudyPlan(data["study"], data["preset"], Path(root).resolve(),
                     [RunSpec.from_json(r) for r in data["runs"]], _id_scheme(data, path))
