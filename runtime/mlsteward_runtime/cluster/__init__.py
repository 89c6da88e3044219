"""Tools that read a cluster: the model card (`card`), the performance report (`report`), the Prometheus client
they share (`promclient`) and the reading of mlsteward objects from a kubeconfig or YAML files (`objects`).

They read plain objects and summaries only: no operator code and no serving modules (import-linter contract
"Model cards and performance reports read plain objects")."""
