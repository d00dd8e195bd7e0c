"""The one registry of methods. Everything that depends on which method a run uses (the config check, the
training loop's summary, the compute estimate, evaluation records, the command line, study plans) asks this
registry; nothing else switches on a method's name.

A method is a name, a builder `build(cfg, geometry, encoder, teacher) -> Objective`, its stage (a "teacher"
trained from pixels, or a "student" that learns from another network's latents), whether it needs a frozen
teacher loaded from an earlier run's checkpoint (`objective.teacher_checkpoint`, `objective.teacher`), the
attribute of the objective that an evaluation probes, and the `python -m salt <command>` that trains it. A method
that does not train (`trains=False`: `imported`, an encoder made elsewhere) has no command and no loss of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from salt.registry import Registry

STAGES = ("teacher", "student")


@dataclass(frozen=True)
class Method:
    name: str                     # objective.method
    build: Callable               # (cfg: RunConfig, geometry: ClipGeometry, encoder: VideoViT,
    #                               teacher: (VideoViT, checkpoint state) | None) -> Objective
    stage: str                    # teacher | student: how records and studies classify its runs
    command: str                  # `python -m salt <command>` trains it ("" for a method that does not train)
    needs_teacher: bool = False   # loads a frozen encoder from objective.teacher_checkpoint
    probed: str = "encoder"       # the objective's attribute that evaluations probe (a VideoViT)
    ema: str = ""                 # the objective's attribute holding an EMA copy of the probed encoder (V-JEPA's
    #                               target encoder): what evaluations probe by default when set, the online one on request
    help: str = ""
    trains: bool = True           # False: runs of it are made elsewhere (imported encoders), never trained here; no
    #                               loss of its own, so evaluations measure no held-out loss

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"method {self.name!r}: stage must be one of {STAGES}, got {self.stage!r}")
        if not self.name.isidentifier() or bool(self.command) != self.trains:
            raise ValueError(f"method name {self.name!r} must be an identifier, and command non-empty exactly when "
                             "the method trains")


_METHODS: Registry[Method] = Registry("objective.method", "method")


def register(method: Method, *, replace: bool = False) -> Method:
    """Add a method. A second method of the same name or command is an error unless `replace`."""
    owner = next((m.name for m in methods()
                  if method.command and m.command == method.command and m.name != method.name), None)
    if owner is not None:
        raise ValueError(f"command {method.command!r} of method {method.name!r} belongs to method {owner!r}")
    return _METHODS.add(method.name, method, replace=replace)


def unregister(name: str) -> None:
    """Remove a method (tests that register a toy method clean up with this)."""
    _METHODS.remove(name)


def get_method(name: str) -> Method:
    return _METHODS.get(name)


def methods() -> tuple[Method, ...]:
    """Every registered method, in registration order."""
    return _METHODS.entries()
