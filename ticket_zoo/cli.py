"""The ``ticket-zoo`` command: a static table of commands; only the chosen command's module is imported.

``ticket-zoo --help`` reads the names and one-line help below and imports nothing else. A command's
options are declared by a torch-free function (:mod:`ticket_zoo.configs` for ``find``, ``transfer``
and ``report``, whose modules load torch or scipy; the module's own ``register_cli`` for the light
ones), and the module that runs it is imported only when it runs. So ``--help`` (top level or per
command), ``list`` and ``info NAME`` start in a fraction of a second, loading no torch.

Example:
    $ ticket-zoo find --arch lenet_300_100 --dataset "digits[0-4]" --target-density 0.05 --out runs/digits
    $ ticket-zoo transfer --ticket runs/digits --target "digits[5-9]" --seeds 0-4 --out runs/transfer
    $ ticket-zoo list --arch conv4
    $ ticket-zoo report runs/transfer
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import import_module
from typing import Any, NamedTuple

from .errors import TicketZooError


class Command(NamedTuple):
    help: str
    #: ``module:function`` that adds the command's subparser; it must load neither torch nor scipy.
    declare: str
    #: ``module:function`` that runs it (imported when it runs), or None when ``declare`` sets ``func``.
    run: str | None = None


# Order here is the order of `ticket-zoo --help`. A test checks each help against its declaration.
COMMANDS: dict[str, Command] = {
    "find": Command("find tickets with iterative magnitude pruning + rewinding (one ticket per level)",
                    "configs:find_arguments", "find:_cli"),
    "transfer": Command("transfer tickets to target datasets against random-ticket controls",
                        "configs:transfer_arguments", "transfer_grid:_cli"),
    "report": Command("summarise a transfer run: table, report.csv/json/png", "configs:report_arguments", "report:_cli"),
    "list": Command("list the ticket catalogue (filter by arch, source, density)", "zoo:register_cli"),
    "info": Command("show one catalogue entry and how to load (or build) it, or what a local ticket holds",
                    "zoo:register_cli"),
    "publish": Command("push a ticket directory to the Hub and write its catalogue card (pinned commit + sha256)",
                       "hub:register_cli"),
    "pull": Command("download a ticket (catalogue name or [hf-hub:]org/name[@rev]) into a directory",
                    "hub:register_cli"),
    "push": Command("upload a ticket directory to a Hugging Face Hub repo", "hub:register_cli"),
    "demo": Command("the main job on offline digits data: find -> transfer -> report", "demo:register_cli"),
}  # fmt: skip


def _resolve(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(import_module(f"ticket_zoo.{module}"), name)


def _runner(ref: str) -> Any:
    """The run function ``ref``, imported when called (so declaring a command imports none of it)."""

    def run(args: argparse.Namespace) -> int:
        return _resolve(ref)(args)

    return run


def _chosen(argv: list[str]) -> str | None:
    """The command named on the command line: the first word that is not an option (the top-level
    options take no value)."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``ticket-zoo`` parser: the command that ``argv`` names fully declared, the others by name
    and help only (enough for ``--help`` and for argparse's "invalid choice" message).

    Example:
        >>> args = build_parser(["report", "runs/transfer"]).parse_args(["report", "runs/transfer"])
        >>> args.command, args.out_dir
        ('report', 'runs/transfer')
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="ticket-zoo",
        description="Find, store, share and transfer lottery tickets on any timm architecture.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _chosen(sys.argv[1:] if argv is None else list(argv))
    # The chosen command's declaring function; it may declare several (zoo: list and info).
    declare = COMMANDS[chosen].declare if chosen else None
    for name, command in COMMANDS.items():
        if command.declare != declare:
            subparsers.add_parser(name, help=command.help, add_help=False)
        elif name == chosen:
            result = _resolve(command.declare)(subparsers)
            if command.run is not None:
                result.set_defaults(func=_runner(command.run))
    return parser


def _quiet_broken_pipe() -> int:
    """stdout's reader went away (``ticket-zoo list | head``): point stdout at devnull so the
    interpreter's final flush cannot raise again (the Python docs' recipe), and exit as a shell
    does on SIGPIPE, without a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141


def main(argv: list[str] | None = None) -> int:
    """Run ``ticket-zoo`` with ``argv`` (default: the command line); return the exit code.

    A :class:`~ticket_zoo.errors.TicketZooError` (or an unexpected file-system error) becomes one line on
    stderr and exit code 2; a closed stdout pipe ends quietly with 141.

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
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
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
