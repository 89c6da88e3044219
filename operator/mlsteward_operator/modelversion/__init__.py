"""ModelVersion: one validation Job per spec, its verdict in status."""
