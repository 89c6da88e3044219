"""Retraining: the workflow a DriftMonitor starts (triggers, the Job, the retrained ModelVersion, its comparison)."""
