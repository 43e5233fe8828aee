"""Segmenter implementations, one module per model (see inference/segmenter.py)."""
