"""The feature-distillation methods of the authors' release: FAKD, FitNet, AT and FSP.

Each is :class:`FeatureKD` with its own transform
(``(1 - alpha) |S - HR| + alpha |S - T| + w_feat * sum_k mean|T(S_k) - T(T_k)|``) at the release's
feature positions per family; see :mod:`dukd_cli.distill.features` for transforms and positions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from torch import nn

from dukd_cli.distill.features import AFFINITIES, ALIASES
from dukd_cli.distill.methods import FEATURE_GRAD_HELP, Batch, LossGroup, Method, Option, feature_term_for, l1
from dukd_cli.errors import DukdError


class FeatureKD(Method):
    """Feature-based KD, with gradients that flow into the student::

        (1 - alpha) |S - HR| + alpha |S - T| + w_feat * sum_k mean|T(S_k) - T(T_k)|

    ``T`` is the method's transform of the feature maps read at the release's positions per family
    (EDSR, RCAN), ``feature_taps()`` otherwise, or the modules named by ``feature_layers``
    (``--feature-layers``); see :mod:`dukd_cli.distill.features` for the transforms, positions and
    the 1x1 adapters used when a transform needs equal widths. Subclasses set ``kind``.
    """

    name = "feature"
    kind: ClassVar[str] = "spatial"
    options = {
        "alpha": Option(0.5, float, "weight of the teacher L1 term (1 - alpha on the ground-truth term)"),
        "w_feat": Option(10.0, float, "weight of the feature term (released: 10)"),
        "max_side": Option(
            32, int, "spatial affinity: maps are average-pooled to at most this side first (0: never)"
        ),
        "feature_layers": Option([], list, "student modules to read features from (default: per family)"),
        "teacher_feature_layers": Option(
            [], list, "teacher modules to read features from (default: layers, or per family)"
        ),
        "feature_grad": Option(True, bool, FEATURE_GRAD_HELP),
    }

    def feature_kind(self) -> str:
        return self.kind

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        o = self.opts
        self.term = feature_term_for(
            self,
            self.feature_kind(),
            o["feature_layers"],
            o["teacher_feature_layers"],
            o["max_side"],
            o["feature_grad"],
        )

    def trainable(self) -> nn.Module | None:
        """Modules trained with the student (the 1x1 adapters), or None."""
        return self.term.adapters

    def decided_options(self) -> dict[str, Any]:
        return self.term.positions()

    def losses(self, batch: Batch) -> Iterator[LossGroup]:
        a = self.opts["alpha"]
        with self.term.teacher() as t_feats:
            t = self.teacher_forward(batch.lr)
        with self.term.student() as s_feats:
            s = self.student(batch.lr)
        yield {
            "rec": (1 - a) * l1(s, batch.hr),
            "kd": a * l1(s, t),
            "feat": self.opts["w_feat"] * self.term.loss(s_feats, t_feats),
        }

    def close(self) -> None:
        term = getattr(self, "term", None)
        if term is not None:
            term.close()


class FAKD(FeatureKD):
    """Feature-affinity KD (He et al., ICIP 2020): ``affinity`` spatial (FAKD's own, width-free),
    channel (C x C; an adapter when widths differ) or batch (N x N, width-free)."""

    name = "fakd"
    description = "feature-affinity KD (spatial, channel or batch affinity) at the release's positions"
    options = {
        **FeatureKD.options,
        "affinity": Option("spatial", str, "spatial | channel | batch"),
    }

    def feature_kind(self) -> str:
        given = str(self.opts["affinity"]).strip().lower()
        kind = ALIASES.get(given, given)
        if kind not in AFFINITIES:
            raise DukdError(
                f"fakd: --affinity must be one of {', '.join(AFFINITIES)}, got '{self.opts['affinity']}'"
            )
        return kind


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
