"""Experiment: an A/B test or bandit between versions of one ModelDeployment, judged on the router's outcomes."""
