"""cnnzoo: the classic convolutional networks as their papers specified them."""

from cnnzoo.analysis import count_params, profile
from cnnzoo.registry import ModelCard, Paper, create_model, list_models, model_card, register_model

__all__ = ["ModelCard", "Paper", "count_params", "create_model", "list_models", "model_card", "profile",
           "register_model"]
__version__ = "0.1.0"
