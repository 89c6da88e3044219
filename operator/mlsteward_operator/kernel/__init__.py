"""What every kind shares: names, conditions, the status patch, pod polling, pooling and the metrics."""
