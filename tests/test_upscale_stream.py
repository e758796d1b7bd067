"""Bounded-memory upscaling: the band-by-band file writer equals the whole-image path; the streaming
PNG encoder; the read/compute/write pipeline; --png-level, --tile and --tile-overlap rules; messages
printed once per run."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dukd_cli.errors import DukdError
from dukd_cli.images.imageio import open_writer, read_image, write_image
from dukd_cli.images.pngstream import PngStreamWriter
from dukd_cli.models.factory import create_model
from dukd_cli.upscale.image import resolve_overlap, upscale_image
from dukd_cli.upscale.job import bicubic_rows, upscale_to_file


def smooth(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, channels), dtype=np.uint8)
    img = Image.fromarray(coarse if channels > 1 else coarse[..., 0]).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(img)


def opts(w: Path) -> list[str]:
    return ["--model", "tiny", "--scale", "2", "--weights", str(w), "--arg", "n_feats=8"]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def old_path(model, img, dest: Path, tile, overlap, alpha_mode="bicubic", bit_depth=8) -> None:
    """Today's whole-image path: the whole float output, then one write."""
    res = upscale_image(model, img, tile=tile, tile_overlap=overlap, alpha_mode=alpha_mode)
    write_image(
        dest, res.rgb, alpha=res.alpha, mode=res.mode, bit_depth=bit_depth, icc_profile=res.icc_profile
    )


# --------------------------------------------------------------------------------------------------
# streamed output == the whole-image output
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,scale,ext",
    [
        ("rgb", 2, "png"),
        ("rgb", 4, "png"),
        ("gray", 2, "png"),
        ("rgba", 2, "png"),
        ("rgba", 4, "png"),
        ("rgba-model", 2, "png"),
        ("rgb16", 2, "png"),
        ("rgb", 2, "jpg"),
        ("rgba", 2, "webp"),
    ],
)
def test_streamed_file_equals_whole_image_path(tiny_plugin, tmp_path, kind, scale, ext):
    torch.manual_seed(0)
    m = create_model("tiny", scale, n_feats=8).eval()
    h, w = 45, 61
    src = tmp_path / "in.png"
    if kind == "gray":
        Image.fromarray(smooth(h, w, 1)).save(src)
    elif kind.startswith("rgba"):
        Image.fromarray(np.dstack([smooth(h, w), smooth(h, w, 1, seed=3)])).save(src)
    elif kind == "rgb16":
        from dukd_cli.images.pngstream import encode_png16

        src.write_bytes(encode_png16(smooth(h, w).astype(np.uint16) * 257 + 11))
    else:
        Image.fromarray(smooth(h, w)).save(src)
    img = read_image(src)
    alpha_mode = "model" if kind == "rgba-model" else "bicubic"
    bits = 16 if kind == "rgb16" else 8
    for tile, overlap in ((16, 4), (24, 6), (None, 16)):
        new, old = tmp_path / f"new.{ext}", tmp_path / f"old.{ext}"
        upscale_to_file(m, img, new, tile=tile, tile_overlap=overlap, alpha_mode=alpha_mode, bit_depth=bits)
        old_path(m, img, old, tile, overlap, alpha_mode, bits)
        if bits == 16:
            assert np.array_equal(read_image(new).rgb, read_image(old).rgb)
        else:
            a, b = pixels(new), pixels(old)
            assert a.shape[:2] == (h * scale, w * scale)
            assert np.array_equal(a, b), (kind, tile)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.png", new.name, old.name])


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_rows_match_the_whole_interpolation(scale):
    a = torch.rand(1, 1, 37, 23, generator=torch.Generator().manual_seed(scale))
    whole = F.interpolate(a, scale_factor=scale, mode="bicubic", align_corners=False)
    H = 37 * scale
    for r0, r1 in ((0, 5), (5, 40), (40, H - 3), (H - 3, H), (0, H)):
        part = bicubic_rows(a, scale, r0, r1)
        if scale in (2, 4):
            assert torch.equal(part, whole[..., r0:r1, :])
        else:
            assert torch.allclose(part, whole[..., r0:r1, :], atol=1e-6)


def test_cli_tiled_streamed_equals_whole_float_reference(tiny_x2, tmp_path, run_dukd):
    """Through the CLI: a tiled run written band by band equals the tiled whole-image float output."""
    w, m = tiny_x2
    src = tmp_path / "p.png"
    Image.fromarray(smooth(70, 90, seed=5)).save(src)
    code, _, err = run_dukd(
        "upscale", src, "-o", tmp_path / "t.png", "--tile", "32", "--tile-overlap", "8", *opts(w)
    )
    assert code == 0, err
    assert "tiles" in err  # the tile bar (with an ETA) of a single large image
    old_path(m, read_image(src), tmp_path / "ref.png", 32, 8)
    assert np.array_equal(pixels(tmp_path / "t.png"), pixels(tmp_path / "ref.png"))


