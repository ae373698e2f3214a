"""FastAPI + uvicorn (one worker process) serving an ONNX classifier with ONNX Runtime, the way
a Python user would put one behind HTTP: `POST /predict` with the raw image bytes as the body
(PNG or JPEG; the content type is not looked at), decoded with PIL, preprocessed as Hardy
preprocesses this model (common.py), one session run per request in FastAPI's thread pool
(the blocking call off the event loop, as FastAPI advises), answered with the top-5 classes:

    {"model_name": "lite0", "predictions": [{"index": 243, "label": "...", "score": 0.69}, ...]}

`GET /health` is 200 once the model is loaded. Per-request access logging is off.

    python fastapi_server.py --model-dir models/fashion-mnist-effnet --name fashion-mnist-effnet --port 8080
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import uvicorn  # noqa: E402
from fastapi import FastAPI, HTTPException, Request  # noqa: E402
from fastapi.concurrency import run_in_threadpool  # noqa: E402

import common  # noqa: E402


def main():
    parser = common.server_parser(__doc__)
    args = parser.parse_args()

    model = common.Classifier(args.model_dir, args.threads)
    model.warm_up()
    app = FastAPI()

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    def classify(body):
        try:
            return model.classify([body])[0]
        except Exception as e:  # an image PIL cannot read
            raise HTTPException(status_code=400, detail=f"bad image: {e}") from e

    @app.post("/predict")
    async def predict(request: Request):
        body = await request.body()
        predictions = await run_in_threadpool(classify, body)
        return {"model_name": args.name, "predictions": predictions}

    print(f"peer fastapi: model {args.name} from {model.path}: {model.config.describe()}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, workers=1, loop="uvloop", http="httptools",
                access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
