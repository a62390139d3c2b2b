"""MLflow "model from code": the msaf checkpoint (safetensors + metadata) served as a pyfunc.

MLflow logs this file as code and the checkpoint as an artifact: nothing is pickled, and tile
size and batch stay free (unlike a ``pt2`` export).
"""

from __future__ import annotations

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class MsafModel(PythonModel):
    """predict(RGB uint8 image (H, W, 3) or a list of them) -> class ids (H, W) uint8 per image."""

    # predict/load_context stay unannotated: MLflow would try to infer an input schema from hints
    def load_context(self, context):
        """Load the checkpoint MLflow logged as an artifact (safetensors: nothing unpickled)."""
        from pipeline.checkpoint import load_checkpoint

        self.model, self.meta = load_checkpoint(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        """Class ids of an RGB image (or a list of them), with the model's own decision rule."""
        import torch

        from pipeline.inference.predict import predict_classes

        images = model_input if isinstance(model_input, list) else [model_input]
        device = torch.device("cpu")
        out = [
            predict_classes(self.model, np.asarray(img, np.uint8), self.meta.mean, self.meta.std, device)
            for img in images
        ]
        return out if isinstance(model_input, list) else out[0]


mlflow.models.set_model(MsafModel())
