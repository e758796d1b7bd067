"""The built-in model zoo: EDSR, RCAN, SwinIR and IMDN, one network per module.

Each module has a factory named like the module (``zoo.edsr.edsr(scale, ...)``) that returns an
``nn.Module`` mapping (N, 3, h, w) RGB in [0, 1] to (N, 3, h*scale, w*scale) (not clamped), with
parameter names of the official releases, a ``convert_state_dict`` staticmethod for other
projects' layouts and ``feature_taps()``. The zoo registers itself through the same entry points
as any third-party plugin (``pyproject.toml``); ``zoo.presets`` holds the paper's configurations.
"""

from zoo.edsr import edsr
from zoo.imdn import imdn
from zoo.rcan import rcan
from zoo.swinir import swinir

__all__ = ["edsr", "imdn", "rcan", "swinir"]
