"""``bundle``, ``counters`` and ``serve``: parse, one library call, format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgefair.cli.common import AsJsonOpt, PolicyOpt, SensOpt, emit_json, split_columns
from edgefair.report.text import fmt, format_table

bundle_app = typer.Typer(no_args_is_help=True, help="Deployable, hash-checked bundles.")
counters_app = typer.Typer(no_args_is_help=True, help="On-device fairness counters.")


@bundle_app.command("build")
def bundle_build(
    model: Annotated[Path, typer.Argument(help="The ONNX model to deploy.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Bundle directory to write.")],
    certificate: Annotated[Path | None, typer.Option(help="verify --json report of this model.")] = None,
    sensitive: SensOpt = None,
    threshold: Annotated[float | None, typer.Option(help="Decision threshold.")] = None,
    allow_failed_certificate: Annotated[
        bool, typer.Option(help="Bundle a model whose certificate did not pass (recorded in the manifest).")
    ] = False,
    sign_key: Annotated[
        Path | None, typer.Option(help="EC private key (PEM): sign the bundle (OpenSSF model-signing format).")
    ] = None,
) -> None:
    """Build a bundle: the model, its manifest (hashes of every file) and its certificate."""
    from edgefair.bundling import build_bundle
    from edgefair.files import refuse_missing_folders
    from edgefair.runtime.bundle import MANIFEST

    refuse_missing_folders([output])
    path = build_bundle(
        model,
        output,
        certificate=certificate,
        sensitive=split_columns(sensitive) or None,
        threshold=threshold,
        allow_failed_certificate=allow_failed_certificate,
        sign_key=sign_key,
    )
    note = "" if certificate else " (no certificate: drift has no baseline)"
    manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))  # just written: no second hash check
    if certificate and (manifest["certificate"] or {}).get("compared_with_itself"):
        note += " (the certificate verifies the model against itself: a drift baseline, not a fairness check)"
    note += "; signed" if sign_key else ""
    typer.echo(f"wrote bundle {path}{note}")
    from edgefair.runtime.coding import OTHER

    for attribute, values in manifest["sensitive"].items():
        if OTHER in values:  # said, not refused: a data set's own 'other' often means the same
            typer.echo(
                f"note: {attribute}'s value {OTHER!r} is also where the runtime counts values the certificate "
                f"never saw: field counts under {attribute}={OTHER} include them"
            )


@bundle_app.command("check")
def bundle_check(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or zip.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    trust_key: Annotated[
        Path | None, typer.Option(help="EC public key (PEM): also require a signature by this key.")
    ] = None,
) -> None:
    """Check every file of a bundle against its manifest's SHA-256 (and its signature)."""
    from edgefair.runtime.bundle import load_bundle

    loaded = load_bundle(bundle, trust_key=trust_key)
    if as_json:
        emit_json(loaded.manifest)
        return
    verdict = loaded.certificate_verdict
    typer.echo(
        f"{'ok' if verdict in (None, 'pass') else 'NOT CERTIFIED'}: {bundle}: {len(loaded.manifest['files'])} "
        f"files match their SHA-256; sensitive {', '.join(loaded.sensitive)}; certificate: "
        + (f"verdict {verdict}" if verdict else "no certificate, so drift has no baseline and nothing was verified")
        + (
            " (the model verified against itself: a drift baseline, no evidence that compression kept fairness)"
            if (loaded.manifest.get("certificate") or {}).get("compared_with_itself")
            else ""
        )
        + (f"; signed by key {loaded.signature.key_sha256[:12]}" if loaded.signature else "")
    )
    batch = ((loaded.certificate or {}).get("summary") or {}).get("batch_note")
    if batch:  # dynamic int8: the verdict holds for the batch size it was verified at
        typer.echo(f"note: batch size: {batch}")
    if verdict not in (None, "pass"):
        raise typer.Exit(1)  # the files are intact, but what they certify is not a pass


