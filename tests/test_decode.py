import io

import numpy as np
import pytest
from PIL import Image

import sseg  # noqa: F401
from sseg.data.decode import DecodeError, decode_image, decode_label, skip_reason
from sseg.errors import DataError


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def test_rgb_png_roundtrip_exact(rgb):
    out = decode_image(encode(Image.fromarray(rgb)))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_lossless_webp_roundtrip(rgb):
    out = decode_image(encode(Image.fromarray(rgb), "WEBP", lossless=True))
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_close_to_source():
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    out = decode_image(encode(Image.fromarray(smooth), "JPEG", quality=95))
    assert out.shape == (32, 32, 3)
    assert np.abs(out.astype(int) - smooth.astype(int)).mean() < 3


def test_grayscale_replicated_to_three_channels():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = decode_image(encode(Image.fromarray(gray, mode="L")))
    assert out.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_bilevel_image():
    bits = Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).convert("1")
    out = decode_image(encode(bits))
    np.testing.assert_array_equal(out[..., 0], [[0, 255], [255, 0]])


def test_rgba_composited_on_black():
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (200, 100, 50, 255)  # opaque: unchanged
    rgba[0, 1] = (200, 100, 50, 0)  # transparent: black
    rgba[0, 2] = (200, 100, 50, 128)  # half: round(v * 128 / 255)
    out = decode_image(encode(Image.fromarray(rgba, mode="RGBA")))
    np.testing.assert_array_equal(out[0, 0], (200, 100, 50))
    np.testing.assert_array_equal(out[0, 1], (0, 0, 0))
    np.testing.assert_array_equal(out[0, 2], (100, 50, 25))


def test_palette_with_transparency():
    indices = np.array([[0, 1]], dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    out = decode_image(encode(image, transparency=0))
    np.testing.assert_array_equal(out[0, 0], (0, 0, 0))
    np.testing.assert_array_equal(out[0, 1], (40, 50, 60))


def test_palette_image_gives_colours():
    image = Image.fromarray(np.array([[0, 1]], dtype=np.uint8), mode="P")
    image.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    np.testing.assert_array_equal(decode_image(encode(image)), [[(10, 20, 30), (40, 50, 60)]])


def test_cmyk_jpeg_converted():
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    out = decode_image(encode(cmyk, "JPEG", quality=100))
    assert out.shape == (4, 4, 3)
    red, green, blue = out[..., 0].mean(), out[..., 1].mean(), out[..., 2].mean()
    assert red > 200 and green < 60 and blue < 60


def test_16_bit_grayscale_scaled_to_8_bit():
    values = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    out = decode_image(encode(image))
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 255, 128])


def test_32_bit_integer_image():
    wide = Image.fromarray(np.array([[0, 65535, 70000]], dtype=np.int32), mode="I")
    np.testing.assert_array_equal(decode_image(encode(wide, "TIFF"))[0, :, 1], [0, 255, 255])
    small = Image.fromarray(np.array([[0, 7, 255]], dtype=np.int32), mode="I")
    np.testing.assert_array_equal(decode_image(encode(small, "TIFF"))[0, :, 2], [0, 7, 255])


def test_exif_orientation_applied():
    tall = np.zeros((4, 2, 3), dtype=np.uint8)
    tall[0, 0] = (255, 0, 0)  # red in the top-left corner of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = encode(Image.fromarray(tall), "PNG", exif=exif.tobytes())
    out = decode_image(data)
    assert out.shape == (2, 4, 3)  # displayed upright: width and height swap
    assert tuple(out[0, -1]) == (255, 0, 0)  # top-left goes to top-right under a CW turn
    assert decode_image(data, apply_exif=False).shape == (4, 2, 3)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty data"),
    (b"not an image at all", "cannot identify"),
])
def test_bad_data_is_a_one_line_data_error(data, reason):
    with pytest.raises(DataError, match=f"undecodable image: .*{reason}") as info:
        decode_image(data)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty_image"),
    (b"not an image at all", "undecodable_image"),
    (encode(Image.new("RGB", (3, 3)))[:30], "undecodable_image"),  # truncated
])
def test_failures_name_their_skip_reason(data, reason):
    with pytest.raises(DecodeError) as info:
        decode_image(data)
    assert info.value.reason == reason and skip_reason(info.value) == reason
    assert isinstance(info.value, DataError)


@pytest.mark.parametrize("size", [(1, 1), (1, 5), (5, 1)])
def test_image_below_min_side_is_too_small(size):
    data = encode(Image.new("RGB", size))
    assert decode_image(data).shape == (size[1], size[0], 3)  # min_side=1: kept
    with pytest.raises(DecodeError, match="too small") as info:
        decode_image(data, min_side=2)
    assert info.value.reason == "too_small" and "\n" not in str(info.value)
    assert decode_image(encode(Image.new("RGB", (2, 2))), min_side=2).shape == (2, 2, 3)


def test_skip_reason_of_other_errors():
    assert skip_reason(DataError("anything else")) == "undecodable_image"


def test_truncated_png_is_a_data_error(rgb):
    data = encode(Image.fromarray(np.tile(rgb, (20, 20, 1))))
    with pytest.raises(DataError, match="undecodable image"):
        decode_image(data[: len(data) // 2])


def test_non_bytes_rejected():
    with pytest.raises(DataError, match="expected bytes"):
        decode_image("image.png")  # type: ignore[arg-type]


def test_decode_label_keeps_palette_indices():
    label = np.array([[0, 1, 255], [20, 3, 0]], dtype=np.uint8)
    image = Image.fromarray(label, mode="P")
    image.putpalette(list(range(256)) * 3)
    out = decode_label(encode(image))
    np.testing.assert_array_equal(out, label)
    assert out.dtype == np.uint8


def test_decode_label_rejects_colour_maps(rgb):
    with pytest.raises(DataError, match="not a single-channel"):
        decode_label(encode(Image.fromarray(rgb)))
