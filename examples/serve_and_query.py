"""Start `edgefair serve` on a bundle of the reference model, query it with tritonclient
(JSON and binary tensors), post outcomes, and print /fairness and a few /metrics lines.

    python examples/serve_and_query.py        (needs tritonclient[http]: pip install -e .[dev])
"""

from __future__ import annotations

import json
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.http as triton

import edgefair
from edgefair.bundling import build_bundle
from edgefair.data import ADULT_FEATURES, load_adult
from edgefair.files import write_text
from edgefair.serve.server import ServeConfig, Server

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="serve-example-"))
    model = ROOT / "models" / "adult_sklearn.onnx"
    certificate = write_text(
        work / "certificate.json", edgefair.report.build(edgefair.verify(model, model, "adult")).to_json()
    )
    bundle = build_bundle(model, work / "adult", certificate=certificate)
    token = "example-token"
    server = Server(bundle, ServeConfig(port=0, store=str(work / "counters.db"), token=token)).start()
    base = f"127.0.0.1:{server.port}"
    try:
        client = triton.InferenceServerClient(base)
        print("live", client.is_server_live(), "ready", client.is_model_ready("adult"))
        data = load_adult("test")
        ids = []
        for start, binary in ((0, False), (500, True), (1000, True), (1500, False)):
            rows = slice(start, start + 500)
            inputs = []
            for name in ADULT_FEATURES:  # race and sex are model inputs here, so they are counted from them
                values = data.columns[name][rows].reshape(-1, 1)
                kind = "FP32" if values.dtype.kind == "f" else "BYTES"
                tensor = triton.InferInput(name, list(values.shape), kind)
                tensor.set_data_from_numpy(values.astype(np.float32 if kind == "FP32" else object), binary_data=binary)
                inputs.append(tensor)
            result = client.infer(
                "adult",
                inputs,
                request_id=f"batch{start}",
                outputs=[triton.InferRequestedOutput("probabilities", binary_data=binary)],
            )
            print(
                f"rows {start}-{start + 499} ({'binary' if binary else 'JSON'}): mean P(>50K) "
                f"{result.as_numpy('probabilities')[:, 1].mean():.3f}"
            )
            ids += [f"batch{start}/{i}" for i in range(500)]
        outcome = urllib.request.Request(
            f"http://{base}/v2/models/adult/outcomes",
            method="POST",
            data=json.dumps({"ids": ids, "labels": data.columns["income"][:2000].tolist()}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        print("outcomes:", json.loads(urllib.request.urlopen(outcome).read()))
        fairness = json.loads(urllib.request.urlopen(f"http://{base}/v2/models/adult/fairness").read())
        for group, row in fairness["by_attribute"]["sex"].items():
            if "count" in row:
                tpr = row["true_positive_rate"]
                print(
                    f"  sex={group}: {row['count']} rows, TPR {tpr['value']:.3f} "
                    f"[{tpr['interval'][0]:.3f}, {tpr['interval'][1]:.3f}]"
                )
        print("drift verdict:", fairness["drift"]["verdict"])
        metrics = urllib.request.urlopen(f"http://{base}/metrics").read().decode().splitlines()
        print(
            "\n".join(
                line for line in metrics if line.startswith("edgefair_predictions_total") and 'attribute="sex"' in line
            )
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
