"""Checkpoint -> export model -> artifact files: TorchScript, ONNX, the fp16 graph, the TensorRT engine.

Modules import torch or TensorRT themselves; importing this package imports neither.
"""
