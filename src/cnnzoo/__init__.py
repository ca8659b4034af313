"""cnnzoo: the classic convolutional networks as their papers specified them.

The public names are imported on first use (PEP 562), so `import cnnzoo` is instant and the `cnnzoo` command
can answer a Ctrl-C during its start-up (while torch loads) with one line instead of a traceback.
"""

import importlib

__all__ = ["ModelCard", "Paper", "count_params", "create_model", "list_models", "model_card", "optimize", "profile",
           "register_model"]
__version__ = "0.1.0"

_HOMES = {"count_params": "cnnzoo.analysis", "profile": "cnnzoo.analysis", "ModelCard": "cnnzoo.registry",
          "Paper": "cnnzoo.registry", "create_model": "cnnzoo.registry", "list_models": "cnnzoo.registry",
          "model_card": "cnnzoo.registry", "register_model": "cnnzoo.registry", "optimize": "cnnzoo.deploy"}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'cnnzoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # once imported, an ordinary attribute
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
