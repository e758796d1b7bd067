"""``dukd zoo``: what architectures and presets are installed, and what they are."""

from __future__ import annotations

import fnmatch
import json
import warnings

import typer
from rich.table import Table

from dukd_cli import registry
from dukd_cli.commands._common import console, model_args
from dukd_cli.commands._options import Arg, Device, Scale

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
    from dukd_cli.models.paramcache import ParamCache

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
            warnings.warn(
                f"cannot count parameters of preset '{name}': {exc}", registry.PluginWarning, stacklevel=2
            )
        rows.append(
            {
                "name": name,
                "kind": "preset",
                "provider": entry.provider,
                "architecture": preset.arch,
                "scales": list(preset.scales),
                "params": params,
                "params_scale": s,
                # scales whose weights can be fetched (a declared file with no source known is not)
                "weights": sorted(s for s, w in preset.weights.items() if registry.source_of(w).sources),
            }
        )
    for name in registry.names(registry.ARCH_GROUP):  # loaded only when the cache cannot answer
        if not _matches(name, pattern):
            continue
        entry = registry.entry(registry.ARCH_GROUP, name)
        try:
            scales = cache.scales(name)
        except registry.UnknownModelError:  # failed to load: named in a warning, left out
            continue
        s = scale if scale in scales else (scales[-1] if scales else scale)
        params = None
        if scales:  # one that builds at no scale by itself (spandrel: from a file) has no count
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
    if not console.is_terminal:  # a pipe: whole names, one line each (rich would cut them at 80 columns)
        _print_plain(rows, scale)
        return
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


def _print_plain(rows: list[dict], scale: int) -> None:
    print("name\tkind\tarchitecture\tprovider\tscales\tparameters\tpretrained")
    for r in rows:
        p = "?" if r["params"] is None else format_params(r["params"])
        if r["params"] is not None and r["params_scale"] != scale:
            p += f" (x{r['params_scale']})"
        scales = ",".join(f"x{s}" for s in r["scales"]) or "?"
        pre = ",".join(f"x{s}" for s in r["weights"]) or "-"
        print("\t".join([r["name"], r["kind"], r["architecture"], r["provider"], scales, p, pre]))


@app.command("verify")
def verify_cmd(
    name: str = typer.Argument(
        ..., help="A preset with declared weights and published numbers (e.g. swinir-l)."
    ),
    scale: Scale("Upscaling factor.") = ...,
    weights: str = typer.Option(
        None, "--weights", "-w", help="Check this file instead of the declared source."
    ),
    data_dir: str = typer.Option(
        None, "--data-dir", "-d", help="Folder holding <set>/HR/ (else $DUKD_DATA, the cache)."
    ),
    tolerance: float = typer.Option(0.05, "--tolerance", help="Largest PSNR difference (dB) that passes."),
    max_images: int = typer.Option(
        None, "--max-images", help="Only the first N images of each set (a smoke test, not a check)."
    ),
    device: Device = "auto",
    no_download: bool = typer.Option(False, "--no-download", help="Never fetch a missing benchmark set."),
) -> None:
    """Fetch a preset's weights and evaluate them against the numbers their authors published."""
    from dukd_cli.commands._common import err_console
    from dukd_cli.evaluate.verify import published_for, verify
    from dukd_cli.models import options

    options.use(options.VERIFY)  # help names this command's options

    published, by = published_for(name, scale)
    rows = verify(
        name, scale, weights=weights, published=published, data_dir=data_dir, download=not no_download,
        tolerance=tolerance, max_images=max_images, device=device,
        on_status=lambda m: err_console.print(f"[dim]{m}[/]", highlight=False),
    )  # fmt: skip
    table = Table(title=f"{name} x{scale} against its published numbers ({by})", title_justify="left")
    for col in ("set", "images", "published PSNR / SSIM", "measured PSNR / SSIM", "diff (dB)", ""):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.bench, str(r.n_images), f"{r.published_psnr:.2f} / {r.published_ssim:.4f}",
            f"{r.psnr:.2f} / {r.ssim:.4f}", f"{r.diff:+.2f}", "[green]ok[/]" if r.ok else "[red]off[/]",
        )  # fmt: skip
    console.print(table)
    if max_images is not None:
        console.print("[yellow]--max-images: a partial run; the published numbers are over whole sets[/]")
        return
    bad = [r.bench for r in rows if not r.ok]
    if bad:
        console.print(f"[red]not verified:[/] {', '.join(bad)} differ by more than {tolerance} dB")
        raise typer.Exit(1)
    console.print(f"[green]verified:[/] every set within {tolerance} dB of the published PSNR")


