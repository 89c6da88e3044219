"""Retention: old ModelVersions deleted past a model's last N, never one that anything still references."""
