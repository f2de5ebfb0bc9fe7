"""Every Pillow mode decodes to the RGB uint8 pixels it shows, read back from real files on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedeverything.decode import decode
from embedeverything.errors import BadItem
from embedeverything.images import ImageDecoding
from embedeverything.manifest import MediaRef

BACKGROUNDS = ("white", "black", "none")


def read(path: Path, background: str = "white") -> np.ndarray:
    im = decode(MediaRef(kind="image", path=str(path)), image=ImageDecoding(background=background))
    assert im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3
    return im


def grey(value: int, shape: tuple[int, int] = (2, 3)) -> np.ndarray:
    return np.full((*shape, 3), value, dtype=np.uint8)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32768], [65535, 12850, 514]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")  # a 16-bit greyscale PNG
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    got = read(tmp_path / "g16.png")
    assert got[..., 0].tolist() == [[0, 1, 128], [255, 50, 2]]
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()


def test_16_bit_big_endian_tiff(tmp_path: Path) -> None:
    values = np.array([[0, 65535, 32896]], dtype=">u2")
    Image.frombytes("I;16B", (3, 1), values.tobytes()).save(tmp_path / "b.tif")
    assert read(tmp_path / "b.tif")[0, :, 0].tolist() == [0, 255, 128]


def test_32_bit_int(tmp_path: Path) -> None:
    sixteen = np.array([[0, 65535, 25700]], dtype=np.int32)  # 16-bit data held as 32-bit ints
    Image.fromarray(sixteen, mode="I").save(tmp_path / "i16.tif")
    assert read(tmp_path / "i16.tif")[0, :, 0].tolist() == [0, 255, 100]
    wide = np.array([[-1000, 1000, 0]], dtype=np.int32)  # another range: stretched from min to max
    Image.fromarray(wide, mode="I").save(tmp_path / "i32.tif")
    assert read(tmp_path / "i32.tif")[0, :, 0].tolist() == [0, 255, 128]


def test_32_bit_float(tmp_path: Path) -> None:
    unit = np.array([[0.0, 1.0, 0.5]], dtype=np.float32)
    Image.fromarray(unit, mode="F").save(tmp_path / "f.tif")
    assert read(tmp_path / "f.tif")[0, :, 0].tolist() == [0, 255, 128]
    hdr = np.array([[10.0, 30.0, 20.0]], dtype=np.float32)
    Image.fromarray(hdr, mode="F").save(tmp_path / "hdr.tif")
    assert read(tmp_path / "hdr.tif")[0, :, 0].tolist() == [0, 255, 128]
    bad = np.array([[0.0, np.nan, 0.5]], dtype=np.float32)
    Image.fromarray(bad, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(BadItem, match="NaN or infinite"):
        read(tmp_path / "nan.tif")


@pytest.mark.parametrize(
    "mode,file,pixel,expected",
    [
        ("1", "b.png", 1, (255, 255, 255)),
        ("L", "l.png", 77, (77, 77, 77)),
        ("RGB", "rgb.png", (200, 100, 50), (200, 100, 50)),
        ("CMYK", "cmyk.tif", (0, 255, 255, 0), (255, 0, 0)),  # pure cyan-free red
        ("CMYK", "cmyk.jpg", (0, 0, 0, 255), (0, 0, 0)),  # key only: black
        ("YCbCr", "ycc.tif", (128, 128, 128), (128, 128, 128)),  # no chroma: grey
        ("LAB", "lab.tif", (255, 128, 128), (255, 255, 255)),  # L* 100: white
        ("HSV", None, (0, 255, 255), (255, 0, 0)),  # hue 0, full: red (no format writes HSV)
    ],
)
def test_plain_modes(tmp_path: Path, mode: str, file: str | None, pixel: object, expected: tuple) -> None:
    from embedeverything.images import image_to_rgb_array

    im = Image.new(mode, (3, 2), pixel)  # type: ignore[arg-type]
    if file is None:
        got = image_to_rgb_array(im)
    else:
        im.save(tmp_path / file)
        got = read(tmp_path / file)
    # lossy JPEG and colour conversions may be off by a little
    assert np.abs(got.astype(int) - np.array(expected)).max() <= 2, (mode, got[0, 0])


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((0, 0), 0)
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "p.png")
    assert read(tmp_path / "p.png")[0].tolist() == [[255, 0, 0], [0, 0, 255]]
    im.save(tmp_path / "pt.png", transparency=1)  # palette entry 1 (blue) is transparent
    assert read(tmp_path / "pt.png")[0].tolist() == [[255, 0, 0], [255, 255, 255]]
    assert read(tmp_path / "pt.png", "black")[0].tolist() == [[255, 0, 0], [0, 0, 0]]
    assert read(tmp_path / "pt.png", "none")[0].tolist() == [[255, 0, 0], [0, 0, 255]]


@pytest.mark.parametrize(
    "mode,opaque,clear,half",
    [
        ("RGBA", (10, 200, 30, 255), (0, 0, 0, 0), (200, 100, 0, 128)),
        ("LA", (90, 255), (0, 0), (200, 128)),
        ("PA", None, None, None),
    ],
)
def test_alpha_is_flattened_onto_the_background(tmp_path: Path, mode: str, opaque, clear, half) -> None:
    from embedeverything.images import image_to_rgb_array

    if mode == "PA":  # no format writes PA: decoded from memory
        base = Image.new("P", (3, 1))
        base.putpalette([10, 200, 30, 200, 100, 0] + [0] * 762)
        base.putdata([0, 0, 1])
        alpha = Image.frombytes("L", (3, 1), bytes([255, 0, 128]))
        im = base.convert("PA")
        im.putalpha(alpha)
        colours = [(10, 200, 30), (10, 200, 30), (200, 100, 0)]
    else:
        im = Image.new(mode, (3, 1))
        im.putdata([opaque, clear, half])
        rgb = [px[:3] if mode == "RGBA" else (px[0],) * 3 for px in (opaque, clear, half)]
        colours = rgb
    if mode == "PA":
        white, black, none = (image_to_rgb_array(im, ImageDecoding(background=b))[0] for b in BACKGROUNDS)
    else:
        im.save(tmp_path / "a.png")
        assert Image.open(tmp_path / "a.png").mode == mode
        white, black, none = (read(tmp_path / "a.png", b)[0] for b in BACKGROUNDS)
    assert white[0].tolist() == black[0].tolist() == list(colours[0])  # opaque: as is
    assert white[1].tolist() == [255, 255, 255] and black[1].tolist() == [0, 0, 0]  # transparent
    a = 128 / 255  # half transparent: a blend of the colour and the background
    expected_white = [round(c * a + 255 * (1 - a)) for c in colours[2]]
    expected_black = [round(c * a) for c in colours[2]]
    assert np.abs(white[2].astype(int) - expected_white).max() <= 1
    assert np.abs(black[2].astype(int) - expected_black).max() <= 1
    assert none[2].tolist() == list(colours[2])  # none: the colour stored under the alpha


def test_premultiplied_modes_in_memory() -> None:
    from embedeverything.images import image_to_rgb_array

    im = Image.new("RGBA", (1, 1), (200, 100, 50, 255)).convert("RGBa")
    assert image_to_rgb_array(im).tolist() == [[[200, 100, 50]]]
    clear = Image.new("RGBA", (1, 1), (200, 100, 50, 0)).convert("RGBa")
    assert image_to_rgb_array(clear).tolist() == [[[255, 255, 255]]]
    grey = Image.new("LA", (2, 1))
    grey.putdata([(100, 255), (100, 0)])
    assert image_to_rgb_array(grey.convert("La")).tolist() == [[[100] * 3, [255] * 3]]
    assert image_to_rgb_array(grey.convert("La"), ImageDecoding(background="black"))[0, 1].tolist() == [0] * 3


def test_an_image_flattened_beforehand_gives_the_same_pixels(tmp_path: Path) -> None:
    """A transparent PNG decodes to the pixels of the same PNG flattened onto white by Pillow first
    (as benchmarks/bench_quality.py does), and that flattened copy decodes to itself."""
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(8, 9, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "raw.png")
    im = Image.open(tmp_path / "raw.png").convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im).convert("RGB")
    flat.save(tmp_path / "flat.png")
    assert np.array_equal(read(tmp_path / "raw.png"), np.asarray(flat))
    assert np.array_equal(read(tmp_path / "flat.png"), np.asarray(flat))
    assert not np.array_equal(read(tmp_path / "raw.png", "none"), np.asarray(flat))


def transparent_manifest(folder: Path, n: int = 4) -> Path:
    """RGBA PNGs on side a (colour under transparent pixels: black, as many tools leave it), text on b."""
    from embedeverything.manifest import Pair, write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(n):
        rgba = np.zeros((12, 16, 4), dtype=np.uint8)
        rgba[3:9, 4:12] = (40 * i, 200, 90, 255)  # an opaque shape on a transparent field
        Image.fromarray(rgba, mode="RGBA").save(folder / f"e{i}.png")
        pairs.append(
            Pair(
                id=f"e{i}", a=MediaRef(kind="image", path=f"e{i}.png"), b=MediaRef(kind="text", text=f"e {i}")
            )
        )
    return write_manifest(folder / "m.jsonl", pairs, "image", "text")


def run_ee(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`ee` in this process: (exit status, stderr)."""
    from conftest import ee_main

    capsys.readouterr()
    code = ee_main(*args)
    return code, capsys.readouterr().err


