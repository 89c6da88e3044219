"""mlsteward operator: kopf controllers for ModelVersion, ModelDeployment, Experiment and DriftMonitor."""
