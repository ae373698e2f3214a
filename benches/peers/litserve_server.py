"""LitServe (`litserve.LitServer`, one inference worker, one API server process) serving an
ONNX classifier with ONNX Runtime and LitServe's own dynamic batching: `POST /predict` with a
`multipart/form-data` upload of one image (any field name; LitServe hands a form to
`decode_request` and has no raw-body path for a `Request`), decoded with PIL and preprocessed
as Hardy preprocesses this model (common.py) in the inference worker, up to --max-batch-size
images per session run after waiting at most --batch-timeout seconds for a batch to fill,
answered with the top-5 classes:

    {"model_name": "lite0", "predictions": [{"index": 243, "label": "...", "score": 0.69}, ...]}

`GET /health` is 200 once the inference worker has loaded the model. LitServe's queues
between the API server and the worker are multiprocessing.Manager queues by default;
`--fast-queue` (or PEERS_LITSERVE_FAST_QUEUE=1) switches to its ZeroMQ transport.

    python litserve_server.py --model-dir models/fashion-mnist-effnet --name fashion-mnist-effnet --port 8080
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import litserve as ls  # noqa: E402
import numpy as np  # noqa: E402
from fastapi import HTTPException  # noqa: E402

import common  # noqa: E402


class OnnxClassifierAPI(ls.LitAPI):
    def __init__(self, name, model_dir, threads, max_batch_size, batch_timeout):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.name = name
        self.model_dir = model_dir
        self.threads = threads

    def setup(self, device):
        self.classifier = common.Classifier(self.model_dir, self.threads)
        self.classifier.warm_up(self.max_batch_size)
        print(f"peer litserve: model {self.name} from {self.classifier.path}: "
              f"{self.classifier.config.describe()}", flush=True)

    def decode_request(self, request):
        files = [v for v in request.values() if hasattr(v, "file")]
        if len(files) != 1:
            raise HTTPException(status_code=400, detail="send one image file in a multipart form")
        try:
            return self.classifier.config.preprocess(files[0].file.read())
        except Exception as e:
            raise HTTPException(status_code=400, detail=f"bad image: {e}") from e

    def batch(self, inputs):
        return np.stack(inputs)

    def predict(self, x):
        return self.classifier.run(x)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, logits):
        return {"model_name": self.name, "predictions": self.classifier.config.top_k(logits)}


def main():
    parser = common.server_parser(__doc__)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout", type=float, default=0.002, help="seconds")
    parser.add_argument("--fast-queue", action="store_true",
                        default=os.environ.get("PEERS_LITSERVE_FAST_QUEUE", "0") not in ("", "0"))
    args = parser.parse_args()

    api = OnnxClassifierAPI(args.name, args.model_dir, args.threads, args.max_batch_size, args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, fast_queue=args.fast_queue)
    server.run(host=args.host, port=args.port, num_api_servers=1, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
