#!/usr/bin/env bash
# Peers: `hardy serve` side by side with the Python servers a user would otherwise pick, all
# running the same ONNX models with ONNX Runtime 1.31.1 on the CPU, under one load generator
# (wrk). See benches/README.md#peers for what is measured and how.
#
#   benches/peers.sh                                   # build target/release/hardy, run all
#   HARDY_BIN=/path/to/hardy PEERS_SECONDS=2 PEERS_WARMUP=1 PEERS_REPS=1 benches/peers.sh
#
# Rows (systems), each its own server process, started once per model and repetition:
#   hardy-v1   hardy serve, POST /v1/models/{m}/classify, the raw image as the body
#   fastapi    FastAPI + uvicorn (benches/peers/fastapi_server.py), POST /predict, raw image
#   hardy-v2   hardy serve, POST /v2/models/{m}/infer, the FP32 tensor in the binary extension
#   kserve     kserve.ModelServer (benches/peers/kserve_server.py), the same /v2 request
#   litserve   LitServe with its batching (benches/peers/litserve_server.py), multipart upload
#   base-v1, base-v2   as hardy-v1 and hardy-v2, with the baseline build $HARDY_BASE_BIN (an
#              earlier commit): a before/after comparison in the same run, against the same peers
# Models: fashion-mnist-effnet (the highest version in models/) and lite0 (EfficientNet-Lite0,
# written by `hardy import lite0`), each served from a scratch repository of its own.
#
# Environment:
#   HARDY_BIN          the hardy binary (default: cargo build --release, target/release/hardy)
#   HARDY_FLAGS        extra flags for `hardy serve` (it gets --intra-threads $PEERS_THREADS)
#   HARDY_BASE_BIN     the baseline hardy binary of the base-v1/base-v2 rows (same flags)
#   PEERS_SYSTEMS      rows, in this order (default "hardy-v1 fastapi hardy-v2 kserve litserve")
#   PEERS_MODELS       default "fashion-mnist-effnet lite0"
#   PEERS_CONCURRENCY  open connections per measurement (default "1 8 64")
#   PEERS_SECONDS      seconds per measurement (default 10), after PEERS_WARMUP (default 2)
#   PEERS_REPS         repetitions, every other one in reverse order (default 2)
#   PEERS_THREADS      ONNX Runtime intra-op threads of every server (default 2)
#   PEERS_WRK_THREADS  wrk threads (default 1)
#   PEERS_OUT          the JSON file (default target/bench-peers.json)
#   PEERS_LITSERVE_FAST_QUEUE=1   LitServe's ZeroMQ queues instead of its default Manager queues
# Needs: python3 with venv (scripts/peers-env.sh makes the Python environment), curl, wrk
# (installed with apt-get when missing: root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ beside benches/peers/*.py

seconds=${PEERS_SECONDS:-10}
warmup=${PEERS_WARMUP:-2}
reps=${PEERS_REPS:-2}
threads=${PEERS_THREADS:-2}
wrk_threads=${PEERS_WRK_THREADS:-1}
read -r -a systems <<<"${PEERS_SYSTEMS:-hardy-v1 fastapi hardy-v2 kserve litserve}"
read -r -a models <<<"${PEERS_MODELS:-fashion-mnist-effnet lite0}"
read -r -a concurrency <<<"${PEERS_CONCURRENCY:-1 8 64}"
read -r -a hardy_flags <<<"${HARDY_FLAGS:-}"
out_json=${PEERS_OUT:-target/bench-peers.json}

say() { echo "peers: $*" >&2; }
die() {
  echo "peers: error: $*" >&2
  exit 1
}

for s in "${systems[@]}"; do
  case $s in
    hardy-v1 | fastapi | hardy-v2 | kserve | litserve) ;;
    base-v1 | base-v2) [ -x "${HARDY_BASE_BIN:-}" ] || die "$s needs HARDY_BASE_BIN, the baseline hardy binary" ;;
    *) die "unknown system '$s' in PEERS_SYSTEMS" ;;
  esac
done
for c in "${concurrency[@]}"; do
  if ! [[ $c =~ ^[1-9][0-9]*$ ]] || [ "$c" -lt "$wrk_threads" ]; then
    die "PEERS_CONCURRENCY: '$c' is not a whole number >= PEERS_WRK_THREADS ($wrk_threads)"
  fi
