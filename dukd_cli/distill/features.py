"""Feature distillation: where to read feature maps (forward hooks), how to transform them, and the loss.

One responsibility: given a student and a teacher, record the feature maps of named submodules
during a forward, transform each pair and compare them. The methods (``fakd``, ``fitnet``, ``at``,
``fsp`` and DUKD's ``feature_loss``) own the rest of the loss.

**Positions.** The authors' release (``yun224/DUKD``, ``options/*/fakd_*.yml``) reads four maps:
the first conv, two body blocks and the conv after the body, ``['conv_first', 10, 21,
'conv_after_body']`` for a 32-block EDSR and ``['conv_first', 2, 6, 'conv_after_body']`` for a
10-group RCAN. :func:`default_layers` gives the same positions for the zoo's EDSR (``head``,
``body.{n//3}``, ``body.{2n//3}``, ``body.{n}``) and RCAN (``head``, ``body.{g//5}``,
``body.{3g//5}``, ``body.{g}``), scaled to the network's depth; any other network (SwinIR, IMDN, a
plugin) uses its ``feature_taps()``, or the module names given with ``--feature-layers``.

**Transforms** (each of an (N, C, H, W) map, computed in float32):

* ``spatial`` (FAKD): per position the L2-normalised channel vector, ``A = F^T F``: (N, HW, HW);
  maps above ``max_side`` per side are average-pooled first (bounded memory). Width-free.
* ``channel``: per channel the L2-normalised spatial vector, ``A = F F^T``: (N, C, C).
* ``batch``: the flattened maps' Gram matrix across the batch, each row divided by its L2 norm: (N, N).
  Width-free.
* ``at`` (attention transfer): ``sum_c F_c^2``, divided by its L2 norm over the positions:
  (N, 1, H, W). Width-free.
* ``fitnet``: the map itself (a FitNets hint), the student's through a learned 1x1 adapter when
  the widths differ; ``fitnet-mean`` is the release's variant (the channel mean, width-free).
* ``fsp``: the FSP matrix of consecutive taps ``F_k`` (pooled to the size of ``F_{k+1}``)
  ``F_k F_{k+1}^T / HW``: (N, C_k, C_{k+1}). (The release defines ``FSP(fm1, fm2)`` but calls every
  transform with one map, so its FSP cannot run; pairing consecutive taps is Yim et al.'s design.)

**Widths.** A transform that is width-free compares teacher and student of any widths. The others
(``channel``, ``fitnet``, ``fsp``) put each student map through a learned 1x1 convolution to the
teacher's width when the widths differ (the adapters are trained with the student and saved in
``state.pt``; they are not part of the exported student).

**Loss.** ``sum_k mean |T(S_k) - T(T_k)|`` (L1 per tap, summed; the release's ``L1Loss`` with
``reduction: mean``). With ``grad=False`` the sum is detached, as in the release, which sums the
tap losses through ``torch.tensor([...])``: the value is logged, no gradient reaches the student.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dukd_cli.errors import DukdError

# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------


def _check4(feat: Tensor, what: str) -> Tensor:
    if feat.dim() != 4:
        raise DukdError(
            f"{what}: a feature tap gave a {feat.dim()}-D tensor; taps must give (N, C, H, W) maps"
        )
    return feat.float()


def spatial_affinity(feat: Tensor, max_side: int = 0) -> Tensor:
    """FAKD's spatial affinity: per position, the L2-normalised channel vector; A = F^T F (N, HW, HW).

    Bounded memory: feature maps larger than ``max_side x max_side`` are average-pooled to at most
    that size first, so one matrix never exceeds ``max_side^4`` entries per sample (32: 1024 x 1024,
    4 MiB in float32) however large the patch. Computed in float32.
    """
    f = _check4(feat, "fakd")
    h, w = f.shape[-2:]
    if max_side > 0 and (h > max_side or w > max_side):
        f = F.adaptive_avg_pool2d(f, (min(h, max_side), min(w, max_side)))
    f = F.normalize(f.flatten(2), dim=1, eps=1e-12)  # (N, C, HW), unit channel vectors
    return torch.bmm(f.transpose(1, 2), f)


def channel_affinity(feat: Tensor) -> Tensor:
    """Per channel, the L2-normalised spatial vector; A = F F^T (N, C, C). Computed in float32."""
    f = F.normalize(_check4(feat, "channel affinity").flatten(2), dim=2, eps=1e-12)
    return torch.bmm(f, f.transpose(1, 2))


def batch_affinity(feat: Tensor) -> Tensor:
    """The flattened maps' Gram matrix across the batch, each row divided by its L2 norm (N, N)."""
    f = _check4(feat, "batch affinity").flatten(1)
    q = f @ f.t()
    return q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)


