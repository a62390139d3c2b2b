"""Training: losses and the training loop."""
