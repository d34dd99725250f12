"""Image data: the vendored MNIST test set (idx format), scikit-learn digits, folders of images,
NumPy arrays.

Every loader returns an :class:`ImageSet`: ``images: float32 [N, C, H, W]`` in ``[-1, 1]`` and
``labels: int64 [N]`` (or ``None``). ``ImageSet`` is a ``torch.utils.data.Dataset`` whose items
are ``(image [C, H, W], label)`` (label ``-1`` when unlabelled), so it can be given directly to
:class:`shared.training.Trainer`.

The default data set is MNIST ``t10k`` (10,000 digits, 28x28, shipped verbatim under
``imaging/datasets/``) with a fixed seeded split into train / val / test (8,000 / 1,000 / 1,000 by
default) and padded with background (-1) to 32x32 so that a three-level UNet divides it evenly.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DATA_DIR", "MNIST_IMAGES", "MNIST_LABELS", "ImageSet", "read_idx", "load_mnist",
    "mnist_splits", "load_sklearn_digits", "load_image_folder", "from_numpy", "fit_size",
    "split_indices", "IMAGE_SUFFIXES", "make_grid", "save_grid",
]

DATA_DIR = Path(__file__).resolve().parent / "datasets"
MNIST_IMAGES = DATA_DIR / "mnist_t10k-images-idx3-ubyte.gz"
MNIST_LABELS = DATA_DIR / "mnist_t10k-labels-idx1-ubyte.gz"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class ImageSet(torch.utils.data.Dataset):
    """Images ``[N, C, H, W]`` float32 in [-1, 1] with optional labels ``[N]`` (int64).

    Items are ``(image [C, H, W], label)``; the label is ``-1`` for unlabelled sets.
    ``class_names[i]`` names class ``i`` (digits "0".."9" for MNIST, folder names for folders).
    """

    images: Tensor
    labels: Tensor | None = None
    class_names: tuple[str, ...] = ()
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not torch.is_tensor(self.images) or self.images.ndim != 4:
            raise ValueError(f"images must be a [N, C, H, W] tensor, got "
                             f"{getattr(self.images, 'shape', type(self.images))}")
        if self.images.shape[0] == 0:
            raise ValueError(f"image set {self.source or ''} is empty".replace("  ", " "))
        self.images = self.images.float().contiguous()
        if self.labels is not None:
            self.labels = torch.as_tensor(self.labels, dtype=torch.long)
            if self.labels.shape != (self.images.shape[0],):
                raise ValueError(f"labels must have shape [{self.images.shape[0]}], got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i):
        y = self.labels[i] if self.labels is not None else torch.tensor(-1)
        return self.images[i], y

    @property
    def num_classes(self) -> int:
        if self.class_names:
            return len(self.class_names)
        return int(self.labels.max()) + 1 if self.labels is not None else 0

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, idx: Tensor | Sequence[int]) -> "ImageSet":
        """A new set with the rows ``idx``."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return ImageSet(self.images[idx], None if self.labels is None else self.labels[idx],
                        self.class_names, self.source, dict(self.meta))


# ------------------------------------------------------------------------------------------ idx


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (LeCun's MNIST format), gzip or plain. Returns an array of the stored
    dtype and shape (``[N, 28, 28]`` uint8 for MNIST images, ``[N]`` for labels).

    Raises ``ValueError`` naming the file for a bad magic number or a truncated file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"idx file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an idx file (bad magic number)")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated idx header")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dt = np.dtype(_IDX_DTYPES[raw[2]])
    n = int(np.prod(dims)) * dt.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != n:
        raise ValueError(f"{path}: idx body has {len(body)} bytes, header {dims} needs {n}")
    return np.frombuffer(body, dtype=dt).reshape(dims).copy()


def _to_unit(x: np.ndarray | Tensor, lo: float, hi: float) -> Tensor:
    t = torch.from_numpy(np.array(x, dtype=np.float32))
    return (t - lo) / (hi - lo) * 2.0 - 1.0


