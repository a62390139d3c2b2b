"""Package data: the shipped default model (safetensors; loaded without unpickling)."""
