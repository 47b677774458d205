"""Find lottery tickets: iterative magnitude pruning (IMP) with rewinding, one ticket per level.

The procedure of Frankle & Carbin (2019) with the late resetting of Frankle et al. (2019) and the
global pruning of Morcos et al. (2019):

1. Level 0: create the dense network (seeded), train it, and keep its state ``θk`` after ``k``
   steps (``rewind``; ``k = 0`` is classic LTH, i.e. ``θ0``).
2. Level ``L >= 1``: prune the *final* weights of level ``L-1`` by magnitude so that every layer
   group keeps ``(1 - p)^L`` of its weights (``p`` = ``prune_fraction``; ``layer_prune_fractions``
   and ``head_prune_fraction`` compound the same way), reset the survivors to ``θk``, and train
   steps ``k..T`` with the mask held, with the same seed (same data order: only the mask differs).

This module owns the config (:class:`FindConfig`), the driver (:func:`find_tickets`) and the
``ticket-zoo find`` command. The schedule (rewind step, densities, number of levels, masks) is
:mod:`ticket_zoo.find_levels`; the run folder (``config.yaml``, ``level_XX/``, ``done.json``,
``summary.json``) is :mod:`ticket_zoo.find_folder`.

Each level is written to ``OUT/level_XX/`` as a ticket (``ticket.safetensors`` + ``README.md``)
whose init is ``θk`` with that level's masks, and whose accuracy meta is that of the network trained
from it. The run is resumable at any point: re-running the same command after a kill finishes with
the same results as a run that never stopped.

Example (the shipped recipe, cut to 2 levels of 20 iterations: about a second on a CPU):
    >>> import shutil, tempfile
    >>> out = tempfile.mkdtemp()
    >>> rows = find_tickets("lenet_300_100-digits04", out, progress=False,
    ...                     overrides={"train.iterations": 20, "train.eval_every": 20, "levels": 2})
    >>> [(r["level"], round(r["density"], 3)) for r in rows]  # 20% of hidden, 10% of head weights per level
    [(0, 1.0), (1, 0.801), (2, 0.642)]
    >>> sorted(p.name for p in Path(out).iterdir())
    ['config.yaml', 'level_00', 'level_01', 'level_02', 'rewind.safetensors', 'summary.json']
    >>> shutil.rmtree(out)
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import _dist
from . import find_folder as folder
from . import progress as _progress
from .config import apply_overrides, parse_set
from .configs import DEFAULT_FIND_TRAIN, FindConfig, TrainConfig, find_arguments
from .errors import CheckpointError, ConfigError
from .find_levels import Schedule, density_schedule, layer_fractions, rewind_step

if TYPE_CHECKING:  # pragma: no cover
    from .data import Splits

__all__ = ["FindConfig", "density_schedule", "find_tickets", "register_cli"]

SCOPES = ("global", "layerwise")
_FRACTION = {"low": 0, "low_open": True, "high": 1, "high_open": True}  # a fraction in (0, 1)


# --- config ----------------------------------------------------------------------------------------


# FindConfig is declared in configs.py (torch-free, so the CLI builds --help without torch).


# --- the run ---------------------------------------------------------------------------------------


@dataclass
class _FindRun:
    """What every level of one run shares (built once by :func:`find_tickets`)."""

    config: FindConfig
    out: Path
    splits: Splits
    train: TrainConfig  # config.effective_train()
    arch_kwargs: dict[str, Any]  # the recipe's plus num_classes / in_chans / img_size from the data
    rewind_step: int
    names: list[str]  # the prunable parameters
    schedule: Schedule
    method: str  # "imp-global", "oneshot-layerwise", ...
    prefix: str  # ticket names are PREFIX-NNpct
    progress: bool


def find_tickets(
    config: FindConfig | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run IMP with rewinding and write one ticket per level under ``out_dir``; return the summary rows.

    ``config`` is a :class:`FindConfig`, a recipe file or a shipped recipe's name. ``overrides`` are
    what ``ticket-zoo find --set KEY=VALUE`` takes: dotted keys replacing recipe fields, e.g.
    ``{"train.iterations": 50, "levels": 2, "seed": 1}`` (see
    :func:`ticket_zoo.config.apply_overrides`; with a :class:`FindConfig` they apply to its
    :meth:`~FindConfig.to_dict`).

    Each row is ``{level, density, val_acc, test_acc, steps, seconds, path}`` (accuracies in percent,
    of the network trained from that level's ticket; test at the best-val weights). Re-running the
    same call resumes; a different config in the same ``out_dir`` raises :class:`ConfigError`.
    Under torchrun every rank calls it and trains each level together (DDP); rank 0 alone writes.

    Example:
        >>> import shutil, tempfile
        >>> import ticket_zoo as tz
        >>> out = tempfile.mkdtemp()
        >>> cfg = FindConfig(arch="lenet_300_100", dataset="digits[0-4]", levels=2,
        ...                  train=TrainConfig(optimizer="adam", lr=1.2e-3, iterations=20, batch_size=60))
        >>> rows = find_tickets(cfg, out, progress=False)
        >>> round(tz.load(rows[-1]["path"]).density, 2), rows[-1]["steps"]
        (0.64, 20)
        >>> find_tickets(cfg, out, progress=False) == rows  # re-running resumes: every level is done
        True
        >>> find_tickets(cfg, out, overrides={"seed": 1}, progress=False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: ... holds a run with a different config (seed: 0 -> 1) ...
        >>> shutil.rmtree(out)
    """
    from .data import load_splits
    from .masks import prunable_names
    from .models import classifier_param_names

    if not isinstance(config, FindConfig):
        config = FindConfig.from_yaml(config, overrides)
    elif overrides:
        config = FindConfig.from_dict(apply_overrides(config.to_dict(), overrides, FindConfig))
    # Under torchrun every rank joins the process group here, before anything is read or written
    # (so _dist.is_main() is right from here on, whether or not train() has run); rank 0 alone
    # writes (OUT, config.yaml, tickets, summary) and the others wait where they read.
    dist = _dist.setup(config.train.device if isinstance(config.train, TrainConfig) else "auto")
    _dist.together(config.validate)
    # A file in the way, no permission, /proc, a read-only disk: one OutputDirError line, up front.
    # A run of another config in OUT: say so before loading data. (Rank 0 checks; every rank raises.)
    _dist.on_main(folder.check_out, out_dir, config)
    out = Path(out_dir)

    splits = _dist.together(load_splits, config.dataset, input_size=config.input_size, seed=config.seed)
    train_cfg = config.effective_train()
    steps_per_epoch = len(splits.train) // train_cfg.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(
            f"train.batch_size ({train_cfg.batch_size}) is larger than the training set ({len(splits.train)})"
        )
    budget = train_cfg.iterations or max(1, round(train_cfg.epochs * steps_per_epoch))
    k = rewind_step(config.rewind, steps_per_epoch, budget)
    arch_kwargs = _resolve_arch_kwargs(config, splits.spec.num_classes, splits.input_size)

    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(config.seed)
        dense = _create(config.arch, arch_kwargs)
    names = prunable_names(
        dense,
        include=config.include,
        exclude=config.exclude,
        prune_head=config.head_prune_fraction is not None,
    )
    params = dict(dense.named_parameters())
    schedule = Schedule(
        sizes={n: params[n].numel() for n in names},
        scope=config.scope,
        prune_fraction=config.prune_fraction,
        layer_fractions=layer_fractions(
            names,
            config.layer_prune_fractions,
            head=classifier_param_names(dense),
            head_fraction=config.head_prune_fraction,
        ),
    )
    last_level = schedule.last_level(config.levels, config.target_density)
    # Claim OUT only now: every check above (data size, rewind, arch) fails without touching it.
    # (These checks are deterministic, so every rank has raised the same error or none has.)
    _dist.on_main(folder.claim_and_clean, out, config)
    done = folder.done_levels(out)

    run = _FindRun(
        config=config,
        out=out,
        splits=splits,
        train=train_cfg,
        arch_kwargs=arch_kwargs,
        rewind_step=k,
        names=names,
        schedule=schedule,
        method=f"{'oneshot' if config.one_shot else 'imp'}-{config.scope}",
        prefix=config.name_prefix or f"{config.arch}-{_source_tag(config.dataset)}",
        progress=progress,
    )
    rows: list[dict[str, Any]] = []
    # A bar on a terminal; in a log file one line per level and a summary (progress.py).
    show = bool(progress) and dist.main
    bar = _progress.bar(total=last_level + 1, desc="IMP levels", enabled=show)
    started = time.perf_counter()
    try:
        for level in range(last_level + 1):
            level_started = time.perf_counter()
            if level in done:
                # Checks that the level's ticket is the one it recorded; every rank gets rank 0's row.
                row = _dist.on_main(folder.done_row, out, level)
            elif level == 0:
                masks = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
                row = _run_level(run, 0, masks, dense, rewind=None)
            else:
                # Every rank reads what rank 0 wrote for the previous level (written before the
                # barrier that ended it).
                masks = _dist.together(_level_masks, run, level)
                rewind = _dist.together(folder.load_tensors, out / folder.REWIND_FILE)
                model = _create(config.arch, arch_kwargs)
                model.load_state_dict(rewind)
                row = _run_level(run, level, masks, model, rewind=rewind)
            rows.append(row)
            _dist.on_main(folder.write_summary, out, config, rows)
            bar.update(1)
            test = "-" if row.get("test_acc") is None else f"{row['test_acc']:.2f}"
            bar.set_postfix(density=f"{row['density']:.4f}", test=test)
            took = "done before" if level in done else _progress.seconds(time.perf_counter() - level_started)
            _progress.line(
                f"find level {level}/{last_level}: density {row['density']:.3f} "
                f"val {_progress.percent(row.get('val_acc'))} test {_progress.percent(row.get('test_acc'))} ({took})",
                enabled=show,
            )
    finally:
        bar.close()
    before = sum(level in done for level in range(last_level + 1))
    resumed = f", {before} done before" if before else ""
    _progress.line(
        f"find done: levels 0-{last_level}{resumed} in {_progress.seconds(time.perf_counter() - started)}; "
        f"density {rows[0]['density']:.3f} -> {rows[-1]['density']:.3f}; summary in {out / folder.SUMMARY_FILE}",
        enabled=show,
    )
    # Stored rows name their level folder relative to OUT (a copied run stays valid); the caller gets
    # paths it can use as they are: OUT/level_XX.
    return [{**row, "path": str(out / row["path"])} for row in rows]


