"""Train the two reference models on the bundled Adult data, with fixed seeds.

    python tools/train_reference_models.py        (needs the torch and sklearn extras)

Writes models/adult_mlp.onnx (PyTorch MLP 256-256 behind a skl2onnx preprocessing graph,
joined with onnx.compose.merge_models), models/adult_sklearn.onnx (scikit-learn pipeline,
preprocessing in the graph) and models/README.md (model cards from a real evaluation).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.compose

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgefair import metric_frame, modelio  # noqa: E402
from edgefair.convert.common import save_model  # noqa: E402
from edgefair.convert.export import export_sklearn, export_torch  # noqa: E402
from edgefair.convert.validation import session  # noqa: E402
from edgefair.data import ADULT_FEATURES, ADULT_NUMERIC, load_adult  # noqa: E402

SEED = 20261122
OUT = ROOT / "edgefair" / "demo" / "models"


def frame(columns: dict[str, np.ndarray]):  # type: ignore[no-untyped-def]
    import pandas as pd

    return pd.DataFrame({c: columns[c] for c in ADULT_FEATURES})


def preprocessor():  # type: ignore[no-untyped-def]
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    categorical = [c for c in ADULT_FEATURES if c not in ADULT_NUMERIC]
    return ColumnTransformer(
        [
            ("num", StandardScaler(), list(ADULT_NUMERIC)),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
        ]
    )


def train_sklearn(train) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline

    pipe = Pipeline(
        [
            ("pre", preprocessor()),
            (
                "mlp",
                MLPClassifier(hidden_layer_sizes=(64,), max_iter=60, random_state=SEED, early_stopping=True),
            ),
        ]
    )
    x = frame(train.columns)
    pipe.fit(x, train.columns["income"])
    return export_sklearn(pipe, x, name="adult_sklearn")


def train_torch(train) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    pre = preprocessor()
    x_df = frame(train.columns)
    features = pre.fit_transform(x_df).astype(np.float32)
    y = train.columns["income"].astype(np.int64)
    width = features.shape[1]
    mlp = nn.Sequential(
        nn.Linear(width, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 2), nn.Softmax(dim=1)
    )
    head = mlp[:-1]  # train on logits, export with the softmax
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-3, weight_decay=1e-5)
    xs, ys = torch.from_numpy(features), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(SEED)
    for _epoch in range(12):
        order = torch.randperm(len(xs), generator=gen)
        for start in range(0, len(xs), 256):
            idx = order[start : start + 256]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(head(xs[idx]), ys[idx])
            loss.backward()
            opt.step()
    core = export_torch(mlp, xs[:4], input_names=("features",), output_names=("probabilities",))
    pre_onnx = export_sklearn(pre, x_df, name="adult_preprocessing")
    pre_out = pre_onnx.graph.output[0].name
    core.ir_version = pre_onnx.ir_version = min(core.ir_version, pre_onnx.ir_version)
    merged = onnx.compose.merge_models(pre_onnx, core, io_map=[(pre_out, "features")])
    merged.graph.name = "adult_mlp"
    onnx.checker.check_model(merged, full_check=True)
    return merged


def card(name: str, path: Path, test, description: str) -> str:  # type: ignore[no-untyped-def]
    sess = session(path.read_bytes())
    sig = modelio.signature(sess)
    feeds = modelio.build_feeds(sig, test.columns)
    choice = modelio.choose_output(sig)
    out = sess.run([choice.name], feeds)[0]
    _, decisions = modelio.decisions(out, choice, 0.5)
    y = test.columns["income"]
    lines = [
        f"## {name}",
        "",
        description,
        "",
        f"- file: `{path.name}`, {path.stat().st_size:,} bytes, SHA-256 "
        f"`{hashlib.sha256(path.read_bytes()).hexdigest()}`",
        f"- inputs: raw Adult columns by name ({', '.join(i.name for i in sig.inputs)}); "
        f"score output `{choice.name}` (column 1 = P(income > 50K)), threshold 0.5",
        f"- training: Adult train split (32,561 rows), seed {SEED}",
        f"- test accuracy (Adult test split, 16,281 rows): {np.mean(decisions == y):.4f}",
        "",
    ]
    for attr in ("sex", "race"):
        mf = metric_frame(
            y,
            decisions,
            sensitive_features={attr: test.columns[attr]},
            metrics=("count", "selection_rate", "true_positive_rate"),
        )
        lines += [f"| {attr} | rows | selection rate | true positive rate |", "|---|---|---|---|"]
        for group, row in mf.by_group.items():
            lines.append(
                f"| {group} | {int(row['count'])} | {row['selection_rate']:.4f} | {row['true_positive_rate']:.4f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    train, test = load_adult("train"), load_adult("test")
    OUT.mkdir(exist_ok=True)
    mlp_path = save_model(train_torch(train), OUT / "adult_mlp.onnx")
    skl_path = save_model(train_sklearn(train), OUT / "adult_sklearn.onnx")
    doc = [
        "# Reference models",
        "",
        "Trained by `tools/train_reference_models.py` on the bundled UCI Adult data "
        "(Becker and Kohavi 1996, CC BY 4.0). Both take the 14 raw Adult columns by name "
        "(numbers as float, categories as strings) and output P(income > 50K). They exist "
        "to demonstrate and test edgefair; they are not fair or production models.",
        "",
        card(
            "adult_mlp.onnx",
            mlp_path,
            test,
            "PyTorch MLP (two hidden layers of 256, ReLU, softmax) exported with the legacy "
            "exporter, behind a skl2onnx graph of the same StandardScaler + OneHotEncoder "
            "preprocessing.",
        ),
        card(
            "adult_sklearn.onnx",
            skl_path,
            test,
            "scikit-learn Pipeline(ColumnTransformer(StandardScaler, OneHotEncoder), "
            "MLPClassifier(64)) exported by skl2onnx with zipmap=False.",
        ),
    ]
    (OUT / "README.md").write_text("\n".join(doc))
    print((OUT / "README.md").read_text())


if __name__ == "__main__":
    main()
