"""The paper's six networks (DUKD, Table 1) and EDSR-baseline as named presets.

Parameter counts (parameters only, mean-shift buffers excluded), checked by ``tests/test_zoo.py``:

============  ====================================================  =======  =======  =======
preset        network                                               x2       x3       x4
============  ====================================================  =======  =======  =======
edsr-l        EDSR 256 ch, 32 blocks, res_scale 0.1                 40.73 M  43.68 M  43.09 M
edsr-s        EDSR 64 ch, 32 blocks, res_scale 0.1                  2.55 M   2.74 M   2.70 M
rcan-l        RCAN 64 ch, 10 groups x 20 blocks, reduction 16       15.44 M  15.63 M  15.59 M
rcan-s        RCAN 64 ch, 10 groups x 6 blocks, reduction 16        5.02 M   5.21 M   5.17 M
swinir-l      SwinIR embed 180, 6 RSTB x 6, 6 heads, window 8       11.75 M  11.94 M  11.90 M
swinir-s      SwinIR embed 60, 4 RSTB x 6, 6 heads, window 8        1.09 M   1.27 M   1.24 M
============  ====================================================  =======  =======  =======

``swinir-lightweight`` is the SwinIR authors' own SwinIR-S (``002_lightweightSR_*`` files): the same
body as ``swinir-s`` with the one-conv ``pixelshuffledirect`` upsampler (see its row in
``tests/test_detect.py`` for the counts).

Weight sources: the paper's teacher files, their SHA-256s, sources in order and published
numbers are in ``zoo/teachers.py`` (``dukd zoo info NAME``; ``dukd zoo verify NAME --scale S``).
"""

from __future__ import annotations

from dukd_cli.registry import Preset
from zoo.teachers import edsr_l, rcan_l, swinir_l

EDSR_L = Preset(
    label="EDSR",
    arch="edsr",
    kwargs={"n_feats": 256, "n_resblocks": 32, "res_scale": 0.1},
    scales=(2, 3, 4),
    weights={s: edsr_l(s) for s in (2, 3, 4)},
    description="EDSR (paper teacher): 256 channels, 32 residual blocks, res_scale 0.1; ~43 M parameters",
)

EDSR_S = Preset(
    label="EDSR-S (DUKD student)",
    arch="edsr",
    kwargs={"n_feats": 64, "n_resblocks": 32, "res_scale": 0.1},
    scales=(2, 3, 4),
    weights={},
    description="EDSR student of the DUKD paper: 64 channels, 32 residual blocks, res_scale 0.1; ~2.7 M parameters",
)

EDSR_BASELINE = Preset(
    label="EDSR-baseline",
    arch="edsr",
    kwargs={"n_feats": 64, "n_resblocks": 16, "res_scale": 1.0},
    scales=(2, 3, 4),
    weights={},
    description="EDSR-baseline: 64 channels, 16 residual blocks, res_scale 1.0; ~1.5 M parameters",
)

RCAN_L = Preset(
    label="RCAN",
    arch="rcan",
    kwargs={"n_feats": 64, "n_resgroups": 10, "n_resblocks": 20, "reduction": 16},
    scales=(2, 3, 4),
    weights={s: rcan_l(s) for s in (2, 3, 4)},
    description="RCAN (paper teacher): 64 channels, 10 residual groups x 20 blocks, reduction 16; ~15.6 M parameters",
)

RCAN_S = Preset(
    label="RCAN-S (DUKD student)",
    arch="rcan",
    kwargs={"n_feats": 64, "n_resgroups": 10, "n_resblocks": 6, "reduction": 16},
    scales=(2, 3, 4),
    weights={},
    description="RCAN student of the DUKD paper: 64 channels, 10 residual groups x 6 blocks; ~5.2 M parameters",
)

SWINIR_L = Preset(
    label="SwinIR-M (classical SR)",
    arch="swinir",
    kwargs={
        "embed_dim": 180,
        "depths": (6, 6, 6, 6, 6, 6),
        "num_heads": (6, 6, 6, 6, 6, 6),
        "window_size": 8,
        "mlp_ratio": 2.0,
        "upsampler": "pixelshuffle",
        "resi_connection": "1conv",
        "img_size": 48,
    },
    scales=(2, 3, 4),
    weights={s: swinir_l(s) for s in (2, 3, 4)},
    description="SwinIR-M (paper teacher, classical SR): embed 180, 6 RSTB x 6 layers, window 8; ~11.9 M parameters",
)

SWINIR_S = Preset(
    label="SwinIR-S (DUKD student)",
    arch="swinir",
    kwargs={
        "embed_dim": 60,
        "depths": (6, 6, 6, 6),
        "num_heads": (6, 6, 6, 6),
        "window_size": 8,
        "mlp_ratio": 2.0,
        "upsampler": "pixelshuffle",
        "resi_connection": "1conv",
        "num_feat": 64,
        "img_size": 64,
    },
    scales=(2, 3, 4),
    weights={},
    description="SwinIR student of the DUKD paper: embed 60, 4 RSTB x 6 layers, window 8, pixelshuffle; ~1.2 M parameters",
)

SWINIR_LIGHTWEIGHT = Preset(
    label="SwinIR-S lightweight",
    arch="swinir",
    kwargs={
        "embed_dim": 60,
        "depths": (6, 6, 6, 6),
        "num_heads": (6, 6, 6, 6),
        "window_size": 8,
        "mlp_ratio": 2.0,
        "upsampler": "pixelshuffledirect",
        "resi_connection": "1conv",
        "img_size": 64,
    },
    scales=(2, 3, 4),
    weights={},
    description="SwinIR-S of the SwinIR authors (lightweight SR, their 002_lightweightSR_DIV2K_s64w8_SwinIR-S_x* "
    "files): embed 60, 4 RSTB x 6 layers, window 8, pixelshuffledirect; 0.93 M parameters (the SwinIR paper's "
    "0.90 M leaves out the relative-position bias tables)",
)

ALL = {
    "edsr-l": EDSR_L,
    "edsr-s": EDSR_S,
    "edsr-baseline": EDSR_BASELINE,
    "rcan-l": RCAN_L,
    "rcan-s": RCAN_S,
    "swinir-l": SWINIR_L,
    "swinir-s": SWINIR_S,
    "swinir-lightweight": SWINIR_LIGHTWEIGHT,
}
"""The presets by the names ``pyproject.toml`` registers them under."""