done

# ---------------------------------------------------------------- tools

if [ -n "${HARDY_BIN:-}" ]; then
  bin=$HARDY_BIN
else
  say "building hardy (cargo build --release)"
  cargo build --release --quiet --bin hardy
  bin=$repo/target/release/hardy
fi
[ -x "$bin" ] || die "no hardy binary at $bin"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

# wrk from Debian, as the project's other scripts install Debian packages (scripts/install-chromium.sh).
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo -n)
  else
    die "wrk is missing, and installing it needs root or sudo (as root: apt-get install wrk)"
  fi
  say "installing wrk with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  install_wrk() { "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends wrk >/dev/null; }
  if ! install_wrk; then
    "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=900 update -q >/dev/null
    install_wrk
  fi
  command -v wrk >/dev/null 2>&1 || die "apt-get finished but wrk is not on PATH"
fi
command -v curl >/dev/null 2>&1 || die "curl is missing"

venv=$(scripts/peers-env.sh)
py=$venv/bin/python
tool() { "$py" "$repo/benches/peers/tool.py" "$@"; }

# shellcheck source=scripts/cache-root.sh
source scripts/cache-root.sh
cache=$(hardy_cache_root)

work=$(mktemp -d "${TMPDIR:-/tmp}/hardy-peers.XXXXXX")
results=$work/results.jsonl
: >"$results"
say "scratch directory $work (server logs, wrk output)"

# ---------------------------------------------------------------- cleanup

server_pid=
sampler_pid=
wrk_pid=
stop_sampler() {
  if [ -n "$sampler_pid" ]; then
    kill -TERM "$sampler_pid" 2>/dev/null || true
    wait "$sampler_pid" 2>/dev/null || true
    sampler_pid=
  fi
}
# Each server runs in a process group of its own (setsid), and the whole group gets SIGTERM, as
# from Ctrl-C in a terminal: LitServe's main process alone does not stop on SIGTERM (its API
# server and inference worker are processes of their own).
stop_server() {
  stop_sampler
  [ -n "$server_pid" ] || return 0
  local pid=$server_pid
  server_pid=
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 -- "-$pid" 2>/dev/null; then
    say "process group $pid still there 10 s after SIGTERM: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  if [ -n "$wrk_pid" ]; then
    kill -TERM "$wrk_pid" 2>/dev/null || true
    wait "$wrk_pid" 2>/dev/null || true
  fi
  stop_server
  if [ "$rc" -ne 0 ]; then
    say "failed (status $rc); logs kept in $work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- models and request bodies

label() {
  case $1 in
    hardy-v1) echo "Hardy /v1 classify (raw image)" ;;
    fastapi) echo "FastAPI + uvicorn + ORT (raw image)" ;;
    hardy-v2) echo "Hardy /v2 infer (binary FP32)" ;;
    base-v1) echo "Baseline build, /v1 classify (raw image)" ;;
    base-v2) echo "Baseline build, /v2 infer (binary FP32)" ;;
    kserve) echo "KServe ModelServer + ORT (/v2 binary FP32)" ;;
    litserve) echo "LitServe + ORT, batched (multipart image)" ;;
  esac
}
# The Hardy row each peer's req/s is set against.
reference() {
  case $1 in
    fastapi | litserve | base-v1) echo hardy-v1 ;;
    kserve | base-v2) echo hardy-v2 ;;
    *) echo "$1" ;;
  esac
}

sample_photo() {
  local photo=$cache/foolbox-3.3.4/imagenet_00_243.jpg
  if [ ! -f "$photo" ]; then
    # Hardy provisions the foolbox photos (PyPI's foolbox wheel) when a data set names them.
    say "fetching the foolbox sample photos into $cache (hardy eval --data foolbox:imagenet)"
    "$bin" eval --model "$1" --suite clean --data foolbox:imagenet --limit 1 --quiet \
      --out "$work/foolbox-eval" >"$work/foolbox-eval.log" 2>&1 ||
      die "could not fetch the foolbox photos; see $work/foolbox-eval.log"
  fi
  [ -f "$photo" ] || die "no $photo"
  echo "$photo"
}

