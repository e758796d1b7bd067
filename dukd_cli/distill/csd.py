"""CSD: contrastive self-distillation (Wang et al., IJCAI 2021; ``Booooooooooo/CSD``) as a dukd method.

CSD trains one *channel-splitting* network: the student is the first ``width`` fraction of the
channels of every layer of a wider network (the "teacher" of the paper, trained at the same time
and sharing those weights). Every iteration, on one LR batch::

    t = full network (LR)                 s = its first width*C channels (LR)
    rec      = w_pix  |s - HR|
    full     = w_full |t - HR|
    contrast = w_contrast * sum_l a_l * |phi_l(s) - phi_l(t)| / (sum_k |phi_l(s) - phi_l(n_k)| + 1e-7)

``phi_l`` are VGG-19 features (relu1_1, relu2_1, relu3_1, relu4_1, relu5_1; ``a`` = 1/32, 1/16,
1/8, 1/4, 1), the positive is the full network's output (detached, ``--contrast_t_detach`` of the
released runs) and the negatives ``n_k`` are the bicubic-upsampled LR inputs of the batch (every
student output is contrasted with all of them, as the release's broadcast does). The defaults are
the released EDSR command (``demo.sh``: ``--contra_lambda 200 --t_lambda 1 --stu_width_mult 0.25``);
the release feeds VGG images in [0, 255] without ImageNet normalisation (``vgg_input = "released"``;
``"imagenet"`` normalises instead).

Here ``--student`` names the network you get (e.g. EDSR 64 x 32 blocks at x4); CSD trains the
network ``1/width`` times wider (256 channels at width 0.25, the paper's EDSR rows) and the run
ships its first channels as a plain EDSR: ``student.safetensors`` (and validation, ``dukd
evaluate RUN_DIR``, ``dukd export RUN_DIR``) hold the student, ``state.pt`` the whole network.
``--student-weights`` initialises the whole (wide) network, e.g. from a trained EDSR of that size
(the release starts from its pretrained teacher the same way).

Supported families: EDSR (the zoo's ``edsr``, every scale it supports). Its channel split is a
prefix slice of every tensor (convolutions' output and input channels, the upsampler's
``4 * C`` rows, which pixel-shuffle into the first ``C`` channels); other families are refused
with one line.

VGG-19 weights: torchvision's ImageNet file, pinned (:data:`VGG19_SOURCE`), fetched once through
:func:`dukd_cli.sources.fetch`; ``--csd-vgg-weights`` names another file or source. The network
is built from the file's own tensor shapes (torchvision's ``features.N`` names), so a small
stand-in with fewer channels loads the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dukd_cli.distill.methods import Batch, LossGroup, Method, Option, l1
from dukd_cli.errors import DukdError

# torchvision's VGG-19 ImageNet weights. torch.hub names its files by the first 8 hex digits of
# their SHA-256 (``check_hash``), so the name pins the content; dukd checks that prefix.
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
VGG19_SHA256 = "dcbb9e9d"
VGG19_SOURCE = f"{VGG19_URL}#sha256={VGG19_SHA256}"

# torchvision's ``vgg19().features`` up to relu5_1: conv indices, pools, and the taps CSD reads.
_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28)
_POOLS = (4, 9, 18, 27)
_TAPS = (1, 6, 11, 20, 29)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_INPUTS = ("released", "imagenet")


# --------------------------------------------------------------------------------------------
# VGG-19 features
# --------------------------------------------------------------------------------------------


class VGGFeatures(nn.Module):
    """VGG-19's convolutional layers up to relu5_1 (torchvision's indices), frozen; returns the
    five ReLU outputs CSD compares. Channel counts come from ``state_dict``."""

    def __init__(self, state_dict: Mapping[str, Tensor], vgg_input: str = "released") -> None:
        super().__init__()
        if vgg_input not in VGG_INPUTS:
            raise DukdError(f"csd: vgg_input must be one of {', '.join(VGG_INPUTS)}, got '{vgg_input}'")
        self.vgg_input = vgg_input
        layers: list[nn.Module] = []
        in_ch = 3
        for i in range(_TAPS[-1] + 1):
            if i in _CONVS:
                w = state_dict.get(f"features.{i}.weight")
                b = state_dict.get(f"features.{i}.bias")
                if w is None or b is None or w.dim() != 4 or w.shape[1] != in_ch or w.shape[-2:] != (3, 3):
                    raise DukdError(
                        f"csd: the VGG weights are not a VGG-19 state dict (features.{i} missing or of the "
                        "wrong shape); pass torchvision's vgg19 file with --csd-vgg-weights"
                    )
                conv = nn.Conv2d(in_ch, w.shape[0], 3, padding=1)
                with torch.no_grad():
                    conv.weight.copy_(w.float())
                    conv.bias.copy_(b.float())
                layers.append(conv)
                in_ch = w.shape[0]
            elif i in _POOLS:
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(nn.ReLU(inplace=False))
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> VGGFeatures:  # always eval: no dropout/BN, but be explicit
        return super().train(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = x.float()
        x = (x - self.mean) / self.std if self.vgg_input == "imagenet" else x * 255.0
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                out.append(x)
        return out


def load_vgg(source: str, vgg_input: str = "released") -> VGGFeatures:
    """The VGG-19 features of ``source`` (a file, ``https://...#sha256=`` or ``hf://`` source;
    fetched and hash-checked through the one downloader)."""
    from dukd_cli.models.weights import read_checkpoint, unwrap
    from dukd_cli.sources import fetch

    path = fetch(source)
    return VGGFeatures(unwrap(read_checkpoint(path)), vgg_input)


# --------------------------------------------------------------------------------------------
# The contrastive term
# --------------------------------------------------------------------------------------------


def contrastive_loss(
    student: Sequence[Tensor],
    positive: Sequence[Tensor],
    negatives: Sequence[Tensor],
    weights: Sequence[float] = LAYER_WEIGHTS,
    eps: float = 1e-7,
) -> Tensor:
    """CSD's L1 contrastive ratio summed over feature levels.

    ``student[l]``, ``positive[l]``: (N, C, H, W); ``negatives[l]``: (K, C, H, W). Per level: the
    mean absolute distance to the positive over the sum, over the K negatives, of the mean
    absolute distance of every student sample to that negative. Smaller when the student is
    closer to the positive and farther from the negatives. Negatives never carry gradients.
    """
    if not (len(student) == len(positive) == len(negatives) == len(weights)):
        raise DukdError("csd: the feature lists and the level weights differ in length")
    total = torch.zeros((), device=student[0].device)
    for w, fs, fp, fn in zip(weights, student, positive, negatives, strict=True):
        fs, fp, fn = fs.float(), fp.float(), fn.detach().float()
        d_pos = (fs - fp).abs().mean()
        d_neg = torch.zeros((), device=fs.device)
        for k in range(fn.shape[0]):
            d_neg = d_neg + (fs - fn[k : k + 1]).abs().mean()
        total = total + float(w) * d_pos / (d_neg + eps)
    return total


# --------------------------------------------------------------------------------------------
# Channel splitting (EDSR)
# --------------------------------------------------------------------------------------------


def _edsr_class() -> type:
    from zoo.edsr import EDSR

    return EDSR


def split_width(n_student: int, width: float) -> int:
    """The channels of the network whose first ``width`` fraction is ``n_student`` channels."""
    if not 0.0 < width <= 1.0:
        raise DukdError(f"csd: --csd-width must be in (0, 1], got {width}")
    full = round(n_student / width)
    if full < 1 or int(full * width) != n_student:
        raise DukdError(
            f"csd: --csd-width {width:g} does not split a network into the student's {n_student} channels "
            f"(n_feats / width must be a whole number)"
        )
    return full


def prefix_slice(full: Mapping[str, Tensor], shapes: Mapping[str, torch.Size]) -> dict[str, Tensor]:
    """Each tensor of ``full`` cut to the leading block of the shape named in ``shapes`` (views:
    gradients flow back into the full tensors)."""
    out = {}
    for name, shape in shapes.items():
        t = full[name]
        if t.dim() != len(shape) or any(s > f for s, f in zip(shape, t.shape, strict=True)):
            raise DukdError(f"csd: cannot cut {name} {tuple(t.shape)} to {tuple(shape)}")
        out[name] = t[tuple(slice(0, s) for s in shape)]
    return out


class ChannelSplit:
    """The student inside a trained EDSR: its first ``width`` fraction of channels.

    :meth:`forward` runs the student on the full network's tensors (slices: gradients reach the
    shared weights); :meth:`extract` returns the student as a standalone EDSR (copies).
    """

    def __init__(self, full: nn.Module, width: float) -> None:
        EDSR = _edsr_class()
        if not isinstance(full, EDSR):
            raise DukdError(
                f"csd: channel splitting is implemented for EDSR only; the network is {type(full).__name__}"
            )
        n_full = int(full.head[0].out_channels)
        n = int(n_full * width)
        if n < 1:
            raise DukdError(f"csd: --csd-width {width:g} leaves no channel of {n_full}")
        res_scale = float(full.body[0].res_scale) if full.n_resblocks else 1.0
        rgb_mean = tuple(float(v) for v in (-full.sub_mean.bias / full.img_range).tolist())
        args = (full.scale, n, full.n_resblocks, res_scale, full.img_range, rgb_mean, full.mean_shift)
        self.build = lambda: EDSR(*args)
        with torch.device("meta"):
            skeleton = self.build()
        self.skeleton = skeleton
        self.shapes = {k: v.shape for k, v in skeleton.state_dict().items()}
        self.n_full, self.n = n_full, n

    def tensors(self, full: nn.Module) -> dict[str, Tensor]:
        named = dict(full.named_parameters())
        named.update(dict(full.named_buffers()))
        return prefix_slice(named, self.shapes)

    def forward(self, full: nn.Module, x: Tensor) -> Tensor:
        from torch.func import functional_call

        return functional_call(self.skeleton, self.tensors(full), (x,), strict=True)

    def extract(self, full: nn.Module) -> nn.Module:
        """A standalone EDSR holding the student's weights (on ``full``'s device, eval mode)."""
        ref = next(full.parameters())
        with torch.no_grad():
            state = {k: v.detach().clone() for k, v in self.tensors(full).items()}
        model = self.build().to(ref.device)
        model.load_state_dict(state, strict=True)
        return model.eval()


# --------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------


class CSD(Method):
    """Contrastive self-distillation: a channel-splitting EDSR, the student its first ``width`` of
    channels (see the module docstring)."""

    name = "csd"
    description = "contrastive self-distillation: train a wider EDSR and ship its first --csd-width channels"
    needs_teacher = False
    options = {
        "width": Option(
            0.25, float, "the student's fraction of the trained network's channels (--csd-width)"
        ),
        "w_pix": Option(1.0, float, "weight of the student's ground-truth L1 term"),
        "w_full": Option(
            1.0, float, "weight of the full network's ground-truth L1 term (released t_lambda 1)"
        ),
        "w_contrast": Option(200.0, float, "weight of the contrastive term (released contra_lambda 200)"),
        "layer_weights": Option(
            [str(w) for w in LAYER_WEIGHTS], list, "weights of the five VGG levels (relu1_1 ... relu5_1)"
        ),
        "detach_positive": Option(
            True, bool, "no gradient through the positive (released --contrast_t_detach)"
        ),
        "vgg_weights": Option(VGG19_SOURCE, str, "VGG-19 weights: file or source (--csd-vgg-weights)"),
        "vgg_input": Option(
            "released", str, "VGG input: 'released' (images x 255, no normalisation) or 'imagenet'"
        ),
    }

    @classmethod
    def trained_spec(cls, student: Any, options: Mapping[str, Any]) -> Any:
        """The wide network CSD trains, from the student's spec: n_feats / width channels."""
        from dukd_cli import registry
        from dukd_cli.models.factory import instantiate
        from dukd_cli.models.spec import ModelSpec

        if str(student.arch).lower() != "edsr":
            raise DukdError(
                f"csd: channel splitting is implemented for EDSR students only; '{student.name}' is "
                f"{student.arch} (use --student edsr or an EDSR preset)"
            )
        with torch.device("meta"):
            model = instantiate(
                student.arch, registry.get_architecture(student.arch), student.scale, student.kwargs
            )
        n = int(model.head[0].out_channels)
        full = split_width(n, float(options.get("width", cls.options["width"].default)))
        return ModelSpec(**{**student.__dict__, "kwargs": {**dict(student.kwargs), "n_feats": full}})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        o = self.opts
        try:
            self.layer_weights = [float(w) for w in o["layer_weights"]]
        except ValueError:
            raise DukdError(f"csd: layer_weights must be numbers, got {o['layer_weights']}") from None
        if len(self.layer_weights) != len(_TAPS):
            raise DukdError(f"csd: layer_weights needs {len(_TAPS)} values, got {len(self.layer_weights)}")
        self.split = ChannelSplit(self.student_module, float(o["width"]))
        self.vgg = load_vgg(str(o["vgg_weights"]), str(o["vgg_input"])).to(self.ctx.device)

    def shipped(self, trained: nn.Module) -> nn.Module:
        """The student the run delivers from the (EMA) trained network: its channel slice."""
        return self.split.extract(trained)

    def losses(self, batch: Batch) -> Iterator[LossGroup]:
        o = self.opts
        lr, hr = batch.lr, batch.hr
        t = self.student(lr)  # the full network (through DDP when wrapped)
        s = self.split.forward(self.student_module, lr)
        neg = F.interpolate(lr.float(), scale_factor=self.scale, mode="bicubic", align_corners=False)
        with torch.no_grad():
            f_neg = self.vgg(neg)
        if o["detach_positive"]:
            with torch.no_grad():
                f_pos = self.vgg(t.detach())
        else:
            f_pos = self.vgg(t)
        f_s = self.vgg(s)
        yield {
            "rec": o["w_pix"] * l1(s, hr),
            "full": o["w_full"] * l1(t, hr),
            "contrast": o["w_contrast"] * contrastive_loss(f_s, f_pos, f_neg, self.layer_weights),
        }