def _level_masks(run: _FindRun, level: int) -> dict[str, torch.Tensor]:
    """Masks of ``level``: magnitude pruning of the previous level's final weights (one-shot: the dense ones)."""
    from .api import load

    source = folder.level_dir(run.out, 0 if run.config.one_shot else level - 1)
    final = folder.load_tensors(source / folder.FINAL_FILE)
    previous = None if run.config.one_shot else load(source).masks
    return run.schedule.masks(level, final, previous)


def _run_level(
    run: _FindRun, level: int, masks, model, *, rewind: Mapping[str, torch.Tensor] | None
) -> dict[str, Any]:
    """Train one level from ``model`` (θk already loaded, or the dense init), write its ticket, mark it done.

    ``rewind`` is θk for levels >= 1; level 0 passes ``None`` and captures θk while it trains."""
    import timm

    from . import __version__
    from .masks import overall_density
    from .train import train

    config, splits = run.config, run.splits
    ldir = folder.level_dir(run.out, level)
    capture = rewind is None
    result = train(
        model,
        splits.train,
        splits.val,
        run.train,
        masks=None if capture else masks,  # level 0 is dense: nothing to hold
        test_set=splits.test,
        capture_at=run.rewind_step if capture else None,
        checkpoint_dir=ldir / folder.CHECKPOINT_DIR,
        progress=f"level {level}" if run.progress else False,
        final_model="last",  # the next level prunes the final weights, as in the papers
        # Late resetting: a level >= 1 starts from θk and trains steps k..T of the same run (schedule,
        # data order and evaluation steps continue; the optimizer state starts fresh).
        start_step=0 if capture else run.rewind_step,
    )
    if capture:
        if result.captured is None:
            raise CheckpointError(f"training of level 0 returned no rewind state at step {run.rewind_step}")
        rewind = result.captured
    density = overall_density(masks)
    meta = {
        "name": f"{run.prefix}-{_pct(density)}pct",
        "source": config.dataset,
        "source_hub_id": splits.spec.hub_id,
        "level": level,
        "density": density,
        "method": run.method,
        "scope": config.scope,
        "prune_fraction": config.prune_fraction,
        "head_prune_fraction": config.head_prune_fraction,
        "layer_prune_fractions": dict(config.layer_prune_fractions),
        "prunable": list(run.names),
        "rewind": config.rewind,
        "rewind_step": run.rewind_step,
        "seed": config.seed,
        "source_val_acc": result.best_val_acc,
        "source_test_acc": result.test_acc,
        "source_final_test_acc": result.final_test_acc,
        "train_steps": result.steps,
        "start_step": result.start_step,
        "steps": result.steps,
        "best_step": result.best_step,
        "recipe": config.to_dict(),
        "versions": {
            "ticket_zoo": __version__,
            "torch": torch.__version__,
            "timm": timm.__version__,
            "python": platform.python_version(),
        },
        "input_size": list(splits.input_size),
        "num_classes": splits.spec.num_classes,
        # How to feed it (timm's pipeline: input size, mean/std, interpolation, crop_pct); only for
        # photo sets, so tickets of small-image sets (e.g. the embedded digits zoo) keep their bytes.
        **({"data_config": splits.data_config} if splits.data_config is not None else {}),
    }
    row = {
        "level": level,
        "density": density,
        "val_acc": result.best_val_acc,
        "test_acc": result.test_acc,
        "final_test_acc": result.final_test_acc,
        "start_step": result.start_step,
        "steps": result.steps,
        "seconds": result.seconds,
        "path": ldir.name,  # relative to OUT, so a copied or moved run folder stays valid
    }
    # Rank 0 writes; the others wait (on_main is a barrier) and then may read it all.
    _dist.on_main(
        folder.write_level,
        run.out,
        level,
        model=model,
        masks=masks,
        arch=config.arch,
        arch_kwargs=run.arch_kwargs,
        rewind=rewind,
        save_rewind=capture,
        meta=meta,
        row=row,
    )
    return row


