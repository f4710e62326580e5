"""The `encoded_image` signature's preprocessing without TensorFlow: decode, channels, resize.

Reproduces trainer/data/images.py `eval_image` (what the export's `encoded_image` runs) with
Pillow, simplejpeg and NumPy, pixel for pixel (every decoder below was compared with
TensorFlow's), and its antialiased bilinear resize to within float32 rounding (~1e-7). Colour to
grey follows each TensorFlow decoder: libpng's fixed-point weights for PNG, luma for JPEG,
`tf.image.rgb_to_grayscale` for GIF and BMP. JPEG decodes through simplejpeg (libjpeg-turbo with
TensorFlow's fast integer DCT, which Pillow does not offer). tests/test_serving_images.py compares every path
with TensorFlow. What TensorFlow would read differently (CMYK JPEG, 16-bit colour PNG for a grey
model, BMP other than uncompressed 8/24/32 bits) is refused by name instead of served
approximately.
"""

from __future__ import annotations

import io
import struct

import numpy as np

from trainer.image_bounds import cover_size


class ImageError(Exception):
    """Bytes this decoder refuses; the message says why, in one line."""


# libpng's rgb_to_gray coefficients for (0.299, 0.587) in 1/32768 (TensorFlow's PNG decoder).
_PNG_GREY = (9797, 19234, 32768 - 9797 - 19234)
# tf.image.rgb_to_grayscale (GIF and BMP decode to colour, then convert).
_TF_GREY = np.array([0.2989, 0.587, 0.114], np.float32)
_SCALE = np.float32(1.0 / 255.0)


def _open(data: bytes):
    from PIL import Image

    try:
        return Image.open(io.BytesIO(data))
    except Exception as err:  # Pillow raises many types for bytes it cannot identify
        raise ImageError(f"cannot decode the image ({err})") from None


