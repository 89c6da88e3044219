// The Lua interpreter Argo CD embeds (argoproj/argo-cd's go.mod requires github.com/yuin/gopher-lua), to run
// charts/mlsteward/argocd/health/*.lua the way Argo CD does. tests/unit/chart/test_argocd_health.py builds it.
module github.com/mlsteward/mlsteward/hack/luahealth

go 1.22

require github.com/yuin/gopher-lua v1.1.1
