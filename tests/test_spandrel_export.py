"""Exported students load where SR users are: spandrel (chaiNNer, ComfyUI) reads ``model.safetensors``.

Every check loads the exported file with spandrel's own file loader and compares its output with
dukd's on a small random image. Tiny random networks; nothing is downloaded.
"""

from __future__ import annotations

import json

import pytest
import torch

from dukd_cli.export.bundle import export_model
from dukd_cli.models import external
from dukd_cli.models.factory import create_model

pytestmark = pytest.mark.skipif(
    not external.available(), reason="spandrel is not installed (pip install 'dukd[spandrel]')"
)

TINY_SWINIR = ["embed_dim=12", "depths=[2,2]", "num_heads=[2,3]", "window_size=4", "img_size=16"]


def _args(items):
    return [a for item in items for a in ("--arg", item)]


def _spandrel_model(path):
    spandrel = external.import_spandrel()
    return spandrel.ModelLoader(device="cpu").load_from_file(str(path))


def _compare(export_dir, x):
    """(dukd's output, spandrel's output) for the exported directory on ``x``."""
    desc = _spandrel_model(export_dir / "model.safetensors")
    ours = create_model(str(export_dir)).eval()
    with torch.no_grad():
        return ours(x.clone()), desc.model.eval()(x.clone()), desc


@pytest.mark.parametrize("upsampler", ["pixelshuffle", "pixelshuffledirect"])
def test_swinir_export_loads_in_spandrel(upsampler, tmp_path, run_dukd):
    """swinir-s / swinir-lightweight shaped files were refused (UnsupportedModelError): the buffers
    spandrel reads the window and training size from were missing."""
    out = tmp_path / "exp"
    code, stdout, err = run_dukd(
        "export", "--model", "swinir", "--scale", "4", *_args([*TINY_SWINIR, f"upsampler={upsampler}"]),
        "-o", out, "--format", "safetensors",
    )  # fmt: skip
    assert code == 0, err
    assert "spandrel (chaiNNer, ComfyUI) loads model.safetensors as SwinIR" in stdout
    a, b, desc = _compare(out, torch.rand(1, 3, 13, 11))
    assert desc.architecture.name == "SwinIR" and desc.scale == 4
    assert a.shape == b.shape == (1, 3, 52, 44)
    assert (a - b).abs().max() <= 1e-5
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["spandrel"]["architecture"] == "SwinIR" and cfg["spandrel"]["max_abs_diff"] <= 1e-5
    assert "loads in spandrel (chaiNNer, ComfyUI) as SwinIR" in (out / "README.md").read_text()


def test_rcan_export_loads_in_spandrel(tmp_path):
    out = tmp_path / "exp"
    kwargs = {"n_feats": 16, "n_resgroups": 2, "n_resblocks": 2, "reduction": 4}
    export_model("rcan", out, scale=2, kwargs=kwargs, formats="safetensors")
    a, b, desc = _compare(out, torch.rand(1, 3, 9, 10))
    assert desc.architecture.name == "RCAN" and a.shape == b.shape == (1, 3, 18, 20)
    assert (a - b).abs().max() <= 1e-5


def test_rcan_spandrel_would_misread_is_not_claimed(tmp_path, run_dukd):
    """spandrel cannot see res_scale in a file (it assumes 1): such an RCAN loads there but computes
    other images, so the export says it is not loadable instead of claiming it is."""
    out = tmp_path / "exp"
    args = ["n_feats=16", "n_resgroups=1", "n_resblocks=2", "reduction=4", "res_scale=0.1"]
    code, stdout, err = run_dukd(
        "export", "--model", "rcan", "--scale", "2", *_args(args), "-o", out, "--format", "safetensors"
    )
    assert code == 0, err
    line = [ln for ln in stdout.splitlines() if "load model.safetensors" in ln]
    assert line == [
        "chaiNNer, ComfyUI (spandrel) cannot load model.safetensors: spandrel reads every RCAN with "
        "res_scale 1 (this one uses 0.1); export with --format onnx for them"
    ]
    assert json.loads((out / "config.json").read_text())["spandrel"]["architecture"] is None


def test_edsr_export_points_to_onnx(tmp_path, run_dukd):
    out = tmp_path / "exp"
    code, stdout, err = run_dukd(
        "export", "--model", "edsr", "--scale", "2", *_args(["n_feats=8", "n_resblocks=1"]), "-o", out,
        "--format", "safetensors",
    )  # fmt: skip
    assert code == 0, err
    assert (
        "chaiNNer, ComfyUI (spandrel) cannot load model.safetensors: spandrel has no EDSR architecture; "
        "export with --format onnx for them"
    ) in stdout
    # the --format onnx it points to is an option of this very command
    code, help_text, _ = run_dukd("export", "--help")
    assert code == 0 and "--format" in help_text and "onnx" in help_text


def test_spandrel_family_export_loads_in_spandrel_itself(tmp_path):
    """A network dukd runs through spandrel (SPAN) is exported in spandrel's own keys (no ``net.``)."""
    from safetensors.torch import load_file, save_file

    external.import_spandrel()
    from spandrel.architectures.SPAN import SPAN

    torch.manual_seed(1)
    span = SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2)
    save_file(
        {k: v.contiguous() for k, v in span.state_dict().items()}, str(tmp_path / "SPAN_x2.safetensors")
    )
    out = tmp_path / "exp"
    export_model(str(tmp_path / "SPAN_x2.safetensors"), out, formats="safetensors")
    assert not any(k.startswith("net.") for k in load_file(str(out / "model.safetensors")))
    a, b, desc = _compare(out, torch.rand(1, 3, 8, 8))
    assert desc.architecture.name == "SPAN" and (a - b).abs().max() <= 1e-5


def test_adapter_never_hands_the_callers_tensor_to_a_foreign_network(tmp_path):
    """spandrel's RCAN multiplies its input in place (x *= 255): the caller's tensor must survive."""
    from zoo.rcan import rcan

    net = rcan(2, n_feats=8, n_resgroups=1, n_resblocks=1, reduction=4).eval()
    wrapped = external.from_state_dict(net.state_dict(), "rcan")
    assert wrapped.architecture == "RCAN"
    x = torch.rand(1, 3, 16, 16)  # no padding needed: the adapter would pass x itself
    keep = x.clone()
    with torch.no_grad():
        first = wrapped(x)
        second = wrapped(x)
    assert torch.equal(x, keep)
    assert torch.equal(first, second)
