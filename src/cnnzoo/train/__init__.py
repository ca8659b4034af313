"""Training: recipes, the trainer, checkpoints, distributed runs, ensembles and metrics."""
