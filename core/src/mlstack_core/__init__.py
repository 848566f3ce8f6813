"""Shared code of the ML pipeline stack."""
