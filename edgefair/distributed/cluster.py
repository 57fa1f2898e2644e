"""``connect("local:N")`` or ``connect("tcp://host:8786")``: the Dask client ``--dask`` means."""

from __future__ import annotations

import logging
import re
from typing import Any

from edgefair.errors import InputError

INSTALL = "pip install 'edgefair[dask]'"


def dask_distributed() -> Any:
    """The ``distributed`` module, or a one-line InputError naming the extra to install."""
    try:
        import distributed
    except ImportError:
        raise InputError(f"running on Dask needs dask.distributed: {INSTALL}") from None
    return distributed


def connect(address: str, timeout: float = 10.0) -> Any:
    """A ``dask.distributed.Client``: ``local:N`` starts a LocalCluster of N worker processes
    (one thread each, every port on 127.0.0.1) that closes with the client; any other
    address is a running scheduler, which must answer within ``timeout`` seconds.

    Use it as a context manager (``with connect("local:2") as client: ...``) or close it."""
    distributed = dask_distributed()
    local = re.fullmatch(r"local:(\d+)", address.strip())
    if local:
        n = int(local.group(1))
        if not 1 <= n <= 256:
            raise InputError(f"--dask {address}: the number of local workers must be 1 to 256")
        return distributed.Client(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # the HTTP routes always start: keep them on loopback
            timeout=timeout,
            set_as_default=False,
            # a task's EdgefairError comes back to the client as one line; the workers must not
            # log it, with its traceback, to the user's terminal first
            silence_logs=logging.CRITICAL,
        )
    if not re.fullmatch(r"(tcp|tls|ws|wss|inproc)://\S+", address.strip()):
        raise InputError(f"--dask {address}: expected local:N or a scheduler address such as tcp://host:8786")
    try:
        return distributed.Client(address.strip(), timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{address}: no Dask scheduler answered within {timeout:g} s ({first})") from None