def test_background_is_an_option_and_part_of_the_identity(tmp_path: Path, capsys) -> None:
    from embedeverything.store import Store

    m = transparent_manifest(tmp_path / "d")
    white, black = tmp_path / "white.zarr", tmp_path / "black.zarr"
    assert run_ee(capsys, "embed", str(m), "-e", "test-image", "--store", str(white))[0] == 0
    code, err = run_ee(
        capsys, "embed", str(m), "-e", "test-image", "-o", "background=black", "--store", str(black)
    )
    assert code == 0, err
    (aw,), (ab,) = Store.open(white).arrays(), Store.open(black).arrays()
    assert aw.identity.decoding["background"] == "white" and ab.identity.decoding["background"] == "black"
    assert not np.array_equal(aw.read(), ab.read())  # the pixels the encoder saw differ
    # the other background on the same store: refused by name, not mixed
    code, err = run_ee(
        capsys, "embed", str(m), "-e", "test-image", "-o", "background=black", "--store", str(white)
    )
    assert code == 2 and "decoding" in err and "'black'" in err, err
    assert len(err.strip().splitlines()) == 1
    code, err = run_ee(
        capsys, "embed", str(m), "-e", "test-image", "-o", "background=grey", "--store", str(tmp_path / "x")
    )
    assert code == 2 and "background" in err and len(err.strip().splitlines()) == 1, err