@app.command("info")
def info(
    name: str = typer.Argument(..., help="A preset, an architecture, or a checkpoint file (what it is)."),
    scale: Scale("Upscaling factor (default 4; a file's own).") = None,
    arg: Arg = None,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show an architecture or preset: constructor arguments, parameter count, weight sources."""
    from dukd_cli.models.checkpoint import is_checkpoint_source
    from dukd_cli.models.factory import describe

    scale_given = scale is not None
    if scale is None and not is_checkpoint_source(name):
        scale = 4
    data = describe(name, scale, model_args(arg))
    if scale_given and data["kind"] == "preset":  # --scale S: the weights of that scale only
        data["weights"] = {k: v for k, v in data["weights"].items() if k == f"x{data['scale']}"}
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table(show_header=False, title=f"{name} (x{data['scale']})", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("kind", data["kind"])
    table.add_row(
        "architecture", f"{data['architecture']}  ({data['factory']}, from {data['architecture_provider']})"
    )
    if data["kind"] == "preset":
        table.add_row("preset from", data["provider"])
        table.add_row("scales", ", ".join(f"x{s}" for s in data["scales"]))
    table.add_row("parameters", f"{data['params_m']}  ({data['params']:,})")
    if data.get("detected"):
        table.add_row("detected", detected_lines(data["detected"]))
    table.add_row("arguments", "\n".join(f"{k} = {v!r}" for k, v in data["arguments"].items()) or "-")
    weights = data.get("weights") or {}
    if weights:
        lines = []
        for k, v in weights.items():
            if isinstance(v, dict):
                shown = v["source"] or "(no download source known)"
                lines.append(f"{k}: {shown}" + ("" if v["verified"] else "  [unverified]"))
                lines.extend(f"    {line}" for line in _file_lines(v))
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


def detected_lines(d: dict) -> str:
    """What ``dukd zoo info FILE`` says was detected (zoo family or spandrel)."""
    lines = [f"{d.get('label')}  (by {'the dukd zoo' if d.get('source') == 'zoo' else 'spandrel'})"]
    if d.get("presets"):
        lines.append("same shape as preset(s): " + ", ".join(d["presets"]))
    for k, v in (d.get("assumed") or {}).items():
        lines.append(f"{k} = {v!r} assumed (shapes cannot tell)")
    if d.get("source") == "spandrel":
        req = d.get("size_requirements") or {}
        lines.append(f"purpose {d.get('purpose')}, {d.get('input_channels')} input channels")
        lines.append(
            f"input size: multiple of {req.get('multiple_of', 1)}, at least {req.get('minimum', 0)}"
            + (", square" if req.get("square") else "")
            + " (padded to it)"
        )
    return "\n".join(lines)


def _file_lines(v: dict) -> list[str]:
    """The file behind a declared source: its name, SHA-256, further sources, published numbers, alternatives."""
    out = []
    if v.get("filename"):
        out.append(
            f"file {v['filename']}"
            + (f", SHA-256 {v['sha256']}" if v.get("sha256") else ", no SHA-256 published")
        )
    out.extend(f"then {m}" for m in v.get("mirrors", []))
    if v.get("published"):
        nums = ", ".join(f"{b} {p:.2f}/{q:.4f}" for b, (p, q) in v["published"].items())
        out.append(f"published: {nums} ({v.get('published_by', '?')})")
    for a in v.get("alternatives", []):
        out.append(f"alternative (not the paper's file): {a['source']}: {a.get('notes', '')}")
    return out
