"""The KServe peer of bench/serve.py: KServe's Python model server (the `kserve` SDK) with a scikit-learn model.

KServe's scikit-learn runtime is a `kserve.Model` that loads the joblib file and answers with `model.predict` on
the request's input, through the SDK's own request and response helpers; this is that model, written against the
SDK's public API (its one output named `predict`, the output the benchmark's request asks for), served by `kserve.ModelServer` with one worker and the REST (V2) endpoint. Run it with the
Python of the venv bench/serve.py installs the SDK into (~/.cache/mlsteward/bench/kserve-venv).

Run:  python bench/kserve_app.py --model MODEL.joblib --http_port 8000 [--model_name bench]
"""

from __future__ import annotations

import argparse
from typing import Any

import joblib
import kserve
from kserve.protocol.infer_type import InferOutput
from kserve.utils.utils import get_predict_input, get_predict_response


class SKLearnModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.model: Any = None

    def load(self) -> bool:
        self.model = joblib.load(self.path)
        self.ready = True
        return self.ready

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        response = get_predict_response(payload, self.model.predict(get_predict_input(payload)), self.name)
        # The SDK names the output "output-0"; the benchmark's request asks for "predict" (as it does of every
        # server, so that all get identical bytes), and KServe refuses a request for an output it does not return.
        response.outputs[0] = InferOutput("predict", response.outputs[0].shape, response.outputs[0].datatype,
                                          response.outputs[0].data)
        return response


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser], description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a joblib file written by bench/serve.py (trusted)")
    args, _ = parser.parse_known_args()
    model = SKLearnModel(args.model_name, args.model)
    model.load()
    kserve.ModelServer().start([model])


if __name__ == "__main__":
    main()
