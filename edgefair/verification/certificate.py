"""A verify report used as a certificate is re-gated, not believed.

A bundle carries the verdict edgefair computes from the report's own counts table and
policy, never the word the file states: editing ``"verdict": "fail"`` to ``"pass"`` (or a
check's status, or deleting checks) is caught here. A report that compares a model with
itself is told apart (``compared_with_itself``): bundles carry it as a drift baseline and
say that it is no evidence of kept fairness. What re-gating cannot catch is a forged
table; that is what signing the report where it was made is for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from edgefair.core import tables
from edgefair.errors import BundleError, EdgefairError
from edgefair.verification.gate_kinds import gate  # every check kind, as verify gates them
from edgefair.verification.policy import policy_from_dict


def _stated(checks: Any, where: str) -> Counter[tuple[Any, ...]]:
    if not isinstance(checks, list):
        raise BundleError(f"{where}: certificate field 'checks' is missing or not a list")
    out: Counter[tuple[Any, ...]] = Counter()
    for c in checks:
        if not isinstance(c, dict):
            raise BundleError(f"{where}: a certificate check is not an object")
        out[
            _key(
                c.get("check"), c.get("scope"), c.get("group"), c.get("verdict"), c.get("tolerance"), c.get("estimate")
            )
        ] += 1
    return out


def _key(check: Any, scope: Any, group: Any, verdict: Any, tolerance: Any, estimate: Any) -> tuple[Any, ...]:
    """What a check result must agree on: its verdict, tolerance and estimate (to 9 places, so
    the JSON round trip of a float never counts as an edit)."""
    num = [round(float(v), 9) if isinstance(v, (int, float)) and v == v else None for v in (tolerance, estimate)]
    return (check, scope, group, verdict, *num)


def compared_with_itself(cert: Mapping[str, Any]) -> bool:
    """True when the report's reference and candidate are the same model (same SHA-256): its
    table is a baseline for drift, and its checks show nothing about kept fairness."""
    sha = [side.get("sha256") if isinstance(side := cert.get(k), dict) else None for k in ("reference", "candidate")]
    return sha[0] is not None and sha[0] == sha[1]


def recheck(cert: Mapping[str, Any], where: str) -> str:
    """The verdict of ``cert`` (a parsed ``edgefair verify --json`` report) recomputed from its
    table and policy; BundleError if the report states another verdict or other checks, or if
    it has no checks."""
    try:
        policy = policy_from_dict(cert.get("policy") or {}, f"{where}: policy")
        table = tables.from_dict(cert["table"])
        result = gate(table, policy)
    except (EdgefairError, KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{where}: the certificate cannot be re-gated from its own table and policy: {exc}") from None
    if not result.results:
        raise BundleError(f"{where}: the certificate's policy has no checks: it certifies nothing")
    recomputed = Counter(
        _key(r.check.name, r.scope, r.group, r.verdict, r.check.tolerance, r.estimate) for r in result.results
    )
    stated_verdict, stated = cert.get("verdict"), _stated(cert.get("checks"), where)
    if stated_verdict != result.verdict or stated != recomputed:
        differ = sum((recomputed - stated).values())
        raise BundleError(
            f"{where}: the certificate states verdict {stated_verdict!r} with {sum(stated.values())} check results; "
            f"its own table and policy give {result.verdict!r} with {len(result.results)} ({differ} not in the "
            "file): it was changed after verify wrote it; verify again"
        )
    return result.verdict
