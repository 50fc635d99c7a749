"""Mask parity: the image set, the check against the PyTorch reference, stored references, reports."""
