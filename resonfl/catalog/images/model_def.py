"""Images: a site's own class-per-folder PNG tree, read lazily, with a small ResNet.

DATA_ROOT is the site's registered dataset (`resonfl worker --dataset images=/folder`):
``<class>/*.png`` (also ``.jpg``/``.jpeg``/``.bmp``/``.webp``), one folder per class. The
class order is the model's `classes` argument, the same at every site, so a site that lacks
a class keeps the labels aligned (its folder is simply absent); folders not in the list are
ignored. Each site splits its own files into train and val by a hash of the file's path
(stable across rounds and machines; `VAL_PERCENT` in the job's extra, default 15).

Images are opened with Pillow only when a batch needs them, by DataLoader worker processes
(`loader_workers`), so a site's folder never has to fit in memory. Training augments with a
random resized crop and a horizontal flip (every class here is mirror-symmetric; set
`FLIP=0` in extra for classes that are not, e.g. digits or text); evaluation resizes the
whole image and, with `tta_hflip`, averages the logits of each image and its mirror.
"""

from __future__ import annotations

import math
import os
import random
import zlib
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
MEAN, STD = 0.5, 0.5


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet for small images: a 3x3 stem, `blocks` BasicBlocks per stage (the first of
    each later stage strided), global average pooling, a linear head."""

    def __init__(
        self,
        classes: tuple[str, ...] = ("disc", "ring", "square", "plus", "stripes"),
        widths: tuple[int, ...] = (16, 32, 64),
        blocks: int = 1,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        self.classes = list(classes)
        self.image_size = image_size
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages, cin = [], widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks):
                stages.append(BasicBlock(cin, width, stride=2 if i > 0 and j == 0 else 1))
                cin = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, len(self.classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


def list_images(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(file, label) for every image under ``root/<class>/``, sorted (no file is opened)."""
    found = []
    for label, name in enumerate(classes):
        folder = root / name
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    found.append((path, label))
    return found


def in_val(path: Path, root: Path, percent: int) -> bool:
    """A fixed share of the files, chosen by a hash of the path under the root."""
    return zlib.crc32(path.relative_to(root).as_posix().encode()) % 100 < percent


class LazyImages(Dataset):
    """Images opened with Pillow in `__getitem__` (in DataLoader workers), as float tensors."""

    def __init__(self, items: list[tuple[Path, int]], size: int, train: bool, flip: bool) -> None:
        self.items, self.size, self.train, self.flip = items, size, train, flip

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[i]
        with Image.open(path) as img:
            img = img.convert("RGB")
            if self.train:
                img = random_resized_crop(img, self.size)
                if self.flip and random.random() < 0.5:
                    img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            else:
                img = img.resize((self.size, self.size), Image.Resampling.BILINEAR)
            x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        x = x.view(self.size, self.size, 3).permute(2, 0, 1).float().div(255)
        return (x - MEAN) / STD, label


def random_resized_crop(
    img: Image.Image, size: int, scale: tuple[float, float] = (0.55, 1.0)
) -> Image.Image:
    """torchvision's RandomResizedCrop, in Pillow: a random area share and aspect ratio."""
    width, height = img.size
    area = width * height
    for _ in range(10):
        target = area * random.uniform(*scale)
        ratio = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = random.randint(0, width - w), random.randint(0, height - h)
            return img.resize((size, size), Image.Resampling.BILINEAR, (left, top, left + w, top + h))
    return img.resize((size, size), Image.Resampling.BILINEAR)


def load_split(root: Path, classes: list[str], size: int, split: str) -> LazyImages:
    """``split``: "train" or "val" of a site's folder, "all" (a held-out test folder)."""
    root = Path(root)
    percent = int(os.environ.get("VAL_PERCENT", "15"))
    items = list_images(root, classes)
    if split != "all":
        items = [it for it in items if in_val(it[0], root, percent) == (split == "val")]
    flip = os.environ.get("FLIP", "1") != "0"
    return LazyImages(items, size, train=split == "train", flip=flip)


def load_dataset(root: Path, split: str) -> LazyImages:
    """The catalog's own data (`resonfl shards images`): ``root/test`` is the held-out set."""
    classes, size = list(SmallResNet().classes), SmallResNet().image_size
    if split == "test":
        return load_split(Path(root) / "test", classes, size, "all")
    return load_split(root, classes, size, split)


def fl_evaluate_model(model, env, logger):
    """`resonfl evaluate`: every image of the folder (a held-out test set)."""
    return env.evaluate(model, load_split(env.data_root, model.classes, model.image_size, "all"))


def fl_train_model(model, env, out_dir, logger):
    # DataLoader workers seed Python's `random` from the loader's seeded generator; this
    # covers loader_workers=0 (augmentation in the job process itself)
    random.seed(env.seed)
    train = load_split(env.data_root, model.classes, model.image_size, "train")
    val = load_split(env.data_root, model.classes, model.image_size, "val")
    logger.info("training on %d images, validating on %d (lazy, Pillow)", len(train), len(val))
    return env.fit(model, train, val)
