"""``dukd data``: the data sets dukd can fetch (benchmarks, DIV2K), where they are, and fetching them."""

from __future__ import annotations

import json
import os

import typer
from rich.markup import escape
from rich.table import Table

from dukd_cli.commands._common import console
from dukd_cli.errors import DukdError

app = typer.Typer(
    help="List and fetch benchmark sets and training data (pinned Hub copies).", no_args_is_help=True
)


def data_rows(data_dir: str | os.PathLike[str] | None = None) -> list[dict]:
    """One row per catalog entry: what it is, where it is found (or not), and where it comes from."""
    from dukd_cli.data import catalog
    from dukd_cli.data.benchmarks import find_set
    from dukd_cli.data.fetch import is_present

    rows = []
    for e in catalog.ENTRIES:
        where = None
        if e.kind == "bench":
            try:
                where = str(find_set(e.name, data_dir).root)
            except DukdError:
                where = None
        elif is_present(e):
            where = str(catalog.target_dir(e))
        rows.append(
            {
                "name": e.name,
                "kind": e.kind,
                "images": e.images,
                "scales": list(e.scales),
                "found": where,
                "download_size": e.size_label() if e.source else None,
                "source": e.source,
                "revision": e.revision,
                "sha256": e.sha256,
                "notes": e.notes,
            }
        )
    return rows


@app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """List the data sets: images, scales, where each is found (or not), download size and pinned source."""
    rows = data_rows()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not console.is_terminal:  # a pipe: whole values, one line per set, tab-separated
        print("name\tkind\timages\tfound\tsize\tsource\tsha256")
        for r in rows:
            print(
                "\t".join(
                    [r["name"], r["kind"], str(r["images"]), r["found"] or "-", r["download_size"] or "-",
                     r["source"] or f"none ({r['notes']})", r["sha256"] or "not pinned"]
                )
            )  # fmt: skip
        return
    table = Table(title="dukd data (fetch with 'dukd data fetch NAME')", title_justify="left")
    for col in ("name", "images", "scales", "found", "download", "source (pinned revision)", "SHA-256"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["name"],
            str(r["images"]),
            ",".join(f"x{s}" for s in r["scales"]),
            r["found"] or "[dim]not found[/]",
            r["download_size"] or "-",
            r["source"] or f"[yellow]none[/]: {r['notes']}",
            (r["sha256"][:12] + "...") if r["sha256"] else "[yellow]not pinned[/]",
        )
    console.print(table)


@app.command("fetch")
def fetch_cmd(
    names: list[str] = typer.Argument(
        ..., help="Data sets: set5 set14 bsd100 urban100 div2k-valid div2k (see 'dukd data list')."
    ),
    source: str = typer.Option(
        None,
        "--source",
        help="Take the (one) named set from here instead: hf://datasets/OWNER/REPO/FILE@REV, https://..., "
        "or a local archive or folder; same layouts as the pinned archive.",
    ),
    force: bool = typer.Option(False, "--force", help="Fetch again even when the set is already there."),
    max_extract_bytes: str = typer.Option(
        None,
        "--max-extract-bytes",
        metavar="SIZE",
        help="Stop extracting past this many bytes (e.g. 500M, 8G). Default: from the catalogue's archive "
        "size for its pinned source; 100x the archive or 4G, whichever is smaller, for --source "
        "(env DUKD_MAX_EXTRACT_BYTES).",
    ),
    no_wait: bool = typer.Option(
        False, "--no-wait", help="Fail at once when another process is fetching the set, instead of waiting."
    ),
) -> None:
    """Fetch data sets into the cache (~/.cache/dukd/...), checked and extracted atomically."""
    from dukd_cli.data.extract import parse_size
    from dukd_cli.data.fetch import fetch
    from dukd_cli.sources.errors import SourceError

    if source and len(names) != 1:
        raise DukdError("--source names where one set comes from; give exactly one NAME with it")
    limit = parse_size(max_extract_bytes) if max_extract_bytes is not None else None
    for n in names:
        try:
            got = fetch(
                n,
                source,
                force=force,
                on_status=lambda m: console.print(f"[dim]{escape(m)}[/]"),
                max_extract_bytes=limit,
                wait=not no_wait,
            )
        except SourceError as exc:
            if not exc.unreachable or source:
                raise
            raise DukdError(
                f"{exc}; or take it from a copy you have: 'dukd data fetch {n} --source ARCHIVE_OR_FOLDER'"
            ) from None
        if got.already:
            console.print(f"{got.name}: already at {got.path} (--force fetches it again)")
        else:
            console.print(f"[green]{got.name}[/]: {got.path}")
