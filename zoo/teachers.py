"""The DUKD paper's teacher files: names, SHA-256s, sources in order, and their authors' numbers.

The paper's teachers (the authors' README and option files, ``yun224/DUKD``):

* EDSR: BasicSR's ``EDSR_Lx{2,3,4}_f256b32_DIV2K_official-<8 hex>.pth`` (BasicSR names a file by
  the first 8 hex digits of its SHA-256). No public Hub repository or stable direct link holding
  these files was found (BasicSR's model zoo links to Google Drive and Baidu): pass the file with
  ``--teacher-weights``; its name's hash prefix is checked. super-image's ``eugenesiow/edsr`` is a
  different file (its own training, other semantics) and is listed as an alternative, never the default.
* RCAN: the official ``RCAN_BIX{2,3,4}.pt`` (yulunzhang/RCAN, Google Drive/Dropbox links): no Hub
  copy or stable direct link found; no SHA-256 published. Pass the file with ``--teacher-weights``
  (the official layout loads as it is).
* SwinIR: ``001_classicalSR_DIV2K_s48w8_SwinIR-M_x{2,3,4}.pth`` (the DUKD option files'
  ``pretrain_network_t``; their README names the DF2K files, the options the DIV2K ones). Sources:
  a Hub mirror at a pinned revision (its SHA-256 from the Hub's LFS metadata; two independent
  mirrors agree at x2 and x3), then the official GitHub release (a stable direct link), checked
  against the same SHA-256.

Published numbers are PSNR/SSIM on Y (border = scale), as each network's authors published them:

* EDSR x4: the EDSR paper (Lim et al., CVPRW 2017), as tabulated in ESRGAN's README; x2/x3 are not
  recorded here (not looked up). BasicSR's file is BasicSR's training of that network.
* RCAN and SwinIR (DIV2K-trained): SwinIR paper (Liang et al., ICCVW 2021) Table 2, whose RCAN rows
  quote the RCAN paper (Zhang et al., ECCV 2018).
"""

from __future__ import annotations

from dukd_cli.registry import WeightSource

SWINIR_RELEASE = "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"

_EDSR_PREFIX = {2: "be38e77d", 3: "3660f70d", 4: "76ee1c8f"}
_EDSR_PUBLISHED = {
    4: {
        "Set5": (32.46, 0.8968),
        "Set14": (28.80, 0.7876),
        "BSD100": (27.71, 0.7420),
        "Urban100": (26.64, 0.8033),
    },
}
_EDSR_BY = "EDSR paper (Lim et al. 2017), via ESRGAN's README table"

# super-image's EDSR: the same shapes and key names, [0,1] input, no mean shift, res_scale 1.
SUPER_IMAGE_EDSR = {"res_scale": 1.0, "img_range": 1.0, "mean_shift": False}
_SUPER_IMAGE_PINS = {
    # revision and LFS SHA-256 from the Hub page of pytorch_model_2x.pt; x3/x4 were not looked up
    2: "@f54a5c9db68d4ef66df266ec911d55c9cb3c63d5#sha256=1d2a734b033e4119598ab4308058d2d09f994ab9ce442c81888bd0d318e6abc9",
}


def _super_image(s: int) -> WeightSource:
    pin = _SUPER_IMAGE_PINS.get(s, "")
    return WeightSource(
        f"hf://eugenesiow/edsr/pytorch_model_{s}x.pt{pin}",
        SUPER_IMAGE_EDSR,
        False,
        "super-image's own EDSR training (NOT the paper's file): [0,1] input, no mean shift, res_scale 1"
        + ("" if pin else "; revision not pinned"),
    )


def edsr_l(s: int) -> WeightSource:
    name = f"EDSR_Lx{s}_f256b32_DIV2K_official-{_EDSR_PREFIX[s]}.pth"
    return WeightSource(
        "",
        {},
        False,
        f"the paper's teacher is BasicSR's {name}; no public Hub copy or direct link was found: download it from "
        f"BasicSR's model zoo",
        filename=name,
        sha256=_EDSR_PREFIX[s],
        published=_EDSR_PUBLISHED.get(s, {}),
        published_by=_EDSR_BY if s in _EDSR_PUBLISHED else "",
        alternatives=(_super_image(s),),
    )


_RCAN_PUBLISHED = {
    2: {
        "Set5": (38.27, 0.9614),
        "Set14": (34.12, 0.9216),
        "BSD100": (32.41, 0.9027),
        "Urban100": (33.34, 0.9384),
    },
    3: {
        "Set5": (34.74, 0.9299),
        "Set14": (30.65, 0.8482),
        "BSD100": (29.32, 0.8111),
        "Urban100": (29.09, 0.8702),
    },
    4: {
        "Set5": (32.63, 0.9002),
        "Set14": (28.87, 0.7889),
        "BSD100": (27.77, 0.7436),
        "Urban100": (26.82, 0.8087),
    },
}


def rcan_l(s: int) -> WeightSource:
    name = f"RCAN_BIX{s}.pt"
    return WeightSource(
        "",
        {},
        False,
        f"the paper's teacher is the official {name} (github.com/yulunzhang/RCAN, Google Drive/Dropbox links); no Hub "
        f"copy or stable direct link was found and no SHA-256 is published",
        filename=name,
        published=_RCAN_PUBLISHED[s],
        published_by="RCAN paper (Zhang et al. 2018), via SwinIR paper Table 2",
    )


_SWINIR = {
    2: (
        "licyk/sd-upscaler-models",
        "ad8eb922022f64ea5ba743df1b54bae49a91bef8",
        "ac6d4895f73aa1b3d563937e29dcedcfdff4d401280e248f23db3c6f68e8343b",
    ),
    3: (
        "licyk/sd-upscaler-models",
        "00eeb4587f80b7bd2175ec287efc552702756d2e",
        "d835497f2332aae839ae19a033290ced8686fa2a795f76fc5153ec2c83003f75",
    ),
    4: (
        "uwg/upscaler",
        "b542ac1292ca56f3bff1451557f57858c6ad3343",
        "129dc773ba2d4c07f3eb0bb116fbe692011b7cc072d9ca12797cd3748198610a",
    ),
}
_SWINIR_PUBLISHED = {
    2: {
        "Set5": (38.35, 0.9620),
        "Set14": (34.14, 0.9227),
        "BSD100": (32.44, 0.9030),
        "Urban100": (33.40, 0.9393),
    },
    3: {
        "Set5": (34.89, 0.9312),
        "Set14": (30.77, 0.8503),
        "BSD100": (29.37, 0.8124),
        "Urban100": (29.29, 0.8744),
    },
    4: {
        "Set5": (32.72, 0.9021),
        "Set14": (28.94, 0.7914),
        "BSD100": (27.83, 0.7459),
        "Urban100": (27.07, 0.8164),
    },
}


def swinir_l(s: int) -> WeightSource:
    name = f"001_classicalSR_DIV2K_s48w8_SwinIR-M_x{s}.pth"
    repo, rev, sha = _SWINIR[s]
    return WeightSource(
        f"hf://{repo}/SwinIR/{name}@{rev}#sha256={sha}",
        {},
        False,
        "SwinIR's release file; SHA-256 from the Hub mirror's LFS metadata (not yet measured by dukd: "
        f"dukd zoo verify swinir-l --scale {s})",
        filename=name,
        sha256=sha,
        mirrors=(f"{SWINIR_RELEASE}{name}#sha256={sha}",),
        published=_SWINIR_PUBLISHED[s],
        published_by="SwinIR paper (Liang et al. 2021) Table 2, DIV2K-trained",
    )
