"""The package's public surface: every advertised name resolves to the right object."""

from __future__ import annotations

import subprocess
import sys

import ticket_zoo as tz


def test_every_public_name_resolves_to_the_object_its_module_defines():
    from importlib import import_module

    names = [n for n in tz.__all__ if n != "__version__"]
    for name in names:  # the very object of the submodule that defines it, not a copy or a wrapper
        obj = getattr(tz, name)
        module = obj.__module__
        assert module.startswith("ticket_zoo.") and module != "ticket_zoo.__init__", (name, module)
        assert getattr(import_module(module), name) is obj, name
    errors = [n for n in names if n.endswith("Error")]
    assert errors and all(issubclass(getattr(tz, n), tz.TicketZooError) for n in errors)
    assert {getattr(tz, n).__module__ for n in errors} == {"ticket_zoo.errors"}
    assert {"Ticket", "save", "load", "find_tickets", "transfer", "build_report", "push", "pull"} <= set(names)
    import tomllib  # python >= 3.11 here; the version a user sees is the one the package declares

    with open("pyproject.toml", "rb") as f:
        assert tz.__version__ == tomllib.load(f)["project"]["version"]


def test_transfer_is_the_function_even_after_its_module_is_imported():
    import ticket_zoo.transfer_grid  # noqa: F401  (importing a submodule must not shadow the function)

    assert callable(tz.transfer) and tz.transfer.__name__ == "transfer"


def test_import_is_light():
    # `import ticket_zoo` must not pull torch/timm/datasets in: the CLI's --help and error paths stay fast.
    code = "import sys, ticket_zoo; print(any(m in sys.modules for m in ('torch', 'timm', 'datasets')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
