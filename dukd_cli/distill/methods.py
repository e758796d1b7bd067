"""Distillation methods behind one interface, registered through the ``dukd.methods`` entry points.

A method turns one training batch into **loss groups**: a generator that yields dicts of weighted
scalar loss terms. The trainer owns everything else (autocast, backward, optimiser, EMA, logging):

* ``--update two-step``: after **each** yielded group the trainer runs backward and takes an
  optimiser step, then resumes the generator, so the next group's student forward sees the updated
  weights (the authors' released DUKD code: ``L_rec + L_kd`` first, then the upcycled terms). The
  gradients are zeroed once per iteration, before the first group, as released: a later group's
  step applies its own gradients **plus** those of the groups before it (``g1(theta_0) + g2(theta_1)``).
* ``--update single``: the trainer collects every group, sums all terms into one loss, runs one
  backward and one optimiser step (the paper's Eq. 4).

A method that yields a single group behaves identically under both. A third-party method
subclasses :class:`Method` (or just provides the same attributes) and registers it::

    [project.entry-points."dukd.methods"]
    mymethod = "my_pkg.methods:MyMethod"

Randomness inside a method must come from ``self.ctx.generator`` (a CPU ``torch.Generator`` that
the trainer seeds and saves with the run), so that runs are reproducible and resume exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dukd_cli.distill.augment import DEFAULT_OPS, AugPlan, check_ops, sample_plan
from dukd_cli.distill.features import (
    FeatureTerm,
    check_kind,
    pair_layers,
)
from dukd_cli.distill.teachers import TeacherPanel
from dukd_cli.distill.upcycle import pick_tiles, zoom_in, zoom_out
from dukd_cli.errors import DukdError

LossGroup = dict[str, Tensor]
UPDATES = ("two-step", "single")
FEATURE_GRAD_HELP = (
    "fix: the feature term's gradient reaches the student (released: summed through torch.tensor([...]), "
    "which drops it)"
)

# --------------------------------------------------------------------------------------------
# Interface
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One method option: its default (``None``: decided per student family), type and help."""

    default: Any
    type: type
    help: str


@dataclass
class Batch:
    """One training batch on the training device: LR patches (N,3,p,p) and HR patches (N,3,ps,ps) in [0,1]."""

    lr: Tensor
    hr: Tensor
    iteration: int = 0


@dataclass
class MethodContext:
    """What the trainer hands a method besides the networks."""

    device: torch.device
    scale: int
    update: str = "two-step"
    generator: torch.Generator = field(default_factory=torch.Generator)
    # A context-manager factory for the teacher's precision (bf16 autocast on CUDA, nothing on CPU).
    teacher_autocast: Callable[[], Any] = contextlib.nullcontext
    # Under DDP: this process's slice of the global batch. ``generator`` is seeded identically on
    # every rank, so a method can draw for the global batch and keep its own rows (see DUKD.draw):
    # N processes then make exactly the draws one process with the global batch would.
    world: int = 1
    rank: int = 0


