"""``incidents`` (failed field checks and the rollbacks they caused) and ``card`` (a model card
from a bundle's certificate): parse, one library call, format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgefair.cli.common import AsJsonOpt, emit_json

incidents_app = typer.Typer(no_args_is_help=True, help="Failed field checks and the rollbacks they caused.")

StoreArg = Annotated[Path, typer.Argument(help="Incidents store (SQLite), as given to serve --incidents.")]


def _interval(row: dict[str, Any]) -> str:
    iv = row.get("interval")
    if not isinstance(iv, list) or len(iv) != 2 or not all(isinstance(v, (int, float)) for v in iv):
        return "[n/a]"
    return f"[{iv[0]:+.4f}, {iv[1]:+.4f}]"


def _estimate(row: dict[str, Any]) -> str:
    value = row.get("estimate")
    return f"{value:+.4f}" if isinstance(value, (int, float)) else "n/a"


@incidents_app.command("list")
def incidents_list(
    store: StoreArg,
    model: Annotated[str | None, typer.Option(help="Only this model's incidents.")] = None,
    as_json: AsJsonOpt = False,
) -> None:
    """Every recorded incident, oldest first."""
    from edgefair.runtime.incidents import IncidentStore

    db = IncidentStore(store, read_only=True)
    try:
        found = db.list(model)
    finally:
        db.close()
    if as_json:
        emit_json([{k: v for k, v in i.to_dict().items() if k != "table"} for i in found])
        return
    if not found:
        typer.echo(f"no incidents in {store}" + (f" for model {model}" if model else ""))
        return
    for i in found:
        first = i.failing[0] if i.failing else {}
        where = first.get("group") or first.get("scope") or "?"
        typer.echo(
            f"#{i.id} {i.at} {i.model}: {i.check} FAIL ({len(i.failing)} failing checks, first "
            f"{first.get('check', '?')} in {where} {_estimate(first)} {_interval(first)}); "
            f"{i.action.replace('_', ' ')} v{i.from_version} -> v{i.to_version} after {i.labelled_rows:,} labelled rows"
        )


@incidents_app.command("show")
def incidents_show(
    store: StoreArg,
    incident: Annotated[int, typer.Argument(help="Incident number (from incidents list).")],
    as_json: AsJsonOpt = False,
) -> None:
    """One incident whole: versions, each failing check with its estimate, interval and rows, the table."""
    from edgefair.runtime.incidents import IncidentStore

    db = IncidentStore(store, read_only=True)
    try:
        found = db.get(incident)
    finally:
        db.close()
    if as_json:
        emit_json(found.to_dict())
        return
    typer.echo(f"incident #{found.id} at {found.at}: model {found.model}, check {found.check} ({found.mode})")
    typer.echo(
        f"  versions: reference v{found.reference_version}, candidate v{found.candidate_version}; unversioned "
        f"traffic v{found.from_version} -> v{found.to_version} ({found.action.replace('_', ' ')})"
    )
    typer.echo(
        f"  look {found.look} of {found.max_looks} at confidence {found.level:.6f}, "
        f"{found.labelled_rows:,} labelled rows; table snapshot: {len(found.table.get('groups', []))} groups"
    )
    for row in found.failing:
        typer.echo(
            f"  FAIL {row.get('check')} in {row.get('group') or row.get('scope')}: {_estimate(row)} "
            f"{_interval(row)} > {row.get('tolerance')} ({row.get('rows')} rows)"
        )
    if found.note:
        typer.echo(f"  note: {found.note}")


def card(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or zip.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="card.md (Markdown) or card.html.")],
    about: Annotated[
        Path | None, typer.Option(help="TOML with your words: intended_use, limitations, authors, ...")
    ] = None,
    store: Annotated[Path | None, typer.Option(help="The bundle's counters store: adds Field Counters.")] = None,
    min_cell: Annotated[int, typer.Option(help="Withhold field rows of groups under this many rows.")] = 11,
) -> None:
    """A model card from the bundle's certificate (Hugging Face model card headings)."""
    from edgefair.errors import InputError
    from edgefair.files import refuse_missing_folders, refuse_overwriting_inputs, write_text
    from edgefair.report.card import build_card

    suffix = output.suffix.lower()
    if suffix not in (".md", ".html", ".htm"):
        raise InputError(f"{output}: the card's file name must end in .md or .html")
    refuse_overwriting_inputs([output], [bundle, *([about] if about else []), *([store] if store else [])])
    refuse_missing_folders([output])
    if min_cell < 2:
        raise InputError(f"--min-cell must be at least 2 (smaller shows exact counts), got {min_cell}")
    built = build_card(bundle, about, store, min_cell)
    write_text(output, built.to_markdown() if suffix == ".md" else built.to_html())
    typer.echo(f"wrote {output}: {built.title}, {len(built.sections)} sections")
