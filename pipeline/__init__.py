"""msaf-pipeline: drone orthomosaics of bridges -> georeferenced defect maps."""

__version__ = "0.1.0"