def fit_size(images: Tensor, size: int | tuple[int, int] | None, mode: str = "pad") -> Tensor:
    """Bring ``images [N, C, H, W]`` to ``size``: ``"pad"`` centres them on a background of -1
    (needs ``size >= H, W``), ``"resize"`` resamples bilinearly (antialiased), ``"crop"`` takes
    the centre. ``size=None`` returns the input."""
    if size is None:
        return images
    Ht, Wt = (size, size) if isinstance(size, int) else size
    H, W = images.shape[-2:]
    if (H, W) == (Ht, Wt):
        return images
    if mode == "pad":
        if Ht < H or Wt < W:
            raise ValueError(f"cannot pad {H}x{W} images to the smaller size {Ht}x{Wt}; use mode='resize'")
        top, left = (Ht - H) // 2, (Wt - W) // 2
        return F.pad(images, (left, Wt - W - left, top, Ht - H - top), value=-1.0)
    if mode == "resize":
        return F.interpolate(images, size=(Ht, Wt), mode="bilinear", align_corners=False,
                             antialias=Ht < H or Wt < W).clamp(-1, 1)
    if mode == "crop":
        if Ht > H or Wt > W:
            raise ValueError(f"cannot crop {H}x{W} images to the larger size {Ht}x{Wt}")
        top, left = (H - Ht) // 2, (W - Wt) // 2
        return images[..., top:top + Ht, left:left + Wt]
    raise ValueError(f"unknown size mode {mode!r}; choose pad, resize or crop")


def load_mnist(images: str | os.PathLike | None = None, labels: str | os.PathLike | None = None, *,
               size: int | None = 32, mode: str = "pad") -> ImageSet:
    """MNIST from idx files (default: the vendored ``t10k`` test set, 10,000 digits).

    Returns images ``[N, 1, size, size]`` in [-1, 1] (28x28 padded to 32x32 by default; pass
    ``size=None`` for raw 28x28) and labels ``[N]`` in 0..9. Works with the 60k training files too.
    """
    ip = Path(images) if images is not None else MNIST_IMAGES
    lp = Path(labels) if labels is not None else MNIST_LABELS
    x = read_idx(ip)
    y = read_idx(lp)
    if x.ndim != 3:
        raise ValueError(f"{ip}: expected a [N, H, W] image idx file, got shape {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{lp}: {y.shape[0] if y.ndim else 0} labels for {x.shape[0]} images in {ip}")
    imgs = fit_size(_to_unit(x[:, None], 0, 255), size, mode)
    return ImageSet(imgs, torch.as_tensor(y.astype(np.int64)), tuple(str(i) for i in range(10)),
                    source=f"mnist:{ip.name}")


def split_indices(n: int, sizes: Sequence[int], seed: int = 0) -> list[Tensor]:
    """A fixed seeded permutation of ``range(n)`` cut into consecutive parts of ``sizes``; the
    first part takes the rest when ``sizes[0] <= 0``."""
    sizes = list(sizes)
    if sizes[0] <= 0:
        sizes[0] = n - sum(sizes[1:])
    if sum(sizes) > n or min(sizes) < 0:
        raise ValueError(f"split sizes {sizes} do not fit {n} items")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out, start = [], 0
    for s in sizes:
        out.append(perm[start:start + s])
        start += s
    return out


def mnist_splits(*, val: int = 1000, test: int = 1000, train: int = 0, seed: int = 0,
                 size: int | None = 32) -> tuple[ImageSet, ImageSet, ImageSet]:
    """The fixed split of the vendored MNIST ``t10k`` set: ``(train, val, test)``.

    Default 8,000 / 1,000 / 1,000 from a permutation with ``seed=0``; ``train=0`` takes the rest,
    a positive ``train`` takes only that many (held-out parts do not change with it)."""
    full = load_mnist(size=size)
    tr, va, te = split_indices(len(full), [0, val, test], seed)
    if train > 0:
        if train > len(tr):
            raise ValueError(f"train={train} but only {len(tr)} training images are available")
        tr = tr[:train]
    return full.subset(tr), full.subset(va), full.subset(te)


# -------------------------------------------------------------------------------- other sources


