"""MLflow tracking and model registry (SQLite store in the project by default, no server needed)."""
