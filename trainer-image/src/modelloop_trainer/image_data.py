"""Image classification datasets: decoding, the built-in digits set, JSONL and image folders.

Every image is decoded with Pillow, converted to RGB and resized to a square of
`--image-size` pixels once, at load time; from then on an example's input is that resized
image as a base64 PNG string (lossless, so the dataset snapshot holds exactly the pixels the
model saw, and `Examples` keeps one representation for every task).

Sources:
- `builtin://digits`: scikit-learn's `load_digits()` (the UCI optical digits test set,
  BSD-3-Clause), 1,797 8x8 greyscale digits in 10 classes, scaled from 0-16 to 0-255.
- a `.jsonl` file, one `{"image": <base64 PNG/JPEG>, "label": ...}` or
  `{"path": <path relative to the file>, "label": ...}` object per line;
- a directory laid out as `<root>/<label>/*.png|*.jpg|*.jpeg`.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from modelloop_trainer.datasets import Examples, jsonl_records
from modelloop_trainer.errors import InputError
from modelloop_trainer.storage import fetch, parse_uri

BUILTIN_IMAGE_DATASETS = ("digits",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_FIELD = "image"
PATH_FIELD = "path"
# Far above any classifier's input, low enough that a hostile file cannot exhaust memory.
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_IMAGE_BYTES = 32 * 1024 * 1024
DEFAULT_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 512


def decode_image(raw: bytes, where: str, image_size: int) -> Image.Image:
    """`raw` (PNG, JPEG or anything Pillow reads) as an RGB image_size x image_size image."""
    if len(raw) > MAX_IMAGE_BYTES:
        raise InputError(f"{where}: image is {len(raw)} bytes, more than {MAX_IMAGE_BYTES}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InputError(
                    f"{where}: image is {width}x{height} pixels, more than the limit of "
                    f"{MAX_IMAGE_PIXELS} pixels"
                )
            image.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Image.open itself refuses sizes far past ours, before we see the dimensions.
        raise InputError(f"{where}: image too large to decode ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        # Pillow raises several types for corrupt or truncated data; all mean "unreadable".
        raise InputError(f"{where}: not a readable image ({exc})") from exc
    return image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)


def to_input(image: Image.Image) -> str:
    """The example input form of a decoded image: base64 of its PNG encoding."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def input_pixels(value: str, where: str, image_size: int) -> torch.Tensor:
    """A base64 image input as a 3 x size x size uint8 tensor (resized if it is not yet)."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{where}: image is not valid base64 ({exc})") from exc
    image = decode_image(raw, where, image_size)
    array = np.asarray(image, dtype=np.uint8)  # H x W x 3
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def load_image_examples(uri: str, label_field: str, image_size: int) -> Examples:
    """All examples behind an image dataset URI, in file (or sorted path) order."""
    if uri.startswith("builtin://"):
        name = uri.removeprefix("builtin://").strip("/")
        if name != "digits":
            raise InputError(
                f"dataset {uri}: unknown built-in image dataset {name!r} "
                f"(known: {', '.join('builtin://' + n for n in BUILTIN_IMAGE_DATASETS)})"
            )
        examples = _digits(image_size)
    else:
        location = parse_uri(uri)
        path = fetch(location)
        if path.is_dir():
            examples = _read_folder(uri, path, image_size)
        elif path.name.lower().endswith((".jsonl", ".json")):
            examples = _read_jsonl(uri, path, label_field, image_size)
        else:
            raise InputError(
                f"dataset {uri}: unknown file type; use a .jsonl file or a directory of "
                "<label>/<image> files"
            )
    if len(examples) == 0:
        raise InputError(f"dataset {uri}: contains no images")
    return examples


def _digits(image_size: int) -> Examples:
    try:
        from sklearn.datasets import load_digits  # type: ignore[import-untyped]
    except ImportError as exc:
        raise InputError(f"dataset builtin://digits: needs scikit-learn: {exc}") from exc

    digits = load_digits()
    texts: list[str] = []
    labels: list[str] = []
    for pixels, target in zip(digits.images, digits.target, strict=True):
        grey = np.clip(np.rint(pixels * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        image = Image.fromarray(grey, mode="L").convert("RGB")
        texts.append(to_input(image.resize((image_size, image_size), Image.Resampling.BILINEAR)))
        labels.append(str(int(target)))
    return Examples(texts, labels)


def _read_folder(uri: str, root: Path, image_size: int) -> Examples:
    texts: list[str] = []
    labels: list[str] = []
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(directory.iterdir()):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                where = f"dataset {uri}: {directory.name}/{file.name}"
                texts.append(to_input(decode_image(file.read_bytes(), where, image_size)))
                labels.append(directory.name)
    return Examples(texts, labels)


def _read_jsonl(uri: str, path: Path, label_field: str, image_size: int) -> Examples:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"dataset {uri}: not UTF-8 text ({exc})") from exc
    base: Path | None = None  # the directory `path` fields are relative to, fetched lazily
    texts: list[str] = []
    labels: list[str] = []
    for number, record in jsonl_records(uri, text):
        where = f"dataset {uri}: line {number}"
        labels.append(_label(record, label_field, where))
        has_image, has_path = IMAGE_FIELD in record, PATH_FIELD in record
        if has_image == has_path:
            raise InputError(f"{where} needs exactly one of {IMAGE_FIELD!r} and {PATH_FIELD!r}")
        if has_image:
            value = record[IMAGE_FIELD]
            if not isinstance(value, str) or not value:
                raise InputError(f"{where}: field {IMAGE_FIELD!r} must be a base64 string")
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise InputError(f"{where}: field {IMAGE_FIELD!r} is not valid base64") from exc
        else:
            if base is None:
                base = _relative_base(uri, path)
            raw = _read_relative(base, record[PATH_FIELD], where)
        texts.append(to_input(decode_image(raw, where, image_size)))
    return Examples(texts, labels)


def _relative_base(uri: str, path: Path) -> Path:
    """The local directory a JSONL file's `path` fields point into (downloaded if remote)."""
    location = parse_uri(uri)
    if location.is_local:
        return path.parent
    return fetch(parse_uri(uri.rsplit("/", 1)[0]))


def _read_relative(base: Path, value: object, where: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: field {PATH_FIELD!r} must be a non-empty relative path")
    relative = Path(value)
    if relative.is_absolute() or ".." in relative.parts:
        raise InputError(f"{where}: path {value!r} must be relative to the file, without '..'")
    file = base / relative
    try:
        return file.read_bytes()
    except OSError as exc:
        raise InputError(f"{where}: cannot read image {value!r} ({exc.strerror})") from exc


def _label(record: dict[str, object], name: str, where: str) -> str:
    value = record.get(name)
    if value is None:
        raise InputError(f"{where} has no field {name!r} (--label-field)")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InputError(
            f"{where}: field {name!r} must be a string or integer, got {type(value).__name__}"
        )
    if not str(value).strip():
        raise InputError(f"{where}: field {name!r} is empty")
    return str(value)
