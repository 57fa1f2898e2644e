"""edgefair serve against a minimal uvicorn+starlette endpoint running the same session.

    python tools/bench/serve.py          (needs `pip install -e .[bench]` and Debian's wrk)
POST /infer, batch 1, JSON and binary tensors, at 1, 8 and 64 keep-alive connections,
8 s each, both servers on 127.0.0.1, measured in one run. Targets: throughput >= 1.0x
the uvicorn endpoint; p99 at 64 connections <= 1.5x its p99.
"""

from __future__ import annotations

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

from edgefair.data import ADULT_FEATURES, load_adult  # noqa: E402
from edgefair.runtime.bundling import build_bundle  # noqa: E402

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int) -> None:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on {port} did not start")


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
            "8s",
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


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("tools/bench/serve.py needs wrk (Debian: apt-get install wrk)")
    adult = load_adult("test")
    model = ROOT / "models" / "adult_mlp.onnx"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bundle = build_bundle(model, tmp / "adult_mlp", sensitive=["race", "sex"])
        json_body, binary_body, head_len = bodies(adult)
        ef_port, uv_port = free_port(), free_port()
        (tmp / "anchor.py").write_text(ANCHOR)
        servers = [
            subprocess.Popen(
                [sys.executable, "-m", "edgefair", "serve", str(bundle), "--port", str(ef_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=ROOT,
            ),
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    f"import sys; sys.argv = ['x', {str(model)!r}]; "
                    f"exec(open({str(tmp / 'anchor.py')!r}).read()); import uvicorn; "
                    f"uvicorn.run(app, host='127.0.0.1', port={uv_port}, log_level='error')",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=ROOT,
            ),
        ]
        try:
            wait_ready(ef_port)
            wait_ready(uv_port)
            ef_url = f"http://127.0.0.1:{ef_port}/v2/models/adult_mlp/infer"
            uv_url = f"http://127.0.0.1:{uv_port}/v2/models/anchor/infer"
            json_h = {"Content-Type": "application/json"}
            print(
                f"{'connections':>11s}  {'uvicorn json':>22s}  {'edgefair json':>22s}  {'edgefair binary':>22s}"
                "  throughput ratio (json)"
            )
            for c in (1, 8, 64):
                uv = wrk(uv_url, json_body, json_h, c, tmp)
                ef = wrk(ef_url, json_body, json_h, c, tmp)
                eb = wrk(ef_url, binary_body, {"Inference-Header-Content-Length": str(head_len)}, c, tmp)
                cell = [f"{r[0]:7.0f}/s p50 {r[1]:5.2f} p99 {r[2]:6.2f}" for r in (uv, ef, eb)]
                print(
                    f"{c:>11d}  {cell[0]}  {cell[1]}  {cell[2]}  {ef[0] / uv[0]:.2f}x"
                    + (f"; p99 ratio {ef[2] / uv[2]:.2f}x" if c == 64 else "")
                )
            print("latencies in ms; targets: throughput >= 1.0x uvicorn, p99 at 64 connections <= 1.5x")
        finally:
            for s in servers:
                s.terminate()
                s.wait(timeout=30)


if __name__ == "__main__":
    main()