@counters_app.command("show")
def counters_show(
    source: Annotated[Path, typer.Argument(help="Counters store (SQLite) or table JSON.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (exact counts, stays local).")] = False,
) -> None:
    """Show counters as per-group metrics."""
    from edgefair.core.frame import MetricFrame, group_name
    from edgefair.runtime.store import load_counters

    table = load_counters(source)
    if as_json:
        emit_json(table.to_dict())
        return
    labelled = int(table.counts[:, :2].sum())
    typer.echo(f"{table.rows:,} predictions, {labelled:,} with outcomes, over {', '.join(table.attributes)}")
    shown = ("count", "selection_rate", "true_positive_rate", "accuracy")
    for attr in table.attributes:
        frame = MetricFrame(table.marginal([attr]), shown)
        rows = [
            [group_name((attr,), (g,) if isinstance(g, str) else g), str(int(v["count"]))]
            + [fmt(v[m]) for m in shown[1:]]
            for g, v in frame.by_group.items()
        ]
        typer.echo(format_table(rows, [attr, "count", "sel", "tpr", "acc"]))


@counters_app.command("merge")
def counters_merge(
    sources: Annotated[
        list[Path], typer.Argument(help="Exports (JSON) or stores, or folders of *.json exports; one kind at a time.")
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Merged table JSON (a fleet table for private exports).")
    ],
) -> None:
    """Add counters from many devices, one file at a time: exact tables and stores add up exactly;
    private exports add up into a fleet table with each cell's noise variance and suppressed rows."""
    from edgefair.files import refuse_missing_folders, refuse_overwriting_inputs, write_text
    from edgefair.runtime.fleet_merge import merge_files

    refuse_overwriting_inputs([output], sources)
    refuse_missing_folders([output])
    merged = merge_files(sources)
    write_text(output, merged.to_json() + "\n")
    for line in merged.summary_lines(str(output)):
        typer.echo(line)


@counters_app.command("export")
def counters_export(
    store: Annotated[Path, typer.Argument(help="Counters store (SQLite).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Export JSON.")],
    min_cell: Annotated[int, typer.Option(help="Suppress cells under this count.")] = 11,
    epsilon: Annotated[float | None, typer.Option(help="Add discrete Laplace noise at this epsilon.")] = None,
    budget: Annotated[
        float | None,
        typer.Option(help="Set the store's privacy budget (total epsilon; the first time, later only lowered)."),
    ] = None,
    raw: Annotated[bool, typer.Option(help="Exact counts (no suppression): the owner's choice.")] = False,
) -> None:
    """Export counters for upload: small cells suppressed, optional noise, ledger kept."""
    from edgefair.files import refuse_missing_folders
    from edgefair.runtime.privacy import write_private_export

    refuse_missing_folders([output])
    done = write_private_export(store, output, min_cell=min_cell, epsilon=epsilon, budget=budget, raw=raw)
    if done.raw:
        typer.echo(f"wrote exact counts to {output} (raw: no suppression, no noise)")
        return
    if done.epsilon_spent is not None:
        typer.echo(
            f"privacy ledger: {done.epsilon_spent:.4g} epsilon spent"
            + (f" of {done.budget:.4g}" if done.budget is not None else "")
        )
    typer.echo(
        f"wrote {output}: cells under {min_cell} suppressed"
        + (f", discrete Laplace noise at epsilon {epsilon}" if epsilon else "")
    )


@counters_app.command("drift")
def counters_drift(
    store: Annotated[Path, typer.Argument(help="Counters store or table JSON.")],
    bundle_dir: Annotated[Path, typer.Option("--bundle", help="Bundle with a certificate.")],
    as_json: AsJsonOpt = False,
) -> None:
    """Field counters against the verified baseline: exit 0 pass, 1 drift found, 3 inconclusive."""
    from edgefair.runtime.drift import drift_against_bundle
    from edgefair.runtime.store import load_counters

    result = drift_against_bundle(load_counters(store), bundle_dir)
    if as_json:
        emit_json(result)
    else:
        typer.echo(
            f"drift verdict: {result['verdict'].upper()} ({result['field_rows']:,} field rows vs "
            f"{result['baseline_rows']:,} baseline rows)"
        )
        for r in result["rows"]:
            if r["verdict"] != "pass":
                detail = r.get("note") or f"interval {r['interval']}"
                typer.echo(f"  {r['verdict']:12s} {r['metric']:20s} {r['group']}: {detail}")
    raise typer.Exit({"pass": 0, "fail": 1}.get(result["verdict"], 3))  # no evidence is not a pass


