"""Model cards (README.md with YAML front matter) rendered with ``huggingface_hub.ModelCard``.

A card's load line names the catalogue entry only when that entry is this very ticket, so this module
sits above the catalogue (``format`` → ``zoo`` → ``cards`` → ``hub`` → ``api``).

Example:
    >>> import ticket_zoo as tz
    >>> card = render_card(tz.load("lenet_300_100-digits04-5pct"))
    >>> card.data.library_name, card.data.ticket["arch"], card.data.ticket["density"]
    ('ticket-zoo', 'lenet_300_100', 0.045815)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from . import zoo
from ._io import sha256_hex
from .format import ticket_to_bytes
from .ticket import Ticket


def _fmt_pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _accuracy(value: Any) -> float | None:
    """A recorded accuracy as a float, or None when it is missing or not a finite number (never raises)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def card_data(ticket: Ticket, name: str | None = None) -> ModelCardData:
    """The YAML part of the card: library, tags, source dataset, model-index with source accuracy."""
    meta = ticket.meta
    name = name or ticket.name or f"{ticket.arch}-ticket"
    source = meta.get("source")
    source_id = meta.get("source_hub_id") or source
    eval_results = []
    for split in ("test", "val"):
        acc = _accuracy(meta.get(f"source_{split}_acc"))
        if acc is not None:
            eval_results.append(
                EvalResult(
                    task_type="image-classification",
                    dataset_type=str(source_id or "unknown"),
                    dataset_name=str(source or "unknown"),
                    dataset_split="test" if split == "test" else "validation",
                    metric_type="accuracy",
                    metric_value=round(acc, 4),
                    metric_name=f"source {split} accuracy (%)",
                )
            )
            break
    tags = ["lottery-ticket", "pruning", "timm", "ticket-zoo", ticket.arch]
    kwargs: dict[str, Any] = {
        "library_name": "ticket-zoo",
        "tags": tags,
        "license": meta.get("license", "apache-2.0"),
    }
    if source_id:
        kwargs["datasets"] = [str(source_id)]
    if eval_results:
        kwargs["model_name"] = name
        kwargs["eval_results"] = eval_results
    data = ModelCardData(**kwargs)
    # Facts a catalogue or a script reads back without parsing the body.
    data.ticket = {
        "arch": ticket.arch,
        "density": round(ticket.density, 6),
        "source": source,
        "num_classes": ticket.num_classes,
        "level": meta.get("level"),
        "rewind_step": meta.get("rewind_step"),
    }
    return data


def _data_config_section(cfg: Any, load_target: str) -> str:
    """The "Data config" section (timm's input pipeline the source was trained with), or "" without one."""
    if not isinstance(cfg, dict) or not cfg.get("input_size"):
        return ""

    def nums(key: str) -> str:
        values = cfg.get(key)
        return ", ".join(f"{float(v):g}" for v in values) if isinstance(values, (list, tuple)) else "?"

    size = "×".join(str(v) for v in cfg["input_size"])
    return f"""
## Data config

The source images went through timm's pipeline (train: random-resized-crop + flip; eval: resize
and center crop by `crop_pct`). Feed the network the same way:

| input size | mean | std | interpolation | crop_pct |
|---|---|---|---|---|
| {size} | {nums("mean")} | {nums("std")} | {cfg.get("interpolation", "?")} | {cfg.get("crop_pct", "?")} |

```python
import timm.data
transform = timm.data.create_transform(**tz.load("{load_target}").meta["data_config"])  # eval transform
```
"""


def _is_catalogue_ticket(ticket: Ticket, name: str) -> bool:
    """Whether catalogue entry ``name`` is this very ticket (published, same arch, masks and density)."""
    try:
        entry = zoo.info(name)
    except Exception:  # not a catalogue name, no catalogue: not one
        return False
    if entry.get("arch") != ticket.arch or not (entry.get("embedded") or entry.get("repo_id")):
        return False
    if entry.get("sha256"):
        try:
            return sha256_hex(ticket_to_bytes(ticket)) == entry["sha256"]
        except Exception:
            return False
    return False


