"""How long jobs show progress: tqdm bars for a person at a terminal, plain lines for a log file.

The one policy, used by every progress bar in ticket_zoo (find's levels, transfer's cells, the
training loop, decoding a large split):

* **stderr is a terminal** (or a Jupyter notebook, where tqdm draws widgets): :func:`bar` is a
  ``tqdm.auto`` bar; :func:`line` prints nothing (the bar already says it).
* **stderr is a file or a pipe** (CI logs, ``nohup``, SLURM, ``2>run.log``): :func:`bar` is a disabled
  tqdm, which has every method of a bar (``update``, ``set_postfix``, ``close``, ``with``) and writes
  nothing, so a log holds no ``\\r`` redraws and no escape codes; :func:`line` prints one plain line
  per unit of work (a level, a cell) and one summary line at the end.
* ``enabled=False`` (a caller's ``progress=False``, ``--quiet``, or a rank other than 0 under
  torchrun): nothing at all, in either case.

The choice is made when a bar or line is made, from ``sys.stderr`` at that moment, so redirecting
stderr (or a test capturing it) needs nothing else.

Example (doctests capture stderr: not a terminal, so lines are printed and bars are silent):

    >>> import sys
    >>> sys.stderr = sys.stdout  # show here what a log file would get
    >>> with bar(total=3, desc="levels") as b:
    ...     for level in range(3):
    ...         b.update(1)
    ...         line(f"find level {level + 1}/3: density {0.8 ** level:.3f} ({seconds(0.42 * level)})")
    find level 1/3: density 1.000 (0.0 s)
    find level 2/3: density 0.800 (0.4 s)
    find level 3/3: density 0.640 (0.8 s)
    >>> line("not shown", enabled=False)
    >>> sys.stderr = sys.__stderr__
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm as Bar
else:
    Bar = Any

__all__ = ["Bar", "bar", "interactive", "line", "percent", "seconds"]


def interactive() -> bool:
    """Whether progress goes to a person: ``sys.stderr`` is a terminal, or this is a Jupyter notebook.

    Example:
        >>> import io, sys
        >>> saved, sys.stderr = sys.stderr, io.StringIO()  # what `2>file` gives
        >>> interactive()
        False
        >>> sys.stderr = saved
    """
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        pass
    return _notebook()


def _notebook() -> bool:
    # A Jupyter kernel's stderr is no terminal, but tqdm.auto draws widgets there: keep the bars.
    # (tqdm.auto's class derives from tqdm.notebook's exactly when it chose widgets.)
    from tqdm.auto import tqdm

    return any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)


def bar(*, total: int | None, desc: str, enabled: bool = True, **kwargs: Any) -> Bar:
    """A ``tqdm.auto`` bar when ``enabled`` and :func:`interactive`; otherwise a disabled tqdm (silent).

    ``kwargs`` go to tqdm (``initial``, ``unit``, ``leave``, ...); the bar resizes with the terminal.

    Example:
        >>> b = bar(total=10, desc="train", enabled=False)
        >>> b.update(1); b.set_postfix(loss="0.1"); b.close()  # every method works, nothing is shown
        >>> b.disable
        True
    """
    from tqdm.auto import tqdm  # on first use: keeps `import ticket_zoo` and the CLI light

    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(total=total, desc=desc, disable=not (enabled and interactive()), **kwargs)


def line(text: str, *, enabled: bool = True) -> None:
    """Print ``text`` as one line on stderr when ``enabled`` and stderr is not a terminal (a log).

    On a terminal the bars show the same, so nothing is printed. Flushed at once, so a log that
    someone tails (``tail -f``, SLURM's output file) is up to date.

    Example:
        >>> import sys
        >>> sys.stderr = sys.stdout
        >>> line("transfer done: 2 cells in 1.5 s")
        transfer done: 2 cells in 1.5 s
        >>> sys.stderr = sys.__stderr__
    """
    if enabled and not interactive():
        print(text, file=sys.stderr, flush=True)


def seconds(s: float) -> str:
    """A duration for a log line: tenths under 10 s, then whole seconds, minutes, hours.

    Example:
        >>> seconds(3.21), seconds(41.4), seconds(125), seconds(3725)
        ('3.2 s', '41 s', '2 min 5 s', '1 h 2 min')
    """
    s = max(0.0, float(s))
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    m, sec = divmod(round(s), 60)
    if m < 60:
        return f"{m} min {sec} s"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


def percent(value: float | None) -> str:
    """An accuracy in percent (as rows store it) for a log line; ``-`` when there is none.

    Example:
        >>> percent(97.234), percent(None)
        ('97.2%', '-')
    """
    return "-" if value is None else f"{float(value):.1f}%"