# --------------------------------------------------------------------------------------------------
# the streaming PNG encoder
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [0, 1, 6, 9])
@pytest.mark.parametrize("channels,bits", [(1, 8), (2, 8), (3, 8), (4, 8), (3, 16), (1, 16), (4, 16)])
def test_png_stream_round_trip_any_band_split(tmp_path, level, channels, bits):
    a = smooth(33, 29, 3, seed=channels)
    a = np.concatenate([a, a[..., :1] // 2], axis=2)[..., :channels] if channels != 3 else a
    if bits == 16:
        a = a.astype(np.uint16) * 257 + np.arange(a.shape[1], dtype=np.uint16)[None, :, None]
    f = io.BytesIO()
    w = PngStreamWriter(f, a.shape[1], a.shape[0], channels, bits, level=level, icc_profile=b"fake-icc" * 20)
    for r0, r1 in ((0, 1), (1, 13), (13, 14), (14, 33)):
        w.write_rows(a[r0:r1])
    w.close()
    path = tmp_path / "s.png"
    path.write_bytes(f.getvalue())
    if bits == 8:
        with Image.open(path) as im:
            assert im.info.get("icc_profile") == b"fake-icc" * 20
            got = np.asarray(im)
        assert np.array_equal(got.reshape(a.shape), a)
    else:
        img = read_image(path)
        planes = img.rgb if channels >= 3 else img.rgb[..., :1]
        got = np.round(planes * 65535).astype(np.uint16)
        want = a[..., : 3 if channels >= 3 else 1]
        assert np.array_equal(got, want)
        if channels in (2, 4):
            assert np.array_equal(np.round(img.alpha * 65535).astype(np.uint16), a[..., -1])


def test_png_stream_checks_rows(tmp_path):
    f = io.BytesIO()
    w = PngStreamWriter(f, 4, 3, 3)
    with pytest.raises(ValueError, match="uint8"):
        w.write_rows(np.zeros((1, 4, 3), np.uint16))
    with pytest.raises(ValueError, match="do not fit"):
        w.write_rows(np.zeros((1, 5, 3), np.uint8))
    w.write_rows(np.zeros((2, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="2 of 3 rows"):
        w.close()


def test_png_level_sizes_and_errors(tmp_path, tiny_x2, run_dukd):
    arr = smooth(64, 80)
    sizes = {}
    for level in (0, 1, 9):
        p = tmp_path / f"l{level}.png"
        write_image(p, arr, png_level=level)
        assert np.array_equal(pixels(p), arr)
        sizes[level] = p.stat().st_size
    assert sizes[9] < sizes[1] < sizes[0]
    with pytest.raises(DukdError, match="--png-level"):
        write_image(tmp_path / "x.png", arr, png_level=10)
    assert not (tmp_path / "x.png").exists()
    w, _ = tiny_x2
    src = tmp_path / "in.png"
    Image.fromarray(smooth(20, 20)).save(src)
    code, _, err = run_dukd("upscale", src, "-o", tmp_path / "o.png", "--png-level", "12", *opts(w))
    assert code == 1 and err.count("\n") == 1 and "--png-level must be an integer from 0 to 9" in err
    code, _, err = run_dukd("upscale", src, "-o", tmp_path / "o.png", "--png-level", "9", *opts(w))
    assert code == 0, err


def test_failing_png_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    write_image(target, np.ones((4, 4, 3)))
    before = target.read_bytes()

    def broken(self, samples):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PngStreamWriter, "write_rows", broken)
    with pytest.raises(DukdError, match="No space left"):
        write_image(target, np.zeros((4, 4, 3)))
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["out.png"]


# --------------------------------------------------------------------------------------------------
# the pipeline and the messages
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefetch", [4_000_000, 0])  # read ahead, or not (huge images)
def test_pipeline_many_files_one_bad_one_failing_write(tiny_x2, tmp_path, run_dukd, monkeypatch, prefetch):
    from dukd_cli.images.bandwrite import BandWriter
    from dukd_cli.upscale import paths as upscale

    monkeypatch.setattr(upscale, "PREFETCH_PIXELS", prefetch)

    w, m = tiny_x2
    d = tmp_path / "in"
    d.mkdir()
    for i in range(6):
        Image.fromarray(smooth(20 + i, 24, seed=i)).save(d / f"im{i}.png")
    (d / "im3.png").write_bytes(b"not a png")
    real_finish = BandWriter._finish

    def finish(self):
        if self.path.name == "im4.png":
            raise OSError(5, "Input/output error")
        return real_finish(self)

    monkeypatch.setattr(BandWriter, "_finish", finish)
    out = tmp_path / "out"
    code, stdout, err = run_dukd("upscale", d, "-o", out, *opts(w))
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "im0.png",
        "im1.png",
        "im2.png",
        "im5.png",
    ]  # no temp files
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 2 and "im3.png" in errors[0] and "im4.png" in errors[1]
    assert "4 written, 0 skipped, 2 failed" in stdout
    for i in (0, 1, 2, 5):
        ref = tmp_path / f"ref{i}.png"
        old_path(m, read_image(d / f"im{i}.png"), ref, "auto", None)
        assert np.array_equal(pixels(out / f"im{i}.png"), pixels(ref))


@pytest.mark.parametrize(
    "args,needle",
    [
        (
            ["--tile", "-5"],
            "--tile must be 'auto', 0 (whole images) or a size of at least 16 pixels, not '-5'",
        ),
        (["--tile", "1"], "--tile must be 'auto', 0 (whole images) or a size of at least 16 pixels, not '1'"),
        (["--tile", "big"], "not 'big'"),
        (
            ["--tile", "64", "--tile-overlap", "17"],
            "--tile-overlap 17 is above its limit for --tile 64 (at most tile/4 = 16)",
        ),
        (["--tile-overlap", "-1"], "--tile-overlap must be 0 or more"),
    ],
)
def test_tile_options_one_rule_one_line(tiny_x2, tmp_path, run_dukd, args, needle):
    w, _ = tiny_x2
    src = tmp_path / "in.png"
    Image.fromarray(smooth(20, 20)).save(src)
    code, _, err = run_dukd("upscale", src, "-o", tmp_path / "o.png", *args, *opts(w))
    assert code == 1 and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "o.png").exists()
    # the limit itself is accepted
    code, _, err = run_dukd(
        "upscale", src, "-o", tmp_path / "o.png", "--tile", "64", "--tile-overlap", "16", *opts(w)
    )
    assert code == 0, err


def test_auto_tile_respects_a_large_explicit_overlap(tiny_x2, monkeypatch):
    from dukd_cli.upscale import image as upscale

    _, m = tiny_x2
    monkeypatch.setattr(upscale, "auto_tile", lambda *a, **k: 64)
    assert upscale.resolve_tile("auto", m, 500, 500, overlap=40) == 160
    assert upscale.resolve_tile("auto", m, 500, 500, overlap=8) == 64
    assert resolve_overlap(64, None) == 16


def test_fp16_on_cpu_reported_once_per_run(tiny_x2, tmp_path, run_dukd):
    w, _ = tiny_x2
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        Image.fromarray(smooth(16, 16, seed=i)).save(d / f"{i}.png")
    code, _, err = run_dukd(
        "upscale", d, "-o", tmp_path / "out", "--precision", "fp16", "--device", "cpu", *opts(w)
    )
    assert code == 1 and err.count("fp16") == 1 and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_rerun_one_summary_line_for_skipped_outputs(tiny_x2, tmp_path, run_dukd):
    w, _ = tiny_x2
    d = tmp_path / "in"
    d.mkdir()
    for i in range(4):
        Image.fromarray(smooth(16, 16, seed=i)).save(d / f"{i}.png")
    out = tmp_path / "out"
    assert run_dukd("upscale", d, "-o", out, *opts(w))[0] == 0
    (out / "2.png").unlink()
    code, stdout, err = run_dukd("upscale", d, "-o", out, *opts(w))
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "3 outputs exist" in warnings[0] and "--overwrite" in warnings[0]
    assert "1 written, 3 skipped, 0 failed" in stdout
    # one skipped file is still named
    code, _, err = run_dukd("upscale", d / "0.png", "-o", out / "0.png", *opts(w))
    assert code == 0 and err.count("warning:") == 1 and "0.png exists" in err


def test_evaluate_save_images_png_level(tiny_plugin, tmp_path):
    from dukd_cli.evaluate.protocol import evaluate

    hr = tmp_path / "bench" / "HR"
    hr.mkdir(parents=True)
    Image.fromarray(smooth(48, 40)).save(hr / "a.png")
    torch.manual_seed(0)
    m = create_model("tiny", 2, n_feats=4).eval()
    sizes = {}
    for level in (1, 9):
        out = tmp_path / f"sr{level}"
        evaluate(m, 2, [str(tmp_path / "bench")], device="cpu", save_images=out, png_level=level)
        files = list(out.rglob("*.png"))
        assert len(files) == 1
        sizes[level] = (files[0].stat().st_size, pixels(files[0]))
    assert np.array_equal(sizes[1][1], sizes[9][1]) and sizes[9][0] < sizes[1][0]
    with pytest.raises(DukdError, match="--png-level"):
        evaluate(m, 2, [str(tmp_path / "bench")], device="cpu", save_images=tmp_path / "x", png_level=-1)


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.tif"])
def test_band_writer_blocks_change_nothing(tmp_path, monkeypatch, name):
    from dukd_cli.images import bandwrite

    arr = smooth(37, 23).astype(np.float32) / 255
    alpha = smooth(37, 23, 1, seed=9).astype(np.float32) / 255
    write_image(tmp_path / f"whole_{name}", arr, alpha=alpha if name != "a.tif" else None)
    monkeypatch.setattr(bandwrite, "BLOCK_SAMPLES", 100)  # a block of one or two rows
    with bandwrite.WritePipeline(depth=2) as pipe:
        w = open_writer(tmp_path / name, 37, 23, alpha=name != "a.tif", pipeline=pipe)
        for r0, r1 in ((0, 5), (5, 6), (6, 37)):
            w.write(arr[r0:r1], alpha[r0:r1] if name != "a.tif" else None)
        assert w.close().result() == tmp_path / name
    assert np.array_equal(pixels(tmp_path / name), pixels(tmp_path / f"whole_{name}"))
