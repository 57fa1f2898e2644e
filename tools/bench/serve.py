"""edgefair serve against a minimal uvicorn[standard]+starlette endpoint, KServe's model
server and MLServer, all running the same onnxruntime session (one thread).

    python tools/bench/serve.py                  (about 4 minutes with all four servers)
    python tools/bench/serve.py --kserve-python .bench-kserve/bin/python \
        --mlserver-python .bench-mlserver/bin/python

Needs `pip install -e .[bench,server]` (uvicorn[standard]: uvloop + httptools; starlette)
and Debian's wrk. KServe and MLServer pin other versions of pandas, protobuf and fastapi,
so they run from their own virtual environments (see README, Benchmarks); without them
their rows say "not measured" and why. Before any timing every server answers the same
request and its scores must equal a direct onnxruntime run of the model, bit for bit.
POST /infer, batch 1, JSON, at 1, 8 and 64 keep-alive connections, 8 s each (--rounds N: N
interleaved rounds, servers alternating, medians reported; each server process's CPU time
per request beside throughput and latency), on
127.0.0.1, in one run. Targets: throughput >= 1.0x uvicorn[standard] with p99 <= 1.0x its
p99; >= 2x KServe and MLServer.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgefair.bundling import build_bundle  # noqa: E402
from edgefair.data import ADULT_FEATURES, load_adult  # noqa: E402

MODEL = ROOT / "edgefair" / "demo" / "models" / "adult_mlp.onnx"

ANCHOR = """
import json, sys, numpy as np, onnxruntime as ort
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
sess = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
kinds = {i.name: (np.float32 if i.type == "tensor(float)" else object) for i in sess.get_inputs()}
async def infer(request):
    doc = json.loads(await request.body())
    feeds = {t["name"]: np.array(t["data"], dtype=kinds[t["name"]]).reshape(t["shape"])
             for t in doc["inputs"] if t["name"] in kinds}
    out = sess.run(None, feeds)
    body = {"model_name": "anchor", "outputs": [{"name": o.name, "datatype": "FP32", "shape": list(v.shape),
            "data": v.reshape(-1).tolist()} for o, v in zip(sess.get_outputs(), out)]}
    return Response(json.dumps(body), media_type="application/json")
app = Starlette(routes=[Route("/v2/models/anchor/infer", infer, methods=["POST"])])
"""


KSERVE = """
import sys, uuid, numpy as np, onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
sess = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
kinds = {i.name: (np.float32 if i.type == "tensor(float)" else object) for i in sess.get_inputs()}
class Anchor(Model):
    def __init__(self):
        super().__init__("anchor"); self.ready = True
    def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        feeds = {}
        for i in payload.inputs:
            if i.name in kinds:
                v = np.array(i.data, dtype=kinds[i.name]).reshape(i.shape)
                feeds[i.name] = v
        out = sess.run(None, feeds)
        outputs = []
        for o, v in zip(sess.get_outputs(), out):
            item = InferOutput(name=o.name, shape=list(v.shape), datatype="FP32")
            item.set_data_from_numpy(v.astype(np.float32), binary_data=False)
            outputs.append(item)
        return InferResponse(model_name="anchor", infer_outputs=outputs, response_id=payload.id or uuid.uuid4().hex)
ModelServer(http_port=int(sys.argv[2]), grpc_port=int(sys.argv[3]), enable_grpc=False, workers=1).start([Anchor()])
"""

MLSERVER_RUNTIME = """
import uuid, numpy as np, onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
class Anchor(MLModel):
    async def load(self) -> bool:
        opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(self.settings.parameters.uri, opts, providers=["CPUExecutionProvider"])
        self.kinds = {i.name: (np.float32 if i.type == "tensor(float)" else object) for i in self.sess.get_inputs()}
        return True
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: np.array(i.data.root if hasattr(i.data, "root") else i.data.__root__,
                                  dtype=self.kinds[i.name]).reshape(i.shape)
                 for i in payload.inputs if i.name in self.kinds}
        out = self.sess.run(None, feeds)
        return InferenceResponse(model_name="anchor", id=payload.id or uuid.uuid4().hex, outputs=[
            NumpyCodec.encode_output(name=o.name, payload=v.astype(np.float32))
            for o, v in zip(self.sess.get_outputs(), out)])
