"""``dukd zoo``: what architectures and presets are installed, and what they are."""

from __future__ import annotations

import fnmatch
import json
import warnings

import typer
from rich.table import Table

from dukd_cli import registry
from dukd_cli.commands._common import console, model_args
from dukd_cli.models import describe

app = typer.Typer(help="List and inspect the installed architectures and presets.", no_args_is_help=True)


def _matches(name: str, pattern: str | None) -> bool:
    if not pattern:
        return True
    p = pattern.lower()
    if any(c in p for c in "*?["):
        return fnmatch.fnmatchcase(name.lower(), p)
    return p in name.lower()


def zoo_rows(pattern: str | None = None, scale: int = 4) -> list[dict]:
    """One row per installed preset and architecture (the data behind ``dukd zoo list``)."""
    from dukd_cli.paramcache import ParamCache

    cache = ParamCache()  # counting builds each network: seconds for the whole zoo, so it is cached
    rows = []
    for name, (entry, preset) in sorted(registry.presets().items()):
        if not _matches(name, pattern):
            continue
        s = scale if scale in preset.scales else preset.scales[-1]
        try:
            params = cache.params(preset.arch, s, preset.kwargs)
        except Exception as exc:  # a broken plugin must not hide the rest
            params = None
            warnings.warn(f"cannot count parameters of preset '{name}': {exc}", registry.PluginWarning, stacklevel=2)
        rows.append(
            {
                "name": name,
                "kind": "preset",
                "provider": entry.provider,
                "architecture": preset.arch,
                "scales": list(preset.scales),
                "params": params,
                "params_scale": s,
                "weights": sorted(preset.weights),
            }
        )
    for name, (entry, _factory) in sorted(registry.architectures().items()):
        if not _matches(name, pattern):
            continue
        scales = cache.scales(name)
        s = scale if scale in scales else (scales[-1] if scales else scale)
        try:
            params = cache.params(name, s, {})
        except Exception:
            params = None
        rows.append(
            {
                "name": name,
                "kind": "architecture",
                "provider": entry.provider,
                "architecture": name,
                "scales": list(scales),
                "params": params,
                "params_scale": s,
                "weights": [],
            }
        )
    cache.save()
    return rows


def format_params(n: int) -> str:
    """Millions with two decimals, as SR papers print them; tiny models as a plain count."""
    return f"{n / 1e6:.2f} M" if n >= 10_000 else f"{n:,}"


@app.command("list")
def list_(
    pattern: str = typer.Argument(None, help="Filter names: a substring, or a glob such as 'edsr*'."),
    scale: int = typer.Option(4, "--scale", "-s", help="Scale at which parameters are counted."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON instead of a table."),
) -> None:
    """List installed presets and architectures (from every plugin, the built-in zoo included)."""
    rows = zoo_rows(pattern, scale)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print(f"nothing matches '{pattern}'" if pattern else "no architectures or presets installed")
        raise typer.Exit(1)
    table = Table(title=f"dukd zoo (parameters at x{scale} unless marked)")
    table.add_column("name", style="bold cyan")
    table.add_column("kind")
    table.add_column("architecture")
    table.add_column("provider")
    table.add_column("scales")
    table.add_column("parameters", justify="right")
    table.add_column("pretrained")
    for r in rows:
        p = "?" if r["params"] is None else format_params(r["params"])
        if r["params"] is not None and r["params_scale"] != scale:
            p += f" (x{r['params_scale']})"
        table.add_row(
            r["name"],
            r["kind"],
            r["architecture"],
            r["provider"],
            ",".join(f"x{s}" for s in r["scales"]) or "?",
            p,
            ",".join(f"x{s}" for s in r["weights"]) or "-",
        )
    console.print(table)


@app.command("info")
def info(
    name: str = typer.Argument(..., help="A preset or architecture name."),
    scale: int = typer.Option(4, "--scale", "-s", help="Upscaling factor."),
    arg: list[str] = typer.Option(None, "--arg", "-a", help="Constructor argument override, key=value (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show an architecture or preset: constructor arguments, parameter count, weight sources."""
    data = describe(name, scale, model_args(arg))
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table(show_header=False, title=f"{name} (x{scale})", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("kind", data["kind"])
    table.add_row("architecture", f"{data['architecture']}  ({data['factory']}, from {data['architecture_provider']})")
    if data["kind"] == "preset":
        table.add_row("preset from", data["provider"])
        table.add_row("scales", ", ".join(f"x{s}" for s in data["scales"]))
    table.add_row("parameters", f"{data['params_m']}  ({data['params']:,})")
    table.add_row("arguments", "\n".join(f"{k} = {v!r}" for k, v in data["arguments"].items()) or "-")
    weights = data.get("weights") or {}
    if weights:
        lines = []
        for k, v in weights.items():
            if isinstance(v, dict):
                lines.append(f"{k}: {v['source']}" + ("" if v["verified"] else "  [unverified]"))
                if v.get("arguments"):
                    lines.append("    with " + ", ".join(f"{a}={b!r}" for a, b in v["arguments"].items()))
                if v.get("notes"):
                    lines.append(f"    {v['notes']}")
            else:
                lines.append(f"{k}: {v}")
        w = "\n".join(lines)
    else:
        w = "none declared (pass --weights)"
    table.add_row("weights", w)
    if data.get("description"):
        table.add_row("about", data["description"])
    if data.get("notes"):
        table.add_row("notes", data["notes"])
    console.print(table)
