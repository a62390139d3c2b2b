"""Training labels on an orthomosaic's grid: rasterised vector labels and reviewed surveys (``msaf labels``)."""
