"""Run side of InSPyReNet engines: bundle reader, image contract, backends, HTTP server.

Nothing in this package imports torch at module level: the ONNX Runtime and
TensorRT paths must run in an image that has no torch installed.
"""

__version__ = "0.1.0"
