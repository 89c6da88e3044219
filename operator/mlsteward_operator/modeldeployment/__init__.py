"""ModelDeployment: predictors, the router and its traffic, rollouts, alerts; serving requests from other kinds."""
