"""Classify: the job_classify recipe — an image folder, a small ResNet, AdamW, warmup + cosine.

DATA_ROOT holds ``train/<class>/*.png`` and ``val/<class>/*.png`` (any size; resized to
`image_size`), and optionally ``classes.json`` (the class order; otherwise the sorted
folder names of train/). Training uses random horizontal flips; evaluation averages the
logits of each image and its mirror when tta_hflip is on (the executor does that).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


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
    """A ResNet-style backbone: a strided stem, one BasicBlock per stage, global pooling, a head."""

    def __init__(self, num_classes: int = 5, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )  # stride-2 stem: 32x32 → 16x16 keeps a CPU step cheap
        stages, cin = [], widths[0]
        for i, width in enumerate(widths):
            stages.append(BasicBlock(cin, width, stride=1 if i == 0 else 2))
            cin = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


def class_names(root: Path) -> list[str]:
    listed = root / "classes.json"
    if listed.is_file():
        return list(json.loads(listed.read_text(encoding="utf-8")))
    return sorted(p.name for p in (root / "train").iterdir() if p.is_dir())


class ImageFolder(Dataset):
    """All images of ``root/<split>/<class>/`` in memory, normalized to [-1, 1]."""

    def __init__(self, root: Path, split: str, image_size: int = 32, hflip: bool = False) -> None:
        self.hflip = hflip
        classes = class_names(root)
        images, labels = [], []
        for label, name in enumerate(classes):
            folder = root / split / name
            files = sorted(folder.iterdir()) if folder.is_dir() else []
            for path in files:
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    with Image.open(path) as img:
                        rgb = img.convert("RGB").resize((image_size, image_size))
                        images.append(np.asarray(rgb, dtype=np.uint8))
                    labels.append(label)
        shape = (0, image_size, image_size, 3)
        pixels = np.stack(images) if images else np.zeros(shape, np.uint8)
        self.x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        self.y = torch.tensor(labels, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[i]
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, self.y[i]


def load_dataset(root: Path, split: str) -> ImageFolder:
    return ImageFolder(Path(root), split, hflip=split == "train")


def fl_evaluate_model(model, env, logger):
    return env.evaluate(model, load_dataset(env.data_root, "val"))


def fl_train_model(model, env, out_dir, logger):
    train = load_dataset(env.data_root, "train")
    logger.info("training on %d images", len(train))
    return env.fit(model, train, load_dataset(env.data_root, "val"))