"""


DURATION = 8  # seconds per wrk run
CONNECTIONS = (1, 8, 64)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, process: subprocess.Popen, log: Path) -> None:
    for _ in range(1200):
        if process.poll() is not None:
            raise SystemExit(f"server on {port} exited: {log.read_text()[-2000:] if log.exists() else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server on {port} did not start within 120 s")


def bodies(adult) -> tuple[bytes, bytes, int]:
    inputs, blobs = [], []
    binary = []
    for k in ADULT_FEATURES:
        v = adult.columns[k][0]
        if isinstance(v, float):
            inputs.append({"name": k, "shape": [1, 1], "datatype": "FP32", "data": [v]})
            blob = __import__("numpy").array([v], dtype="float32").tobytes()
        else:
            inputs.append({"name": k, "shape": [1, 1], "datatype": "BYTES", "data": [v]})
            blob = len(v.encode()).to_bytes(4, "little") + v.encode()
        binary.append(
            {
                "name": k,
                "shape": [1, 1],
                "datatype": inputs[-1]["datatype"],
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    head = json.dumps({"inputs": binary, "parameters": {"binary_data_output": True}}).encode()
    return json.dumps({"inputs": inputs}).encode(), head + b"".join(blobs), len(head)


def wrk(url: str, body: bytes, headers: dict[str, str], connections: int, tmp: Path) -> tuple[float, float, float]:
    body_file = tmp / f"body{abs(hash(body))}.bin"
    body_file.write_bytes(body)
    lines = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    script = tmp / "post.lua"
    script.write_text(
        f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*all")\nf:close()\nwrk.method = "POST"\n{lines}'
    )
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(min(2, connections)),
            "-c",
            str(connections),
            "-d",
            f"{DURATION}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error responses")

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return rps, pct("50"), pct("99")


def start(name: str, argv: list[str], tmp: Path, cwd: Path = ROOT) -> subprocess.Popen:
    log = (tmp / f"{name}.log").open("wb")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)


def post(port: int, path: str, body: bytes) -> dict:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", path, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{path} on {port}: {response.status} {data[:300]!r}")
    return json.loads(data)


def scores(doc: dict) -> list[float]:
    """The first output's values as float32 numbers (the same bits whichever server sent them)."""
    import numpy as np

    data = doc["outputs"][0]["data"]
    return np.asarray(data, dtype=np.float32).reshape(-1).tolist()


