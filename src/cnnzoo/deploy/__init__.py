"""Deployment: the fast inference path (`optimize`), ONNX export and ONNX Runtime (`cnnzoo.deploy.onnx`), and
timing on this machine (`cnnzoo.deploy.bench`)."""

from cnnzoo.deploy.optimize import OptimizedModel, bf16_support, fold_batchnorm, optimize

__all__ = ["OptimizedModel", "bf16_support", "fold_batchnorm", "optimize"]
