"""The DUKD paper's Table 2 (x4, PSNR on Y), shown beside the results when the runs' pair is the paper's.

Numbers from the paper (``docs/dukd-method.md``, "Headline results"): Set5 for scratch / KD / DUKD,
Urban100 for scratch and DUKD. A run's pair is the paper's when its teacher and student have the
architecture and the parameter count of the paper's presets at x4 (``edsr-l`` -> ``edsr-s``,
``rcan-l`` -> ``rcan-s``, ``swinir-l`` -> ``swinir-s``), whatever they are called in the run.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from dukd_cli.errors import DukdError

TABLE2: dict[str, dict[str, Any]] = {
    "EDSR": {
        "teacher": "edsr-l",
        "student": "edsr-s",
        "psnr": {
            "Set5": {"scratch": 32.29, "kd": 32.30, "dukd": 32.47},
            "Urban100": {"scratch": 26.21, "dukd": 26.45},
        },
    },
    "RCAN": {
        "teacher": "rcan-l",
        "student": "rcan-s",
        "psnr": {
            "Set5": {"scratch": 32.31, "kd": 32.45, "dukd": 32.56},
            "Urban100": {"scratch": 26.37, "dukd": 26.62},
        },
    },
    "SwinIR": {
        "teacher": "swinir-l",
        "student": "swinir-s",
        "psnr": {
            "Set5": {"scratch": 32.31, "kd": 32.27, "dukd": 32.41},
            "Urban100": {"scratch": 26.15, "dukd": 26.43},
        },
    },
}
SOURCE = "Zhang et al., Data Upcycling Knowledge Distillation for Image Super-Resolution (arXiv 2309.14162), Table 2, x4"


def _signature(name: str, kwargs: dict[str, Any], scale: int) -> tuple[str, int] | None:
    return _signature_cached(str(name), json.dumps(kwargs or {}, sort_keys=True, default=str), int(scale))


@lru_cache(maxsize=64)
def _signature_cached(name: str, kwargs_json: str, scale: int) -> tuple[str, int] | None:
    from dukd_cli.models.factory import count_parameters_of, resolve_spec

    try:
        spec = resolve_spec(name, scale, kwargs=json.loads(kwargs_json))
        return spec.arch, count_parameters_of(spec.arch, spec.scale, spec.kwargs)
    except (DukdError, Exception):  # an unbuildable name is simply not the paper's pair
        return None


def paper_pair(teacher: dict[str, Any], student: dict[str, Any], scale: int | None) -> dict[str, Any] | None:
    """The Table 2 entry of this (teacher, student) config pair at x4, or ``None``."""
    if scale != 4 or not teacher.get("name") or not student.get("name"):
        return None
    t_sig = _signature(teacher["name"], teacher.get("args") or {}, 4)
    s_sig = _signature(student["name"], student.get("args") or {}, 4)
    if t_sig is None or s_sig is None:
        return None
    for family, entry in TABLE2.items():
        if _signature(entry["teacher"], {}, 4) == t_sig and _signature(entry["student"], {}, 4) == s_sig:
            return {
                "family": family,
                "teacher": entry["teacher"],
                "student": entry["student"],
                "psnr": entry["psnr"],
                "source": SOURCE,
            }
    return None