# --- arch ------------------------------------------------------------------------------------------


def _create(arch: str, arch_kwargs: Mapping[str, Any], device: str | None = None):
    from .ticket import create_model

    try:
        return create_model(arch, arch_kwargs, device=device)
    except ConfigError:
        raise
    except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
        raise ConfigError(f"arch_kwargs: cannot build {arch!r} with {dict(arch_kwargs)}: {exc}") from None


def _resolve_arch_kwargs(
    config: FindConfig, num_classes: int, input_size: tuple[int, int, int]
) -> dict[str, Any]:
    """The recipe's arch_kwargs plus num_classes / in_chans / img_size from the data (when accepted)."""
    from .ticket import create_model

    kwargs = dict(config.arch_kwargs)
    for key, value in (("num_classes", num_classes), ("in_chans", input_size[0])):
        if key in kwargs and kwargs[key] != value:
            raise ConfigError(
                f"arch_kwargs.{key} is {kwargs[key]!r} but the data ({config.dataset}) needs {value}; "
                f"remove it from arch_kwargs (it is filled in from the data)"
            )
        kwargs[key] = value
    model = _create(config.arch, kwargs, device="meta")  # also checks that the kwargs build
    if "img_size" in kwargs:
        return kwargs
    cfg = getattr(model, "pretrained_cfg", None) or {}
    default = tuple(cfg.get("input_size", ())) if isinstance(cfg, dict) else ()
    h, w = input_size[1], input_size[2]
    if default[1:] != (h, w):
        trial = {**kwargs, "img_size": h if h == w else [h, w]}
        try:  # nets with a global pool take any size and often have no img_size argument
            create_model(config.arch, trial, device="meta")
            kwargs = trial
        except TypeError:
            pass
    return kwargs


