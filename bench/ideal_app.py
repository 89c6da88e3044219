"""The "ideal" peer of bench/serve.py: one FastAPI route, orjson in and out, `model.predict`, nothing else.

No validation beyond what NumPy and scikit-learn do themselves, no metrics, no logs, no request ids, no batching:
the cheapest honest way to put a scikit-learn model behind HTTP with FastAPI. It accepts the same V2 (Open
Inference Protocol) JSON body as the other servers in the benchmark (one FP64 tensor of shape [rows, features])
so that every server gets identical bytes, and answers with a V2-shaped `predict` output.

Run:  python bench/ideal_app.py --model MODEL.joblib --port 8000 [--name bench]
"""

from __future__ import annotations

import argparse

import joblib
import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response


def create_app(model: object, name: str) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    path = f"/v2/models/{name}/infer"

    @app.post(path)
    async def infer(request: Request) -> Response:
        tensor = orjson.loads(await request.body())["inputs"][0]
        X = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
        pred = model.predict(X)  # type: ignore[attr-defined]
        body = {"model_name": name, "outputs": [{"name": "predict", "shape": [len(pred)], "datatype": "INT64",
                                                 "data": pred}]}
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a joblib file written by bench/serve.py (trusted)")
    parser.add_argument("--name", default="bench")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    import uvicorn

    app = create_app(joblib.load(args.model), args.name)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, loop="uvloop",
                http="httptools", server_header=False)


if __name__ == "__main__":
    main()