def size(data: bytes) -> tuple[int, int]:
    """(height, width) from the image's header, decoding nothing."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        width, height = struct.unpack_from(">II", data, 16)
        return height, width
    width, height = _open(data).size  # Pillow's parsers; a tenth of a millisecond
    return height, width


def _load(image):
    try:
        image.load()
    except Exception as err:
        raise ImageError(f"cannot decode the image ({type(err).__name__}: {err})") from None
    return image


def _png_grey(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    red, green, blue = _PNG_GREY
    return ((red * r + green * g + blue * b) >> 15).astype(np.uint8)


def _tf_grey(rgb: np.ndarray) -> np.ndarray:
    # convert_image_dtype to float, the weighted sum, and back (x 255.5, truncated).
    grey = (rgb.astype(np.float32) * _SCALE) @ _TF_GREY
    return (grey * np.float32(255.5)).astype(np.uint8)


def _check_png_chunks(data: bytes) -> None:
    """libpng (TensorFlow) reads a PNG through its IEND chunk; Pillow stops after the pixels."""
    offset = 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        offset += 12 + length
        if kind == b"IEND":
            if offset <= len(data):
                return
            break
    raise ImageError("cannot decode the image (its PNG data is cut short before IEND)")


def _png(data: bytes, image, channels: int) -> np.ndarray:
    _check_png_chunks(data)
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grey: libpng keeps the high byte
        values = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
        grey = True
    elif mode in ("1", "L", "LA", "La"):
        values, grey = np.asarray(image if mode == "L" else image.convert("L")), True
    elif mode in ("P", "PA", "RGB", "RGBA"):
        # Pillow keeps the high byte of 16-bit colour, as libpng does, but libpng makes grey
        # from the 16-bit values first.
        if channels == 1 and data[24:25] == b"\x10":
            raise ImageError("a 16-bit colour PNG is not served by this runtime for a grey "
                             "model; send 8 bits per channel")
        values, grey = np.asarray(image.convert("RGB")), False
    else:
        raise ImageError(f"a PNG of mode {mode} is not served by this runtime")
    if channels == 1:
        return values[..., None] if grey else _png_grey(values)[..., None]
    return np.repeat(values[..., None], 3, axis=2) if grey else values


def _jpeg(data: bytes, channels: int) -> np.ndarray:
    import simplejpeg

    # TensorFlow decodes with libjpeg-turbo's fast integer DCT (its default dct_method) and
    # fancy upsampling; grey comes from the luma plane. Pillow only runs the accurate DCT.
    try:
        colourspace = simplejpeg.decode_jpeg_header(data)[2]
        if colourspace in ("CMYK", "YCCK"):
            raise ImageError(f"a {colourspace} JPEG is not served by this runtime; send RGB or "
                             "grey")
        values = simplejpeg.decode_jpeg(data, colorspace="GRAY" if channels == 1 else "RGB",
                                        fastdct=True, fastupsample=False)
    except ValueError as err:
        raise ImageError(f"cannot decode the image ({err})") from None
    return values.reshape(*values.shape[:2], channels)


def _gif(image, channels: int) -> np.ndarray:
    """The first frame on a black canvas, transparent pixels black (TensorFlow's GIF decoder)."""
    if image.mode not in ("P", "L"):
        raise ImageError(f"a GIF of mode {image.mode} is not served by this runtime")
    left, top, right, bottom = image.tile[0].extents if image.tile else (0, 0, *image.size)
    _load(image)
    indices = np.asarray(image)
    palette = np.frombuffer(image.palette.tobytes(), np.uint8).reshape(-1, 3) \
        if image.mode == "P" else np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    palette = np.concatenate([palette, np.zeros((256 - len(palette), 3), np.uint8)])
    rgb = np.zeros((*indices.shape, 3), np.uint8)
    frame = indices[top:bottom, left:right]
    colours = palette[frame]
    transparent = image.info.get("transparency")
    if transparent is not None:
        colours[frame == transparent] = 0
    rgb[top:bottom, left:right] = colours
    return _tf_grey(rgb)[..., None] if channels == 1 else rgb


def _bmp(data: bytes, image, channels: int) -> np.ndarray:
    bits, compression = _bmp_format(data)
    if bits == 8 and compression == 0:
        # TensorFlow reads an 8-bit BMP's palette indices as grey levels.
        indices = np.asarray(_load(image))
        rgb = np.repeat(indices[..., None], 3, axis=2)
    elif bits in (24, 32) and compression in (0, 3):
        rgb = np.asarray(_load(image).convert("RGB"))
    else:
        raise ImageError(f"a BMP of {bits} bits per pixel (compression {compression}) is not "
                         "served by this runtime; send 24 bits, uncompressed")
    return _tf_grey(rgb)[..., None] if channels == 1 else rgb


def _bmp_format(data: bytes) -> tuple[int, int]:
    try:
        (header,) = struct.unpack_from("<I", data, 14)
        if header == 12:
            (bits,) = struct.unpack_from("<H", data, 24)
            return bits, 0
        return struct.unpack_from("<HI", data, 28)
    except struct.error:
        raise ImageError("cannot decode the image (its BMP header is cut short)") from None


def decode(data: bytes, channels: int) -> np.ndarray:
    """uint8 [h, w, channels] of the first frame, as trainer/data/images.py `decode`."""
    image = _open(data)
    kind = image.format
    if kind == "PNG":
        return _png(data, _load(image), channels)
    if kind == "JPEG":
        return _jpeg(data, channels)
    if kind == "GIF":
        return _gif(image, channels)
    if kind == "BMP":
        return _bmp(data, image, channels)
    raise ImageError(f"a {kind} image; expected PNG, JPEG, GIF or BMP")


def _spans(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(source indices [out, span], weights [out, span]) of TensorFlow's ScaleAndTranslate with
    the triangle kernel and antialiasing (what tf.image.resize's antialiased bilinear runs)."""
    scale = np.float32(out_size) / np.float32(in_size)
    inv_scale = np.float32(1.0 / np.float64(scale))
    kernel_scale = max(inv_scale, np.float32(1.0))
    span = min(2 * int(np.ceil(kernel_scale)) + 1, in_size)
    sample = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * inv_scale
    start = np.ceil(sample - kernel_scale - np.float32(0.5)).astype(np.int64)
    end = np.floor(sample + kernel_scale - np.float32(0.5)).astype(np.int64)
    start = np.clip(start, 0, in_size - 1)
    end = np.clip(end, 0, in_size - 1) + 1
    offsets = np.arange(span)
    sources = start[:, None] + offsets[None, :]
    inside = sources < end[:, None]
    position = sources.astype(np.float32) + np.float32(0.5) - sample[:, None]
    weights = np.maximum(np.float32(0), np.float32(1) - np.abs(
        position * (np.float32(1) / kernel_scale)))
    weights = np.where(inside, weights, np.float32(0)).astype(np.float32)
    total = weights.sum(axis=1, dtype=np.float32)
    normal = np.abs(total) >= 1000 * np.finfo(np.float32).tiny
    weights[normal] *= (np.float32(1) / total[normal])[:, None]
    return np.minimum(sources, in_size - 1), weights


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 [height, width, c] of a uint8 [h, w, c]: tf.image.resize(antialias=True)."""
    rows, row_weights = _spans(image.shape[0], height)
    cols, col_weights = _spans(image.shape[1], width)
    values = image.astype(np.float32)
    # Columns first, then rows, as the kernel gathers them.
    across = np.einsum("hxsc,xs->hxc", values[:, cols, :], col_weights, dtype=np.float32)
    return np.einsum("ysxc,ys->yxc", across[rows, :, :], row_weights, dtype=np.float32)


def eval_image(data: bytes, image_shape: tuple[int, int, int]) -> np.ndarray:
    """float32 [H, W, C] in [0, 1]: resized to cover H x W (aspect kept), centre-cropped."""
    height, width, channels = image_shape
    image = decode(data, channels)
    if image.shape[:2] == (height, width):
        return image.astype(np.float32) * _SCALE
    cover_height, cover_width = cover_size(image.shape[0], image.shape[1], (height, width))
    covering = resize(image, cover_height, cover_width) * _SCALE
    top, left = (cover_height - height) // 2, (cover_width - width) // 2
    return np.ascontiguousarray(covering[top:top + height, left:left + width])