declare -A model_dir image_of
for m in "${models[@]}"; do
  dir=$work/repo-$m/$m
  if [ "$m" = lite0 ]; then
    "$bin" import lite0 --out "$dir/1/model.onnx" >"$work/import-lite0.log" 2>&1 ||
      die "hardy import lite0 failed; see $work/import-lite0.log"
    image_of[$m]=$(sample_photo "$dir")
  elif [ -d "models/$m" ]; then
    version=$(find "models/$m" -mindepth 1 -maxdepth 1 -type d -regex '.*/[1-9][0-9]*' -printf '%f\n' | sort -n | tail -n 1)
    [ -n "$version" ] || die "models/$m has no version directory"
    mkdir -p "$dir"
    cp -r "models/$m/$version" "$dir/$version"
    case $m in
      fashion-mnist-*) image_of[$m]=$repo/samples/fashion-mnist/test00000-ankle-boot.png ;;
      *) image_of[$m]=$(sample_photo "$dir") ;;
    esac
  else
    die "unknown model '$m' (lite0, or a directory of models/)"
  fi
  model_dir[$m]=$dir
  tool bodies --model-dir "$dir" --image "${image_of[$m]}" --out-dir "$work/bodies-$m" >/dev/null
  say "$m: $("$bin" inspect "$dir" 2>/dev/null | sed -n 's/^ *preprocess: //p') (hardy inspect)"
  say "$m: $("$py" -c 'import json,sys; i=json.load(open(sys.argv[1])); print(i["preprocess"], "(peers), image", i["image"], i["image_bytes"], "bytes, FP32 body", i["v2_bytes"], "bytes, reference top-1", i["reference_top1"]["index"], i["reference_top1"]["label"])' "$work/bodies-$m/info.json")"
done

json_field() { "$py" -c 'import json,sys; v=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$1" "$2"; }

# ---------------------------------------------------------------- one request type per system

# Sets: path, body, ready_path, check_kind, headers (array of "Name: value").
request_of() {
  local sys=$1 m=$2 b=$work/bodies-$2
  local ctype
  ctype=$(json_field "$b/info.json" content_type)
  case $sys in
    hardy-v1 | base-v1 | fastapi)
      body=$b/image
      headers=("Content-Type: $ctype")
      check_kind=json
      ;;
    hardy-v2 | base-v2 | kserve)
      body=$b/v2
      headers=("Content-Type: application/octet-stream" "Inference-Header-Content-Length: $(json_field "$b/info.json" v2_header_bytes)")
      check_kind=v2
      ;;
    litserve)
      body=$b/multipart
      headers=("Content-Type: multipart/form-data; boundary=$(json_field "$b/info.json" multipart_boundary)")
      check_kind=json
      ;;
  esac
  case $sys in
    hardy-v1 | base-v1) path=/v1/models/$m/classify ready_path=/v2/health/ready ;;
    hardy-v2 | base-v2) path=/v2/models/$m/infer ready_path=/v2/health/ready ;;
    kserve) path=/v2/models/$m/infer ready_path=/v2/models/$m/ready ;;
    fastapi | litserve) path=/predict ready_path=/health ;;
  esac
}

