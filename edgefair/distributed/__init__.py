"""Verify on a Dask cluster: the same tables, gate and report as ``edgefair.verify``, with
the rows scored on the workers (one onnxruntime session per model per worker process).

    from edgefair import distributed
    with distributed.connect("local:4") as client:          # or "tcp://scheduler:8786"
        result = distributed.verify("ref.onnx", "int8.onnx", "data/*.parquet", client=client,
                                    label="y", sensitive=["sex", "race"])

``data`` is a Parquet file, directory or glob, or a dask DataFrame. Needs
``pip install 'edgefair[dask]'`` (dask.distributed and pyarrow); imported only when used.
"""

from edgefair.distributed.api import compare, verify
from edgefair.distributed.cluster import connect
from edgefair.verification.evaluate import needed_columns

__all__ = ["compare", "connect", "needed_columns", "verify"]
