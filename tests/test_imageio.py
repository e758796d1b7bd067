"""The one image reader/writer: every mode, 16-bit precision, EXIF/ICC, atomic writes, clear errors."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from dukd_cli.errors import DukdError
from dukd_cli.images import imageio
from dukd_cli.images.imageio import read_image, read_rgb_uint8, write_image
from dukd_cli.images.pngstream import encode_png16

RNG = np.random.default_rng(0)
ICC = b"dukd-test-icc-profile" * 20


def _rgb8(h=13, w=17) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _u16(shape) -> np.ndarray:
    a = RNG.integers(0, 65536, shape, dtype=np.uint16)
    a.flat[:4] = [0, 65535, 255, 256]  # extremes and the byte boundary
    return a


def _asym() -> np.ndarray:
    """A small RGB image whose every flip/rotation is distinguishable."""
    return np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3) * 2


# --------------------------------------------------------------------------------------------
# Reading every mode
# --------------------------------------------------------------------------------------------


def test_read_l_la_rgb_rgba(tmp_path):
    rgb = _rgb8()
    gray = rgb[..., 0]
    alpha = rgb[..., 1]
    cases = {
        "L": (Image.fromarray(gray), np.repeat(gray[..., None], 3, 2), None, True),
        "LA": (Image.fromarray(np.dstack([gray, alpha])), np.repeat(gray[..., None], 3, 2), alpha, True),
        "RGB": (Image.fromarray(rgb), rgb, None, False),
        "RGBA": (Image.fromarray(np.dstack([rgb, alpha])), rgb, alpha, False),
    }
    for mode, (im, want_rgb, want_alpha, gray_flag) in cases.items():
        assert im.mode == mode
        p = tmp_path / f"{mode}.png"
        im.save(p)
        got = read_image(p)
        assert got.mode == mode and got.bit_depth == 8 and got.is_gray == gray_flag
        assert got.rgb.dtype == np.float32 and got.rgb.shape == (13, 17, 3)
        np.testing.assert_array_equal(np.round(got.rgb * 255).astype(np.uint8), want_rgb)
        if want_alpha is None:
            assert got.alpha is None
        else:
            assert got.alpha.dtype == np.float32
            np.testing.assert_array_equal(np.round(got.alpha * 255).astype(np.uint8), want_alpha)
        np.testing.assert_array_equal(read_rgb_uint8(p), want_rgb)
        assert got.path == p


def test_read_palette_with_and_without_transparency(tmp_path):
    rgb = _rgb8()
    pal = Image.fromarray(rgb).quantize(colors=16)
    p = tmp_path / "p.png"
    pal.save(p)
    got = read_image(p)
    assert got.mode == "P" and got.alpha is None and not got.is_gray
    np.testing.assert_array_equal(np.round(got.rgb * 255).astype(np.uint8), np.asarray(pal.convert("RGB")))

    pal.info["transparency"] = 3
    q = tmp_path / "pt.png"
    pal.save(q, transparency=3)
    got = read_image(q)
    want = np.asarray(Image.open(q).convert("RGBA"))
    assert got.alpha is not None
    np.testing.assert_array_equal(np.round(got.alpha * 255).astype(np.uint8), want[..., 3])
    assert np.any(want[..., 3] == 0)
    np.testing.assert_array_equal(np.round(got.rgb * 255).astype(np.uint8), want[..., :3])


def test_read_bilevel_cmyk_and_float(tmp_path):
    bits = RNG.random((9, 11)) > 0.5
    p = tmp_path / "one.png"
    Image.fromarray(bits).save(p)
    got = read_image(p)
    assert got.mode == "1" and got.is_gray
    np.testing.assert_array_equal(got.rgb[..., 0], bits.astype(np.float32))

    cmyk = Image.new("CMYK", (6, 4), (10, 20, 30, 40))
    q = tmp_path / "cmyk.tif"
    cmyk.save(q, icc_profile=ICC)
    got = read_image(q)
    assert got.mode == "CMYK" and not got.is_gray
    assert got.icc_profile is None  # a CMYK profile does not describe the RGB returned
    np.testing.assert_array_equal(np.round(got.rgb * 255).astype(np.uint8), np.asarray(cmyk.convert("RGB")))

    f01 = RNG.random((5, 6)).astype(np.float32)
    r = tmp_path / "f01.tif"
    Image.fromarray(f01).save(r)
    got = read_image(r)
    assert got.mode == "F" and got.is_gray and got.bit_depth == 16
    np.testing.assert_array_equal(got.rgb[..., 2], f01)
    f255 = f01 * 255
    s = tmp_path / "f255.tif"
    Image.fromarray(f255).save(s)
    np.testing.assert_allclose(read_image(s).rgb[..., 0], f01, atol=1e-6)


def test_read_16bit_gray_variants(tmp_path):
    a = _u16((7, 9))
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)  # mode I;16
    q = tmp_path / "g16b.tif"
    Image.frombytes("I;16B", (9, 7), a.astype(">u2").tobytes()).save(q)
    r = tmp_path / "g32.tif"
    Image.fromarray(a.astype(np.int32)).save(r)  # mode I
    for path, mode in ((p, "I;16"), (q, "I;16B"), (r, "I")):
        got = read_image(path)
        assert got.mode == mode and got.bit_depth == 16 and got.is_gray
        np.testing.assert_array_equal(
            np.round(got.rgb[..., 1].astype(np.float64) * 65535).astype(np.uint16), a
        )
    bad = tmp_path / "neg.tif"
    Image.fromarray(a.astype(np.int32) - 70000).save(bad)
    with pytest.raises(DukdError, match="neg.tif"):
        read_image(bad)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("filter_type", [None, 0, 1, 2, 3, 4])
def test_read_16bit_png_every_layout_and_filter(tmp_path, channels, filter_type):
    """16-bit gray, gray+alpha, RGB, RGBA PNGs keep all 16 bits (Pillow alone keeps 8 for 3 of them)."""
    a = _u16((11, 14, channels))
    p = tmp_path / "deep.png"
    p.write_bytes(encode_png16(a, filter_type=filter_type))
    got = read_image(p)
    assert got.bit_depth == 16
    color = a[..., :3] if channels >= 3 else np.repeat(a[..., :1], 3, axis=2)
    np.testing.assert_array_equal(np.round(got.rgb.astype(np.float64) * 65535).astype(np.uint16), color)
    if channels in (2, 4):
        np.testing.assert_array_equal(
            np.round(got.alpha.astype(np.float64) * 65535).astype(np.uint16), a[..., -1]
        )
    else:
        assert got.alpha is None
    assert got.is_gray == (channels <= 2)
    # Evaluation reader: v -> round(v / 257).
    np.testing.assert_array_equal(
        read_rgb_uint8(p), ((color.astype(np.uint32) + 128) // 257).astype(np.uint8)
    )


def _tiff48(arr: np.ndarray, big_endian: bool) -> bytes:
    """A minimal uncompressed 48-bit RGB TIFF (Pillow cannot write one)."""
    h, w, _ = arr.shape
    e = ">" if big_endian else "<"
    data = arr.astype(e + "u2").tobytes()
    bps_off, data_off = 8, 14
    ifd_off = data_off + len(data)
    ifd_off += ifd_off % 2
    tags = [
        (256, 3, 1, w),
        (257, 3, 1, h),
        (258, 3, 3, bps_off),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, data_off),
        (277, 3, 1, 3),
        (278, 3, 1, h),
        (279, 4, 1, len(data)),
        (284, 3, 1, 1),
    ]
    out = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(e + "I", ifd_off)
    out += struct.pack(e + "HHH", 16, 16, 16) + data
    out += b"\x00" * (ifd_off - len(out)) + struct.pack(e + "H", len(tags))
    for tag, typ, count, value in tags:
        if typ == 3 and count == 1:
            out += struct.pack(e + "HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack(e + "HHII", tag, typ, count, value)
    return out + struct.pack(e + "I", 0)


@pytest.mark.parametrize("big_endian", [False, True])
def test_read_48bit_tiff(tmp_path, big_endian):
    a = _u16((6, 5, 3))
    p = tmp_path / "deep.tif"
    p.write_bytes(_tiff48(a, big_endian))
    got = read_image(p)
    assert got.bit_depth == 16 and got.mode == "RGB"
    np.testing.assert_array_equal(np.round(got.rgb.astype(np.float64) * 65535).astype(np.uint16), a)


def test_read_rgb_uint8_16bit_rule(tmp_path):
    v = np.array([[0, 128, 129, 385, 386, 257 * 100, 65406, 65407, 65535]], dtype=np.uint16)
    p = tmp_path / "rule.png"
    Image.fromarray(v).save(p)
    got = read_rgb_uint8(p)
    assert got.shape == (1, 9, 3) and got.dtype == np.uint8 and got.flags.writeable
    assert got[0, :, 0].tolist() == [0, 0, 1, 1, 2, 100, 254, 255, 255]
    # 8 -> 16 bit expansion (x * 257) is inverted exactly.
    x = np.arange(256, dtype=np.uint16)[None] * 257
    q = tmp_path / "expand.png"
    Image.fromarray(x).save(q)
    assert read_rgb_uint8(q)[0, :, 1].tolist() == list(range(256))


# --------------------------------------------------------------------------------------------
# EXIF and ICC
# --------------------------------------------------------------------------------------------


def _exif(orientation: int | None) -> Image.Exif:
    e = Image.Exif()
    e[0x010F] = "dukd-maker"  # Make
    if orientation is not None:
        e[0x0112] = orientation
    return e


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_and_reset(tmp_path, orientation):
    base = Image.fromarray(_asym())
    p = tmp_path / "o.png"
    base.save(p, exif=_exif(orientation).tobytes())
    got = read_image(p)
    with Image.open(p) as im:
        want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    if orientation >= 5:
        assert want.shape[:2] == (7, 5)
    np.testing.assert_array_equal(np.round(got.rgb * 255).astype(np.uint8), want)
    np.testing.assert_array_equal(read_rgb_uint8(p), want)
    e = Image.Exif()
    e.load(got.exif)
    assert 0x0112 not in e and e[0x010F] == "dukd-maker"


def test_exif_orientation_on_16bit_rgb_png(tmp_path):
    a = _u16((5, 7, 3))
    p = tmp_path / "o16.png"
    p.write_bytes(encode_png16(a, exif=_exif(6).tobytes()))
    got = read_image(p)
    want = np.rot90(a, k=-1)  # orientation 6: rotate 90 degrees clockwise to display
    np.testing.assert_array_equal(np.round(got.rgb.astype(np.float64) * 65535).astype(np.uint16), want)
    e = Image.Exif()
    e.load(got.exif)
    assert 0x0112 not in e


def test_no_exif_gives_none(tmp_path):
    p = tmp_path / "plain.png"
    Image.fromarray(_rgb8()).save(p)
    assert read_image(p).exif is None and read_image(p).icc_profile is None


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif"])
def test_icc_profile_kept_on_read_and_write(tmp_path, ext):
    p = tmp_path / f"src{ext}"
    Image.fromarray(_rgb8()).save(p, icc_profile=ICC)
    got = read_image(p)
    assert got.icc_profile == ICC
    out = write_image(tmp_path / f"dst{ext}", got.rgb, icc_profile=got.icc_profile, exif=_exif(3).tobytes())
    back = read_image(out)
    assert back.icc_profile == ICC
    e = Image.Exif()
    e.load(back.exif)
    assert e[0x010F] == "dukd-maker" and 0x0112 not in e  # written pixels are upright: no orientation


def test_icc_and_exif_in_16bit_png(tmp_path):
    rgb = RNG.random((6, 8, 3))
    out = write_image(tmp_path / "d.png", rgb, bit_depth=16, icc_profile=ICC, exif=_exif(None).tobytes())
    back = read_image(out)
    assert back.icc_profile == ICC and back.bit_depth == 16
    e = Image.Exif()
    e.load(back.exif)
    assert e[0x010F] == "dukd-maker"


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff"])
def test_write_8bit_lossless_round_trip(tmp_path, ext):
    rgb = RNG.random((10, 12, 3))
    out = write_image(tmp_path / f"x{ext}", rgb)
    back = read_image(out)
    np.testing.assert_array_equal(np.round(back.rgb * 255), np.round(rgb * 255))
    assert back.mode == "RGB" and back.bit_depth == 8


def test_write_quantises_by_rounding_and_clips(tmp_path):
    rgb = np.array([[[-0.2, 0.0, 1.3], [0.5 / 255 + 1e-9, 1.49 / 255, 1.51 / 255]]])
    back = read_rgb_uint8(write_image(tmp_path / "q.png", rgb))
    assert back.tolist() == [[[0, 0, 255], [1, 1, 2]]]


def test_write_gray_modes(tmp_path):
    g = RNG.random((8, 9))
    rgb = np.repeat(g[..., None], 3, axis=2)
    for src in (g, g[..., None], rgb):
        back = read_image(write_image(tmp_path / "g.png", src, mode="L"))
        assert back.mode == "L" and back.is_gray
        np.testing.assert_array_equal(np.round(back.rgb[..., 0] * 255), np.round(g * 255))
    colour = RNG.random((8, 9, 3))
    back = read_image(write_image(tmp_path / "luma.png", colour, mode="L"))
    luma = colour @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_array_equal(np.round(back.rgb[..., 0] * 255), np.round(luma * 255))
    # Gray arrays written as RGB are replicated.
    back = read_image(write_image(tmp_path / "rep.png", g))
    assert back.mode == "RGB"
    np.testing.assert_array_equal(back.rgb[..., 0], back.rgb[..., 2])


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_write_16bit_png_preserved(tmp_path, mode, with_alpha):
    rgb = RNG.random((9, 10, 3))
    if mode == "L":
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    alpha = RNG.random((9, 10)) if with_alpha else None
    back = read_image(write_image(tmp_path / "d.png", rgb, alpha=alpha, mode=mode, bit_depth=16))
    assert back.bit_depth == 16 and back.is_gray == (mode == "L")
    np.testing.assert_array_equal(np.round(back.rgb.astype(np.float64) * 65535), np.round(rgb * 65535))
    if with_alpha:
        np.testing.assert_array_equal(
            np.round(back.alpha.astype(np.float64) * 65535), np.round(alpha * 65535)
        )
    else:
        assert back.alpha is None
    with Image.open(tmp_path / "d.png") as im:  # a standard PNG: Pillow opens it too
        im.load()


def test_write_16bit_gray_tiff_and_fallbacks(tmp_path):
    g = RNG.random((6, 7))
    back = read_image(write_image(tmp_path / "g.tif", g, mode="L", bit_depth=16))
    assert back.bit_depth == 16
    np.testing.assert_array_equal(np.round(back.rgb[..., 0].astype(np.float64) * 65535), np.round(g * 65535))
    with pytest.warns(UserWarning, match="8 bits"):
        write_image(tmp_path / "c.tif", RNG.random((6, 7, 3)), bit_depth=16)
    assert read_image(tmp_path / "c.tif").bit_depth == 8
    with pytest.warns(UserWarning, match="8 bits"):
        write_image(tmp_path / "c.jpg", RNG.random((6, 7, 3)), bit_depth=16)


@pytest.mark.parametrize("ext", [".png", ".webp", ".tif"])
def test_write_alpha_kept(tmp_path, ext):
    rgb = RNG.random((8, 8, 3))
    alpha = np.zeros((8, 8))
    alpha[:, 4:] = 1.0
    back = read_image(write_image(tmp_path / f"a{ext}", rgb, alpha=alpha, quality=100))
    assert back.alpha is not None
    np.testing.assert_array_equal(np.round(back.alpha * 255), np.round(alpha * 255))
    gray_back = read_image(write_image(tmp_path / f"la{ext}", rgb, alpha=alpha, mode="L", quality=100))
    assert gray_back.alpha is not None


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".bmp"])
def test_write_alpha_to_format_without_alpha_composites_on_white(tmp_path, ext):
    rgb = np.zeros((16, 16, 3))
    alpha = np.zeros((16, 16))
    alpha[:, 8:] = 1.0
    with pytest.warns(UserWarning, match="over white"):
        out = write_image(tmp_path / f"w{ext}", rgb, alpha=alpha)
    back = read_rgb_uint8(out)
    assert read_image(out).alpha is None
    assert back[:, :6].min() >= 250 and back[:, 10:].max() <= 5


def test_write_jpeg_quality(tmp_path):
    rgb = RNG.random((64, 64, 3))
    lo = write_image(tmp_path / "lo.jpg", rgb, quality=10)
    hi = write_image(tmp_path / "hi.jpg", rgb, quality=98)
    assert os.path.getsize(lo) < os.path.getsize(hi)


def test_write_creates_folders_and_replaces(tmp_path):
    target = tmp_path / "a" / "b" / "x.png"
    write_image(target, np.zeros((4, 4, 3)))
    write_image(target, np.ones((4, 4, 3)))
    assert read_rgb_uint8(target).min() == 255
    assert sorted(os.listdir(target.parent)) == ["x.png"]


# --------------------------------------------------------------------------------------------
# Atomicity
# --------------------------------------------------------------------------------------------


def test_failing_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half of an image")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    target = tmp_path / "out.tif"  # PNG has its own encoder (test_pngstream)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_image(target, np.zeros((4, 4, 3)))
    assert os.listdir(tmp_path) == []

    # An existing file is left untouched by a failed overwrite.
    monkeypatch.undo()
    write_image(target, np.ones((4, 4, 3)))
    before = target.read_bytes()
    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(RuntimeError):
        write_image(target, np.zeros((4, 4, 3)))
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.tif"]


def test_failing_16bit_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imageio.os, "replace", broken_replace)
    with pytest.raises(DukdError, match="out16.png"):
        write_image(tmp_path / "out16.png", np.zeros((4, 4, 3)), bit_depth=16)
    assert os.listdir(tmp_path) == []


def test_write_rejects_unknown_extension(tmp_path):
    with pytest.raises(DukdError, match="x.gifv"):
        write_image(tmp_path / "x.gifv", np.zeros((4, 4, 3)))
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError):
        write_image(tmp_path / "x.png", np.zeros((4, 4, 2)))
    with pytest.raises(ValueError):
        write_image(tmp_path / "x.png", np.zeros((4, 4, 3)), alpha=np.zeros((3, 4)))


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00"))
        + chunk(b"IEND", b"")
    )


def test_bad_inputs_raise_dukd_error_naming_the_file(tmp_path):
    missing = tmp_path / "missing.png"
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    good = tmp_path / "good.png"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    corrupt = tmp_path / "corrupt.png"
    data = bytearray(good.read_bytes())
    data[60:200] = b"\x17" * 140
    corrupt.write_bytes(bytes(data))
    folder = tmp_path / "folder.png"
    folder.mkdir()
    for bad in (missing, empty, text, truncated, corrupt, folder):
        for reader in (read_image, read_rgb_uint8):
            with pytest.raises(DukdError) as info:
                reader(bad)
            msg = str(info.value)
            assert bad.name in msg and "\n" not in msg


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(40000, 40000))
    with pytest.raises(DukdError, match="too large.*bomb.png"):
        read_image(bomb)
    # Our own limit (below Pillow's) is enforced too; large-but-sane images are fine.
    ok = tmp_path / "ok.png"
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(ok)
    read_image(ok)
    monkeypatch.setattr(imageio, "MAX_PIXELS", 500)
    with pytest.raises(DukdError, match="ok.png"):
        read_image(ok)
