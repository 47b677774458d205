"""Training runs that tests/test_train.py starts in subprocesses (this file is not a test itself).

    torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py ddp OUT_DIR
        every rank trains the DDP problem; rank r writes OUT_DIR/rank{r}.safetensors (+ .json)
    python tests/ddp_worker.py resume OUT_DIR CKPT_DIR
        one process trains the resume problem with checkpoints in CKPT_DIR; writes OUT_DIR/rank0.*.
        TZ_SLOW_SECONDS=s sleeps s seconds per forward so a test can SIGKILL it mid-run.

The problems are built here so the test builds exactly the same ones in-process for reference.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ticket_zoo.train import TrainConfig, train  # noqa: E402

NUM_CLASSES = 4


def make_data(n: int, seed: int) -> torch.utils.data.TensorDataset:
    """Gaussian blobs as 1x4x4 'images': learnable, but not instantly (so accuracy moves)."""
    g = torch.Generator().manual_seed(1234)
    centers = torch.randn(NUM_CLASSES, 16, generator=g)
    g.manual_seed(seed)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    x = centers[y] + 1.2 * torch.randn(n, 16, generator=g)
    return torch.utils.data.TensorDataset(x.view(n, 1, 4, 4), y)


def make_model(dropout: float = 0.0, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, NUM_CLASSES)
        )


def make_masks(model: nn.Module, density: float = 0.5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {
        name: torch.rand(p.shape, generator=g) < density
        for name, p in model.named_parameters()
        if name.endswith("weight")
    }


def ddp_problem() -> dict:
    """No dropout, no augmentation: a 2-process run must follow the 1-process trajectory."""
    model = make_model()
    cfg = TrainConfig(
        optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4, iterations=30, batch_size=32, eval_every=10
    )
    return dict(
        model=model,
        train_set=make_data(256, 1),
        val_set=make_data(64, 2),
        test_set=make_data(64, 3),
        config=cfg,
        masks=make_masks(model),
    )


def resume_problem() -> dict:
    """Everything that carries state across a resume: momentum, schedule+warmup, dropout RNG,
    augmentation generator, a captured state, a train-loss average spanning a checkpoint."""
    model = make_model(dropout=0.2)
    cfg = TrainConfig(
        optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4,
        schedule="step", milestones=(60,), warmup=5, iterations=120, batch_size=16,
        eval_every=15, checkpoint_every=10, augment="cifar", seed=3,
    )  # fmt: skip
    return dict(
        model=model,
        train_set=make_data(200, 1),
        val_set=make_data(64, 2),
        test_set=make_data(64, 3),
        config=cfg,
        masks=make_masks(model),
        capture_at=5,
    )


def result_json(result) -> dict:
    """The TrainResult numbers that must survive a kill (everything but seconds and tensors)."""
    return {
        k: getattr(result, k)
        for k in (
            "best_val_acc",
            "best_step",
            "final_val_acc",
            "test_acc",
            "final_test_acc",
            "steps",
            "history",
        )
    }


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    problem = ddp_problem() if mode == "ddp" else resume_problem()
    model = problem.pop("model")
    if mode == "ddp":
        kwargs = dict(checkpoint_dir=out / "ckpt", log_path=out / "log.jsonl")
    else:
        kwargs = dict(checkpoint_dir=sys.argv[3], log_path=Path(sys.argv[3]) / "log.jsonl")
        slow = float(os.environ.get("TZ_SLOW_SECONDS", "0"))
        if slow:
            model.register_forward_pre_hook(lambda *_: time.sleep(slow))
    result = train(model, progress=False, **problem, **kwargs)
    rank = int(os.environ.get("RANK", "0"))
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if result.captured is not None:
        tensors.update({f"captured.{k}": v for k, v in result.captured.items()})
    safetensors.torch.save_file(tensors, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps(result_json(result)))


if __name__ == "__main__":
    main()
