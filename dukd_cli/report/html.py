"""The report as one self-contained HTML page: figures embedded as base64 PNG, print CSS.

Every number on the page is written by :func:`num` from a value of the report's JSON (the page
carries the value's JSON path in ``data-json``), so the page and ``report.json`` cannot disagree.
"""

from __future__ import annotations

import base64
from typing import Any

from dukd_cli.report.fmt import esc, num

CSS = """
:root { --ink: #1b1f23; --muted: #57606a; --line: #d0d7de; --head: #f3f5f7; --accent: #0b5cad; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); margin: 0 auto; max-width: 1240px; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 34px 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 18px 0 6px; }
p, li { max-width: 78em; }
.sub { color: var(--muted); margin: 0 0 12px; }
nav { margin: 10px 0 6px; font-size: 14px; }
nav a { color: var(--accent); margin-right: 14px; text-decoration: none; }
table { border-collapse: collapse; margin: 8px 0 6px; font-size: 14px; display: block; overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid var(--line); padding: 4px 9px; vertical-align: top; }
th { background: var(--head); text-align: left; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.best td.best { font-weight: 700; }
tr.ref td { color: var(--muted); }
.flex { display: flex; gap: 28px; flex-wrap: wrap; align-items: flex-start; }
figure { margin: 10px 0 4px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; max-width: 78em; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 12px; margin: 10px 0; }
.missing { color: #8a4b00; }
.na { color: var(--muted); }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f6f8fa; padding: 0 3px; }
td code { background: none; padding: 0; word-break: break-all; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  nav { display: none; }
  h2 { break-after: avoid; page-break-after: avoid; }
  section, figure, table { break-inside: avoid; page-break-inside: avoid; }
  figure img { border: none; max-height: 24cm; }
  table { display: table; font-size: 8.5pt; }
  th, td { padding: 2px 5px; }
  th { background: #eee !important; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  a { color: inherit; text-decoration: none; }
}
"""


def figure(fig: dict[str, Any] | None, caption: str) -> str:
    if not fig:
        return ""
    b64 = base64.b64encode(fig["png"]).decode("ascii")
    return (
        f'<figure><img alt="{esc(fig["alt"])}" src="data:image/png;base64,{b64}">'
        f'<figcaption>{caption} <span class="na">(also <code>{esc(fig["file"])}</code>)</span></figcaption></figure>'
    )


