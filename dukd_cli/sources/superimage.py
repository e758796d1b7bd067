"""super-image model repositories by id: ``hf://eugenesiow/edsr-base`` (a repository, no file).

super-image (``eugenesiow/*`` on the Hub) keeps one ``config.json`` and one
``pytorch_model_{s}x.pt`` per scale. Its EDSR uses EDSR-PyTorch's key names, but its forward feeds
[0, 1] input and never applies the mean shift, and its ``res_scale`` is whatever ``config.json``
says (``docs/checkpoints.md``). Loaded as a plain EDSR, such a file loads strictly and computes
wrong outputs without a word; :func:`expand_repo` returns the file and the constructor arguments
that give super-image's semantics.
"""

from __future__ import annotations

import json
import os

from dukd_cli.sources.errors import SourceError
from dukd_cli.sources.hub import hub_download, parse_hub_source

# super-image model types dukd can build, and the architecture they become
ARCHITECTURES = {"edsr": "edsr"}


def is_repo_source(source: str | os.PathLike | None) -> bool:
    """True for ``hf://OWNER/REPO[@REV]`` (a model repository, no file)."""
    if source is None:
        return False
    s = os.fspath(source)
    if not s.startswith("hf://") or s.startswith("hf://datasets/"):
        return False
    try:
        return parse_hub_source(s, allow_repo=True).filename == ""
    except SourceError:
        return False


def expand_repo(source: str, scale: int | None) -> tuple[str, str, int, dict]:
    """``(file source, architecture, scale, constructor arguments)`` for a super-image repository."""
    src = parse_hub_source(source, allow_repo=True)
    cfg_path = hub_download(src, "config.json")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read config.json of {src}: {exc}") from None
    model_type = str(cfg.get("model_type", "")).lower()
    if model_type not in ARCHITECTURES:
        raise SourceError(
            f"{src} holds a super-image '{cfg.get('model_type', '?')}' model; dukd builds super-image "
            f"repositories of type {', '.join(t.upper() for t in ARCHITECTURES)} only (pass a weights file instead)"
        )
    supported = cfg.get("supported_scales") or ([cfg["scale"]] if cfg.get("scale") else None)
    if scale is None:
        if supported and len(supported) == 1:
            scale = int(supported[0])
        else:
            raise SourceError(f"{src} holds several scales ({supported or '?'}); pass --scale")
    scale = int(scale)
    if supported and scale not in [int(s) for s in supported]:
        raise SourceError(
            f"{src} has no x{scale} model (its config.json lists x{', x'.join(map(str, supported))})"
        )
    kwargs = {
        "n_feats": int(cfg.get("n_feats", 64)),
        "n_resblocks": int(cfg.get("n_resblocks", 16)),
        "res_scale": float(cfg.get("res_scale", 1.0)),
        "img_range": 1.0,
        "mean_shift": False,
    }
    return str(src.with_file(f"pytorch_model_{scale}x.pt")), ARCHITECTURES[model_type], scale, kwargs