def attention_map(feat: Tensor, eps: float = 1e-6) -> Tensor:
    """Attention transfer: ``sum_c F_c^2`` divided by its L2 norm over the positions (N, 1, H, W)."""
    a = _check4(feat, "at").pow(2).sum(dim=1, keepdim=True)
    return a / (a.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + eps)


def channel_mean(feat: Tensor) -> Tensor:
    """The release's FitNet transform: the mean over channels (N, 1, H, W)."""
    return _check4(feat, "fitnet").mean(dim=1, keepdim=True)


def fsp_matrix(first: Tensor, second: Tensor) -> Tensor:
    """FSP matrix of two maps: ``first`` (pooled to ``second``'s size when larger) times ``second``
    transposed, over the positions, divided by their number: (N, C1, C2)."""
    a, b = _check4(first, "fsp"), _check4(second, "fsp")
    if a.shape[-2:] != b.shape[-2:]:
        a = F.adaptive_avg_pool2d(a, b.shape[-2:])
    a, b = a.flatten(2), b.flatten(2)
    return torch.bmm(a, b.transpose(1, 2)) / a.shape[-1]


# name -> (per-map transform or None for fsp, width-free)
KINDS: dict[str, tuple[Callable[..., Tensor] | None, bool]] = {
    "spatial": (spatial_affinity, True),
    "channel": (channel_affinity, False),
    "batch": (batch_affinity, True),
    "at": (attention_map, True),
    "fitnet": (None, False),  # the map itself (through the adapter)
    "fitnet-mean": (channel_mean, True),
    "fsp": (None, False),
}
ALIASES = {"fakd": "spatial", "sa": "spatial", "ca": "channel", "ia": "batch"}
AFFINITIES = ("spatial", "channel", "batch")


