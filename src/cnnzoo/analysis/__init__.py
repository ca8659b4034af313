"""Model analysis: parameter counts, and per-layer profiles with receptive fields (on the meta device)."""

from cnnzoo.analysis.compare import CompareRow, compare
from cnnzoo.analysis.counting import count_params
from cnnzoo.analysis.profile import LayerRecord, Profile, ProfileError, SizeError, profile
from cnnzoo.analysis.trace import Node, Trace, trace

__all__ = ["compare", "CompareRow", "count_params", "profile", "Profile", "LayerRecord", "ProfileError",
           "SizeError", "trace", "Trace", "Node"]
