"""Run identity: which config fields name a run, and the one function that makes run ids from them.

Every field of a config dataclass says in its own metadata what part it plays in a run's identity:

    steps: int = field(default=300, metadata=ALWAYS)

    ALWAYS                     changes what the run computes: in every id
    UNLESS_DEFAULT             changes what the run computes, but came after runs were first named: in every id
                               unless at its default (so the runs named before it existed keep their ids)
    SCHEDULING                 how or where the run executes, logs, checkpoints or is evaluated along the way, not
                               what it computes: in no study id; in a baseline id at its default; a command-line
                               run folder's id hashes its value (it always has, see below)
    SCHEDULING_UNLESS_DEFAULT  the same, added later: a command-line run folder's id hashes it off its default only
    NEVER                      names the run, its folder or its logging (name, out_dir, wandb): in no id

A field without one is refused by name when an id is computed (and tests/test_run_ids.py checks every field of
RunConfig's tree). A new field that changes what a run computes is UNLESS_DEFAULT (ALWAYS would move every id);
one that does not is SCHEDULING_UNLESS_DEFAULT (a command-line folder then tells its other values apart) or NEVER,
never SCHEDULING (which would move every command-line and baseline id). tests/golden_run_ids.json pins the ids of
every packaged config and a study plan.

`run_id(cfg, form)` gives every id (ID_SCHEME 1, the ids run folders have had since ids existed):

    "run"         a command-line run folder and its checkpoints: cfg.name, else `<method>-<hash>`; the hash covers
                  every field but NEVER ones, SCHEDULING ones included (scheme 1 hashed them here, so moving them
                  out would rename every existing folder); `config_hash(cfg)` is that hash (evaluation records)
    "study"       a study's run: `<method>-<size>-<steps>-<hash>`, SCHEDULING fields left out and the teacher
                  named by its run id (`teacher_id`), not by where its checkpoint lives: the same run has the same
                  id in any folder and on any cluster
    "random_init", "raw_pixels"
                  a baseline, one per data (raw pixels) or data and model (random init): `<kind>-<data hash>` and
                  `-<model hash>`; SCHEDULING fields count at their defaults (how data is cached, loaded or decoded
                  changes no score)

The scheme's number is stored where ids are kept (done.json: salt.layout; study.json: salt.study.spec) and read
back there (`stored_scheme`); files written before it was stored are scheme 1. A future scheme 2 adds its rules
beside RULES' and keeps scheme 1's for the folders that store 1.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types

ID_SCHEME = 1
KNOWN_SCHEMES = (1,)
BASELINE_KINDS = ("random_init", "raw_pixels")   # evaluated-only runs: their kind is their id's form
FORMS = ("run", "study", *BASELINE_KINDS)


def _identity(value: str) -> types.MappingProxyType:
    return types.MappingProxyType({"identity": value})


ALWAYS = _identity("always")
UNLESS_DEFAULT = _identity("unless_default")
SCHEDULING = _identity("scheduling")
SCHEDULING_UNLESS_DEFAULT = _identity("scheduling_unless_default")
NEVER = _identity("never")
IDENTITIES = ("always", "unless_default", "scheduling", "scheduling_unless_default", "never")

# What each hash of scheme 1 does with a field of each identity: keep its value, drop it, drop it at its default,
# or hash its default whatever its value.
KEEP, DROP, DROP_AT_DEFAULT, AT_DEFAULT = "keep", "drop", "drop_at_default", "at_default"
RULES = {
    "run": {"always": KEEP, "unless_default": DROP_AT_DEFAULT, "scheduling": KEEP,
            "scheduling_unless_default": DROP_AT_DEFAULT, "never": DROP},
    "study": {"always": KEEP, "unless_default": DROP_AT_DEFAULT, "scheduling": DROP,
              "scheduling_unless_default": DROP, "never": DROP},
    "baseline": {"always": KEEP, "unless_default": DROP_AT_DEFAULT, "scheduling": AT_DEFAULT,
                 "scheduling_unless_default": DROP, "never": DROP},
}


class IdSchemeError(ValueError):
    """A stored id scheme this code does not know (written by a newer salt)."""


def identity_of(cls: type, f: dataclasses.Field) -> str:
    """The identity `f` (a field of config dataclass `cls`) declares; TypeError naming it when it declares none."""
    if "identity" not in f.metadata or f.metadata["identity"] not in IDENTITIES:
        raise TypeError(f"{cls.__name__}.{f.name} declares no run identity: give it metadata=ALWAYS, "
                        "UNLESS_DEFAULT, SCHEDULING, SCHEDULING_UNLESS_DEFAULT or NEVER (salt.identity)")
    return f.metadata["identity"]


def _default(cls: type, f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"{cls.__name__}.{f.name} has no default, which its run identity needs")


def _tree(value, rules: dict):
    """asdict-like plain data of `value` with each dataclass field kept, dropped or defaulted by `rules`."""
    if dataclasses.is_dataclass(value):
        cls, out = type(value), {}
        for f in dataclasses.fields(value):
            rule, v = rules[identity_of(cls, f)], getattr(value, f.name)
            if rule == DROP or (rule == DROP_AT_DEFAULT and v == _default(cls, f)):
                continue
            out[f.name] = _tree(_default(cls, f) if rule == AT_DEFAULT else v, rules)
        return out
    if isinstance(value, (list, tuple)):
        return [_tree(v, rules) for v in value]
    if isinstance(value, dict):
        return {k: _tree(v, rules) for k, v in value.items()}
    return value


def _digest(tree) -> str:
    return hashlib.sha256(json.dumps(tree, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def config_hash(cfg) -> str:
    """The hash in a command-line run folder's id (12 hex digits): an evaluation record's `config_hash`."""
    return _digest(_tree(cfg, RULES["run"]))[:12]


def run_id(cfg, form: str = "run", *, teacher_id: str = "") -> str:
    """The id of the run (or baseline) `cfg` (a RunConfig) describes, in `form` (module docstring); `teacher_id`
    names a study student's teacher (its run id, "@<step>" for an earlier checkpoint)."""
    if form not in FORMS:
        raise ValueError(f"run id form must be one of {', '.join(FORMS)}; got {form!r}")
    if teacher_id and form != "study":
        raise ValueError(f"teacher_id names a study student's teacher; the {form!r} form has none")
    method = cfg.objective.method
    if form == "run":
        return cfg.name or f"{method}-{config_hash(cfg)}"
    if form == "study":
        tree = _tree(cfg, RULES["study"])
        tree["objective"]["teacher_checkpoint"] = teacher_id   # the teacher by its run id, not by where it lives
        return f"{method}-{cfg.model.size}-{cfg.train.steps}-{_digest(tree)[:10]}"
    parts = [cfg.data] if form == "raw_pixels" else [cfg.data, cfg.model]
    return "-".join([form, *(_digest(_tree(part, RULES["baseline"]))[:12] for part in parts)])


def stored_scheme(data: dict, where) -> int:
    """The id scheme a done.json or study.json (`data`, read from `where`) stores: 1 when it predates the field;
    IdSchemeError naming the file for one this code does not know."""
    scheme = data["id_scheme"] if "id_scheme" in data else 1
    if scheme not in KNOWN_SCHEMES:
        raise IdSchemeError(f"{where} names its runs with id scheme {scheme!r}; this salt knows schemes "
                            f"{', '.join(map(str, KNOWN_SCHEMES))} (written by a newer salt: update salt to use it)")
    return scheme