def load_target_for(
    ticket: Ticket, name: str | None = None, *, repo_id: str | None = None, path: str | os.PathLike | None = None
) -> str:
    """What a card's ``tz.load(...)`` line names: a spec that loads *this* ticket.

    ``hf-hub:REPO`` once pushed (``repo_id``); else the directory the card sits in (``path``); else
    the catalogue name only when the catalogue entry of that name is this ticket; else a placeholder.
    (A find run names its levels like catalogue entries: ``lenet_300_100-digits04-5pct`` from your
    own run is not the catalogue's ticket, so its card points at its directory.)

    Example:
        >>> import ticket_zoo as tz
        >>> ticket = tz.load("lenet_300_100-digits04-5pct")
        >>> load_target_for(ticket, "lenet_300_100-digits04-5pct", path="runs/find/level_14")
        'runs/find/level_14'
        >>> load_target_for(ticket)  # the catalogue entry is this very ticket
        'lenet_300_100-digits04-5pct'
        >>> load_target_for(ticket.with_(meta={**ticket.meta, "seed": 1}))  # same name, not the same ticket
        'path/to/ticket_dir'
        >>> load_target_for(ticket, repo_id="me/lenet-digits04")
        'hf-hub:me/lenet-digits04'
    """
    if repo_id:
        return f"hf-hub:{repo_id}"
    if path is not None:
        return Path(path).as_posix()
    name = name or ticket.name
    if name and _is_catalogue_ticket(ticket, name):
        return name
    return "path/to/ticket_dir"


def render_card(
    ticket: Ticket,
    name: str | None = None,
    repo_id: str | None = None,
    *,
    path: str | os.PathLike | None = None,
) -> ModelCard:
    """Render the full model card for ``ticket``.

    The load line names ``hf-hub:REPO_ID`` when ``repo_id`` is given, else ``path`` (the ticket's
    directory), else the catalogue name when the ticket is that catalogue entry (see
    :func:`load_target_for`).

    Example:
        >>> import shutil, tempfile
        >>> import ticket_zoo as tz
        >>> ticket = tz.load("lenet_300_100-digits04-5pct")
        >>> tmp = tempfile.mkdtemp()
        >>> render_card(ticket, path="my_ticket").save(f"{tmp}/README.md")
        >>> card = ModelCard.load(f"{tmp}/README.md")  # read back: the YAML front matter and the body
        >>> card.data.library_name, card.data.ticket["level"], 'tz.load("my_ticket")' in card.text
        ('ticket-zoo', 14, True)
        >>> shutil.rmtree(tmp)
    """
    meta = ticket.meta
    name = name or ticket.name or f"{ticket.arch}-ticket"
    data = card_data(ticket, name)
    load_target = load_target_for(ticket, name, repo_id=repo_id, path=path)
    rows = "\n".join(
        f"| `{layer}` | {tuple(ticket.masks[layer].shape)} | {int(torch.count_nonzero(ticket.masks[layer]))} | {_fmt_pct(d)} |"
        for layer, d in ticket.layer_densities.items()
    )
    acc_lines = []
    for key, label in (("source_val_acc", "validation"), ("source_test_acc", "test")):
        if _accuracy(meta.get(key)) is not None:
            acc_lines.append(f"- source {label} accuracy: **{_accuracy(meta[key]):.2f}%**")
    recipe = meta.get("recipe")
    recipe_block = (
        "```json\n" + json.dumps(recipe, indent=2, sort_keys=True, default=str) + "\n```"
        if recipe
        else "_not recorded_"
    )
    versions = meta.get("versions") if isinstance(meta.get("versions"), dict) else {}
    data_section = _data_config_section(meta.get("data_config"), load_target)
    body = f"""
# {name}

A **lottery ticket** (Frankle & Carbin 2019): a pruning mask plus the weights at the rewind step,
for the timm architecture `{ticket.arch}`, found on **{meta.get("source", "unknown")}**.
It keeps **{_fmt_pct(ticket.density)}** of its prunable weights
(pruning: {meta.get("method", "unknown")}, level {meta.get("level", "?")}, rewind step {meta.get("rewind_step", "?")}).

{chr(10).join(acc_lines) if acc_lines else "- source accuracy: _not recorded_"}

## Load it

```python
import ticket_zoo as tz
model = tz.load("{load_target}").build(num_classes=10, new_head=True)  # fresh 10-way head for your task, masks applied
```
{data_section}
## Transfer it

```bash
ticket-zoo transfer --ticket {load_target} --target cifar10 --optimizers sgd adam --controls winning random_ticket --seeds 0 1 2 --out runs/transfer
```

## Density per layer

| layer | shape | kept | density |
|---|---|---|---|
{rows}

## Recipe

{recipe_block}

## Versions

{", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "_not recorded_"}

File format: ticket-zoo v1 (safetensors; bit-packed masks, kept rewind values only).
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
