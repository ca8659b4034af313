"""Model analysis: parameter counts now; per-layer profiles and receptive fields grow here."""

from cnnzoo.analysis.counting import count_params

__all__ = ["count_params"]
