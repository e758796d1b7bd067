"""`dukd upscale` and dukd_cli.upscale.paths: image modes, outputs, tiling, errors, exported models, ONNX runtime.

Test images are made with Pillow; outputs are checked with Pillow too (independently of dukd's reader).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageCms

from dukd_cli.errors import DukdError
from dukd_cli.upscale.inference import run_model

imageio = pytest.importorskip("dukd_cli.images.imageio")


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def tiny(tiny_x2):
    """(weights path, model) of a seeded tiny x2 network (conftest's ``tiny_x2``)."""
    return tiny_x2


def model_opts(w: Path) -> list[str]:
    return ["--model", "tiny", "--scale", "2", "--weights", str(w), "--arg", "n_feats=8"]


def rgb_array(h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(img)


def expected_rgb(model, arr_u8: np.ndarray, **kw) -> np.ndarray:
    """What dukd should write for an RGB uint8 image: model output clamped and rounded."""
    x = torch.from_numpy(arr_u8.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
    y = run_model(model, x, **kw).clamp(0, 1)
    return (y[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


# --------------------------------------------------------------------------------------------------
# modes
# --------------------------------------------------------------------------------------------------


def test_rgb_png_round_trip(tiny, tmp_path, run_dukd):
    w, m = tiny
    arr = rgb_array()
    src = tmp_path / "in.png"
    Image.fromarray(arr).save(src)
    out = tmp_path / "out.png"
    code, stdout, err = run_dukd("upscale", src, "-o", out, *model_opts(w))
    assert code == 0, err
    with Image.open(out) as im:
        assert im.mode == "RGB" and im.size == (64, 48)
        got = np.asarray(im)
    assert max_diff(got, expected_rgb(m, arr)) <= 1
    assert src.read_bytes() == (tmp_path / "in.png").read_bytes()


def test_gray_stays_gray(tiny, tmp_path, run_dukd):
    w, m = tiny
    gray = rgb_array()[..., 0]
    src = tmp_path / "g.png"
    Image.fromarray(gray).save(src)  # uint8 2-D -> L
    code, _, err = run_dukd("upscale", src, "-o", tmp_path / "o.png", *model_opts(w))
    assert code == 0, err
    with Image.open(tmp_path / "o.png") as im:
        assert im.mode == "L" and im.size == (64, 48)
        got = np.asarray(im).astype(np.float32)
    ref = expected_rgb(m, np.repeat(gray[..., None], 3, axis=2)).astype(np.float32)
    # The gray output is a luma/average of the RGB output: within a couple of levels of its channels' range.
    assert np.all(got >= ref.min(axis=2) - 2) and np.all(got <= ref.max(axis=2) + 2)


def test_rgba_alpha_bicubic_and_model(tiny, tmp_path, run_dukd):
    w, m = tiny
    arr = rgb_array()
    yy, xx = np.mgrid[0:24, 0:32]
    alpha = ((xx * 8) % 256).astype(np.uint8)  # a ramp: bicubic must reproduce it closely
    rgba = np.dstack([arr, alpha])
    src = tmp_path / "a.png"
    Image.fromarray(rgba).save(src)  # uint8 HxWx4 -> RGBA
    code, _, err = run_dukd("upscale", src, "-o", tmp_path / "o.png", *model_opts(w))
    assert code == 0, err
    with Image.open(tmp_path / "o.png") as im:
        assert im.mode == "RGBA" and im.size == (64, 48)
        out = np.asarray(im)
    a = torch.from_numpy(alpha.astype(np.float32) / 255)[None, None]
    ref_alpha = (
        F.interpolate(a, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)[0, 0].numpy()
    )
    assert max_diff(out[..., 3], (ref_alpha * 255 + 0.5).astype(np.uint8)) <= 1
    assert max_diff(out[..., :3], expected_rgb(m, arr)) <= 1

    code, _, err = run_dukd("upscale", src, "-o", tmp_path / "m.png", "--alpha", "model", *model_opts(w))
    assert code == 0, err
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "RGBA"
        out_m = np.asarray(im)
    a3 = torch.from_numpy(alpha.astype(np.float32) / 255)[None, None].expand(1, 3, 24, 32)
    ref_m = run_model(m, a3)[0].mean(0).clamp(0, 1).numpy() * 255
    assert np.abs(out_m[..., 3].astype(np.float32) - ref_m).max() <= 0.51

    code, _, err = run_dukd("upscale", src, "-o", tmp_path / "x.png", "--alpha", "magic", *model_opts(w))
    assert code == 1 and "--alpha" in err


def test_palette_and_cmyk_are_converted(tiny, tmp_path, run_dukd):
    w, _ = tiny
    arr = rgb_array()
    Image.fromarray(arr).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "p.png")
    Image.fromarray(arr).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    out = tmp_path / "out"
    code, _, err = run_dukd(
        "upscale", tmp_path / "p.png", tmp_path / "c.jpg", "-o", out, "--ext", "png", *model_opts(w)
    )
    assert code == 0, err
    for name in ("p.png", "c.png"):
        with Image.open(out / name) as im:
            assert im.mode in ("RGB", "RGBA") and im.size == (64, 48), (name, im.mode)


def test_sixteen_bit_stays_sixteen_bit(tiny, tmp_path, run_dukd):
    w, m = tiny
    g16 = (rgb_array()[..., 0].astype(np.uint16) * 257 + 3).astype(np.uint16)
    src = tmp_path / "g16.png"
    Image.fromarray(g16).save(src)  # uint16 -> I;16
    code, _, err = run_dukd("upscale", src, "-o", tmp_path / "o.png", *model_opts(w))
    assert code == 0, err
    loaded = imageio.read_image(tmp_path / "o.png")
    assert loaded.bit_depth == 16 and loaded.is_gray
    assert loaded.rgb.shape == (48, 64, 3)
    with Image.open(tmp_path / "o.png") as im:
        assert im.mode.startswith("I")
        vals = np.asarray(im)
    assert vals.max() > 255  # really 16-bit values, not 8-bit ones in a 16-bit container
    # 16-bit RGB: written through dukd's writer (Pillow cannot make one), read back as 16-bit.
    rgb16 = tmp_path / "rgb16.png"
    imageio.write_image(rgb16, rgb_array().astype(np.float32) / 255.0, bit_depth=16)
    assert imageio.read_image(rgb16).bit_depth == 16
    code, _, err = run_dukd("upscale", rgb16, "-o", tmp_path / "o16.png", *model_opts(w))
    assert code == 0, err
    back = imageio.read_image(tmp_path / "o16.png")
    assert back.bit_depth == 16 and not back.is_gray and back.rgb.shape == (48, 64, 3)
    # --ext jpg cannot hold 16 bits: written as 8-bit.
    code, _, err = run_dukd("upscale", src, "-o", tmp_path / "o.jpg", *model_opts(w))
    assert code == 0, err
    assert imageio.read_image(tmp_path / "o.jpg").bit_depth == 8


def test_exif_orientation_applied_and_icc_kept(tiny, tmp_path, run_dukd):
    w, _ = tiny
    arr = rgb_array(16, 40)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    icc = srgb_icc()
    src = tmp_path / "rot.jpg"
    im.save(src, exif=exif.tobytes(), icc_profile=icc, quality=95)
    code, _, err = run_dukd("upscale", src, "-o", tmp_path / "o.png", *model_opts(w))
    assert code == 0, err
    with Image.open(tmp_path / "o.png") as out:
        assert out.size == (32, 80)  # displayed (rotated) size x2: 16 wide, 40 tall -> 32 x 80
        assert out.info.get("icc_profile") == icc
        assert out.getexif().get(0x0112, 1) == 1  # not rotated twice by viewers


def test_outscale_ext_and_suffix(tiny, tmp_path, run_dukd):
    w, _ = tiny
    src = tmp_path / "pic.png"
    Image.fromarray(rgb_array()).save(src)
    code, _, err = run_dukd("upscale", src, "--outscale", "3", "--ext", "webp", *model_opts(w))
    assert code == 0, err
    out = tmp_path / "pic_x3.webp"
    with Image.open(out) as im:
        assert im.size == (96, 72) and im.format == "WEBP"
    code, _, err = run_dukd(
        "upscale", src, "--suffix", "_big", "--ext", "jpg", "--outscale", "1.5", *model_opts(w)
    )
    assert code == 0, err
    with Image.open(tmp_path / "pic_big.jpg") as im:
        assert im.size == (48, 36) and im.format == "JPEG"
    code, _, err = run_dukd("upscale", src, "--ext", "gif", *model_opts(w))
    assert code == 1 and "--ext" in err


def test_tiled_cli_matches_whole(tiny, tmp_path, run_dukd):
    w, _ = tiny
    src = tmp_path / "big.png"
    Image.fromarray(rgb_array(70, 90, seed=2)).save(src)
    assert run_dukd("upscale", src, "-o", tmp_path / "whole.png", *model_opts(w))[0] == 0
    assert (
        run_dukd(
            "upscale",
            src,
            "-o",
            tmp_path / "tiled.png",
            "--tile",
            "32",
            "--tile-overlap",
            "8",
            *model_opts(w),
        )[0]
        == 0
    )
    assert run_dukd("upscale", src, "-o", tmp_path / "auto.png", "--tile", "auto", *model_opts(w))[0] == 0
    a = np.asarray(Image.open(tmp_path / "whole.png"))
    b = np.asarray(Image.open(tmp_path / "tiled.png"))
    assert max_diff(a[8:-8, 8:-8], b[8:-8, 8:-8]) <= 1
    assert max_diff(a, np.asarray(Image.open(tmp_path / "auto.png"))) <= 1


# --------------------------------------------------------------------------------------------------
# inputs and outputs
# --------------------------------------------------------------------------------------------------


def test_folder_glob_and_progress(tiny, tmp_path, run_dukd):
    w, _ = tiny
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(3):
        Image.fromarray(rgb_array(seed=i)).save(d / f"p{i}.png")
    (d / "notes.txt").write_text("not an image; ignored in folder listings")
    out = tmp_path / "out"
    code, stdout, err = run_dukd("upscale", d, "-o", out, *model_opts(w))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png", "p2.png"]
    out2 = tmp_path / "out2"
    code, _, err = run_dukd("upscale", str(d / "p[01].png"), "-o", out2, "--suffix", "_sr", *model_opts(w))
    assert code == 0, err
    assert sorted(p.name for p in out2.iterdir()) == ["p0_sr.png", "p1_sr.png"]
    code, _, err = run_dukd("upscale", d, "-o", tmp_path / "single.png", *model_opts(w))
    assert code == 1 and "folder" in err


def test_never_overwrites_inputs(tiny, tmp_path, run_dukd):
    w, _ = tiny
    src = tmp_path / "a.png"
    Image.fromarray(rgb_array()).save(src)
    before = src.read_bytes()
    code, _, err = run_dukd("upscale", src, "-o", tmp_path, "--suffix", "", *model_opts(w))
    assert code == 1 and "overwrite an input" in err
    code, _, err = run_dukd("upscale", src, "-o", src, "--overwrite", *model_opts(w))
    assert code == 1 and "overwrite an input" in err
    assert src.read_bytes() == before


def test_existing_outputs_skipped_unless_overwrite(tiny, tmp_path, run_dukd):
    w, _ = tiny
    src = tmp_path / "a.png"
    Image.fromarray(rgb_array()).save(src)
    out = tmp_path / "a_x2.png"
    out.write_bytes(b"previous")
    code, _, err = run_dukd("upscale", src, *model_opts(w))
    assert code == 0 and "exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"previous"
    code, _, err = run_dukd("upscale", src, "--overwrite", *model_opts(w))
    assert code == 0, err
    with Image.open(out) as im:
        assert im.size == (64, 48)


def test_bad_inputs_one_line_each_rest_processed(tiny, tmp_path, run_dukd):
    w, _ = tiny
    d = tmp_path / "mixed"
    d.mkdir()
    Image.fromarray(rgb_array()).save(d / "good.png")
    (d / "empty.png").write_bytes(b"")
    good = io.BytesIO()
    Image.fromarray(rgb_array()).save(good, format="PNG")
    (d / "corrupt.png").write_bytes(good.getvalue()[:60])
    (d / "fake.jpg").write_bytes(b"this is text, not a JPEG")
    text = tmp_path / "readme.txt"
    text.write_text("hello")
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    out = tmp_path / "out"
    code, stdout, err = run_dukd(
        "upscale", d, text, empty_dir, tmp_path / "missing.png", "-o", out, *model_opts(w)
    )
    assert code == 1
    assert (out / "good.png").exists() and len(list(out.iterdir())) == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    for needle in ("empty.png", "corrupt.png", "fake.jpg", "readme.txt", "nothing", "missing.png"):
        assert sum(needle in ln for ln in lines) == 1, (needle, err)
    assert "Traceback" not in err
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_single_bad_file_exit_code(tiny, tmp_path, run_dukd):
    w, _ = tiny
    (tmp_path / "z.png").write_bytes(b"")
    code, _, err = run_dukd("upscale", tmp_path / "z.png", *model_opts(w))
    assert code == 1 and "z.png" in err and len([ln for ln in err.splitlines() if ln.strip()]) <= 2
    # Brackets in names are shown literally (not read as console markup).
    code, _, err = run_dukd("upscale", tmp_path / "shot[bold].png", *model_opts(w))
    assert code == 1 and "shot[bold].png" in err


def test_model_checks(tiny, tmp_path, run_dukd):
    w, _ = tiny
    src = tmp_path / "a.png"
    Image.fromarray(rgb_array()).save(src)
    code, _, err = run_dukd(
        "upscale", src, "--model", "tiny", "--scale", "4", "--weights", w, "--arg", "n_feats=8"
    )
    assert code == 1 and "Traceback" not in err  # x2 weights in a x4 model: a clear mismatch
    code, _, err = run_dukd("upscale", src, "--model", "tiny", "--scale", "2")
    assert code == 1 and "--weights" in err
    code, _, err = run_dukd(
        "upscale",
        src,
        *model_opts(w),
        "--precision",
        "fp16",
        "--device",
        "cpu",
    )
    assert code == 1 and "fp16" in err
    code, _, err = run_dukd(
        "upscale",
        src,
        *model_opts(w),
        "--device",
        "nope",
    )
    assert code == 1 and "device" in err
    code, _, err = run_dukd(
        "upscale",
        src,
        *model_opts(w),
        "--tile",
        "big",
    )
    assert code == 1 and "--tile" in err


# --------------------------------------------------------------------------------------------------
# exported models and ONNX Runtime
# --------------------------------------------------------------------------------------------------


def test_export_round_trip_same_pixels(tiny, tmp_path, run_dukd):
    pytest.importorskip("onnxruntime")
    w, m = tiny
    src = tmp_path / "in.png"
    arr = rgb_array(30, 44, seed=4)
    Image.fromarray(arr).save(src)
    exported = tmp_path / "exported"
    code, _, err = run_dukd(
        "export", "--model", "tiny", "--weights", w, "--scale", "2", "--arg", "n_feats=8", "-o", exported
    )
    assert code == 0, err
    assert run_dukd("upscale", src, "-o", tmp_path / "orig.png", *model_opts(w))[0] == 0
    code, _, err = run_dukd("upscale", src, "-o", tmp_path / "dir.png", "--model", exported)
    assert code == 0, err
    a = np.asarray(Image.open(tmp_path / "orig.png"))
    b = np.asarray(Image.open(tmp_path / "dir.png"))
    assert np.array_equal(a, b)
    # ONNX Runtime: the same pixels (within rounding), whole and tiled.
    code, _, err = run_dukd(
        "upscale", src, "-o", tmp_path / "onnx.png", "--model", exported, "--runtime", "onnx"
    )
    assert code == 0, err
    assert max_diff(np.asarray(Image.open(tmp_path / "onnx.png")), a) <= 1
    tiled = ["--tile", "16", "--tile-overlap", "4"]
    code, _, err = run_dukd(
        "upscale", src, "-o", tmp_path / "onnx_t.png", "--model", exported, "--runtime", "onnx", *tiled
    )
    assert code == 0, err
    assert run_dukd("upscale", src, "-o", tmp_path / "torch_t.png", *tiled, *model_opts(w))[0] == 0
    c = np.asarray(Image.open(tmp_path / "onnx_t.png"))
    assert max_diff(c, np.asarray(Image.open(tmp_path / "torch_t.png"))) <= 1
    code, _, err = run_dukd("upscale", src, "-o", tmp_path / "x.png", "--model", exported, "--scale", "4")
    assert code == 1 and "x2" in err
    code, _, err = run_dukd(
        "upscale", src, "-o", tmp_path / "x.png", "--model", "tiny", "--scale", "2", "--runtime", "onnx"
    )
    assert code == 1 and "exported" in err


# --------------------------------------------------------------------------------------------------
# Python API
# --------------------------------------------------------------------------------------------------


def test_upscale_image_api(tiny, tmp_path):
    from dukd_cli.upscale.image import upscale_image
    from dukd_cli.upscale.paths import collect_inputs, plan_outputs

    _, m = tiny
    src = tmp_path / "a.png"
    Image.fromarray(rgb_array()).save(src)
    img = imageio.read_image(src)
    res = upscale_image(m, img, tile=16, tile_overlap=4)
    assert res.rgb.shape == (48, 64, 3) and res.rgb.dtype == np.float32
    assert 0.0 <= res.rgb.min() and res.rgb.max() <= 1.0
    assert res.alpha is None and res.mode == "RGB" and res.bit_depth == 8
    res = upscale_image(m, img, outscale=1.0)
    assert res.rgb.shape == (24, 32, 3)
    with pytest.raises(DukdError):
        upscale_image(m, img, alpha_mode="nope")

    files, errors = collect_inputs([src, tmp_path / "nope.png", str(tmp_path / "*.jpg")])
    assert files == [src] and len(errors) == 2
    jobs = plan_outputs([src, tmp_path / "sub" / "a.jpg"], tmp_path / "o", factor_label="2")
    assert jobs[0].dest == tmp_path / "o" / "a.png"
    assert jobs[1].status == "todo" and jobs[1].dest == tmp_path / "o" / "a.jpg"
    jobs = plan_outputs([src, tmp_path / "sub" / "a.png"], tmp_path / "o", factor_label="2")
    assert jobs[1].status == "failed" and "also the output" in jobs[1].message
    assert os.path.basename(plan_outputs([src], None, factor_label="2")[0].dest) == "a_x2.png"
