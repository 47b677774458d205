"""``ticket-zoo`` commands under torchrun, recording what each rank writes (not a test itself).

    torchrun --standalone --nproc_per_node=2 tests/torchrun_worker.py WATCH AUDIT_DIR -- ARGS... [-- ARGS...]

Every rank runs ``ticket_zoo.cli.main(ARGS)`` for each ``--``-separated command in turn, in one
process (the process group joined by the first command is reused, and imports are paid once). A
``sys.addaudithook`` hook notes each file-system change under ``WATCH``: files opened for writing,
``os.replace``/``rename``, ``remove``/``unlink``, ``mkdir``/``rmdir``, ``shutil.rmtree``. The
interpreter raises these audit events for every such call, from ticket_zoo or any library, so
nothing written through Python escapes. At the end rank ``r`` writes
``AUDIT_DIR/rank{r}.json``: ``[{"argv": [...], "code": exit code, "changes": [[event, path], ...]}]``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_CHANGES = {"os.rename": 2, "os.remove": 1, "os.mkdir": 1, "os.rmdir": 1, "shutil.rmtree": 1}


def main() -> int:
    watch, audit_dir, *rest = sys.argv[1:]
    commands: list[list[str]] = []
    for arg in rest:
        if arg == "--":
            commands.append([])
        else:
            commands[-1].append(arg)
    root = os.path.realpath(watch)
    changes: list[list[str]] = []

    def under(path: object) -> str | None:
        if not isinstance(path, (str, bytes, os.PathLike)):
            return None  # a file descriptor
        real = os.path.realpath(os.fsdecode(path))
        return real if real == root or real.startswith(root + os.sep) else None

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, _mode, flags = args
            if isinstance(flags, int) and flags & _WRITE_FLAGS and (p := under(path)):
                changes.append([event, p])
        elif event in _CHANGES:
            for path in args[: _CHANGES[event]]:
                if p := under(path):
                    changes.append([event, p])

    sys.addaudithook(hook)
    from ticket_zoo.cli import main as cli_main

    record = []
    for argv in commands:
        code = cli_main(argv)
        sys.stdout.flush()
        record.append({"argv": argv, "code": code, "changes": list(changes)})
        changes.clear()
    rank = os.environ.get("RANK", "0")
    Path(audit_dir).mkdir(parents=True, exist_ok=True)
    Path(audit_dir, f"rank{rank}.json").write_text(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
