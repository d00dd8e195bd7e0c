"""`imported`: the method of a run folder that holds an encoder trained elsewhere (a released VideoMAE or V-JEPA 2,
salt.importers). Its checkpoint holds the encoder alone: there is nothing to train and no loss of its own (so no
held-out loss), but it is probed like any run's encoder and teaches students like any run's."""
from __future__ import annotations

from salt.objectives.base import Objective


class NotTrainableError(ValueError):
    """A run of a method that does not train (an imported encoder) was asked for a loss, costs or training."""


class ImportedEncoder(Objective):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def trainable(self):
        return {}

    def saved(self):
        return {"encoder": self.encoder}

    def loss(self, batch, step):
        raise NotTrainableError("objective.method=imported is an encoder trained elsewhere: it has no loss here "
                                "(train a student of it: python -m salt student --teacher RUN_DIR)")

    def costs(self, batch):
        raise NotTrainableError("objective.method=imported is an encoder trained elsewhere: it is never trained "
                                "here, so a step of it has no cost")