# A wrk script: the request, and per response its arrival time (CLOCK_MONOTONIC, as Python's
# time.monotonic) and whether its status was 2xx. done() prints one JSON line: the rate over the
# window from the c-th response to the last one (so the ramp at the start, while the first
# requests of every connection are still in flight, is left out), wrk's latency percentiles,
# and the errors.
write_lua() {
  local lua=$1
  shift
  {
    cat <<'LUA'
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } peers_timespec;
int clock_gettime(int clk, peers_timespec *tp);
]]
local ts = ffi.new("peers_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

LUA
    printf 'local f = assert(io.open("%s", "rb"))\n' "$body"
    cat <<'LUA'
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
LUA
    local h
    for h in "${headers[@]}"; do
      printf 'wrk.headers["%s"] = "%s"\n' "${h%%: *}" "${h#*: }"
    done
    cat <<'LUA'

times, bad, bad_status, bad_body = {}, 0, nil, nil
function response(status, headers, body)
  times[#times + 1] = now()
  if status < 200 or status > 299 then
    bad = bad + 1
    if not bad_status then
      bad_status, bad_body = status, string.sub(body or "", 1, 200)
    end
  end
end

threads = {}
function setup(thread)
  run_start = run_start or now()
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local run_end = now()
  local all, nbad, first, first_body = {}, 0, nil, nil
  for _, thread in ipairs(threads) do
    local t = thread:get("times")
    for i = 1, #t do all[#all + 1] = t[i] end
    nbad = nbad + thread:get("bad")
    if not first and thread:get("bad_status") then
      first, first_body = thread:get("bad_status"), thread:get("bad_body")
    end
  end
  table.sort(all)
  local c, n = tonumber(os.getenv("PEERS_C")), #all
  local w0, w1, k = run_start, run_end, n
  if n > c + 1 then w0, w1, k = all[c], all[n], n - c end
  local e = summary.errors
  io.write(string.format('PEERS_RESULT {"requests":%d,"duration_us":%d,"responses":%d,' ..
    '"window_start":%.6f,"window_end":%.6f,"window_responses":%d,"window_rate":%.4f,' ..
    '"run_start":%.6f,"run_end":%.6f,"p50_us":%.1f,"p99_us":%.1f,"bad_status":%d,"first_bad_status":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, n, w0, w1, k, w1 > w0 and k / (w1 - w0) or 0,
    run_start, run_end, latency:percentile(50), latency:percentile(99), nbad, first or 0,
    e.connect, e.read, e.write, e.status, e.timeout))
  if first_body then io.write("PEERS_BAD_BODY ", first_body, "\n") end
end
LUA
  } >"$lua"
}

# ---------------------------------------------------------------- servers

# start_server SYSTEM MODEL: sets server_pid and base_url; waits until ready.
start_server() {
  local sys=$1 m=$2 log=$work/$2-$1-rep$3
  local port=
  local start
  start=$(date +%s.%N)
  case $sys in
    hardy-v1 | hardy-v2 | base-v1 | base-v2)
      local exe=$bin
      [[ $sys == base-* ]] && exe=$HARDY_BASE_BIN
      setsid "$exe" serve --host 127.0.0.1 --port 0 --grpc-port 0 --model-repository "$work/repo-$m" \
        --intra-threads "$threads" "${hardy_flags[@]}" >"$log.stdout" 2>"$log.stderr" &
      ;;
    fastapi | kserve | litserve)
      port=$(tool free-port)
      PEERS_INTRA_THREADS=$threads setsid "$py" "$repo/benches/peers/${sys}_server.py" --model-dir "${model_dir[$m]}" \
        --name "$m" --port "$port" --threads "$threads" >"$log.stdout" 2>"$log.stderr" &
      ;;
  esac
  server_pid=$!
  if [ -z "$port" ]; then # hardy: the port from the one line it prints on stdout
    for _ in $(seq 1200); do
      port=$(sed -n 's|^hardy serve: listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$log.stdout" | head -n 1)
      [ -n "$port" ] && break
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    [ -n "$port" ] || {
      tail -n 20 "$log.stderr" >&2
      die "$sys did not print its listening line (bad flag in HARDY_FLAGS?)"
    }
  fi
  base_url=http://127.0.0.1:$port
  local ready=
  for _ in $(seq 3000); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$base_url$ready_path" || true)" = 200 ]; then
      ready=1
      break
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    tail -n 30 "$log.stderr" "$log.stdout" >&2
    die "$sys ($m) was not ready at $base_url$ready_path within 300 s"
  fi
  ready_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
}

# ---------------------------------------------------------------- the runs

check_answer() { # SYSTEM MODEL REP: one request, its top-1 against the reference
  local sys=$1 m=$2 args=() h answer
  for h in "${headers[@]}"; do args+=(--header "$h"); done
  answer=$(tool check --url "$base_url$path" --body "$body" --kind "$check_kind" "${args[@]}")
  "$py" - "$answer" "$work/bodies-$m/info.json" "$sys" "$m" "$3" >>"$results" <<'PY' || die "$sys ($m): wrong answer: $answer"
import json, sys
answer, info = json.loads(sys.argv[1]), json.load(open(sys.argv[2]))
ref = info["reference_top1"]
ok = answer.get("status") == 200 and answer.get("index") == ref["index"]
print(json.dumps({"type": "check", "system": sys.argv[3], "model": sys.argv[4], "rep": int(sys.argv[5]),
                  "status": answer.get("status"), "index": answer.get("index"), "score": answer.get("score"),
                  "reference_index": ref["index"], "reference_score": ref["score"], "agrees": ok}))
if not ok:
    print(f"peers: {sys.argv[3]} ({sys.argv[4]}) answered {answer}, the reference top-1 is {ref}", file=sys.stderr)
    sys.exit(1)
PY
  say "$sys ($m): top-1 $(echo "$answer" | "$py" -c 'import json,sys; a=json.load(sys.stdin); print(a["index"], "score %.6f" % a["score"])'), reference $(json_field "$work/bodies-$m/info.json" reference_top1.index)"
}

