"""Shared code of the blood-cell classification workflow (data, models, metrics, tables)."""