class Method:
    """Base class of distillation methods.

    Subclasses set ``name``, ``options`` (and ``needs_teacher``), optionally override
    :meth:`family_defaults`, and implement :meth:`losses`. ``student`` is what the trainer trains
    (possibly wrapped in DistributedDataParallel: call it for forwards); ``student_module`` is the
    bare module (for hooks and attributes). ``teacher`` is frozen by the trainer; run it through
    :meth:`teacher_forward`.
    """

    name: ClassVar[str] = "method"
    description: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    # Takes several teachers (a TeacherPanel: --teacher repeated, --teacher-mix).
    multi_teacher: ClassVar[bool] = False
    options: ClassVar[dict[str, Option]] = {}

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        options: Mapping[str, Any],
        ctx: MethodContext,
        *,
        student_module: nn.Module | None = None,
    ) -> None:
        if self.needs_teacher and teacher is None:
            raise DukdError(f"method '{self.name}' needs a teacher (--teacher NAME)")
        self.student = student
        self.student_module = student_module if student_module is not None else student
        self.teacher = teacher
        self.opts = dict(options)
        self.ctx = ctx
        self.scale = int(ctx.scale)
        self._choice: Tensor | None = None  # the teacher panel's per-sample choice ('best')

    # -- options ---------------------------------------------------------------------------

    @classmethod
    def family_defaults(cls, family: str | None, scale: int) -> dict[str, Any]:
        """Defaults that depend on the student's family and the scale (override in subclasses)."""
        return {}

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any], *, family: str | None, scale: int) -> dict[str, Any]:
        """Every option's value: ``given`` over the family defaults over the declared defaults."""
        unknown = [k for k in given if k not in cls.options]
        if unknown:
            known = ", ".join(cls.options) or "none"
            raise DukdError(
                f"method '{cls.name}' takes no option {', '.join(unknown)} (its options: {known})"
            )
        fam = cls.family_defaults(family, scale)
        out: dict[str, Any] = {}
        for key, opt in cls.options.items():
            value = given[key] if key in given else fam.get(key, opt.default)
            out[key] = coerce_option(cls.name, key, value, opt.type)
        return out

    # -- work ------------------------------------------------------------------------------

    def losses(self, batch: Batch) -> Iterator[LossGroup]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- what is trained, what is shipped ----------------------------------------------------

    @classmethod
    def trained_spec(cls, student: Any, options: Mapping[str, Any]) -> Any:
        """The network the trainer optimises, from the student's spec (a ``ModelSpec``).

        The student itself by default; a method that trains a larger network and ships part of it
        (CSD's channel splitting) returns that network's spec and overrides :meth:`shipped`.
        """
        return student

    def shipped(self, trained: nn.Module) -> nn.Module:
        """The student the run delivers (``student.safetensors``, validation) from the trained
        network's EMA: the network itself by default."""
        return trained

    def teacher_forward(self, x: Tensor, target: Tensor | None = None) -> Tensor:
        """The frozen teacher on ``x``: no autograd graph, the teacher's precision (bf16 on CUDA).

        Several teachers (a :class:`~dukd_cli.distill.teachers.TeacherPanel`): their mix; under
        ``best`` the per-sample choice is made against ``target`` (the ground truth of the original
        pair) and reused by later calls without one (the upcycled inputs of the same samples).
        """
        assert self.teacher is not None
        with torch.no_grad(), self.ctx.teacher_autocast():
            if isinstance(self.teacher, TeacherPanel):
                y, self._choice = self.teacher.label(
                    x, target=target, choice=None if target is not None else self._choice
                )
                return y
            return self.teacher(x)

    def trainable(self) -> nn.Module | None:
        """Modules the trainer optimises and checkpoints with the student (e.g. feature adapters)."""
        return None

    def decided_options(self) -> dict[str, Any]:
        """Options the method decided when built (e.g. default feature positions), for config.toml."""
        return {}

    def close(self) -> None:
        """Release hooks or buffers (called once when training ends)."""


def coerce_option(method: str, key: str, value: Any, typ: type) -> Any:
    """Convert a value from the CLI or a TOML file to the option's type, or raise one clear line."""
    try:
        if typ is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if typ is list:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return [str(v) for v in value]
        return typ(value)
    except (TypeError, ValueError):
        raise DukdError(f"method '{method}': option {key} must be {typ.__name__}, got {value!r}") from None


def l1(a: Tensor, b: Tensor) -> Tensor:
    """Mean absolute error computed in float32 (outputs may be bf16 under autocast)."""
    return F.l1_loss(a.float(), b.float())


def model_family(model: nn.Module | None, arch: str | None = None) -> str | None:
    """The student's family for the released per-family defaults: ``edsr``, ``rcan``, ``swinir``, or None.

    A model may declare ``dukd_family``; otherwise the architecture name decides; a model with a
    ``window_size`` attribute counts as SwinIR-like (window attention).
    """
    fam = getattr(model, "dukd_family", None) if model is not None else None
    if isinstance(fam, str) and fam:
        return fam.lower()
    name = (arch or "").lower()
    for f in ("swinir", "rcan", "edsr"):
        if name.startswith(f) or f in name:
            return f
    if model is not None and getattr(model, "window_size", None):
        return "swinir"
    return None


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------


class Scratch(Method):
    """Train the student alone on the ground truth: ``w_pix * |S(LR) - HR|``."""

    name = "scratch"
    description = "no teacher: L1 to the ground truth"
    needs_teacher = False
    options = {"w_pix": Option(1.0, float, "weight of the ground-truth L1 term")}

    def losses(self, batch: Batch) -> Iterator[LossGroup]:
        yield {"rec": self.opts["w_pix"] * l1(self.student(batch.lr), batch.hr)}


