"""Helpers shared by several test modules (a support module: no tests here).

Test modules import what they share from here, never from one another:

- ``TINY_FIND`` + ``write_recipe``: the tiny but real IMP recipe (LeNet-300-100 on digits, 3 levels of
  60 iterations, rewind to step 20) and the way to put a recipe dict on disk for ``find_tickets``.
- ``LENET`` + ``digits_ticket``: a real ticket of digits[0-4] (5 classes, 1x8x8 input) made in a
  second, for the controls and the transfer grid.

The Hub server and the torchrun/DDP workers are support modules of their own
(``tests/hub_server.py``, ``tests/ddp_worker.py``, ``tests/torchrun_worker.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from ticket_zoo.masks import magnitude_masks, prunable_weights
from ticket_zoo.ticket import Ticket, create_model

# Tiny but real: LeNet-300-100 on digits, layerwise 20% (head 10%), rewind to step 20 (late resetting).
TINY_FIND: dict[str, Any] = {
    "arch": "lenet_300_100",
    "dataset": "digits",
    "scope": "layerwise",
    "prune_fraction": 0.2,
    "head_prune_fraction": 0.1,
    "rewind": 20,
    "levels": 3,
    "seed": 0,
    "train": {
        "optimizer": "adam",
        "lr": 1.2e-3,
        "batch_size": 60,
        "iterations": 60,
        "eval_every": 20,
        "checkpoint_every": 20,
    },
}

#: ``arch_kwargs`` of lenet_300_100 for digits[0-4]: 5 classes of 1x8x8 images.
LENET: dict[str, Any] = {"num_classes": 5, "in_chans": 1, "img_size": 8}


def write_recipe(tmp: Path, data: dict, name: str = "recipe.yaml") -> Path:
    """``data`` written as the YAML recipe ``tmp / name``; returns its path."""
    path = tmp / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def digits_ticket(
    arch: str, kwargs: dict, density: float, *, steps: int = 8, seed: int = 0, level: int = 1
) -> Ticket:
    """A real ticket on digits[0-4]: rewind point = init, mask = magnitude of weights trained ``steps`` steps.

    ``steps=0`` prunes the initial weights by magnitude (pruning at init; cheap for the conv net).
    """
    from ticket_zoo.data import load_splits
    from ticket_zoo.train import TrainConfig, train

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(arch, kwargs)
    rewind = {k: v.clone() for k, v in model.state_dict().items()}
    if steps:
        splits = load_splits("digits[0-4]")
        cfg = TrainConfig(optimizer="adam", lr=1e-3, iterations=steps, batch_size=32, seed=seed)
        train(model, splits.train, splits.val, cfg, progress=False)
    masks = magnitude_masks(prunable_weights(model), density, scope="layerwise")
    meta = {"source": "digits[0-4]", "input_size": [1, 8, 8], "level": level, "name": f"{arch}-l{level}"}
    return Ticket.from_model(model, masks, arch=arch, arch_kwargs=kwargs, init_state=rewind, meta=meta)
