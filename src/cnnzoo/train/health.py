"""Is the run still learning? The training loss watched step by step, so a diverged run stops instead of lying.

Two ways a run goes wrong, both caught before the step that shows them is applied:

- the loss is not a finite number (NaN or inf);
- the loss has run away while staying finite: over the last `window` steps its median is more than `factor`
  times its starting level. An exploding net on the digits (LeNet-5 at lr 3) sits at 60-70x its start from the
  second step on, while a healthy run stays at or below it; 5x over a whole window leaves a wide margin for
  the short spikes a high learning rate gives. The starting level is the first step's loss (the untrained net),
  but never less than ln(classes), the loss of a uniform guess.

The run is *healthy* while no loss of the current window is above that threshold: checkpoints are written only
then (the trainer defers a save otherwise), so the checkpoint a divergence message names is one taken before the
trouble began. The state (start and window) goes into every checkpoint, so a resumed run decides exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

__all__ = ["Health", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number, or ran away; the message names the step and the last good
    checkpoint."""


class Health:
    """Args:
        window: steps the median is taken over (the trainer uses one epoch, between 10 and 50 steps).
        factor: how far above its starting level the median may go.
    """

    def __init__(self, num_classes: int, window: int = 50, factor: float = 5.0):
        if window < 1 or factor <= 1:
            raise ValueError(f"window must be at least 1 and factor above 1, got {window} and {factor}")
        self.floor = math.log(max(num_classes, 2))
        self.window, self.factor = window, factor
        self.start: float | None = None
        self.recent: deque[float] = deque(maxlen=window)

    @property
    def limit(self) -> float:
        return self.factor * (self.start if self.start is not None else self.floor)

    @property
    def healthy(self) -> bool:
        """No loss of the current window is above the limit (a checkpoint taken now is one to keep)."""
        return all(v <= self.limit for v in self.recent)

    def check(self, loss: float, where: str, advice: str) -> None:
        """Record one step's loss; raise TrainingDiverged (naming `where`) if the run has gone wrong."""
        if not math.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss} at {where}; the step was not applied. {advice}")
        if self.start is None:
            self.start = max(loss, self.floor)
        self.recent.append(loss)
        if len(self.recent) == self.window:
            median = statistics.median(self.recent)
            if median > self.limit:
                raise TrainingDiverged(
                    f"the training loss diverged: its median over the last {self.window} steps is {median:.4g}, "
                    f"{median / self.start:.0f}x its starting level {self.start:.4g} (the limit is "
                    f"{self.factor:g}x), at {where}; the step was not applied. {advice}")

    def state_dict(self) -> dict:
        return {"start": self.start, "recent": list(self.recent), "window": self.window, "factor": self.factor}

    def load_state_dict(self, state: dict) -> None:
        self.start = state.get("start")
        self.recent = deque((float(v) for v in state.get("recent", ())), maxlen=self.window)