def _results_table(rep: dict[str, Any]) -> str:
    m = rep.get("measured")
    runs = rep["runs"]
    if not m:
        # Without a benchmark: each run's last validation.
        body = []
        for i, r in enumerate(runs):
            lv = r.get("last_val") or {}
            body.append(
                f"<tr><td>{esc(r['label'])}</td><td class='n'>{num(r.get('params'), 0, f'runs.{i}.params')}</td>"
                f"<td>{esc(lv.get('val_bench') or '-')}</td>"
                f"<td class='n'>{num(lv.get('val_psnr'), 2, f'runs.{i}.last_val.val_psnr')}</td>"
                f"<td class='n'>{num(lv.get('val_ssim'), 4, f'runs.{i}.last_val.val_ssim')}</td>"
                f"<td class='n'>{num(lv.get('iteration'), 0, f'runs.{i}.last_val.iteration')}</td></tr>"
            )
        return (
            "<p>No benchmark was evaluated (see <em>What is missing</em>); the table shows each run's last "
            "validation, as logged.</p><table><tr><th>run</th><th class='n'>parameters</th><th>set</th>"
            "<th class='n'>PSNR (dB)</th><th class='n'>SSIM</th><th class='n'>at iteration</th></tr>"
            + "".join(body)
            + "</table>"
        )
    benches = m["benches"]
    best = {
        b: max((r["results"].get(b, {}).get("psnr") or -1e9) for r in m["rows"] if r["kind"] == "student")
        for b in benches
    }
    head = (
        "<tr><th>model</th><th class='n'>parameters</th>"
        + "".join(f"<th class='n'>{esc(b)} PSNR / SSIM</th>" for b in benches)
        + f"<th class='n'>ms per {m['speed_side']}&times;{m['speed_side']} LR</th></tr>"
    )
    body = []
    for i, r in enumerate(m["rows"]):
        cls = {"bicubic": "ref", "teacher": "ref", "deployed": "deployed"}.get(r["kind"], "best")
        size = (
            f" <span class='sub'>({num(r['file_mb'], 2, f'measured.rows.{i}.file_mb')} MB)</span>"
            if r.get("file_mb")
            else ""
        )
        cells = [
            f"<td>{esc(r['model'])}{size}</td>",
            f"<td class='n'>{num(r.get('params'), 0, f'measured.rows.{i}.params')}</td>",
        ]
        for b in benches:
            res = r["results"].get(b, {})
            top = r["kind"] == "student" and res.get("psnr") is not None and res["psnr"] == best[b]
            cells.append(
                f"<td class='n{' best' if top else ''}'>{num(res.get('psnr'), 2, f'measured.rows.{i}.results.{b}.psnr')} / "
                f"{num(res.get('ssim'), 4, f'measured.rows.{i}.results.{b}.ssim')}</td>"
            )
        cells.append(f"<td class='n'>{num(r.get('speed_ms'), 1, f'measured.rows.{i}.speed_ms')}</td>")
        body.append(f"<tr class='{cls}'>" + "".join(cells) + "</tr>")
    n_img = ", ".join(
        f"{esc(b)}: {num(m['rows'][0]['results'].get(b, {}).get('n_images'), 0, f'measured.rows.0.results.{b}.n_images')} images"
        for b in benches
    )
    table = "<table>" + head + "".join(body) + "</table>"
    if any(r["kind"] == "deployed" for r in m["rows"]):
        table += (
            "<p class='sub'>Rows <em>LABEL · onnx / onnx-int8 / onnx-fp16</em>: the files <code>dukd "
            "export</code> wrote (size in brackets), run by ONNX Runtime and scored by the same evaluator: "
            "the numbers of what ships.</p>"
        )
    paper = rep.get("paper")
    if paper:
        p_rows = []
        for b, vals in paper["psnr"].items():
            p_rows.append(
                f"<tr><td>{esc(b)}</td>"
                + "".join(
                    f"<td class='n'>{num(vals.get(k), 2, f'paper.psnr.{b}.{k}')}</td>"
                    for k in ("scratch", "kd", "dukd")
                )
                + "</tr>"
            )
        side = (
            f"<div><h3>The paper's numbers ({esc(paper['family'])}: {esc(paper['teacher'])} &rarr; "
            f"{esc(paper['student'])})</h3><table><tr><th>set</th><th class='n'>scratch</th><th class='n'>KD</th>"
            f"<th class='n'>DUKD</th></tr>{''.join(p_rows)}</table>"
            f"<p class='sub'>{esc(paper['source'])}; PSNR on Y. Trained on DIV2K for 250k iterations.</p></div>"
        )
        table = f"<div class='flex'><div>{table}</div>{side}</div>"
    return (
        table
        + f"<p class='sub'>x{esc(rep['scale'])}, PSNR (dB) / SSIM on Y, {esc(rep['scale'])} px border cropped, "
        f"measured now by <code>dukd evaluate</code>'s evaluator ({n_img}). Bold: the best student per set. "
        f"Speed: median of {esc(m['speed_reps'])} fp32 forwards on this machine at report time, the models alternating "
        f"({esc(rep.get('device', '?'))}); on a shared machine read it as a ratio.</p>"
    )


def _agreement_table(rep: dict[str, Any]) -> str:
    m = rep.get("measured") or {"rows": [], "benches": []}
    rows = {r["model"]: (i, r) for i, r in enumerate(m["rows"])}
    benches = m["benches"]
    n_now = 1 + len(benches)
    head = (
        f"<tr><th rowspan='2'>run</th><th colspan='{n_now}'>final weights, measured now</th>"
        "<th colspan='3'>last value logged in training</th></tr><tr><th class='n'>training patches</th>"
        + "".join(f"<th class='n'>{esc(b)}</th>" for b in benches)
        + "<th class='n'>training patches</th><th class='n'>validation set</th><th class='n'>iteration</th></tr>"
    )
    body = []
    for j, r in enumerate(rep["runs"]):
        i, row = rows.get(r["label"], (None, None))
        cells = [f"<td>{esc(r['label'])}</td>"]
        cells.append(
            f"<td class='n'>{num((row or {}).get('agree_train_psnr'), 2, f'measured.rows.{i}.agree_train_psnr')}</td>"
        )
        for b in benches:
            v = ((row or {}).get("results", {}).get(b) or {}).get("agree_psnr")
            cells.append(f"<td class='n'>{num(v, 2, f'measured.rows.{i}.results.{b}.agree_psnr')}</td>")
        tr, va = r["agree_train_psnr"], r["agree_val_psnr"]
        k = len(tr) - 1
        cells.append(
            f"<td class='n'>{num(tr[-1][1] if tr else None, 2, f'runs.{j}.agree_train_psnr.{k}.1')}</td>"
        )
        cells.append(
            f"<td class='n'>{num(va[-1][1] if va else None, 2, f'runs.{j}.agree_val_psnr.{len(va) - 1}.1')}</td>"
        )
        cells.append(
            f"<td class='n'>{num(tr[-1][0] if tr else None, 0, f'runs.{j}.agree_train_psnr.{k}.0')}</td>"
        )
        body.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + head + "".join(body) + "</table><p class='sub'>PSNR (dB) student vs teacher, on Y.</p>"


