"""The learning rate of every step, from a recipe, with the state a checkpoint needs to resume it exactly.

`Recipe.lr_at(step, steps_per_epoch, reductions)` defines the lr (see `cnnzoo.train.recipes` for the schedule
conventions); this class adds the one piece of history a schedule has: the end-of-epoch values a plateau rule
watches. It keeps them all and replays the rule (`Schedule.plateau_reductions`), so its state is a plain list.
"""

from __future__ import annotations

__all__ = ["LRSchedule"]


class LRSchedule:
    def __init__(self, recipe, steps_per_epoch: int):
        self.recipe = recipe
        self.steps_per_epoch = steps_per_epoch
        self.values: list[float] = []  # the monitored error (0..1) after each epoch, for a plateau schedule
        self.reductions = 0

    def lr(self, epoch: int, batch: int) -> float:
        return self.recipe.lr_at(epoch * self.steps_per_epoch + batch, self.steps_per_epoch, self.reductions)

    def end_epoch(self, row: dict) -> None:
        """After an epoch's row is known (errors in percent): a plateau schedule updates its cut count."""
        schedule = self.recipe.schedule
        if schedule.kind == "plateau":
            self.values.append(row[schedule.monitor] / 100)
            self.reductions = schedule.plateau_reductions(self.values)

    def state_dict(self) -> dict:
        return {"values": list(self.values)}

    def load_state_dict(self, state: dict) -> None:
        self.values = [float(v) for v in state["values"]]
        schedule = self.recipe.schedule
        self.reductions = schedule.plateau_reductions(self.values) if schedule.kind == "plateau" else 0
