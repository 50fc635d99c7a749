"""Pixels in and out: the image contract (decode, preprocess, mask), cutout, colour refinement, PNG."""
