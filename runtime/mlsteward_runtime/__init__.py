"""mlsteward runtime: the serving data plane (serve, route) and the tool verbs."""
