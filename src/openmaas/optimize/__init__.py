"""Optimization jobs: a registered model made smaller or faster (ONNX export, int8
quantization) and registered as a new version with lineage and measured deltas."""
