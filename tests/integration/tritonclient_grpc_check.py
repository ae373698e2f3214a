"""Drive a running `hardy serve` over gRPC with NVIDIA's unmodified Triton gRPC client.

Run by tests/integration/grpc.rs, which installs `tritonclient[grpc]` from PyPI into Hardy's
cache, starts the server (with two priority levels) and writes Hardy's compiled .proto (a
FileDescriptorSet) to a file. Usage:

    python3 tritonclient_grpc_check.py HOST:PORT MODEL ADMIN_TOKEN SAMPLES_DIR MEAN STD DESCRIPTORS

The same checks as the HTTP client's (tritonclient_check.py), plus: Hardy's messages and RPCs
against the client's own (every field's number, type and label), typed `contents` beside the
client's `raw_input_contents`, the streaming RPC, and the queue policy parameters. Every check
is an assert; the script prints one line per check and exits non-zero on the first failure.
"""

import queue
import sys
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from google.protobuf import descriptor_pb2
from tritonclient_common import check, load_samples, png_gray_pixels, slug
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

url, model, token, samples_dir = sys.argv[1:5]
mean, std = float(sys.argv[5]), float(sys.argv[6])
descriptors = Path(sys.argv[7]).read_bytes()
auth = {"authorization": f"Bearer {token}"}
samples, expected = load_samples(samples_dir)


# Hardy's .proto against the client's: every message Hardy declares must match the client's
# field for field (a subset of its fields is fine), and every RPC its signature.
ours = descriptor_pb2.FileDescriptorSet.FromString(descriptors)
theirs = {}
for module in (service_pb2, model_config_pb2):
    proto = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(proto)
    theirs[proto.name] = proto


def messages(prefix, types):
    for m in types:
        name = f"{prefix}.{m.name}"
        yield name, m
        yield from messages(name, m.nested_type)


their_messages = {n: m for f in theirs.values() for n, m in messages("." + f.package, f.message_type)}
their_methods = {
    m.name: m for f in theirs.values() for s in f.service if s.name == "GRPCInferenceService" for m in s.method
}
compared = 0
for f in ours.file:
    for name, m in messages("." + f.package, f.message_type):
        other = their_messages.get(name)
        check(f"proto: message {name} exists in tritonclient", other is not None)
        their_fields = {x.name: x for x in other.field}
        for field in m.field:
            t = their_fields.get(field.name)
            same = t is not None and (t.number, t.type, t.label, t.type_name) == (
                field.number,
                field.type,
                field.label,
                field.type_name,
            )
            assert same, f"proto: {name}.{field.name} differs: ours {field} theirs {t}"
            compared += 1
    for s in f.service:
        for method in s.method:
            t = their_methods[method.name]
            sig = lambda x: (x.input_type, x.output_type, x.client_streaming, x.server_streaming)  # noqa: E731
            check(f"proto: rpc {method.name}", sig(t) == sig(method), f"{sig(method)} vs {sig(t)}")
check("proto: fields compared", compared > 100, compared)

client = grpcclient.InferenceServerClient(url=url)
check("server live", client.is_server_live())
check("server ready", client.is_server_ready())
meta = client.get_server_metadata()
check("server metadata", meta.name == "hardy" and "classification" in meta.extensions, meta)
check("model ready", client.is_model_ready(model))
check("unknown model not ready", not client.is_model_ready("no-such-model"))
mm = client.get_model_metadata(model)
inp, out = mm.inputs[0], mm.outputs[0]
check("model metadata", inp.datatype == "FP32" and out.datatype == "FP32", mm)
shape = list(inp.shape[1:])  # [C, H, W]
classes = out.shape[1]

# Encoded images as a BYTES tensor, top-3 via the classification extension.
pngs = [p.read_bytes() for p in samples]
images = np.array(pngs, dtype=np.object_)
bytes_in = grpcclient.InferInput(inp.name, [len(pngs)], "BYTES")
bytes_in.set_data_from_numpy(images)
result = client.infer(model, [bytes_in], outputs=[grpcclient.InferRequestedOutput(out.name, class_count=3)])
top = result.as_numpy(out.name)
check("classification shape", top.shape == (len(pngs), 3), top.shape)
labels = [slug(row[0].decode().split(":", 2)[2]) for row in top]
check("classification labels", labels == expected, f"{labels} vs {expected}")

result = client.infer(model, [bytes_in], request_id="logits-1")
logits_bytes = result.as_numpy(out.name)
check("request id echoed", result.get_response().id == "logits-1")
check("logits shape", logits_bytes.shape == (len(pngs), classes), logits_bytes.shape)
check("logits argmax", list(logits_bytes.argmax(1)) == [int(r[0].decode().split(":")[1]) for r in top])

# UINT8 pixels [N, H, W, C]: the server normalises them.
pixels = np.stack([png_gray_pixels(p) for p in pngs])[..., None]
u8_in = grpcclient.InferInput(inp.name, list(pixels.shape), "UINT8")
u8_in.set_data_from_numpy(pixels)
logits_u8 = client.infer(model, [u8_in]).as_numpy(out.name)
diff = float(np.abs(logits_u8 - logits_bytes).max())
check("UINT8 pixels match encoded images", diff < 1e-4, f"max |diff| {diff:.2e}")

