"""Find lottery tickets: the driver of a find run, whatever its method, one ticket per level.

The default method is IMP with rewinding, the procedure of Frankle & Carbin (2019) with the late
resetting of Frankle et al. (2019) and the global pruning of Morcos et al. (2019):

1. Level 0: create the dense network (seeded), train it, and keep its state ``θk`` after ``k``
   steps (``rewind``; ``k = 0`` is classic LTH, i.e. ``θ0``).
2. Level ``L >= 1``: prune the *final* weights of level ``L-1`` by magnitude so that every layer
   group keeps ``(1 - p)^L`` of its weights (``p`` = ``prune_fraction``; ``layer_prune_fractions``
   and ``head_prune_fraction`` compound the same way), reset the survivors to ``θk``, and train
   steps ``k..T`` with the mask held, with the same seed (same data order: only the mask differs).

Other methods (``method: oneshot | early_bird | snip | synflow``) are plug-ins of
:mod:`ticket_zoo.methods`; they write tickets at the same schedule's densities into the same layout.

This module owns the driver (:func:`find_tickets`), the :class:`FindRun` a method works through
(training a level, writing a ticket, recording a row) and the ``ticket-zoo find`` command. The
config is :class:`FindConfig` (in :mod:`ticket_zoo.configs`); the schedule (rewind step, densities,
number of levels, masks) is :mod:`ticket_zoo.find_levels`; the run folder (``config.yaml``,
``level_XX/``, ``done.json``, ``summary.json``) is :mod:`ticket_zoo.find_folder`.

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
from collections.abc import Callable, Mapping
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
from .workers import choose, torch_threads

if TYPE_CHECKING:  # pragma: no cover
    from .data import Splits

__all__ = ["FindConfig", "FindRun", "density_schedule", "find_tickets", "register_cli"]

SCOPES = ("global", "layerwise")
_FRACTION = {"low": 0, "low_open": True, "high": 1, "high_open": True}  # a fraction in (0, 1)


# --- config ----------------------------------------------------------------------------------------


# FindConfig is declared in configs.py (torch-free, so the CLI builds --help without torch).


# --- the run ---------------------------------------------------------------------------------------


class FindRun:
    """One find run, as a pruning method sees it (see :mod:`ticket_zoo.methods` for the contract).

    Built once by :func:`find_tickets`; it holds what every level shares (config, data, schedule,
    θ0's seed, OUT) and does the work every method needs: training a level, writing a ticket,
    reading what a finished level left, and recording each level's row (``summary.json``, progress).
    """

    def __init__(
        self,
        *,
        config: FindConfig,
        out: Path,
        splits: Splits,
        train: TrainConfig,
        arch_kwargs: dict[str, Any],
        rewind_step: int,
        names: list[str],
        schedule: Schedule,
        last_level: int,
        options: Any,
        progress: bool,
        show: bool,
    ) -> None:
        self.config = config
        self.out = out
        self.splits = splits
        self.train = train  # config.effective_train()
        self.arch_kwargs = arch_kwargs  # the recipe's plus num_classes / in_chans / img_size from the data
        self.rewind_step = rewind_step
        self.names = names  # the prunable parameters
        self.schedule = schedule
        self.levels = list(range(1, last_level + 1))  # the pruned levels asked for
        self.options = options  # the method's validated options
        self.method = f"{config.method}-{config.scope}"  # meta["method"]: "imp-global", "snip-layerwise", ...
        self.prefix = config.name_prefix or f"{config.arch}-{_source_tag(config.dataset)}"
        self.progress = progress
        self.show = show
        self.done = folder.done_levels(out)
        self.rows: list[dict[str, Any]] = []
        self.resumed = 0
        self._bar: _progress.Bar | None = None

    # -- models and tensors --

    def dense_model(self) -> torch.nn.Module:
        """The dense network at θ0, seeded by ``config.seed`` (the same for every method)."""
        with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
            torch.manual_seed(self.config.seed)
            return _create(self.config.arch, self.arch_kwargs)

    def rewind(self) -> dict[str, torch.Tensor]:
        """θk, as written to ``OUT/rewind.safetensors`` (by level 0 or :meth:`save_rewind`)."""
        return _dist.together(folder.load_tensors, self.out / folder.REWIND_FILE)

    def save_rewind(self, state: Mapping[str, torch.Tensor]) -> None:
        """Write θk (the full state) to ``OUT/rewind.safetensors`` (rank 0)."""
        _dist.on_main(folder.save_tensors, self.out / folder.REWIND_FILE, state)

    def final_weights(self, level: int) -> dict[str, torch.Tensor]:
        """The trained weights a finished ``level`` left (``final.safetensors``)."""
        return _dist.together(folder.load_tensors, folder.level_dir(self.out, level) / folder.FINAL_FILE)

    def masks_of(self, level: int) -> dict[str, torch.Tensor]:
        """The masks of a finished ``level``'s ticket."""
        from .api import load

        return _dist.together(lambda: load(folder.level_dir(self.out, level)).masks)

    def train_batches(self, n: int):
        """The first ``n`` training batches ``(x, y)`` of the run, in its data order (as step 0..n-1
        of a training with this run's config would see them, augmentation included)."""
        from .augment import augment_batch
        from .batches import GlobalBatches, derive_seed, epoch_batches

        cfg, data = self.train, self.splits.train
        sampler = GlobalBatches(len(data), cfg.batch_size, cfg.seed, 0, 1)
        per_epoch = len(sampler)
        step = 0
        generator = torch.Generator()
        while step < n:
            sampler.set_position(step // per_epoch, step % per_epoch)
            for x, y, *_ in epoch_batches(data, sampler):
                if cfg.augment != "none":
                    generator.manual_seed(derive_seed("aug", cfg.seed, step, 0))
                    x = augment_batch(x, cfg.augment, generator)
                yield x, torch.as_tensor(y)
                step += 1
                if step == n or step % per_epoch == 0:
                    break

    # -- levels --

    def level(self, level: int, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``level``'s row: the recorded one if the level is done, else ``make()``'s; then record it
        (``summary.json``, the progress bar, one log line)."""
        started = time.perf_counter()
        if level in self.done:
            # Checks that the level's ticket is the one it recorded; every rank gets rank 0's row.
            row = _dist.on_main(folder.done_row, self.out, level)
            self.resumed += 1
            took = "done before"
        else:
            row = make()
            took = _progress.seconds(time.perf_counter() - started)
        self.rows.append(row)
        _dist.on_main(folder.write_summary, self.out, self.config, self.rows)
        if self._bar is not None:
            self._bar.update(1)
            test = "-" if row.get("test_acc") is None else f"{row['test_acc']:.2f}"
            self._bar.set_postfix(density=f"{row['density']:.4f}", test=test)
        _progress.line(
            f"find level {level}/{self.levels[-1] if self.levels else 0}: density {row['density']:.3f} "
            f"val {_progress.percent(row.get('val_acc'))} test {_progress.percent(row.get('test_acc'))} ({took})",
            enabled=self.show,
        )
        return row

    def train_level(
        self, level: int, masks: Mapping[str, torch.Tensor] | None, rewind: Mapping[str, torch.Tensor] | None = None
    ) -> dict[str, Any]:
        """Train ``level`` and write its ticket. Level 0 (``masks=None``, no ``rewind``) trains the dense
        network from θ0 and writes θk; a later level loads ``rewind`` (θk) and trains steps ``k..T`` with
        ``masks`` held."""
        if rewind is None:
            model = self.dense_model()
            masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters() if n in self.names}
        else:
            model = _create(self.config.arch, self.arch_kwargs)
            model.load_state_dict(rewind)
        return _run_level(self, level, masks, model, rewind=rewind)

    def train_dense(self, on_epoch_end: Callable[[int, torch.nn.Module], bool] | None = None) -> Any:
        """Train the dense network as level 0 does (θ0, the run's budget, θk captured) without writing a
        ticket; ``on_epoch_end(step, model) -> bool`` may stop it at an epoch's end. Its checkpoint is
        level 0's, so a killed run resumes it. Returns the :class:`~ticket_zoo.train.TrainResult`."""
        from .train import train

        splits = self.splits
        hook = {} if on_epoch_end is None else {"on_epoch_end": on_epoch_end}
        return train(
            self.dense_model(),
            splits.train,
            splits.val,
            self.train,
            test_set=splits.test,
            capture_at=self.rewind_step,
            checkpoint_dir=folder.level_dir(self.out, 0) / folder.CHECKPOINT_DIR,
            progress="dense" if self.progress else False,
            final_model="last",
            **hook,
        )

    def write_ticket(
        self,
        level: int,
        masks: Mapping[str, torch.Tensor],
        rewind: Mapping[str, torch.Tensor],
        meta: Mapping[str, Any] | None = None,
        *,
        seconds: float | None = None,
    ) -> dict[str, Any]:
        """Write ``level``'s ticket (``masks`` on θk = ``rewind``) without training it; its row has no
        accuracies. ``meta`` adds the method's own facts (a stop step, a history)."""
        from .masks import overall_density

        started = time.perf_counter()
        model = _create(self.config.arch, self.arch_kwargs)
        model.load_state_dict(rewind)
        density = overall_density(masks)
        row = {
            "level": level,
            "density": density,
            "val_acc": None,
            "test_acc": None,
            "final_test_acc": None,
            "start_step": None,
            "steps": 0,
            "seconds": seconds if seconds is not None else time.perf_counter() - started,
            "path": folder.level_dir(self.out, level).name,
        }
        full = {**_ticket_meta(self, level, density), **dict(meta or {})}
        return self._write(level, model, masks, rewind, meta=full, row=row, save_rewind=False, final=False)

    def _write(self, level: int, model: torch.nn.Module, masks: Mapping[str, torch.Tensor],
               rewind: Mapping[str, torch.Tensor], *, meta: dict[str, Any], row: dict[str, Any],
               save_rewind: bool, final: bool) -> dict[str, Any]:  # fmt: skip
        """Write ``level`` (ticket, card, ``done.json``; θk and the final weights when asked); rank 0
        writes, the others wait (``on_main`` is a barrier) and then may read it all. Returns ``row``."""
        _dist.on_main(
            folder.write_level,
            self.out,
            level,
            model=model,
            masks=masks,
            arch=self.config.arch,
            arch_kwargs=self.arch_kwargs,
            rewind=rewind,
            save_rewind=save_rewind,
            meta=meta,
            row=row,
            final=final,
        )
        return row


def find_tickets(
    config: FindConfig | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Find tickets with the config's method (IMP by default) and write one per level under ``out_dir``;
    return the summary rows.

    ``config`` is a :class:`FindConfig`, a recipe file or a shipped recipe's name. ``overrides`` are
    what ``ticket-zoo find --set KEY=VALUE`` takes: dotted keys replacing recipe fields, e.g.
    ``{"train.iterations": 50, "levels": 2, "seed": 1}`` (see
    :func:`ticket_zoo.config.apply_overrides`; with a :class:`FindConfig` they apply to its
    :meth:`~FindConfig.to_dict`).

    Each row is ``{level, density, val_acc, test_acc, steps, seconds, path}`` (accuracies in percent,
    of the network trained from that level's ticket; test at the best-val weights; ``None`` for a
    ticket a method wrote without training it). ``threads`` is torch's intra-op thread count for the
    run (default: the thread policy of :mod:`ticket_zoo.workers`, 1 for networks under 5M parameters,
    else every core), so the result does not depend on the machine's core count or load; the caller's
    count is restored afterwards. Re-running the same call resumes; a different config
    in the same ``out_dir`` raises :class:`ConfigError`. Under torchrun every rank calls it and trains
    each level together (DDP); rank 0 alone writes.

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
    from .methods import METHODS, options_for
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
    method = METHODS.get(config.method)
    options = options_for(config.method, config.method_options)
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

    with torch.random.fork_rng(devices=[]):
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

    show = bool(progress) and dist.main
    threads = _find_threads(threads, sum(p.numel() for p in dense.parameters()))
    run = FindRun(
        config=config,
        out=out,
        splits=splits,
        train=train_cfg,
        arch_kwargs=arch_kwargs,
        rewind_step=k,
        names=names,
        schedule=schedule,
        last_level=last_level,
        options=options,
        progress=progress,
        show=show,
    )
    # A bar on a terminal; in a log file one line per level and a summary (progress.py).
    total = {"all": last_level + 1, "pruned": last_level, "last": 1}[METHODS.info(config.method).get("writes", "all")]
    run._bar = _progress.bar(total=total, desc="IMP levels" if config.method == "imp" else f"{config.method} levels", enabled=show)
    started = time.perf_counter()
    try:
        with torch_threads(threads):  # a level's result must not depend on the machine (see workers.py)
            method(run, options)
    finally:
        run._bar.close()
    # A method that trained the dense network without writing level 0 (early_bird) leaves its
    # checkpoint: the tickets stand for it now.
    _dist.on_main(folder.drop_dense_checkpoint, out)
    rows = run.rows
    resumed = f", {run.resumed} done before" if run.resumed else ""
    span = f"levels {rows[0]['level']}-{rows[-1]['level']}" if rows else "no levels"
    densities = f"density {rows[0]['density']:.3f} -> {rows[-1]['density']:.3f}; " if rows else ""
    _progress.line(
        f"find done: {span}{resumed} in {_progress.seconds(time.perf_counter() - started)} ({config.method}); "
        f"{densities}summary in {out / folder.SUMMARY_FILE}",
        enabled=show,
    )
    # Stored rows name their level folder relative to OUT (a copied run stays valid); the caller gets
    # paths it can use as they are: OUT/level_XX.
    return [{**row, "path": str(out / row["path"])} for row in rows]


def _find_threads(threads: int | None, parameters: int) -> int:
    """``threads``, checked, or the policy's default for a network of ``parameters`` (per rank under
    torchrun: the ranks of one machine share its cores)."""
    return choose(workers=1, threads=threads, parameters=[parameters], units=1)[1]


def _ticket_meta(run: FindRun, level: int, density: float) -> dict[str, Any]:
    """The meta every ticket of the run carries (a trained level adds its accuracies and steps)."""
    import timm

    from . import __version__

    config, splits = run.config, run.splits
    return {
        "name": f"{run.prefix}-{_pct(density)}pct",
        "source": config.dataset,
        "source_hub_id": splits.spec.hub_id,
        "level": level,
        "density": density,
        "method": run.method,
        "method_options": config.to_dict()["method_options"],
        "scope": config.scope,
        "prune_fraction": config.prune_fraction,
        "head_prune_fraction": config.head_prune_fraction,
        "layer_prune_fractions": dict(config.layer_prune_fractions),
        "prunable": list(run.names),
        "rewind": config.rewind,
        "rewind_step": run.rewind_step,
        "seed": config.seed,
        "source_val_acc": None,
        "source_test_acc": None,
        "source_final_test_acc": None,
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


def _run_level(
    run: FindRun, level: int, masks, model, *, rewind: Mapping[str, torch.Tensor] | None
) -> dict[str, Any]:
    """Train one level from ``model`` (θk already loaded, or the dense init), write its ticket, mark it done.

    ``rewind`` is θk for levels >= 1; level 0 passes ``None`` and captures θk while it trains."""
    from .masks import overall_density
    from .train import train

    splits = run.splits
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
    meta = _ticket_meta(run, level, density)
    meta.update(
        source_val_acc=result.best_val_acc,
        source_test_acc=result.test_acc,
        source_final_test_acc=result.final_test_acc,
        train_steps=result.steps,
        start_step=result.start_step,
        steps=result.steps,
        best_step=result.best_step,
    )
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
    return run._write(level, model, masks, rewind, meta=meta, row=row, save_rewind=capture, final=True)


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
    rows = find_tickets(config, args.out, progress=not args.no_progress, threads=args.threads)
    if not _dist.is_main():
        return 0
    print(f"{'level':>5}  {'density':>8}  {'val %':>6}  {'test %':>6}  path")
    for r in rows:  # a ticket a method wrote without training it has no accuracies: "-"
        val = "-" if r["val_acc"] is None else f"{r['val_acc']:.2f}"
        test = "-" if r["test_acc"] is None else f"{r['test_acc']:.2f}"
        print(f"{r['level']:>5}  {r['density']:>8.4f}  {val:>6}  {test:>6}  {r['path']}")
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
