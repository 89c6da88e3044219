"""Tools that read a cluster: the model card (`card`), the performance report (`report`, with the Prometheus
counter arithmetic in `counters` and its rendering in `reportview`), the view of a ModelDeployment (`status`, rendered
by `statusview`), the Prometheus client (`promclient`), and the reading of mlsteward objects from a kubeconfig or
YAML files (`objects`, with the flags that choose the cluster) and of their fields (`inventory`).

They read plain objects and summaries only: no operator code and no serving modules (import-linter contract
"Model cards and performance reports read plain objects")."""