run_wrk() { # C SECONDS OUT (in the background, so that a signal to this script is handled at once)
  PEERS_C=$1 wrk -t "$wrk_threads" -c "$1" -d "$2s" --timeout 60s --latency -s "$lua" "$base_url$path" >"$3" 2>&1 &
  wrk_pid=$!
  local rc=0
  wait "$wrk_pid" || rc=$?
  wrk_pid=
  [ "$rc" = 0 ] || die "wrk failed (status $rc); see $3"
  grep -q '^PEERS_RESULT ' "$3" || die "wrk printed no result; see $3"
}

measure() { # SYSTEM MODEL REP
  local sys=$1 m=$2 rep=$3 c base=$work/$2-$1-rep$3
  for c in "${concurrency[@]}"; do
    if [ "$warmup" != 0 ]; then
      tool wait-idle --pid "$server_pid" --baseline "$idle_rate"
      run_wrk "$c" "$warmup" "$base-c$c-warmup.wrk"
      tool measure --wrk "$base-c$c-warmup.wrk" --samples "$base.samples" --model "$m" --system "$sys" \
        --rep "$rep" --c "$c" >"$base-c$c-warmup.json"
      check_errors "$base-c$c-warmup.json" "$base-c$c-warmup.wrk" "$sys ($m) warm-up at c=$c"
    fi
    tool wait-idle --pid "$server_pid" --baseline "$idle_rate"
    local account=()
    if [[ $sys == hardy-* || $sys == base-* ]]; then # Hardy's own account of where the time went (statistics extension)
      curl -sf "$base_url/v2/models/$m/stats" >"$base-c$c.stats0" || die "$sys ($m): no /v2/models/$m/stats"
    fi
    run_wrk "$c" "$seconds" "$base-c$c.wrk"
    if [[ $sys == hardy-* || $sys == base-* ]]; then
      curl -sf "$base_url/v2/models/$m/stats" >"$base-c$c.stats1" || die "$sys ($m): no /v2/models/$m/stats"
      account=(--stats-before "$base-c$c.stats0" --stats-after "$base-c$c.stats1")
    fi
    tool measure --wrk "$base-c$c.wrk" --samples "$base.samples" --model "$m" --system "$sys" \
      --rep "$rep" --c "$c" "${account[@]}" | sed 's/^{/{"type": "measure", /' >"$base-c$c.json"
    check_errors "$base-c$c.json" "$base-c$c.wrk" "$sys ($m) at c=$c"
    cat "$base-c$c.json" >>"$results"
    say "  c=$c: $(tool summary --result "$base-c$c.json")"
  done
}

check_errors() { # RESULT_JSON WRK_OUTPUT WHAT
  "$py" - "$1" "$3" <<'PY' || {
import json, sys
r = json.load(open(sys.argv[1]))
e = r["errors"]
if r["bad_status"] or any(e.values()):
    print(f"peers: {sys.argv[2]}: {r['bad_status']} responses were not 2xx; socket errors {e}", file=sys.stderr)
    sys.exit(1)
PY
    grep -E 'Non-2xx|Socket errors|PEERS_BAD_BODY' "$2" >&2 || true
    die "$3 had errors; see $2 and the server's log beside it"
  }
}