def servers(args: argparse.Namespace, bundle: Path, tmp: Path) -> tuple[dict, dict]:
    """name -> (process, port, path); name -> why it was not started."""
    started, skipped = {}, {}
    port = free_port()
    started["edgefair"] = (
        start("edgefair", [sys.executable, "-m", "edgefair", "serve", str(bundle), "--port", str(port)], tmp),
        port,
        "/v2/models/adult_mlp/infer",
    )
    (tmp / "anchor.py").write_text(ANCHOR)
    port = free_port()
    run = (
        f"import sys; sys.argv = ['x', {str(MODEL)!r}]; exec(open({str(tmp / 'anchor.py')!r}).read()); "
        f"import uvicorn; uvicorn.run(app, host='127.0.0.1', port={port}, log_level='error', "
        "loop='uvloop', http='httptools', access_log=False)"
    )
    started["uvicorn[standard]"] = (start("uvicorn", [sys.executable, "-c", run], tmp), port, "/v2/models/anchor/infer")
    for name, python in (("KServe", args.kserve_python), ("MLServer", args.mlserver_python)):
        if python is None:
            skipped[name] = f"not measured: pass --{name.lower()}-python (an environment with {name} installed)"
            continue
        port = free_port()
        if name == "KServe":
            (tmp / "kserve_anchor.py").write_text(KSERVE)
            argv = [python, str(tmp / "kserve_anchor.py"), str(MODEL), str(port), str(free_port())]
            started[name] = (start(name, argv, tmp), port, "/v2/models/anchor/infer")
        else:
            folder = tmp / "mlserver"
            folder.mkdir()
            (folder / "anchor_runtime.py").write_text(MLSERVER_RUNTIME)
            settings = {"http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "parallel_workers": 0}
            (folder / "settings.json").write_text(json.dumps(settings))
            model = {"name": "anchor", "implementation": "anchor_runtime.Anchor", "parameters": {"uri": str(MODEL)}}
            (folder / "model-settings.json").write_text(json.dumps(model))
            mlserver = str(Path(python).parent / "mlserver")
            started[name] = (
                start(name, [mlserver, "start", str(folder)], tmp, folder),
                port,
                "/v2/models/anchor/infer",
            )
    return started, skipped


def same_outputs(started: dict, body: bytes) -> list[float]:
    """Every server's scores for one request, checked equal to onnxruntime's own."""
    import numpy as np
    import onnxruntime as ort

    doc = json.loads(body)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(MODEL), opts, providers=["CPUExecutionProvider"])
    kinds = {i.name: (np.float32 if i.type == "tensor(float)" else object) for i in sess.get_inputs()}
    feeds = {t["name"]: np.array(t["data"], dtype=kinds[t["name"]]).reshape(t["shape"]) for t in doc["inputs"]}
    direct = np.asarray(sess.run(None, feeds)[0], np.float32).reshape(-1).tolist()
    for name, (_, port, path) in started.items():
        got = scores(post(port, path, body))
        if got != direct:
            raise SystemExit(f"{name} answers {got}, onnxruntime {direct}: outputs differ, nothing timed")
    return direct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kserve-python", help="python of an environment with kserve==0.21 installed")
    parser.add_argument("--mlserver-python", help="python of an environment with mlserver==1.7 installed")
    parser.add_argument("--seconds", type=int, default=8, help="wrk duration per run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="interleaved rounds (servers alternate within each); the median of each figure is reported",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("tools/bench/serve.py needs wrk (Debian: apt-get install wrk)")
    for module in ("uvicorn", "starlette", "uvloop", "httptools"):
        try:
            __import__(module)
        except ImportError:
            sys.exit(f"tools/bench/serve.py needs {module}: pip install -e '.[bench,server]'")
    global DURATION
    DURATION = args.seconds
    adult = load_adult("test")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bundle = build_bundle(MODEL, tmp / "adult_mlp", sensitive=["race", "sex"])
        json_body, _, _ = bodies(adult)
        started, skipped = servers(args, bundle, tmp)
        try:
            for name, (process, port, _) in started.items():
                wait_ready(port, process, tmp / f"{name.split('[')[0]}.log")
            direct = same_outputs(started, json_body)
            print(f"all {len(started)} servers return onnxruntime's scores {direct} for the request; timing")
            runs: dict[str, dict[int, list[tuple[float, ...]]]] = {n: {c: [] for c in CONNECTIONS} for n in started}
            json_h = {"Content-Type": "application/json"}
            for r in range(args.rounds):
                for c in CONNECTIONS:
                    order = list(started.items())
                    for name, (process, port, path) in order if r % 2 == 0 else order[::-1]:
                        before = cpu_seconds(process.pid)
                        rps, p50, p99 = wrk(f"http://127.0.0.1:{port}{path}", json_body, json_h, c, tmp)
                        used = (cpu_seconds(process.pid) - before) / (rps * DURATION) * 1e6
                        runs[name][c].append((rps, p50, p99, used))
            results = {n: {c: median_run(rs) for c, rs in by_c.items()} for n, by_c in runs.items()}
            report(results, skipped)
        finally:
            for process, _, _ in started.values():
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (Linux /proc): its cost per request holds up on a
    busy machine better than throughput does. Worker processes a server forks are not in it."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median_run(runs: list[tuple[float, ...]]) -> tuple[float, ...]:
    """Each figure's median over the rounds (throughput, p50, p99, CPU per request apart)."""
    import statistics

    return tuple(statistics.median(r[i] for r in runs) for i in range(len(runs[0])))


def report(results: dict, skipped: dict) -> None:
    ours = results["edgefair"]
    print(f"{'connections':>11s}  " + "  ".join(f"{n:>30s}" for n in results))
    for c in (1, 8, 64):
        print(
            f"{c:>11d}  "
            + "  ".join(
                f"{r[c][0]:8.0f}/s p50 {r[c][1]:6.2f} p99 {r[c][2]:6.2f} cpu {r[c][3]:5.0f} us"
                for r in results.values()
            )
        )
    for name, theirs in results.items():
        if name == "edgefair":
            continue
        target = "throughput >= 1.0x, p99 <= 1.0x" if name.startswith("uvicorn") else "throughput >= 2x"
        cells = [
            f"{c} conn {ours[c][0] / theirs[c][0]:.2f}x (p99 {ours[c][2] / theirs[c][2]:.2f}x, "
            f"cpu/request {ours[c][3] / theirs[c][3]:.2f}x)"
            for c in (1, 8, 64)
        ]
        print(f"edgefair / {name}: " + "; ".join(cells) + f"   target: {target}")
    for name, why in skipped.items():
        print(f"edgefair / {name}: {why}")
    print(
        "latencies in ms (wrk); cpu: the server process's user + system time per request; "
        "ratios are edgefair over the anchor, measured in this run"
    )


if __name__ == "__main__":
    main()
