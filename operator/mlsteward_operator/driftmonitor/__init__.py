"""DriftMonitor: the served version's inputs tested against its reference profile; alert, rollback, retrain."""
