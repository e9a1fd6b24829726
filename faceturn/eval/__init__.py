"""Evaluation: per-frame predictions, metrics, honest statistics, probes, analyses and attribution."""
