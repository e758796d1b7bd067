"""Where a distillation run's teacher file and data come from: defaults, records and the dry run's lines.

* ``dukd distill`` with a teacher and no ``--data`` trains on DIV2K (``div2k``, the paper's data);
  ``builtin`` stays for the demo and for whoever asks for it.
* ``config.toml`` records the data set, its source and revision (``[data] dataset/source/revision``).
* The dry run says which teacher file (name, SHA-256, sources) and which data (images, source,
  revision) a run would use, and downloads nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dukd_cli.distill.config import DistillConfig
    from dukd_cli.distill.resolve import Resolved


def apply_data_defaults(cfg: DistillConfig, *, data_given: bool) -> None:
    """No data named anywhere and a teacher given: the paper's DIV2K. Then record where named data comes from."""
    if not data_given and cfg.teacher.name and list(cfg.data.paths) == ["builtin"]:
        cfg.data.paths = ["div2k"]
    record(cfg)


def record(cfg: DistillConfig) -> None:
    """Fill ``[data] dataset/source/revision`` for catalog data (``div2k``)."""
    from dukd_cli.data.catalog import get

    if [str(p).lower() for p in cfg.data.paths] == ["div2k"]:
        e = get("DIV2K")
        cfg.data.dataset, cfg.data.source, cfg.data.revision = e.name, e.source, e.revision


def data_lines(cfg: DistillConfig) -> list[str]:
    from dukd_cli.data.catalog import get, target_dir
    from dukd_cli.data.fetch import is_present

    out = []
    for p in cfg.data.paths:
        s = str(p)
        if s.lower() == "div2k":
            e = get("DIV2K")
            where = (
                "in the cache"
                if is_present(e)
                else f"not yet fetched: {e.size_label()}, at the start of training"
            )
            out.append(
                f"data: DIV2K ({e.images} images), source {e.source.rsplit('@', 1)[0]}, revision {e.revision}, "
                f"SHA-256 {e.sha256}; {target_dir(e)} ({where})"
            )
        elif s == "builtin":
            out.append("data: builtin (scikit-image's sample photographs: a demo, not the paper's DIV2K)")
        else:
            out.append(f"data: {s}")
    return out


def teacher_lines(res: Resolved) -> list[str]:
    """The teacher file: name, SHA-256 and sources in order (or the weights given), without downloading."""
    from dukd_cli import registry

    spec = res.teacher
    if spec is None:
        return []
    preset = registry.get_preset(spec.name) if spec.preset else None
    declared = preset.weights.get(spec.scale) if preset is not None else None
    ws = registry.source_of(declared) if declared else None
    if ws is None or spec.weights not in (ws.source, ws.filename):
        return [f"teacher file: {spec.weights} (given)"]
    name = ws.filename or Path(ws.source.split("@", 1)[0]).name
    sha = ws.sha256 or "not published"
    if ws.sha256 and len(ws.sha256) < 64:
        sha += " (prefix, from the file name)"
    sources = (
        " then ".join(s.split("#", 1)[0] for s in ws.sources) or "none known (pass --teacher-weights PATH)"
    )
    lines = [f"teacher file: {name}, SHA-256 {sha}, source {sources}"]
    if not ws.sources and ws.notes:
        lines.append(f"  {ws.notes}")
    return lines


def plan_lines(res: Resolved) -> list[str]:
    return teacher_lines(res) + data_lines(res.cfg)
