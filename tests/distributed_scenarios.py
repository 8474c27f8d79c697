"""What two torchrun processes do in tests/test_distributed.py: ``python -m torch.distributed.run --standalone
--nproc_per_node=2 tests/distributed_scenarios.py <scenario> <folder>``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bundle import distributed

ROOT = Path(__file__).resolve().parents[1]


def late_rank(folder: Path) -> None:
    """Rank 1 never reaches the barrier in time: rank 0 must stop with an error that names it, not hang."""
    distributed.initialize(timeout_minutes=0.05)  # 3 seconds
    if distributed.rank() == 1:
        time.sleep(30)
        return
    distributed.barrier("preparing the data", "rank 0 to finish it")


def rank_0_trains(folder: Path) -> None:
    """Rank 0 trains a missing model (train.json, which writes its 48 images first, through Ignite's checkpoint
    saver) while rank 1 waits for it."""
    from bundle.models import ModelSpec, ensure_trained

    distributed.initialize(timeout_minutes=5)
    with distributed.main_process_first("training the missing models"):
        checkpoint = ensure_trained(
            ModelSpec("glass_box", 0), folder / "models", ROOT / "configs" / "train.json",
            {"bundle_root": str(ROOT), "output_dir": str(folder / "eval"), "dataset_dir": str(folder / "data"),
             "synthetic": {"n_images": 48, "seed": 1, "variant": "chest"}, "image_size": 32, "epochs": 1,
             "mirror": False, "epoch_trust#enabled": False})
    (folder / f"rank{distributed.rank()}.done").write_text(str(checkpoint))
    distributed.finish()


def rank_zero_buffers(folder: Path) -> None:
    """Each rank's BatchNorm statistics differ (as after a DDP training's last step, each from its own shard); an
    evaluator with ``RankZeroBuffers`` starts from rank 0's on every rank."""
    import torch
    from ignite.engine import Engine

    distributed.initialize(timeout_minutes=2)
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    network[1].running_mean.fill_(float(distributed.rank() + 1))
    network[1].running_var.fill_(float(10 * (distributed.rank() + 1)))
    evaluator = Engine(lambda engine, batch: None)
    distributed.RankZeroBuffers(network).attach(evaluator)
    evaluator.run([0])
    torch.save({k: v for k, v in network.state_dict().items() if "running" in k},
               folder / f"rank{distributed.rank()}.pt")
    distributed.finish()


if __name__ == "__main__":
    scenario, folder = sys.argv[1], Path(sys.argv[2])
    {"late_rank": late_rank, "rank_0_trains": rank_0_trains,
     "rank_zero_buffers": rank_zero_buffers}[scenario](folder, *sys.argv[3:])