def load_sklearn_digits(*, size: int | None = 32) -> ImageSet:
    """scikit-learn's ``load_digits`` (1,797 8x8 digits, values 0..16), resized bilinearly to
    ``size`` (None keeps 8x8). Needs scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("load_sklearn_digits needs scikit-learn: pip install scikit-learn") from None
    d = load_digits()
    imgs = _to_unit(d.images[:, None], 0, 16)
    return ImageSet(fit_size(imgs, size, "resize"), torch.as_tensor(d.target, dtype=torch.long),
                    tuple(str(i) for i in range(10)), source="sklearn:digits")


def from_numpy(images: np.ndarray, labels: np.ndarray | None = None, *,
               value_range: tuple[float, float] | None = None, size: int | None = None,
               mode: str = "resize", class_names: Sequence[str] = ()) -> ImageSet:
    """Wrap a NumPy array of images: ``[N, H, W]``, ``[N, H, W, C]`` (C in 1, 3, 4) or
    ``[N, C, H, W]``. ``uint8`` arrays are read as 0..255; floating arrays need an explicit
    ``value_range=(lo, hi)`` (there is no safe guess between [0, 1] and [-1, 1])."""
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4:
        if a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3, 4):
            a = a.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"images must be [N, H, W], [N, H, W, C] or [N, C, H, W], got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError("images array is empty")
    if value_range is None:
        if a.dtype == np.uint8:
            value_range = (0.0, 255.0)
        else:
            raise ValueError(f"images of dtype {a.dtype}: pass value_range=(lo, hi), e.g. (0, 1) or (-1, 1)")
    lo, hi = value_range
    if not hi > lo:
        raise ValueError(f"value_range must have hi > lo, got {value_range}")
    if not np.isfinite(a).all():
        raise ValueError("images contain NaN or inf")
    if a.min() < lo or a.max() > hi:
        raise ValueError(f"image values span [{a.min()}, {a.max()}], outside value_range {value_range}")
    y = None
    if labels is not None:
        y = torch.as_tensor(np.asarray(labels).astype(np.int64))
        if y.ndim != 1 or y.shape[0] != a.shape[0]:
            raise ValueError(f"labels must have shape [{a.shape[0]}], got {tuple(y.shape)}")
        if (y < 0).any():
            raise ValueError("labels must be >= 0")
    return ImageSet(fit_size(_to_unit(a, lo, hi), size, mode), y, tuple(class_names), source="numpy")


def load_image_folder(root: str | os.PathLike, *, size: int | tuple[int, int] | None = None,
                      mode: str = "resize", color: str = "L") -> ImageSet:
    """Images under ``root`` read with PIL: class = sub-folder name (sorted, ids 0..K-1);
    images directly in ``root`` with no sub-folders give an unlabelled set.

    ``color`` is a PIL mode (``"L"`` grey -> C=1, ``"RGB"`` -> C=3). Images of different sizes
    need ``size`` (then ``mode`` = resize / pad / crop). Raises ``ValueError`` for an empty
    folder, a corrupt image (named) or mixed sizes without ``size``."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def files_in(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    if subdirs:
        groups = [(i, files_in(d)) for i, d in enumerate(subdirs)]
        names = tuple(d.name for d in subdirs)
    else:
        groups = [(-1, files_in(root))]
        names = ()
    items = [(p, c) for c, fs in groups for p in fs]
    if not items:
        raise ValueError(f"image folder {root} contains no images ({', '.join(IMAGE_SUFFIXES)})")
    arrays, labels, first = [], [], None
    for p, c in items:
        try:
            with Image.open(p) as im:
                im.load()
                arr = np.asarray(im.convert(color), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise ValueError(f"corrupt or unreadable image file {p}: {e}") from None
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        t = _to_unit(arr[None], 0, 255)
        if size is None:
            if first is None:
                first = (p, arr.shape[1:])
            elif arr.shape[1:] != first[1]:
                raise ValueError(f"images have different sizes: {first[0]} is {first[1][0]}x{first[1][1]}, "
                                 f"{p} is {arr.shape[1]}x{arr.shape[2]}; pass size= to resize them")
        else:
            t = fit_size(t, size, mode)
        arrays.append(t)
        labels.append(c)
    y = torch.tensor(labels, dtype=torch.long) if subdirs else None
    return ImageSet(torch.cat(arrays), y, names, source=f"folder:{root}")


# ------------------------------------------------------------------------------------ writing


def make_grid(images: Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile ``images [N, C, H, W]`` in [-1, 1] into one uint8 array ``[rows*(H+pad)+pad,
    cols*(W+pad)+pad(, C)]`` (values clipped)."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty [N, C, H, W] tensor, got {tuple(images.shape)}")
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    N, C, H, W = x.shape
    cols = nrow or int(np.ceil(np.sqrt(N)))
    rows = int(np.ceil(N / cols))
    grid = torch.zeros(C, rows * (H + pad) + pad, cols * (W + pad) + pad, dtype=torch.uint8)
    for i in range(N):
        r, c = divmod(i, cols)
        grid[:, pad + r * (H + pad):pad + r * (H + pad) + H, pad + c * (W + pad):pad + c * (W + pad) + W] = x[i]
    g = grid.permute(1, 2, 0).numpy()
    return g[..., 0] if C == 1 else g


def save_grid(images: Tensor, path: str | os.PathLike, nrow: int | None = None, scale: int = 2) -> Path:
    """Write a PNG grid of ``images [N, C, H, W]`` in [-1, 1] (upscaled ``scale`` times, nearest)
    atomically. Returns the path."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: grids are written as .png")
    im = Image.fromarray(make_grid(images, nrow))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        im.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
