"""Training service: trains the wine-quality model on a schedule, registers it in MLflow, promotes it."""
