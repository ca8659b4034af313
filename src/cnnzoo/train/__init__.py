"""Training: recipes, the trainer, checkpoints, distributed runs, evaluation and ensembles.

    from cnnzoo.train import TrainConfig, train, recipe_for
    result = train(TrainConfig(model="lenet5", data="digits", recipe="fast", out="runs/lenet5"))
"""

from cnnzoo.train.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from cnnzoo.train.ensemble import evaluate_checkpoints
from cnnzoo.train.recipes import Recipe, Schedule, list_recipes, recipe_for
from cnnzoo.train.trainer import RunResult, TrainConfig, TrainingDiverged, train

__all__ = ["CheckpointError", "Recipe", "RunResult", "Schedule", "TrainConfig", "TrainingDiverged",
           "evaluate_checkpoints", "list_recipes", "load_checkpoint", "model_from_checkpoint", "recipe_for",
           "save_checkpoint", "train"]