def _crop_table(rep: dict[str, Any], c_i: int, crop: dict[str, Any]) -> str:
    keys = [k for k in crop["psnr"] if k != "HR"]
    head = "<tr>" + "".join(f"<th class='n'>{esc(k)}</th>" for k in keys) + "</tr>"
    cells = "".join(
        f"<td class='n'>{num(crop['psnr'][k], 2, f'measured.crops.{c_i}.psnr.{k}', ' dB')}</td>" for k in keys
    )
    how = "chosen automatically where the runs differ most" if crop["auto"] else "given with --crop"
    return (
        f"<p>{esc(crop['bench'])}/{esc(crop['image'])}, box x={num(crop['x'], 0, f'measured.crops.{c_i}.x')}, "
        f"y={num(crop['y'], 0, f'measured.crops.{c_i}.y')}, {num(crop['w'], 0, f'measured.crops.{c_i}.w')}&times;"
        f"{num(crop['h'], 0, f'measured.crops.{c_i}.h')} HR pixels ({how}); PSNR on Y of the crop against HR:</p>"
        f"<table>{head}<tr>{cells}</tr></table>"
    )


Rows = list[tuple[str, list[str]]]  # (row name, one HTML cell per run)


def _sec(r: dict[str, Any], s: str) -> dict[str, Any]:
    return r["config"].get(s) or {}


def _used(r: dict[str, Any], key: str) -> Any:
    """What the run used (run.json), else what was configured (e.g. "auto")."""
    return (r.get("used") or {}).get(key) or _sec(r, "train").get(key)


def _config_table(rep: dict[str, Any]) -> str:
    """The runs side by side: what was distilled (:func:`_what_rows`), how it was trained
    (:func:`_how_rows`), and where it lies."""
    runs = rep["runs"]
    lines = _what_rows(runs) + _how_rows(runs)
    lines.append(("run directory", [f"<code>{esc(r['dir'])}</code>" for r in runs]))
    head = "<tr><th></th>" + "".join(f"<th>{esc(r['label'])}</th>" for r in runs) + "</tr>"
    body = "".join(
        f"<tr><th>{esc(n)}</th>" + "".join(f"<td>{v}</td>" for v in vals) + "</tr>" for n, vals in lines
    )
    return f"<table>{head}{body}</table>"


def _what_rows(runs: list[dict[str, Any]]) -> Rows:
    """Method, recipe, teacher, student, parameters, method options, data."""
    lines: Rows = []

    def row(name: str, values: list[str]) -> None:
        lines.append((name, values))

    row("method", [esc(r["method"]) for r in runs])
    row(
        "recipe",
        [esc(r["recipe"]) if r.get("recipe") else "<span class='na'>none recorded</span>" for r in runs],
    )
    row(
        "teacher",
        [
            (
                f"{esc(_sec(r, 'teacher').get('name'))}<br><code>{esc(_sec(r, 'teacher').get('weights') or 'preset default')}</code>"
                if _sec(r, "teacher").get("name")
                else "<span class='na'>none</span>"
            )
            for r in runs
        ],
    )
    row(
        "student",
        [f"{esc(_sec(r, 'student').get('name'))} {esc(_sec(r, 'student').get('args') or '')}" for r in runs],
    )
    row("parameters", [num(r.get("params"), 0, f"runs.{i}.params") for i, r in enumerate(runs)])
    row(
        "method options",
        [esc(", ".join(f"{k}={v}" for k, v in _sec(r, "method").items() if k != "name")) for r in runs],
    )
    row(
        "data",
        ["<br>".join(f"<code>{esc(p)}</code>" for p in _sec(r, "data").get("paths", [])) for r in runs],
    )
    return lines


