"""The feature-distillation baselines of the authors' release besides FAKD: FitNet, AT and FSP.

Each is :class:`~dukd_cli.distill.methods.FeatureKD` with its own transform
(``(1 - alpha) |S - HR| + alpha |S - T| + w_feat * sum_k mean|T(S_k) - T(T_k)|``) at the release's
feature positions per family; see :mod:`dukd_cli.distill.features` for transforms and positions.
"""

from __future__ import annotations

from dukd_cli.distill.methods import FeatureKD, Option


class FitNet(FeatureKD):
    """FitNets hints (Romero et al., ICLR 2015): the student's feature maps, through a learned 1x1
    adapter to the teacher's width when the widths differ, against the teacher's (L1).

    ``mean=true`` is the release's variant instead: the channel means of both maps (one map per
    tap, width-free, no adapter).
    """

    name = "fitnet"
    description = "FitNets hints: features through a learned 1x1 adapter where widths differ"
    kind = "fitnet"
    options = {
        **FeatureKD.options,
        "mean": Option(False, bool, "compare channel means instead (the release's FitNet; width-free)"),
    }

    def feature_kind(self) -> str:
        return "fitnet-mean" if self.opts["mean"] else "fitnet"


class AT(FeatureKD):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017): the L2-normalised ``sum_c F_c^2`` of
    each map (width-free)."""

    name = "at"
    description = "attention transfer: normalised per-position energy of the feature maps"
    kind = "at"


class FSP(FeatureKD):
    """FSP (Yim et al., CVPR 2017): the flow matrices of consecutive feature taps (C_k x C_k+1),
    the student's maps through learned 1x1 adapters to the teacher's widths when they differ."""

    name = "fsp"
    description = "flow of solution procedure: Gram matrices of consecutive feature taps"
    kind = "fsp"
