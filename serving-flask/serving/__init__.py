"""Serving service: predictions from the champion model of the MLflow registry."""