def check_kind(name: str, what: str = "--feature-loss") -> str:
    """The canonical transform name of ``name`` (aliases: fakd/sa = spatial, ca = channel, ia = batch)."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in KINDS:
        known = ", ".join([*KINDS, *ALIASES])
        raise DukdError(f"{what} must be one of {known}; got '{name}'")
    return key


def width_free(kind: str) -> bool:
    return KINDS[check_kind(kind)][1]


# --------------------------------------------------------------------------------------------
# Positions
# --------------------------------------------------------------------------------------------


def default_layers(model: nn.Module, family: str | None = None) -> list[str]:
    """The feature positions of ``model``: the release's per family (EDSR, RCAN), else ``feature_taps()``.

    Raises one clear line when the network has neither (pass ``--feature-layers``).
    """
    modules = dict(model.named_modules())
    fam = (family or "").lower()
    n_blocks = getattr(model, "n_resblocks", None)
    n_groups = getattr(model, "n_resgroups", None)
    if fam == "edsr" and isinstance(n_blocks, int) and "head" in modules and f"body.{n_blocks}" in modules:
        n = n_blocks
        return ["head", f"body.{min(n // 3, n - 1)}", f"body.{min(2 * n // 3, n - 1)}", f"body.{n}"]
    if fam == "rcan" and isinstance(n_groups, int) and "head" in modules and f"body.{n_groups}" in modules:
        g = n_groups
        return ["head", f"body.{min(g // 5, g - 1)}", f"body.{min(3 * g // 5, g - 1)}", f"body.{g}"]
    taps = getattr(model, "feature_taps", None)
    if callable(taps):
        return list(taps())
    raise DukdError(
        f"{type(model).__name__} declares no feature_taps() and has no known feature positions; "
        "name its modules with --feature-layers NAME1,NAME2 (see 'dukd zoo' or model.named_modules())"
    )


def pair_layers(
    student: nn.Module,
    teacher: nn.Module,
    layers: Sequence[str],
    teacher_layers: Sequence[str],
    student_family: str | None,
    teacher_family: str | None,
) -> tuple[list[str], list[str]]:
    """The student's and the teacher's positions: ``layers`` (student) and ``teacher_layers`` (default
    ``layers``) where given, else each network's :func:`default_layers`. Networks of different
    families whose defaults differ in number (an EDSR student has four, a SwinIR teacher three) use
    both their ``feature_taps()`` when those agree in number."""
    s = list(layers) or default_layers(student, student_family)
    t = list(teacher_layers) or list(layers) or default_layers(teacher, teacher_family)
    if not layers and not teacher_layers and len(s) != len(t):
        fs, ft = getattr(student, "feature_taps", None), getattr(teacher, "feature_taps", None)
        if callable(fs) and callable(ft) and len(fs()) == len(ft()):
            return list(fs()), list(ft())
    return s, t


class Taps:
    """Forward hooks that record the outputs of named submodules while :meth:`recording` is on.

    The graph is kept (the student's features carry gradients); outside :meth:`recording` the
    hooks record nothing, so other forwards (DUKD's upcycled inputs) hold no extra memory.
    """

    def __init__(self, model: nn.Module, names: Sequence[str], who: str) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            how = "--feature-layers" if who == "student" else "--method-opt teacher_feature_layers=A,B,..."
            raise DukdError(
                f"the {who} ({type(model).__name__}) has no module {', '.join(missing)} to read features "
                f"from; name its modules with {how}"
            )
        if not names:
            raise DukdError(f"no feature layers for the {who}")
        self.names = list(names)
        self.outputs: list[Tensor] = []
        self.active = False
        self.handles = [modules[n].register_forward_hook(self._hook) for n in self.names]

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self.active:
            self.outputs.append(output[0] if isinstance(output, (tuple, list)) else output)

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[Tensor]]:
        """Record during the block; the list it yields holds the maps (in forward order) afterwards."""
        self.outputs = []
        self.active = True
        got: list[Tensor] = []
        try:
            yield got
        finally:
            self.active = False
            got.extend(self.outputs)
            self.outputs = []

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


# --------------------------------------------------------------------------------------------
# The feature term
# --------------------------------------------------------------------------------------------


def _common_size(fs: Tensor, ft: Tensor) -> tuple[Tensor, Tensor]:
    """Crop both maps to their common spatial size (e.g. a window-padded SwinIR beside an EDSR)."""
    if fs.shape[-2:] == ft.shape[-2:]:
        return fs, ft
    h, w = min(fs.shape[-2], ft.shape[-2]), min(fs.shape[-1], ft.shape[-1])
    return fs[..., :h, :w], ft[..., :h, :w]


def _probe_widths(model: nn.Module, taps: Taps, device: torch.device, side: int = 16) -> list[int]:
    """The channel count of each tapped map, from one forward of a small input (no gradients, the
    global random state untouched: a drop-path network draws nothing the run would have drawn)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad(), taps.recording() as feats:
        was = model.training
        model.eval()
        try:
            model(torch.zeros(1, 3, side, side, device=device))
        finally:
            model.train(was)
    if len(feats) != len(taps.names):
        raise DukdError(
            f"the feature layers {', '.join(taps.names)} ran {len(feats)} times in one forward; "
            "each must run exactly once (name modules that are called once)"
        )
    return [int(f.shape[1]) for f in feats]


class FeatureTerm:
    """The feature loss of one student-teacher pair: hooks, optional adapters, transform, L1.

    Use::

        term = FeatureTerm(student_module, teacher, "at", s_layers, t_layers, device=dev)
        with term.student() as fs:
            y = student(lr)
        with term.teacher() as ft:
            t = teacher(lr)          # under no_grad
        loss = term.loss(fs, ft)
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        kind: str,
        student_layers: Sequence[str],
        teacher_layers: Sequence[str],
        *,
        device: torch.device,
        max_side: int = 32,
        grad: bool = True,
    ) -> None:
        self.kind = check_kind(kind)
        if len(student_layers) != len(teacher_layers):
            raise DukdError(
                f"the student has {len(student_layers)} feature layers and the teacher {len(teacher_layers)}; "
                "name as many of each (--feature-layers, --method-opt teacher_feature_layers=A,B,...)"
            )
        if self.kind == "fsp" and len(student_layers) < 2:
            raise DukdError("fsp compares consecutive feature layers: it needs at least two")
        self.max_side = int(max_side)
        self.grad = bool(grad)
        self._s = Taps(student, student_layers, "student")
        self._t = Taps(teacher, teacher_layers, "teacher")
        self.adapters: nn.ModuleList | None = None
        if not width_free(self.kind):
            try:
                ws = _probe_widths(student, self._s, device)
                wt = _probe_widths(teacher, self._t, device)
            except BaseException:
                self.close()
                raise
            if ws != wt:
                if not self.grad:
                    self.close()
                    hint = (
                        " or --method-opt mean=true (the release's FitNet)" if self.kind == "fitnet" else ""
                    )
                    raise DukdError(
                        f"{self.kind} compares maps of equal widths; the student's are {ws} and the teacher's "
                        f"{wt}, and without the feature gradient an adapter cannot learn: use --feature-grad "
                        f"(the dukd recipe){hint}"
                    )
                self.adapters = nn.ModuleList(
                    [nn.Conv2d(a, b, 1) if a != b else nn.Identity() for a, b in zip(ws, wt, strict=True)]
                ).to(device)

    def positions(self) -> dict[str, list[str]]:
        """The layers read, as the method options that name them (recorded in config.toml)."""
        return {"feature_layers": list(self._s.names), "teacher_feature_layers": list(self._t.names)}

    @property
    def student_layers(self) -> list[str]:
        return self._s.names

    @property
    def teacher_layers(self) -> list[str]:
        return self._t.names

    def student(self) -> contextlib.AbstractContextManager[list[Tensor]]:
        return self._s.recording()

    def teacher(self) -> contextlib.AbstractContextManager[list[Tensor]]:
        return self._t.recording()

    def transform(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """The transformed maps of one network (fsp: one matrix per consecutive pair)."""
        if self.kind == "fsp":
            return [fsp_matrix(a, b) for a, b in zip(feats[:-1], feats[1:], strict=True)]
        if self.kind == "fitnet":
            return [f.float() for f in feats]
        fn = KINDS[self.kind][0]
        assert fn is not None
        if self.kind == "spatial":
            return [fn(f, self.max_side) for f in feats]
        return [fn(f) for f in feats]

    def loss(self, s_feats: Sequence[Tensor], t_feats: Sequence[Tensor]) -> Tensor:
        """``sum_k mean |T(S_k) - T(T_k)|`` (detached without ``grad``, as released)."""
        if len(s_feats) != len(self._s.names) or len(t_feats) != len(self._t.names):
            raise DukdError(
                f"feature layers ran {len(s_feats)} (student) and {len(t_feats)} (teacher) times for "
                f"{len(self._s.names)} layers; each must run exactly once per forward"
            )
        pairs = [_common_size(fs, ft) for fs, ft in zip(s_feats, t_feats, strict=True)]
        fs = [p[0] for p in pairs]
        ft = [p[1].detach() for p in pairs]
        if self.adapters is not None:
            fs = [a(f) for a, f in zip(self.adapters, fs, strict=True)]
        terms = [(a - b).abs().mean() for a, b in zip(self.transform(fs), self.transform(ft), strict=True)]
        total = torch.stack(terms).sum()
        return total if self.grad else total.detach()

    def close(self) -> None:
        self._s.remove()
        self._t.remove()
