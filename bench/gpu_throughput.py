"""GPU benchmark (issue 8, item 5): training through the site executor vs plain PyTorch.

ResNet-50 at 224 px (bench/model_def.py with the ImageNet stem), bf16 autocast,
channels_last, AdamW, synthetic images already on the GPU; batch 128 and 256. For each batch
size it runs the same loop (`model_def.gpu_train_loop`) twice in one run:
  plain     in this process, straight PyTorch;
  executor  as a ResonFL job through the local simulator: the site's warm job process
            (the executor, one process kept across the job's rounds) runs `fl_train_gpu`;
and prints images/s of both, their ratio (target >= 0.97), and the CUDA memory after each
round in the warm job process (it must not grow from round to round).

    .venv/bin/python bench/gpu_throughput.py [--batches 128,256] [--steps 30] [--rounds 3]

Needs a CUDA GPU; NOT RUN YET (no GPU in the session that wrote it): see docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))


def plain(batch: int, steps: int) -> dict[str, float]:
    from model_def import CifarResNet, gpu_train_loop  # bench/ on sys.path

    return gpu_train_loop(CifarResNet(50, num_classes=1000, imagenet_stem=True), batch, steps)


def through_executor(batch: int, steps: int, rounds: int, work: Path) -> list[dict[str, float]]:
    from resonfl.config import FederationConfig, ModelConfig, TrainingConfig  # after sys.path setup
    from resonfl.job import Job  # after sys.path setup
    from resonfl.simulate import simulate  # lazy: torch

    job = Job(
        name=f"gpu-resnet50-b{batch}",
        model=ModelConfig(
            source=(BENCH / "model_def.py").read_text("utf-8"),
            class_name="CifarResNet",
            args={"depth": 50, "num_classes": 1000, "imagenet_stem": True},
            train_fn="fl_train_gpu",
        ),
        training=TrainingConfig(
            optimizer="adamw",
            local_steps=steps,
            persist_optimizer_state=False,
            extra={"GPU_BATCH": str(batch), "GPU_STEPS": str(steps)},
        ),
        federation=FederationConfig(sites=["gpu-site"], num_rounds=rounds, gpus_per_site=1),
    )
    job_dir = job.render(work / f"job-b{batch}")
    result = simulate(job_dir, work / f"sim-b{batch}", progress=False)
    return [dict(r.metrics) for r in result.rounds]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batches", default="128,256", type=lambda s: [int(b) for b in s.split(",")]
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=REPO / "out" / "bench" / "gpu.json")
    args = parser.parse_args(argv)

    import torch  # lazy: torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to measure")
        return 2
    report: dict[str, object] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    print(f"{report['gpu']}, torch {torch.__version__}, ResNet-50 224 px bf16 channels_last AdamW")
    print(
        f"{'batch':>6} {'plain img/s':>12} {'executor img/s':>15} {'ratio':>7}  CUDA MB per round"
    )
    with tempfile.TemporaryDirectory(prefix="resonfl-gpu-") as tmp:
        for batch in args.batches:
            base = plain(batch, args.steps)
            torch.cuda.empty_cache()
            rounds = through_executor(batch, args.steps, args.rounds, Path(tmp))
            steady = rounds[1:] or rounds  # round 1 pays cuDNN autotuning and the CUDA context
            ours = sum(r["images_per_s"] for r in steady) / len(steady)
            ratio = ours / base["images_per_s"]
            mem = [round(r["cuda_allocated_mb"]) for r in rounds]
            print(f"{batch:>6} {base['images_per_s']:>12.0f} {ours:>15.0f} {ratio:>7.3f}  {mem}")
            report[f"b{batch}"] = {
                "plain": base,
                "executor_rounds": rounds,
                "ratio": ratio,
                "target_met": ratio >= 0.97,
                "memory_flat": max(mem) <= min(mem) + 64,
            }
            time.sleep(1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