# --- names -----------------------------------------------------------------------------------------


def _source_tag(dataset: str) -> str:
    """``"digits[0-4]"`` -> ``"digits04"``; ``"imagefolder:/data/x"`` -> ``"x"``.

    Example:
        >>> _source_tag("digits[0-4]"), _source_tag("imagefolder:/data/birds/")
        ('digits04', 'birds')
    """
    if ":" in dataset:
        dataset = Path(dataset.split(":", 1)[1].rstrip("/*")).name or "local"
    return re.sub(r"[^A-Za-z0-9_]+", "", dataset) or "data"


def _pct(density: float) -> str:
    """Percent of weights remaining, rounded as in catalogue names.

    Example:
        >>> _pct(0.2), _pct(0.05), _pct(0.008)
        ('20', '5', '0.8')
    """
    pct = 100.0 * density
    if pct >= 1:
        return str(int(round(pct)))
    return f"{pct:.2g}".rstrip("0").rstrip(".") if pct > 0 else "0"


# --- CLI -------------------------------------------------------------------------------------------


def _cli(args: argparse.Namespace) -> int:
    # --set first, then the flags (a flag is the more specific of the two).
    overrides = {**parse_set(args.set or []), **FindConfig.flag_overrides(args)}
    if args.config is None:
        # No recipe: --arch, --dataset and a stop rule on the command line, the documented training.
        missing = [flag for flag, key in (("--arch", "arch"), ("--dataset", "dataset")) if key not in overrides]
        if missing:
            raise ConfigError(f"without --config, give {' and '.join(missing)} (and --levels or --target-density)")
        config = FindConfig.from_dict({"train": dict(DEFAULT_FIND_TRAIN)}, overrides)
    else:
        config = FindConfig.from_yaml(args.config, overrides)
    rows = find_tickets(config, args.out, progress=not args.no_progress)
    if not _dist.is_main():
        return 0
    print(f"{'level':>5}  {'density':>8}  {'val %':>6}  {'test %':>6}  path")
    for r in rows:
        test = "-" if r["test_acc"] is None else f"{r['test_acc']:.2f}"
        print(f"{r['level']:>5}  {r['density']:>8.4f}  {r['val_acc']:>6.2f}  {test:>6}  {r['path']}")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``ticket-zoo find`` to an argparse subparsers object.

    The options are declared in :func:`ticket_zoo.configs.find_arguments` (torch-free, for a quick
    ``--help``): ``--config``, ``--out``, ``--set``, ``--no-progress`` and the flags the
    :class:`FindConfig` schema declares (``--arch``, ``--dataset``, ``--levels``, ``--target-density``,
    ``--seed``, and the training config's ``--lr``, ``--iterations``, ``--epochs``, ``--batch-size``).

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="ticket-zoo")
        >>> register_cli(parser.add_subparsers(dest="command"))
        >>> a = parser.parse_args(["find", "--config", "r.yaml", "--out", "o", "--set", "train.lr=0.01",
        ...                        "--levels", "2", "--iterations", "50"])
        >>> a.config, a.out, a.set, FindConfig.flag_overrides(a)
        ('r.yaml', 'o', ['train.lr=0.01'], {'train.iterations': 50, 'levels': 2})
    """
    find_arguments(subparsers).set_defaults(func=_cli)