def _how_rows(runs: list[dict[str, Any]]) -> Rows:
    """Iterations, batch and patch, learning rate, precision and device, validation, hardware, time."""
    lines: Rows = []

    def row(name: str, values: list[str]) -> None:
        lines.append((name, values))

    row(
        "iterations",
        [
            f"{num(r['iterations_done'], 0, f'runs.{i}.iterations_done')} of "
            f"{num(r['iterations_target'], 0, f'runs.{i}.iterations_target')}"
            for i, r in enumerate(runs)
        ],
    )
    row(
        "batch, patch",
        [
            f"{num(_sec(r, 'train').get('batch_size'), 0, f'runs.{i}.config.train.batch_size')} &times; "
            f"{num(_sec(r, 'train').get('patch_size'), 0, f'runs.{i}.config.train.patch_size')} px LR"
            for i, r in enumerate(runs)
        ],
    )
    row(
        "learning rate",
        [
            esc(
                f"{_sec(r, 'train').get('lr')} (x{_sec(r, 'train').get('gamma')} at "
                f"{', '.join(map(str, _sec(r, 'train').get('milestones', [])))})"
            )
            for r in runs
        ],
    )

    row(
        "precision, device",
        [
            esc(
                f"{_used(r, 'precision')}, channels-last {_sec(r, 'train').get('channels_last', False)}, "
                f"{_used(r, 'device')}; seed {_sec(r, 'train').get('seed')}"
            )
            for r in runs
        ],
    )
    row(
        "validation",
        [esc(f"{_sec(r, 'val').get('bench')} every {_sec(r, 'val').get('every')} iterations") for r in runs],
    )
    row(
        "hardware",
        [
            esc(r["hardware"]) if r.get("hardware") else "<span class='missing'>not recorded</span>"
            for r in runs
        ],
    )
    row(
        "wall time",
        [
            (
                f"{num(r.get('wall_min'), 1, f'runs.{i}.wall_min', ' min')} <span class='na'>({esc(r['wall_how'])})</span>"
            )
            for i, r in enumerate(runs)
        ],
    )
    row(
        "training speed",
        [num(r.get("train_it_s"), 2, f"runs.{i}.train_it_s", " it/s") for i, r in enumerate(runs)],
    )
    return lines


def render(rep: dict[str, Any], figs: dict[str, Any]) -> str:
    runs = rep["runs"]
    labels = ", ".join(r["label"] for r in runs)
    title = rep.get("title") or f"dukd report: {labels}"
    m = rep.get("measured")
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p class='sub'>{len(runs)} run(s), x{esc(rep['scale'])}; teacher: {esc((m or {}).get('teacher') or '-')}; "
        f"made by dukd {esc(rep['dukd_version'])} on {esc(rep['generated'])}. Numbers: <code>{esc(rep['json_file'])}</code>.</p>",
    ]
    if rep.get("note"):
        out.append(f"<p class='note'>{esc(rep['note'])}</p>")
    study = rep.get("study")
    out.append(
        "<nav>"
        + ("<a href='#study'>Study</a>" if study else "")
        + "<a href='#results'>Results</a><a href='#curves'>Training curves</a><a href='#agreement'>Teacher "
        "agreement</a><a href='#crops'>Crops</a><a href='#config'>Configuration</a><a href='#missing'>What is "
        "missing</a></nav>"
    )
    if study:
        from dukd_cli.report.study import section

        out.append("<section id='study'><h2>Study</h2>" + section(study) + "</section>")
    out.append("<section id='results'><h2>Results</h2>" + _results_table(rep) + "</section>")
    out.append("<section id='curves'><h2>Training curves</h2>")
    out.append(
        figure(
            figs.get("curves"),
            "Every loss term as logged (the mean over each log interval, weights applied) "
            "and the validation PSNR of the EMA weights, against iterations; runs overlaid.",
        )
        or "<p class='missing'>No training curves: no run logged losses.</p>"
    )
    out.append(
        "</section><section id='agreement'><h2>Teacher agreement</h2><p>PSNR between the student's and the "
        "teacher's outputs (on Y, as the evaluator): on a fixed sample of training patches (the same patches at "
        "every validation, drawn once from the run's seed) and on the benchmark set(s); higher means the "
        "student follows the teacher more closely (the paper's Fig. 5).</p>"
    )
    out.append(
        figure(
            figs.get("agreement"),
            "Left: the final student weights measured now; right: the values logged "
            "at each validation during training.",
        )
        or "<p class='missing'>Nothing to draw.</p>"
    )
    out.append(_agreement_table(rep) + "</section>")
    out.append("<section id='crops'><h2>Side-by-side crops</h2>")
    crops = (m or {}).get("crops") or []
    if not crops:
        out.append(
            "<p class='missing'>No crops: they need a benchmark set and the runs' weights (see below).</p>"
        )
    for i, c in enumerate(crops):
        out.append(f"<h3>{esc(c['bench'])}/{esc(c['image'])}</h3>")
        out.append(
            figure(
                figs.get(f"crop{i + 1}"),
                "HR, bicubic, each run's student and the teacher, each with the crop's "
                "PSNR (nearest-neighbour enlarged).",
            )
        )
        out.append(_crop_table(rep, i, c))
    out.append("</section><section id='config'><h2>Configuration</h2>" + _config_table(rep) + "</section>")
    out.append("<section id='missing'><h2>What is missing</h2>")
    items = [f"<li><b>{esc(r['label'])}</b>: {esc(x)}</li>" for r in runs for x in r["missing"]]
    items += [f"<li>{esc(x)}</li>" for x in rep.get("notes", [])]
    out.append("<ul>" + "".join(items) + "</ul>" if items else "<p>Nothing: every section has its data.</p>")
    out.append("</section></body></html>\n")
    return "\n".join(out)