for m in "${models[@]}"; do
  for rep in $(seq "$reps"); do
    order=("${systems[@]}")
    if [ $((rep % 2)) = 0 ]; then # every other repetition in reverse order
      order=()
      for ((i = ${#systems[@]} - 1; i >= 0; i--)); do order+=("${systems[$i]}"); done
    fi
    for sys in "${order[@]}"; do
      request_of "$sys" "$m"
      lua=$work/$m-$sys.lua
      write_lua "$lua"
      start_server "$sys" "$m" "$rep"
      base=$work/$m-$sys-rep$rep
      check_answer "$sys" "$m" "$rep"
      sleep 1
      idle=$(tool tree --pid "$server_pid")
      idle_rate=$(tool idle-rate --pid "$server_pid" --seconds 2)
      tool sample --pid "$server_pid" --out "$base.samples" &
      sampler_pid=$!
      say "$m, repetition $rep/$reps, $sys: ready in ${ready_s} s at $base_url; idle: $(echo "$idle" | "$py" -c 'import json,sys; t=json.load(sys.stdin); print("%.0f MB in %d processes" % (t["rss_bytes"] / 2**20, t["processes"]))'), $idle_rate cores"
      measure "$sys" "$m" "$rep"
      tool wait-idle --pid "$server_pid" --baseline "$idle_rate"
      end=$(tool tree --pid "$server_pid")
      stop_sampler
      "$py" - "$idle" "$end" "$base.samples" "$sys" "$m" "$rep" "$ready_s" "$idle_rate" >>"$results" <<'PY'
import json, sys
idle, end = json.loads(sys.argv[1]), json.loads(sys.argv[2])
peak = max((int(l.split()[2]) for l in open(sys.argv[3]) if len(l.split()) == 3), default=0)
mb = 2**20
print(json.dumps({"type": "server", "system": sys.argv[4], "model": sys.argv[5], "rep": int(sys.argv[6]),
                  "ready_s": float(sys.argv[7]), "idle_cpu_cores": float(sys.argv[8]), "processes": idle["processes"],
                  "rss_idle_mb": idle["rss_bytes"] / mb, "rss_peak_mb": max(peak, end["rss_bytes"]) / mb,
                  "rss_end_mb": end["rss_bytes"] / mb}))
PY
      stop_server
    done
  done
done

# ---------------------------------------------------------------- report

labels_json=$(for s in "${systems[@]}"; do printf '%s\t%s\t%s\n' "$s" "$(label "$s")" "$(reference "$s")"; done)
"$py" - "$work/meta.json" "$bin" "$venv" "$seconds" "$warmup" "$reps" "$threads" "$wrk_threads" \
  "${HARDY_FLAGS:-}" "${concurrency[*]}" "${systems[*]}" "${models[*]}" "$labels_json" "$work" <<'PY'
import json, os, platform, subprocess, sys, time
(out, hardy, venv, seconds, warmup, reps, threads, wrk_threads, flags, conc, systems, models, labels, work) = sys.argv[1:]
rows = [l.split("\t") for l in labels.splitlines() if l]
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return None
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None)
bodies = {}
for m in models.split():
    with open(os.path.join(work, f"bodies-{m}", "info.json")) as f:
        bodies[m] = json.load(f)
meta = {
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "commit": run("git", "rev-parse", "--short", "HEAD"),
    "hardy": hardy, "hardy_flags": flags, "hardy_version": run(hardy, "--version"),
    "hardy_base": os.environ.get("HARDY_BASE_BIN") if any(x.startswith("base-") for x in systems.split()) else None,
    "python_env": venv, "python_packages": open(os.path.join(venv, ".complete")).read().split(),
    "wrk": (subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines() or [None])[0],
    "cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
    "seconds": float(seconds), "warmup": float(warmup), "reps": int(reps), "intra_threads": int(threads),
    "wrk_threads": int(wrk_threads), "concurrency": conc.split(), "systems": systems.split(),
    "models": models.split(), "labels": {r[0]: r[1] for r in rows},
    "reference": {r[0]: r[2] for r in rows}, "bodies": bodies,
    "figures": "mean of the repetitions; RSS peak: the largest",
}
json.dump(meta, open(out, "w"), indent=1)
PY
mkdir -p "$(dirname "$out_json")"
echo
echo "Peers: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), ONNX Runtime intra-op threads $threads," \
  "${seconds} s per measurement after ${warmup} s of warm-up, mean of $reps repetition(s) (RSS peak: the largest)"
echo
tool report --results "$results" --meta "$work/meta.json" --json "$out_json"
say "figures written to $out_json; logs in $work"
