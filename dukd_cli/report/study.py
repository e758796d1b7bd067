"""A ``dukd study`` folder on the report page: its finished cells as the runs, and its table
(``study-table.json``: mean ± std over seeds per method and set, the paired DUKD - KD difference)
as a section. Every number is written by :func:`dukd_cli.report.html.num` from the report JSON's
``study`` entry, which is the study's own table, unchanged."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dukd_cli.errors import DukdError
from dukd_cli.report.fmt import esc, num


def expand(paths: list[str | os.PathLike]) -> tuple[list[Path], dict[Path, str], dict[str, Any] | None]:
    """Replace a study folder by its finished cells' run directories: (run dirs, labels, table).

    A study folder must be given alone (its table is the page's); other paths pass unchanged."""
    from dukd_cli.study.grid import is_finished, is_study_dir, load_plan
    from dukd_cli.study.runner import TABLE_JSON

    studies = [p for p in paths if is_study_dir(p)]
    if not studies:
        return [Path(p) for p in paths], {}, None
    if len(paths) != 1:
        raise DukdError("a study folder is reported alone: dukd report STUDY_DIR")
    root = Path(studies[0])
    plan = load_plan(root)
    cells = [c for c in plan.cells() if is_finished(plan, c, root)]
    if not cells:
        raise DukdError(f"the study in {root} has no finished cell yet; run 'dukd study {root}' first")
    try:
        table = json.loads((root / TABLE_JSON).read_text())
    except (OSError, ValueError) as exc:
        raise DukdError(
            f"cannot read {root / TABLE_JSON}: {exc}; run 'dukd study {root}' to rewrite it"
        ) from None
    dirs = [c.run_dir(root) for c in cells]
    return dirs, {d: c.key for d, c in zip(dirs, cells, strict=True)}, table


def section(table: dict[str, Any]) -> str:
    """The study's table and paired differences as HTML (numbers from the JSON path ``study``)."""
    benches = table["benches"]
    head = "".join(f"<th class='n'>{esc(b)}</th>" for b in benches)
    out = [
        f"<p>{esc(table.get('what') or '')} PSNR (dB) / SSIM on Y, mean ± standard deviation (n - 1) over "
        f"seeds {esc(', '.join(map(str, table['seeds'])))}; the study's own evaluation of every cell.</p>",
        f"<table><tr><th>student</th><th>method</th><th class='n'>seeds</th>{head}</tr>",
    ]
    for i, r in enumerate(table["rows"]):
        cells = []
        for b in benches:
            c = r["cells"].get(b)
            if c is None:
                cells.append("<td class='n'><span class='na'>-</span></td>")
                continue
            p = f"study.rows.{i}.cells.{b}"
            psd = f" ± {num(c['psnr_std'], 2, p + '.psnr_std')}" if c["psnr_std"] is not None else ""
            ssd = f" ± {num(c['ssim_std'], 4, p + '.ssim_std')}" if c["ssim_std"] is not None else ""
            cells.append(
                f"<td class='n'>{num(c['psnr_mean'], 2, p + '.psnr_mean')}{psd} / "
                f"{num(c['ssim_mean'], 4, p + '.ssim_mean')}{ssd}</td>"
            )
        out.append(
            f"<tr><td>{esc(r['student'])}</td><td>{esc(r['method'])}</td><td class='n'>{r['n']}</td>"
            + "".join(cells)
            + "</tr>"
        )
    out.append("</table>")
    if table.get("paired"):
        out.append("<h3>Paired difference per seed (PSNR dB)</h3>")
        out.append(f"<table><tr><th>student</th><th>difference</th><th>seed</th>{head}</tr>")
        for i, p in enumerate(table["paired"]):
            what = f"{p['method']} - {p['minus']}"
            for seed, diffs in p["per_seed"].items():
                vals = "".join(
                    f"<td class='n'>{num(diffs.get(b), 2, f'study.paired.{i}.per_seed.{seed}.{b}')}</td>"
                    for b in benches
                )
                out.append(
                    f"<tr><td>{esc(p['student'])}</td><td>{esc(what)}</td><td>{esc(seed)}</td>{vals}</tr>"
                )
            vals = "".join(
                f"<td class='n'>{num(p['mean'].get(b), 2, f'study.paired.{i}.mean.{b}')}</td>"
                for b in benches
            )
            out.append(f"<tr><td>{esc(p['student'])}</td><td>{esc(what)}</td><td>mean</td>{vals}</tr>")
        out.append("</table>")
    if table.get("missing"):
        out.append(f"<p class='missing'>Not finished yet: {esc(', '.join(table['missing']))}.</p>")
    return "\n".join(out)
