"""KServe's Python model server (`kserve.ModelServer`, one uvicorn worker, gRPC off) with a
`kserve.Model` subclass that runs an ONNX classifier in ONNX Runtime: the Open Inference
Protocol v2 at `POST /v2/models/{name}/infer`. Clients send the FP32 input tensor already
preprocessed, in JSON or in the binary tensor extension (JSON header of
`Inference-Header-Content-Length` bytes, then the raw little-endian data); the answer is the
logits `FP32 [N, classes]`, named as the model's output, in binary when the request asks for
it (`"parameters": {"binary_data_output": true}`). `GET /v2/models/{name}/ready` is 200
once the model is loaded. Latency and access logging are off.

    python kserve_server.py --model-dir models/fashion-mnist-effnet --name fashion-mnist-effnet --port 8080

(kserve parses sys.argv itself when imported, with parse_known_args; the options here are
named so that none is a prefix of one of its own.)
"""

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import kserve  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse  # noqa: E402

import common  # noqa: E402


class OnnxClassifier(kserve.Model):
    def __init__(self, name, model_dir, threads):
        super().__init__(name)
        self.model_dir = model_dir
        self.threads = threads
        self.classifier = None

    def load(self):
        self.classifier = common.Classifier(self.model_dir, self.threads)
        self.classifier.warm_up()
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None):
        batch = payload.inputs[0].as_numpy()
        if batch.dtype != np.float32:
            batch = batch.astype(np.float32)
        logits = self.classifier.run(batch)
        output = InferOutput(name=self.classifier.config.output_name, shape=list(logits.shape), datatype="FP32")
        output.set_data_from_numpy(logits, binary_data=payload.use_binary_outputs)
        return InferResponse(
            response_id=payload.id,
            model_name=self.name,
            infer_outputs=[output],
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, help="model directory, version directory or .onnx file")
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=common.threads_from_env(), help="ORT intra-op threads")
    args, _ = parser.parse_known_args()

    model = OnnxClassifier(args.name, args.model_dir, args.threads)
    model.load()
    print(f"peer kserve: model {args.name} from {model.classifier.path}: {model.classifier.config.describe()}",
          flush=True)
    server = kserve.ModelServer(http_port=args.port, workers=1, enable_grpc=False,
                                enable_latency_logging=False, enable_docs_url=False)
    logging.getLogger("uvicorn.access").disabled = True
    server.start([model])


if __name__ == "__main__":
    main()
