"""The benchmark's job code: CIFAR-size ResNet-18 / ResNet-50 and one SGD step on random data.

Built here (no torchvision: its wheel does not import beside this machine's CPU torch). The
same file is the ResonFL job's model_def.py and the Flower peer's model, so both run exactly
the same step: 8 random 3x32x32 images, cross-entropy, one SGD step, per round and site.
Self-contained (torch only): the platform ships it to the sites as the job's model_def.py.
"""

from __future__ import annotations

import torch
from torch import nn

BATCH = 8
NUM_CLASSES = 10


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: 3x3 stem, no max-pool, four stages (64..512), global pool.
    `imagenet_stem` gives the 224 px ResNet instead (7x7 stride-2 stem and a max-pool)."""

    def __init__(
        self, depth: int = 18, num_classes: int = NUM_CLASSES, imagenet_stem: bool = False
    ) -> None:
        super().__init__()
        block, layers = {18: (BasicBlock, [2, 2, 2, 2]), 50: (Bottleneck, [3, 4, 6, 3])}[depth]
        if imagenet_stem:
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()
            )
        stages: list[nn.Module] = []
        cin = 64
        for i, (width, count) in enumerate(zip([64, 128, 256, 512], layers, strict=True)):
            for j in range(count):
                stride = 2 if i > 0 and j == 0 else 1
                stages.append(block(cin, width, stride))
                cin = width * block.expansion
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def sgd_step(model: nn.Module, seed: int) -> int:
    """The benchmark's local work: one SGD step on BATCH random images; returns samples."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, 3, 32, 32, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (BATCH,), generator=gen)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    return BATCH


def fl_evaluate_model(model, env, logger):
    """No evaluation: the benchmark times the round, not the model."""
    return {}


def fl_train_model(model, env, out_dir, logger):
    """One SGD step on random images (ResonFL's entry point)."""
    return {"samples": sgd_step(model, env.seed_everything())}


# -- the GPU benchmark's job (bench/gpu_throughput.py): ResNet-50, 224 px, bf16, AdamW ------
def gpu_train_loop(model: nn.Module, batch: int, steps: int, warmup: int = 5) -> dict[str, float]:
    """`steps` AdamW steps on synthetic 224 px images already on the GPU, bf16 autocast,
    channels_last; returns images/s over the timed steps and the CUDA memory high-water mark.
    The same function is the plain-PyTorch baseline and the job's round, so the two differ
    only in what runs around it."""
    device = torch.device("cuda")
    model.to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    x = torch.randn(batch, 3, 224, 224, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    import time  # job file: stdlib, where used

    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    return {
        "images_per_s": batch * steps / elapsed,
        "cuda_max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
        "cuda_allocated_mb": torch.cuda.memory_allocated() / 2**20,
    }


def fl_train_gpu(model, env, out_dir, logger):
    """The GPU benchmark's round (ResonFL's entry point): batch and steps from the job's
    training `extra` (GPU_BATCH, GPU_STEPS, exported as environment variables)."""
    import os  # job file: stdlib, where used

    out = gpu_train_loop(model, int(os.environ["GPU_BATCH"]), int(os.environ["GPU_STEPS"]))
    model.to("cpu")
    return {"samples": int(os.environ["GPU_BATCH"]) * int(os.environ["GPU_STEPS"]), "metrics": out}