# FP32 preprocessed here, as raw_input_contents (the client's way) ...
fp32 = ((pixels.astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2).copy()
check("FP32 shape", list(fp32.shape[1:]) == shape, fp32.shape)
x = grpcclient.InferInput(inp.name, list(fp32.shape), "FP32")
x.set_data_from_numpy(fp32)
logits = client.infer(model, [x]).as_numpy(out.name)
diff = float(np.abs(logits - logits_bytes).max())
check("FP32 (raw_input_contents) matches", diff < 1e-4, f"max |diff| {diff:.2e}")

# ... and as typed contents, through the protocol's own stub.
stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(url))
request = service_pb2.ModelInferRequest(model_name=model)
tensor = request.inputs.add(name=inp.name, datatype="FP32", shape=list(fp32.shape))
tensor.contents.fp32_contents.extend(fp32.ravel().tolist())
reply = stub.ModelInfer(request)
typed = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32).reshape(len(pngs), classes)
diff = float(np.abs(typed - logits_bytes).max())
check("FP32 (contents.fp32_contents) matches", diff < 1e-4, f"max |diff| {diff:.2e}")
request = service_pb2.ModelInferRequest(model_name=model)
tensor = request.inputs.add(name=inp.name, datatype="FP32", shape=list(fp32.shape))
tensor.contents.int_contents.extend([1, 2, 3])
try:
    stub.ModelInfer(request)
    check("contents of another datatype rejected", False, "no error")
except grpc.RpcError as e:
    ok = e.code() == grpc.StatusCode.INVALID_ARGUMENT and "int_contents" in e.details()
    check("contents of another datatype rejected", ok, f"{e.code()} {e.details()}")

# A wrong shape is an InferenceServerException with the server's message (as over HTTP).
bad = grpcclient.InferInput(inp.name, [1, 3, 5, 5], "FP32")
bad.set_data_from_numpy(np.zeros((1, 3, 5, 5), np.float32))
try:
    client.infer(model, [bad])
    check("wrong shape rejected", False, "no error")
except InferenceServerException as e:
    ok = "[1, 3, 5, 5]" in str(e) and e.status() == "StatusCode.INVALID_ARGUMENT"
    check("wrong shape rejected", ok, f"{e.status()} {e}")

# Queue policy parameters: the server runs with two priority levels.
got = client.infer(model, [x], priority=1, timeout=10_000_000).as_numpy(out.name)
check("priority 1 with a queue timeout", float(np.abs(got - logits_bytes).max()) < 1e-4)
try:
    client.infer(model, [x], priority=3)
    check("priority beyond the levels rejected", False, "no error")
except InferenceServerException as e:
    check("priority beyond the levels rejected", "not a level" in str(e), str(e))

# The streaming RPC: answers carry their request's id; a failure is an error on the stream,
# and the stream goes on.
answers = queue.Queue()
client.start_stream(callback=lambda result, error: answers.put((result, error)))
for i in range(6):
    client.async_stream_infer(model, [bytes_in], request_id=f"s{i}")
client.async_stream_infer(model, [bad], request_id="s-bad")
client.async_stream_infer(model, [x], request_id="s-last")
got = [answers.get(timeout=30) for _ in range(8)]
client.stop_stream()
ids = sorted(r.get_response().id for r, e in got if e is None)
check("stream: every request answered", ids == sorted([f"s{i}" for i in range(6)] + ["s-last"]), ids)
errors = [e for r, e in got if e is not None]
check("stream: the bad request's error", len(errors) == 1 and "[1, 3, 5, 5]" in str(errors[0]), errors)
for r, e in got:
    if e is None:
        diff = float(np.abs(r.as_numpy(out.name) - logits_bytes).max())
        assert diff < 1e-4, f"stream answer {r.get_response().id} differs by {diff}"
check("stream: answers match", True)

# The model configuration extension.
config = client.get_model_config(model).config
check(
    "model config",
    config.name == model
    and config.max_batch_size == 8
    and list(config.input[0].dims) == shape
    and config.dynamic_batching.priority_levels == 2
    and config.dynamic_batching.default_queue_policy.max_queue_size > 0,
    config,
)

# The statistics extension: 6 + 7 stream requests answered, 3 + 1 stream request failed.
stats = client.get_inference_statistics(model).model_stats
check("statistics: one version", len(stats) == 1 and stats[0].name == model, stats)
st = stats[0]
check("statistics: requests", st.inference_stats.success.count == 13, st.inference_stats.success)
check("statistics: failures", st.inference_stats.fail.count == 4, st.inference_stats.fail)
runs = sum(b.compute_infer.count for b in st.batch_stats)
check("statistics: runs", runs == st.execution_count and runs >= 6, st.batch_stats)

# The repository extension, with the bearer token as `authorization` metadata.
index = client.get_model_repository_index(headers=auth)
check("repository index", any(m.name == model and m.state == "READY" for m in index.models), index)
client.unload_model(model, headers=auth)
check("unloaded", not client.is_model_ready(model))
client.load_model(model, headers=auth)
check("loaded again", client.is_model_ready(model))
try:
    client.get_model_repository_index()
    check("index without token refused", False, "no error")
except InferenceServerException as e:
    ok = "token" in str(e) and e.status() == "StatusCode.UNAUTHENTICATED"
    check("index without token refused", ok, f"{e.status()} {e}")
client.close()
print("all tritonclient grpc checks passed")
