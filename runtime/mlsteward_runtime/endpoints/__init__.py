"""HTTP endpoints by protocol: V2 (Open Inference), KServe V1, simple JSON, and operations (metrics, stats, drift
window, feedback). Each module holds one APIRouter; `app.create_app` includes them all over one DataPlane, which the
endpoints read from `request.app.state.plane`.
"""
