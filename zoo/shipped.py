"""The models this project trained itself and ships inside the package (``zoo/weights/``).

Both were made by ``dukd distill`` on the 291-image training set (T91 + BSD200), by the recipe in
``benchmarks/shipped/recipe.sh``; each weight file has a model card beside it
(``zoo/weights/<name>.md``) with the exact commands, data, iterations, hardware, wall time and the
Set5/Set14/BSD100 numbers measured by ``dukd evaluate``.

* ``dukd-teacher-x4``: EDSR-baseline (64 channels, 16 blocks, 1.52 M parameters), trained from
  scratch: the teacher of the shipped student and of ``dukd distill --demo``.
* ``dukd-student-x4``: EDSR with 32 channels and 4 blocks (0.16 M parameters), distilled from
  that teacher with DUKD: the default model of ``dukd upscale``.
"""

from __future__ import annotations

from pathlib import Path

from dukd_cli.registry import Preset, WeightSource

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

TEACHER_NAME = "dukd-teacher-x4"
STUDENT_NAME = "dukd-student-x4"

TEACHER_KWARGS = {"n_feats": 64, "n_resblocks": 16, "res_scale": 1.0}
STUDENT_KWARGS = {"n_feats": 32, "n_resblocks": 4, "res_scale": 1.0}


def weight_file(name: str) -> Path:
    """The shipped safetensors file of ``name``."""
    return WEIGHTS_DIR / f"{name}.safetensors"


def model_card(name: str) -> Path:
    """The model card (Markdown) of ``name``."""
    return WEIGHTS_DIR / f"{name}.md"


def _shipped(name: str, kwargs: dict, description: str) -> Preset:
    """An x4 EDSR preset whose weights are the shipped file of ``name`` (verified: made and measured here)."""
    source = WeightSource(
        str(weight_file(name)),
        {},
        True,
        f"shipped with dukd, trained by this project; model card: {model_card(name)}",
    )
    return Preset(arch="edsr", kwargs=kwargs, scales=(4,), weights={4: source}, description=description)


DUKD_TEACHER_X4 = _shipped(
    TEACHER_NAME,
    TEACHER_KWARGS,
    "EDSR-baseline x4 trained by dukd from scratch on T91+BSD200 (shipped); ~1.5 M parameters",
)
DUKD_STUDENT_X4 = _shipped(
    STUDENT_NAME,
    STUDENT_KWARGS,
    "EDSR 32 ch x 4 blocks x4, DUKD-distilled from dukd-teacher-x4 (shipped; dukd upscale's default); ~0.16 M parameters",
)