class KD(Method):
    """Response-based KD: ``w_pix * |S(LR) - HR| + w_kd * |S(LR) - T(LR)|``."""

    name = "kd"
    description = "response KD: L1 to the ground truth + L1 to the teacher's output"
    multi_teacher = True
    options = {
        "w_pix": Option(1.0, float, "weight of the ground-truth L1 term"),
        "w_kd": Option(1.0, float, "weight of the teacher L1 term"),
    }

    def losses(self, batch: Batch) -> Iterator[LossGroup]:
        t = self.teacher_forward(batch.lr, target=batch.hr)
        s = self.student(batch.lr)
        yield {"rec": self.opts["w_pix"] * l1(s, batch.hr), "kd": self.opts["w_kd"] * l1(s, t)}


# --------------------------------------------------------------------------------------------
# DUKD
# --------------------------------------------------------------------------------------------


class DUKD(Method):
    """Data Upcycling KD (Zhang et al.): KD plus teacher-labelled zoom-in / zoom-out inputs, with
    invertible augmentations on the student's zoom-in inputs.

    Terms (weights ``w_pix`` on ground-truth terms, ``w_kd`` on teacher terms)::

        rec    = w_pix |S(LR) - HR|             kd     = w_kd |S(LR) - T(LR)|
        zi_kd  = w_kd |D^-1 S(D(zi)) - T(zi)|   zo_kd  = w_kd |S(zo) - T(zo)|
        zo_pix = w_pix |S(zo) - LR|

    Two-step update (released): ``{rec, kd}``, then, with the updated student, ``{zi_kd, zo_pix,
    zo_kd}``, computed in the released order (teacher and student on the LR batch; draws; teacher
    on the zoom-in tiles, student on the augmented tiles; student then teacher on the zoom-out
    input). Single: all five summed (the student's LR and zoom-in forwards fused into one batch).
    ``D^-1`` is the true inverse with ``true_inverse`` (dukd recipe), the released re-application
    otherwise. Zoom-out inputs are not augmented unless ``zoom_out_aug`` (an extension).

    With ``feature_loss`` (``--feature-loss NAME``: at, fitnet, fsp, spatial/fakd, channel, batch;
    see :mod:`dukd_cli.distill.features`) a feature term ``feat = w_feat * sum_k mean|T(S_k) - T(T_k)|``
    (``--feature-weight``) on the original pair joins the first group (the LR forwards only; the
    upcycled inputs add none). Several teachers (a panel) label every input, LR and upcycled.
    """

    name = "dukd"
    description = (
        "data upcycling KD: zoom-in/zoom-out inputs labelled by the teacher + invertible augmentations"
    )
    multi_teacher = True
    options = {
        "w_pix": Option(
            None,
            float,
            "weight of every ground-truth term (released: 5 EDSR/SwinIR, 1 RCAN x2/x4, 2 RCAN x3)",
        ),
        "w_kd": Option(1.0, float, "weight of every teacher term"),
        "aug_prob": Option(
            None,
            float,
            "per-operation per-sample probability of the zoom-in augmentations (0.3; 0 for RCAN x2/x4)",
        ),
        "aug_ops": Option(
            list(DEFAULT_OPS), list, "augmentation operations, applied (and drawn) in this order"
        ),
        "zoom_in_tiles": Option(None, int, "zoom-in tiles per sample (2 for EDSR x2, else 1; 0 disables)"),
        "zoom_out": Option(
            None, bool, "use the zoom-out input (off for RCAN x2/x4 and SwinIR students, as released)"
        ),
        "zoom_out_aug": Option(
            False, bool, "extension: augment the zoom-out input too (never in the released code)"
        ),
        "true_inverse": Option(
            True, bool, "fix: D^-1 = true inverses in reverse order (released: the same ops again)"
        ),
        "clamp_zoom_out": Option(True, bool, "fix: clamp the zoom-out input to [0, 1] (released: unclamped)"),
        "feature_loss": Option(
            "", str, "extension: a feature term on the original pair (at, fitnet, fsp, ...)"
        ),
        "w_feat": Option(10.0, float, "weight of the feature term"),
        "feature_layers": Option([], list, "student modules to read features from (default: per family)"),
        "teacher_feature_layers": Option(
            [], list, "teacher modules (default: feature_layers, or per family)"
        ),
        "max_side": Option(32, int, "spatial affinity: pool maps to at most this side first (0: never)"),
        "feature_grad": Option(True, bool, FEATURE_GRAD_HELP),
    }

    @classmethod
    def family_defaults(cls, family: str | None, scale: int) -> dict[str, Any]:
        """The released configurations (``options/*/dukd_*.yml``) per student family and scale."""
        w_pix = {"edsr": 5.0, "swinir": 5.0, "rcan": 2.0 if scale == 3 else 1.0}.get(family or "", 1.0)
        rcan_2_4 = family == "rcan" and scale in (2, 4)
        return {
            "w_pix": w_pix,
            # RCAN x4: prob 0; RCAN x2: no augmentation key at all.
            "aug_prob": 0.0 if rcan_2_4 else 0.3,
            "zoom_in_tiles": 2 if (family == "edsr" and scale == 2) else 1,
            # Released: off for RCAN x2, RCAN x4 and SwinIR (for SwinIR a 48 px patch zoomed out at
            # x4 is 12 px: one 8 px window plus padding).
            "zoom_out": not (rcan_2_4 or family == "swinir"),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        check_ops(self.opts["aug_ops"])
        if not 0.0 <= self.opts["aug_prob"] <= 1.0:
            raise DukdError(f"dukd: aug_prob must be in [0, 1], got {self.opts['aug_prob']}")
        if not 0 <= self.opts["zoom_in_tiles"] <= self.scale**2:
            raise DukdError(f"dukd: zoom_in_tiles must be in [0, {self.scale**2}] at x{self.scale}")
        o = self.opts
        self.term: FeatureTerm | None = None
        if o["feature_loss"]:
            self.term = feature_term_for(
                self,
                check_kind(o["feature_loss"]),
                o["feature_layers"],
                o["teacher_feature_layers"],
                o["max_side"],
                o["feature_grad"],
            )

    def trainable(self) -> nn.Module | None:
        return self.term.adapters if self.term is not None else None

    def decided_options(self) -> dict[str, Any]:
        return self.term.positions() if self.term is not None else {}

    def close(self) -> None:
        if getattr(self, "term", None) is not None:
            self.term.close()

    def _recording(self):
        """(student, teacher) feature recorders around the LR forwards (no-ops without a feature term)."""
        if self.term is None:
            return contextlib.nullcontext([]), contextlib.nullcontext([])
        return self.term.student(), self.term.teacher()

    def _feature(self, group: LossGroup, s_feats: list[Tensor], t_feats: list[Tensor], n: int) -> None:
        if self.term is not None:  # the rows of the original pair (the single update fuses more)
            loss = self.term.loss([f[:n] for f in s_feats], [f[:n] for f in t_feats])
            group["feat"] = self.opts["w_feat"] * loss

    def draw(self, n: int) -> tuple[list[int], AugPlan | None, AugPlan | None]:
        """This batch's random choices, always drawn in the same order (tiles, zoom-in plan, zoom-out plan).

        Drawn for the global batch (``n * world`` samples: one tile choice for all of it, as the
        authors do per batch) and sliced to this rank's rows. The zoom-out plan exists only with
        ``zoom_out_aug``.
        """
        g, o = self.ctx.generator, self.opts
        world, rank = max(1, int(self.ctx.world)), int(self.ctx.rank)
        tiles = pick_tiles(self.scale, o["zoom_in_tiles"], g) if o["zoom_in_tiles"] else []

        def local(plan: AugPlan, groups: int) -> AugPlan:
            if world == 1:
                return plan
            m = plan.mask.reshape(groups, world, n, -1)[:, rank].reshape(groups * n, -1)
            return AugPlan(plan.ops, m)

        plan_zi = (
            local(sample_plan(n * world * len(tiles), o["aug_prob"], o["aug_ops"], g), len(tiles))
            if tiles
            else None
        )
        plan_zo = None
        if o["zoom_out"] and o["zoom_out_aug"]:
            plan_zo = local(sample_plan(n * world, o["aug_prob"], o["aug_ops"], g), 1)
        return tiles, plan_zi, plan_zo

    def _zoom_out_terms(self, lr: Tensor, plan_zo: AugPlan | None) -> LossGroup:
        o, p = self.opts, lr.shape[-1]
        zo = zoom_out(lr, self.scale, clamp=o["clamp_zoom_out"])
        if plan_zo is None:
            s_zo = self.student(zo)
        else:
            s_zo = plan_zo.undo(self.student(plan_zo.apply(zo)), o["true_inverse"])
        return {
            "zo_pix": o["w_pix"] * l1(s_zo[..., :p, :p], lr),
            "zo_kd": o["w_kd"] * l1(s_zo, self.teacher_forward(zo)),
        }

    def losses(self, batch: Batch) -> Iterator[LossGroup]:
        lr, hr, o, s = batch.lr, batch.hr, self.opts, self.scale
        n, p = lr.shape[0], lr.shape[-1]
        if self.ctx.update == "single":
            tiles, plan_zi, plan_zo = self.draw(n)
            zi = zoom_in(hr, p, s, tiles) if tiles else None
            rec_s, rec_t = self._recording()
            # Teacher labels: LR and zoom-in tiles share a size, so one forward serves both.
            with rec_t as t_feats:
                t_all = self.teacher_forward(torch.cat([lr, zi]) if zi is not None else lr, target=hr)
            with rec_s as s_feats:
                y = self.student(torch.cat([lr, plan_zi.apply(zi)]) if zi is not None else lr)
            s_lr = y[:n]
            group = {"rec": o["w_pix"] * l1(s_lr, hr), "kd": o["w_kd"] * l1(s_lr, t_all[:n])}
            self._feature(group, s_feats, t_feats, n)
            if zi is not None:
                group["zi_kd"] = o["w_kd"] * l1(t_all[n:], plan_zi.undo(y[n:], o["true_inverse"]))
            if o["zoom_out"]:
                group.update(self._zoom_out_terms(lr, plan_zo))
            yield group
            return
        # Two-step, in the released order. Step 1 (the trainer steps between the two yields).
        rec_s, rec_t = self._recording()
        with rec_s as s_feats:
            s_lr = self.student(lr)
        with rec_t as t_feats:
            t_lr = self.teacher_forward(lr, target=hr)
        first = {"rec": o["w_pix"] * l1(s_lr, hr), "kd": o["w_kd"] * l1(s_lr, t_lr)}
        self._feature(first, s_feats, t_feats, n)
        yield first
        del s_lr, t_lr, first, s_feats, t_feats
        # Step 2: the upcycled inputs through the updated student.
        tiles, plan_zi, plan_zo = self.draw(n)
        group: LossGroup = {}
        if tiles:
            zi = zoom_in(hr, p, s, tiles)
            t_zi = self.teacher_forward(zi)
            s_zi = plan_zi.undo(self.student(plan_zi.apply(zi)), o["true_inverse"])
            group["zi_kd"] = o["w_kd"] * l1(t_zi, s_zi)
        if o["zoom_out"]:
            group.update(self._zoom_out_terms(lr, plan_zo))
        if group:
            yield group


# --------------------------------------------------------------------------------------------
# Feature terms (DUKD's --feature-loss; FAKD, FitNet, AT, FSP in dukd_cli.distill.feature_methods)
# --------------------------------------------------------------------------------------------


def feature_term_for(
    method: Method, kind: str, layers: list, teacher_layers: list, max_side: int, grad: bool
):
    """The :class:`~dukd_cli.distill.features.FeatureTerm` of a method's student and (single) teacher.

    Positions: ``layers`` for the student (default: the release's per family, else ``feature_taps()``),
    ``teacher_layers`` for the teacher (default: ``layers`` when given, else the teacher's own).
    """
    if isinstance(method.teacher, TeacherPanel):
        raise DukdError(f"{method.name}: a feature term reads one teacher's features; give one --teacher")
    s_mod, t_mod = method.student_module, method.teacher
    s_layers, t_layers = pair_layers(
        s_mod,
        t_mod,
        layers,
        teacher_layers,
        model_family(s_mod, type(s_mod).__name__),
        model_family(t_mod, type(t_mod).__name__),
    )
    return FeatureTerm(
        s_mod, t_mod, kind, s_layers, t_layers, device=method.ctx.device, max_side=max_side, grad=grad
    )
