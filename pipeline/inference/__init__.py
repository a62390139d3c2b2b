"""Inference: device choice, normalisation and prediction."""
