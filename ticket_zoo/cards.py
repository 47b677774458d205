"""Model cards (README.md with YAML front matter) rendered with ``huggingface_hub.ModelCard``.

What the Hub reads from a card's YAML: ``library_name: ticket-zoo``, ``pipeline_tag:
image-classification``, ``datasets:`` (the source's Hub dataset id, from the dataset registry's
``hub_id``; none for data that is not on the Hub: ``digits``, ``imagefolder:``/``parquet:``) and a
``model-index`` with the source accuracy. The exact source expression (``digits[0-4]``), the
preprocessing and the load target sit in the card's own ``ticket:`` block.

The load line (``tz.load("...")``) is decided in one place, :func:`load_target_for`: the Hub repo
and revision once pushed, the folder of a saved ticket, the catalogue name only when the catalogue
entry is this very ticket. A card sits above the catalogue for that last check (``format`` → ``zoo``
→ ``cards`` → ``hub`` → ``api``).

Example:
    >>> import ticket_zoo as tz
    >>> card = render_card(tz.load("lenet_300_100-digits04-5pct"))
    >>> card.data.library_name, card.data.pipeline_tag, card.data.ticket["arch"], card.data.ticket["density"]
    ('ticket-zoo', 'image-classification', 'lenet_300_100', 0.045815)
    >>> card.data.datasets is None, card.data.ticket["source"]  # digits is not on the Hub: no datasets entry
    (True, 'digits[0-4]')
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
import yaml
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


PIPELINE_TAG = "image-classification"

# A Hub dataset id: "name" or "org/name" (no class subset, no local path, no revision).
_HUB_DATASET_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")


def _source_spec(source: Any) -> Any:
    """The dataset registry's spec of a source expression (``cifar100``, ``digits[0-4]``), or None.

    Never raises and never reads data: local data (``imagefolder:``/``parquet:``) is not looked up,
    since resolving it reads the files, and it has no Hub id anyway.
    """
    if not isinstance(source, str) or not source.strip() or ":" in source:
        return None
    from .data import get_spec  # data imports `datasets`: only when a card needs the registry

    try:
        return get_spec(source)
    except Exception:  # an unknown or unregistered name: the card just lacks what the registry knows
        return None


def hub_dataset_id(meta: dict[str, Any]) -> str | None:
    """The Hub dataset id of a ticket's source: ``meta["source_hub_id"]`` (recorded by find), else the
    dataset registry's ``hub_id`` for ``meta["source"]``; None for data that is not on the Hub.

    A class subset names its whole dataset (the subset itself goes in the card's ``ticket:`` block).

    Example:
        >>> hub_dataset_id({"source": "cifar100"}), hub_dataset_id({"source": "cifar10[0-4]"})
        ('uoft-cs/cifar100', 'uoft-cs/cifar10')
        >>> hub_dataset_id({"source": "digits[0-4]"}), hub_dataset_id({"source": "imagefolder:/data/pets"})
        (None, None)
    """
    recorded = meta.get("source_hub_id")
    if isinstance(recorded, str) and _HUB_DATASET_ID.fullmatch(recorded):
        return recorded
    hub_id = getattr(_source_spec(meta.get("source")), "hub_id", None)
    return hub_id if isinstance(hub_id, str) and _HUB_DATASET_ID.fullmatch(hub_id) else None


def _floats(values: Any) -> list[float] | None:
    if not isinstance(values, (list, tuple)) or not values or len(values) > 16:
        return None
    out = [_accuracy(v) for v in values]  # finite numbers only
    return None if any(v is None for v in out) else [round(v, 6) for v in out]  # type: ignore[arg-type]


def _size(values: Any) -> list[int] | None:
    if not isinstance(values, (list, tuple)) or len(values) != 3:
        return None
    ok = all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1_000_000 for v in values)
    return [int(v) for v in values] if ok else None


def preprocessing(ticket: Ticket) -> dict[str, Any]:
    """How the source images were fed to the network: ``input_size`` (C, H, W), per-channel ``mean`` and
    ``std``, plus ``interpolation`` and ``crop_pct`` for photos that went through timm's pipeline.

    Read from ``meta["data_config"]`` (timm's config, written by find for photos), else
    ``meta["input_size"]`` and the source dataset's mean/std in the registry (averaged over channels
    when the input has another channel count, as training did). Keys that are not known are left out.

    Example:
        >>> import ticket_zoo as tz
        >>> preprocessing(tz.load("lenet_300_100-digits04-5pct"))
        {'input_size': [1, 8, 8], 'mean': [0.305533], 'std': [0.375949]}
    """
    meta = ticket.meta
    cfg = meta.get("data_config") if isinstance(meta.get("data_config"), dict) else {}
    size = _size(cfg.get("input_size")) or _size(meta.get("input_size"))
    mean, std = _floats(cfg.get("mean")), _floats(cfg.get("std"))
    if mean is None or std is None or len(mean) != len(std):
        spec = _source_spec(meta.get("source"))
        mean, std = _floats(getattr(spec, "mean", None)), _floats(getattr(spec, "std", None))
        if size is None:
            size = _size(list(getattr(spec, "input_size", None) or ()))
        if mean is not None and std is not None and size is not None and len(mean) != size[0]:
            from .images import channel_stats  # the rule training used; images imports `datasets`

            mean, std = (_floats(v) for v in channel_stats(mean, std, size[0]))
    out: dict[str, Any] = {}
    if size is not None:
        out["input_size"] = size
    if mean is not None and std is not None and len(mean) == len(std):
        out.update(mean=mean, std=std)
    if isinstance(cfg.get("interpolation"), str) and len(cfg["interpolation"]) <= 32:
        out["interpolation"] = cfg["interpolation"]
    crop = _accuracy(cfg.get("crop_pct"))
    if crop is not None:
        out["crop_pct"] = crop
    return out


def _dataset_type(source: Any, hub_id: str | None) -> str:
    """model-index ``dataset.type``: the Hub id, else the dataset's base name (never a subset or a path)."""
    if hub_id:
        return hub_id
    if not isinstance(source, str) or not source:
        return "unknown"
    base = source.split("[", 1)[0]
    return base.split(":", 1)[0] if ":" in base else base


def card_data(
    ticket: Ticket, name: str | None = None, *, load_target: str | None = None
) -> ModelCardData:
    """The YAML part of the card: library, pipeline tag, tags, the source's Hub dataset id, model-index
    with the source accuracy, and the ``ticket:`` block (exact source, preprocessing, load target)."""
    meta = ticket.meta
    name = name or ticket.name or f"{ticket.arch}-ticket"
    source = meta.get("source")
    hub_id = hub_dataset_id(meta)
    eval_results = []
    for split in ("test", "val"):
        acc = _accuracy(meta.get(f"source_{split}_acc"))
        if acc is not None:
            eval_results.append(
                EvalResult(
                    task_type=PIPELINE_TAG,
                    dataset_type=_dataset_type(source, hub_id),
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
        "pipeline_tag": PIPELINE_TAG,
        "tags": tags,
        "license": meta.get("license", "apache-2.0"),
    }
    if hub_id:
        kwargs["datasets"] = [hub_id]
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
        "preprocessing": preprocessing(ticket) or None,
        "load": load_target,
    }
    return data


def _preprocessing_section(prep: dict[str, Any], has_data_config: bool, load_target: str) -> str:
    """The "Preprocessing" section (how to feed the network), or "" when nothing is known."""
    if not prep:
        return ""

    def nums(key: str) -> str:
        return ", ".join(f"{v:g}" for v in prep[key]) if key in prep else "?"

    size = "×".join(str(v) for v in prep["input_size"]) if "input_size" in prep else "?"
    if not has_data_config:
        return f"""
## Preprocessing

The source images were converted to the input's channels, resized (bilinear) to the input size,
scaled to [0, 1] and normalized per channel. Feed the network the same way:

| input size | mean | std |
|---|---|---|
| {size} | {nums("mean")} | {nums("std")} |
"""
    return f"""
## Preprocessing

The source images went through timm's pipeline (train: random-resized-crop + flip; eval: resize
and center crop by `crop_pct`). Feed the network the same way:

| input size | mean | std | interpolation | crop_pct |
|---|---|---|---|---|
| {size} | {nums("mean")} | {nums("std")} | {prep.get("interpolation", "?")} | {prep.get("crop_pct", "?")} |

### Data config

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


PLACEHOLDER_TARGET = "path/to/ticket_dir"  # a ticket that lives nowhere yet: the reader fills it in


def load_target_for(
    ticket: Ticket,
    name: str | None = None,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    path: str | os.PathLike | None = None,
) -> str:
    """What a card's ``tz.load(...)`` line names: a spec that loads *this* ticket (the one place that decides).

    ``hf-hub:REPO@REVISION`` once pushed (``repo_id``; ``revision`` when known: :func:`ticket_zoo.hub.push`
    gives the tag, else the branch it commits to); else the directory the card sits in (``path``); else
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
        >>> load_target_for(ticket, repo_id="me/lenet-digits04", revision="v1")
        'hf-hub:me/lenet-digits04@v1'
    """
    if repo_id:
        return f"hf-hub:{repo_id}@{revision}" if revision else f"hf-hub:{repo_id}"
    if path is not None:
        return Path(path).as_posix()
    name = name or ticket.name
    if name and _is_catalogue_ticket(ticket, name):
        return name
    return PLACEHOLDER_TARGET


def render_card(
    ticket: Ticket,
    name: str | None = None,
    repo_id: str | None = None,
    *,
    revision: str | None = None,
    path: str | os.PathLike | None = None,
) -> ModelCard:
    """Render the full model card for ``ticket``.

    The load line names ``hf-hub:REPO_ID[@REVISION]`` when ``repo_id`` is given, else ``path`` (the
    ticket's directory), else the catalogue name when the ticket is that catalogue entry (see
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
        >>> card.data.ticket["load"], card.data.ticket["preprocessing"]["input_size"]
        ('my_ticket', [1, 8, 8])
        >>> shutil.rmtree(tmp)
    """
    load_target = load_target_for(ticket, name, repo_id=repo_id, revision=revision, path=path)
    meta = ticket.meta
    name = name or ticket.name or f"{ticket.arch}-ticket"
    data = card_data(ticket, name, load_target=None if load_target == PLACEHOLDER_TARGET else load_target)
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
    data_section = _preprocessing_section(
        preprocessing(ticket), isinstance(meta.get("data_config"), dict), load_target
    )
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


# YAML keys a ticket-zoo card owns: refreshed from the ticket when a card is retargeted; any other key
# (a license, languages, tags a person added) is kept as written.
_OWNED_KEYS = ("library_name", "pipeline_tag", "datasets", "model-index", "ticket")
_LOAD_LINE = re.compile(r'tz\.load\("([^"\n]{1,1000})"\)')


def retarget_card(text: str, ticket: Ticket, *, repo_id: str, revision: str | None = None) -> str:
    """The card ``text`` (a ticket directory's README.md) made to describe ``ticket`` at ``hf-hub:REPO_ID@REVISION``.

    What :func:`ticket_zoo.hub.push` uploads for a directory that has a README: the card keeps what a
    person wrote, but its load lines (``tz.load("...")``, ``--ticket ...``) name the Hub repo instead
    of the folder it was saved in, and the YAML keys the Hub reads (``library_name``, ``pipeline_tag``,
    ``datasets``, ``model-index``, ``ticket``) are refreshed from the ticket. The old target is the
    card's ``ticket.load`` (or, in a ticket-zoo card written before it was recorded, its first
    ``tz.load`` line; a README a person wrote from scratch keeps its body as it is). Text that is not
    a readable card is replaced by a fresh one.

    Example:
        >>> import ticket_zoo as tz
        >>> ticket = tz.load("lenet_300_100-digits04-5pct")
        >>> saved = str(render_card(ticket, path="runs/find/level_14")) + "\\nMy notes.\\n"
        >>> pushed = retarget_card(saved, ticket, repo_id="me/lenet", revision="v1")
        >>> 'tz.load("hf-hub:me/lenet@v1")' in pushed, "runs/find/level_14" in pushed, "My notes." in pushed
        (True, False, True)
    """
    target = load_target_for(ticket, repo_id=repo_id, revision=revision)
    try:
        card = ModelCard(text, ignore_metadata_errors=True)
        existing = card.data.to_dict()
    except Exception:  # no front matter we can read: not a card we can keep
        return str(render_card(ticket, repo_id=repo_id, revision=revision))
    block = existing.get("ticket") if isinstance(existing.get("ticket"), dict) else {}
    old = block.get("load")
    ours = bool(block) or existing.get("library_name") == "ticket-zoo"
    if (not isinstance(old, str) or not old) and ours:  # a card written before ticket.load was recorded
        found = _LOAD_LINE.search(card.text)
        old = found.group(1) if found else None
    body = card.text
    if old and old != target:
        body = body.replace(f'tz.load("{old}")', f'tz.load("{target}")')
        body = re.sub(rf"(--ticket ){re.escape(old)}(?=\s|$)", lambda m: m.group(1) + target, body)
    model_index = existing.get("model-index")
    name = None
    if isinstance(model_index, list) and model_index and isinstance(model_index[0], dict):
        name = model_index[0].get("name")
    fresh = card_data(ticket, name if isinstance(name, str) else None, load_target=target).to_dict()
    # our keys in the rendered order, then the others as written: re-targeting again changes nothing
    merged = {k: (v if k in _OWNED_KEYS else existing.get(k, v)) for k, v in fresh.items()}
    merged.update((k, v) for k, v in existing.items() if k not in merged and k not in _OWNED_KEYS)
    front = yaml.safe_dump(merged, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n{body}"