def test_a_store_embedded_with_the_old_decoding_is_refused(tmp_path: Path, capsys) -> None:
    """An array recorded before images had decoding rules (no ``decoding`` in its identity) is refused
    with one line naming the field, finished or not: its pixels came from ``convert("RGB")``."""
    from embedeverything.store import Store

    m = transparent_manifest(tmp_path / "d")
    store = tmp_path / "s.zarr"
    assert run_ee(capsys, "embed", str(m), "-e", "test-image", "--store", str(store))[0] == 0
    (arr,) = Store.open(store).arrays()
    old = arr.identity.model_dump(mode="json")
    del old["decoding"]
    arr.group.attrs["identity"] = old  # as the release before this field wrote it
    code, err = run_ee(capsys, "embed", str(m), "-e", "test-image", "--store", str(store))
    assert code == 2, err
    assert "decoding: stored {}" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_identity_builds_the_same_encoder_again() -> None:
    """What an adapter records rebuilds an encoder with the same decoding (``ee query``, pipelines)."""
    from embedeverything.plugins import get_encoder

    enc = get_encoder("test-image", dim=8, background="black")
    assert enc.decoding == ImageDecoding(background="black") and "background" not in enc.output_options()
    ident = enc.identity()
    again = get_encoder(ident.name, **ident.encoder_options())
    assert again.identity() == ident
    assert get_encoder("test-text").identity().decoding == {}


def test_a_plugin_cannot_take_the_background_option() -> None:
    from pydantic import BaseModel

    import embedeverything as ee
    from embedeverything.encoder import validate_encoder_class

    class Own(BaseModel):
        background: str = "red"

    class Clash(ee.Encoder):
        name, modality, dim, Options = "clash", "image", 4, Own

        def load(self):  # pragma: no cover - never called
            raise NotImplementedError

        def embed_batch(self, items):  # pragma: no cover - never called
            raise NotImplementedError

    reason = validate_encoder_class(Clash)
    assert reason is not None and "background" in reason
