"""The ``ticket-zoo`` command. Each stage module contributes its subcommands via ``register_cli``.

Example:
    $ ticket-zoo find --config recipes/lenet_300_100-digits.yaml --out runs/digits
    $ ticket-zoo list --arch conv4
    $ ticket-zoo report runs/transfer
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import import_module

from .errors import TicketZooError

# Order here is the order of `ticket-zoo --help`.
_STAGES = ("find", "transfer_grid", "report", "zoo", "hub", "demo")


def build_parser() -> argparse.ArgumentParser:
    """The ``ticket-zoo`` argument parser, with every stage's subcommands.

    Example:
        >>> args = build_parser().parse_args(["report", "runs/transfer"])
        >>> args.command, args.out_dir
        ('report', 'runs/transfer')
    """
    parser = argparse.ArgumentParser(
        prog="ticket-zoo",
        description="Find, store, share and transfer lottery tickets on any timm architecture.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('ticket_zoo').__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for stage in _STAGES:
        module = import_module(f"ticket_zoo.{stage}")
        module.register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``ticket-zoo`` with ``argv`` (default: the command line); return the exit code.

    A :class:`~ticket_zoo.errors.TicketZooError` (or an unexpected file-system error) becomes one line on
    stderr and exit code 2.

    Example:
        >>> main(["list", "--arch", "conv4", "--source", "digits04"])
        name                   density  src acc  where
        conv4-digits04-51pct    51.26%    98.33  embedded
        conv4-digits04-21pct    21.05%    98.89  embedded
        conv4-digits04-6pct      5.55%    97.22  embedded
        conv4-digits04-1pct      1.47%    93.89  embedded
        0
        >>> import contextlib, sys
        >>> with contextlib.redirect_stderr(sys.stdout):  # show the error line here
        ...     main(["info", "conv4-digits04-25pct"])
        ticket-zoo: error: no catalogue entry 'conv4-digits04-25pct'; did you mean conv4-digits04-51pct, conv4-digits04-21pct, conv4-digits04-6pct? (`ticket-zoo list` shows them all)
        2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TicketZooError as exc:
        # One clear line for the user; the type tells scripts what went wrong.
        print(f"ticket-zoo: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A file-system problem the command did not anticipate (disk full, permissions changed
        # mid-run): still one line, naming the file, never a traceback. (Network libraries also
        # derive their errors from OSError; those without an errno are shown as what they are.)
        from ._io import os_reason

        if exc.errno is None:
            text = " ".join(str(exc).split())[:300]
            print(f"ticket-zoo: error: {type(exc).__name__}: {text}", file=sys.stderr)
            return 2
        where = f" {str(exc.filename)[:200]}" if exc.filename else ""
        print(f"ticket-zoo: error: cannot read or write{where}: {os_reason(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ticket-zoo: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