@counters_app.command("gate")
def counters_gate(
    source: Annotated[Path, typer.Argument(help="A paired field table (JSON), e.g. a shadow's.")],
    policy: PolicyOpt = None,
    as_json: AsJsonOpt = False,
) -> None:
    """The verify gate on a shadow's paired field table: exit 0 pass, 1 fail, 3 inconclusive."""
    from edgefair.errors import InputError
    from edgefair.runtime.store import load_counters
    from edgefair.verification.gate import gate
    from edgefair.verification.policy import load_policy

    table = load_counters(source)
    if not table.paired:
        raise InputError(f"{source}: not a paired table (reference and candidate decisions); a shadow's table is")
    result = gate(table, load_policy(policy))
    if as_json:
        checks = [r.to_dict() for r in result.results]
        emit_json({"verdict": result.verdict, "confidence": result.confidence, "checks": checks})
    else:
        labelled = int(table.counts[:, :2].sum())
        counts = result.counts()
        typer.echo(
            f"field gate: {result.verdict.upper()} on {table.rows:,} rows ({labelled:,} labelled); "
            f"{counts['pass']} pass, {counts['fail']} fail, {counts['inconclusive']} inconclusive"
        )
        for r in result.failures():
            low, high = r.interval
            typer.echo(
                f"  FAIL {r.check.name} in {r.group or r.scope}: {r.estimate:+.4f} [{low:+.4f}, {high:+.4f}] "
                f"> {r.check.tolerance} ({r.rows:,} rows)"
            )
    raise typer.Exit({"pass": 0, "fail": 1}.get(result.verdict, 3))


def serve(
    bundle_dir: Annotated[
        Path, typer.Argument(help="Bundle directory or zip, or a model repository (REPO/<model>/<version>/).")
    ],
    host: Annotated[str, typer.Option(help="Address to bind (default loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8000,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads.")] = 1,
    store: Annotated[
        Path | None, typer.Option(help="SQLite counters store (a repository: a folder, one store per version).")
    ] = None,
    token_file: Annotated[Path | None, typer.Option(help="File with the bearer token for admin endpoints.")] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted.")] = 8 * 1024 * 1024,
    require_sensitive: Annotated[bool, typer.Option(help="Reject requests without sensitive inputs.")] = False,
    name: Annotated[str | None, typer.Option(help="Model name in URLs (default: bundle folder name).")] = None,
    min_cell: Annotated[int, typer.Option(help="Withhold groups and cells under this many rows.")] = 11,
    max_elements: Annotated[int, typer.Option(help="Largest tensor (elements) a request may declare.")] = 1_000_000,
    max_connections: Annotated[int, typer.Option(help="Connections served at once (more get 503).")] = 64,
    trust_key: Annotated[Path | None, typer.Option(help="EC public key (PEM): serve only a bundle it signed.")] = None,
    allow_failed_certificate: Annotated[
        bool, typer.Option(help="Serve a bundle whose certificate did not pass.")
    ] = False,
    no_auth: Annotated[
        bool, typer.Option(help="Bind a non-loopback address without --token-file (prints a warning).")
    ] = False,
    incidents: Annotated[
        Path | None, typer.Option(help="Repository: SQLite file where failed field checks are recorded.")
    ] = None,
    alert_only: Annotated[
        bool, typer.Option(help="Repository: record failed field checks but never switch traffic back.")
    ] = False,
) -> None:
    """Serve a bundle or a model repository over the Open Inference Protocol (KServe v2 REST), with counters."""
    from edgefair.serve.app import ServeConfig, read_token
    from edgefair.serve.server import serve as run_server

    config = ServeConfig(
        host=host,
        port=port,
        threads=threads,
        store=str(store) if store else None,
        token=read_token(token_file) if token_file is not None else None,
        max_body_bytes=max_body_bytes,
        require_sensitive=require_sensitive,
        model_name=name,
        min_cell=min_cell,
        max_elements=max_elements,
        max_connections=max_connections,
        trust_key=str(trust_key) if trust_key else None,
        allow_failed_certificate=allow_failed_certificate,
        no_auth=no_auth,
        incidents=str(incidents) if incidents else None,
        rollback=not alert_only,
    )
    run_server(bundle_dir, config, typer.echo)


def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's models and reports.")] = Path(
        "edgefair-demo"
    ),
) -> None:
    """The whole story on the bundled Adult data and reference models."""
    from edgefair.demo import run_demo

    run_demo(out, typer.echo)
