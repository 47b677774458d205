"""ticket_zoo.specs: the one ticket-spec grammar (each rule, the precedence between them, revisions,
find output folders), that load, pull and expand_spec read a text the same way, and the layering of the
storage modules (no import cycle, lower layers never import higher ones, no umask change at import)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ticket_zoo
from ticket_zoo import api, cli, hub, specs, zoo
from ticket_zoo.errors import ConfigError, HubRepoNotFoundError, TicketNotFoundError
from ticket_zoo.specs import TICKET_FILE, TicketSpec, expand_spec, parse_spec, validate_revision

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ticket_zoo"
NAME = "lenet_300_100-digits04-5pct"  # embedded in the package: loads offline
OTHER = "conv4-digits04-51pct"


def _embedded_names() -> list[str]:
    return [e["name"] for e in zoo.list_tickets(published=True) if e["location"] == "embedded"]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and len(message) <= 400, message
    return message


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """An empty current directory: relative specs are resolved against it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- rule 1: hf-hub: is the Hub, always ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "repo_id", "revision"),
    [
        ("hf-hub:me/tickets", "me/tickets", None),
        ("hf-hub:me/tickets@v1", "me/tickets", "v1"),
        ("hf-hub:me/tickets@refs/pr/1", "me/tickets", "refs/pr/1"),
        ("hf-hub:gpt2", "gpt2", None),  # a repo without an org, as timm and huggingface_hub allow
        (f"hf-hub:me/{NAME}", f"me/{NAME}", None),
    ],
)
def test_hf_hub_prefix_is_the_hub(here, text, repo_id, revision) -> None:
    assert parse_spec(text) == TicketSpec("hub", repo_id=repo_id, revision=revision)
    assert str(parse_spec(text)) == text  # the canonical form reads back as itself


def test_hf_hub_prefix_wins_over_a_local_folder_of_that_name(here) -> None:
    (here / "me" / "tickets").mkdir(parents=True)
    (here / "hf-hub:me").mkdir()  # even a folder spelled with the prefix
    assert parse_spec("hf-hub:me/tickets").kind == "hub"
    assert parse_spec("me/tickets").kind == "path"


# --- rule 2: an existing file or folder is a path -----------------------------------------------------


def test_existing_files_and_folders_are_paths(here) -> None:
    ticket = ticket_zoo.load(NAME)
    folder = ticket_zoo.save(ticket, here / "runs" / "level_03")
    for text in ("runs/level_03", str(folder), "runs/level_03/ticket.safetensors", ".", "runs"):
        spec = parse_spec(text)
        assert spec == TicketSpec("path", path=Path(text)) and spec.text == text
    # a Path object is always a path: a missing one is "does not exist", never a Hub lookup
    assert parse_spec(Path("runs/level_03")).kind == "path"
    with pytest.raises(TicketNotFoundError, match="does not exist") as err:
        parse_spec(Path("me/tickets"))
    _one_line(err)


def test_a_local_folder_named_like_a_catalogue_entry_is_that_folder(here) -> None:
    ticket_zoo.save(ticket_zoo.load(OTHER), here / NAME)  # e.g. what `ticket-zoo pull` left here
    assert parse_spec(NAME) == TicketSpec("path", path=Path(NAME))
    assert ticket_zoo.load(NAME).arch == "conv4"  # the folder, not the catalogue's lenet
    with pytest.raises(TicketNotFoundError, match="for the catalogue ticket of that name, pull from another folder"):
        hub.pull(NAME)


# --- rule 3: a bare name is a catalogue name ----------------------------------------------------------


@pytest.mark.parametrize("name", _embedded_names())
def test_every_embedded_catalogue_name_is_the_catalogue(here, name) -> None:
    assert parse_spec(name) == TicketSpec("catalogue", name=name)
    assert ticket_zoo.load(name).name == name


def test_an_unknown_bare_name_is_refused_by_the_catalogue_with_a_did_you_mean(here) -> None:
    assert parse_spec("lenet_300_100-digits04-6pct").kind == "catalogue"
    with pytest.raises(TicketNotFoundError, match=f"did you mean {NAME}") as err:
        ticket_zoo.load("lenet_300_100-digits04-6pct")
    _one_line(err)


# --- rule 4: org/name[@rev] is the Hub, unless such a folder exists -----------------------------------


@pytest.mark.parametrize(
    ("text", "repo_id", "revision"),
    [
        ("me/tickets", "me/tickets", None),
        ("me/tickets@v1", "me/tickets", "v1"),
        ("me/tickets@feature/x", "me/tickets", "feature/x"),
        ("me/tickets@" + "f" * 40, "me/tickets", "f" * 40),
        ("runs/level_05", "runs/level_05", None),  # no such folder here: the Hub, as from_pretrained does
    ],
)
def test_org_name_is_the_hub_when_no_such_folder_exists(here, text, repo_id, revision) -> None:
    spec = parse_spec(text)
    assert spec == TicketSpec("hub", repo_id=repo_id, revision=revision)
    assert spec == parse_spec(f"hf-hub:{text}")  # the same repo with or without the prefix


def test_a_local_folder_named_like_org_name_wins_over_the_hub(here) -> None:
    (here / "me" / "tickets").mkdir(parents=True)
    assert parse_spec("me/tickets") == TicketSpec("path", path=Path("me/tickets"))
    assert parse_spec("me/tickets@v1").kind == "hub"  # the whole text is tried as a path: no such folder
    assert parse_spec("hf-hub:me/tickets").kind == "hub"


# --- rule 5: anything else is one TicketNotFoundError line ---------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "runs/x/level_03",  # two '/': a path, and it is not there
        "nowhere.safetensors",
        "me/ticket.safetensors",  # a file name, even though it would pass as a repo id
        "./nothing",
        "../nothing",
        "~/nothing",
        "a/b/c@v1",
        "me/bad name",
        "runs/" + "a" * 300,
        "",
        "   ",
    ],
)
def test_anything_else_is_not_found_saying_what_to_write(here, text) -> None:
    with pytest.raises(TicketNotFoundError) as err:
        parse_spec(text)
    message = _one_line(err)
    assert "catalogue" in message and "hf-hub:org/name[@rev]" in message
    for call in (ticket_zoo.load, expand_spec):
        with pytest.raises(TicketNotFoundError) as again:
            call(text)
        assert str(again.value) == message


def test_a_missing_path_error_says_how_to_make_it(here) -> None:
    with pytest.raises(TicketNotFoundError, match=r"runs/demo/find does not exist .*ticket-zoo find"):
        parse_spec("runs/demo/find")


# --- revisions: one validator for every rule ----------------------------------------------------------


@pytest.mark.parametrize("revision", ["../../x", "a..b", "-rf", "a b", "a\nb", "x" * 256, "refs//x", "~1"])
@pytest.mark.parametrize("template", ["hf-hub:me/t@{}", "me/t@{}"])
def test_a_bad_revision_is_refused_by_the_one_validator(here, template, revision) -> None:
    with pytest.raises(ConfigError) as expected:
        validate_revision(revision)
    with pytest.raises(ConfigError) as err:
        parse_spec(template.format(revision))
    assert str(err.value) == str(expected.value) and "invalid Hub revision" in str(err.value)
    _one_line(err)


def test_an_empty_revision_is_refused(here) -> None:
    for text in ("me/t@", "hf-hub:me/t@"):
        with pytest.raises(ConfigError, match="empty revision"):
            parse_spec(text)


def test_the_revision_validator_is_importable_from_hub() -> None:
    assert hub.validate_revision is specs.validate_revision
    assert zoo.validate_revision is specs.validate_revision  # catalogue cards use the same one


# --- expand_spec ------------------------------------------------------------------------------------


def _touch_ticket(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TICKET_FILE).write_bytes(b"")


def test_a_find_output_folder_expands_in_natural_order(here) -> None:
    run = here / "runs" / "find"
    for level in (10, 2, 0, 1):
        _touch_ticket(run / f"level_{level:d}")
    _touch_ticket(run / "extra" / "level_3")  # two levels down counts too
    (run / "summary.json").write_text("{}\n")
    assert expand_spec("runs/find") == [
        "runs/find/extra/level_3",
        "runs/find/level_0",
        "runs/find/level_1",
        "runs/find/level_2",
        "runs/find/level_10",
    ]
    assert expand_spec(run) == [str(run / p) for p in ("extra/level_3", "level_0", "level_1", "level_2", "level_10")]
    assert expand_spec("runs/find/level_2") == ["runs/find/level_2"]  # a ticket folder is itself


def test_other_specs_expand_to_themselves(here) -> None:
    for text in (NAME, "hf-hub:me/t@v1", "me/t", "lenet_300_100-nothing-3pct"):
        assert expand_spec(text) == [text]


def test_a_folder_without_any_ticket_is_refused(here) -> None:
    (here / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(TicketNotFoundError, match="empty is a directory with no ticket.safetensors") as err:
        expand_spec("empty")
    _one_line(err)


# --- load, pull and expand_spec read a text the same way ----------------------------------------------


AGREEMENT_TEXTS = [NAME, "me/tickets", "hf-hub:me/tickets@v1", "tester/local", "runs/find", "runs/find/level_2"]


def test_load_pull_and_expand_spec_agree_on_every_spec(here, monkeypatch) -> None:
    ticket_zoo.save(ticket_zoo.load(OTHER), here / "tester" / "local")
    ticket_zoo.save(ticket_zoo.load(OTHER), here / "runs" / "find" / "level_2")
    seen: dict[str, dict[str, TicketSpec]] = {}
    original = specs.parse_spec

    def spy(who: str):
        def parse(spec):
            result = original(spec)
            seen.setdefault(str(spec), {})[who] = result
            return result

        return parse

    monkeypatch.setattr(api, "parse_spec", spy("load"))
    monkeypatch.setattr(hub, "parse_spec", spy("pull"))
    monkeypatch.setattr(specs, "parse_spec", spy("expand_spec"))
    for text in AGREEMENT_TEXTS:
        for call in (ticket_zoo.load, lambda t: hub.pull(t, here / "pulled" / t.replace("/", "_")), expand_spec):
            try:
                call(text)
            except ticket_zoo.TicketZooError:
                pass  # offline Hub, a local path given to pull: what matters is how the text was read
        assert set(seen[text]) == {"load", "pull", "expand_spec"}, text
        assert len(set(seen[text].values())) == 1, (text, seen[text])
        assert seen[text]["load"] == original(text)


def test_load_and_pull_take_a_hub_spec_with_or_without_the_prefix(hf_env, here) -> None:
    ticket = ticket_zoo.load(OTHER)
    sha = hub.push(ticket, "tester/t", tag="v1")
    data = hf_env.server.repo("tester/t").commits[sha].files[TICKET_FILE]
    for text in ("tester/t", "hf-hub:tester/t", "tester/t@v1", f"hf-hub:tester/t@{sha}"):
        assert ticket_zoo.load(text).meta["hub"]["commit"] == sha, text
        out = hub.pull(text, here / "out" / text.replace("/", "_").replace(":", "_"))
        assert (out / TICKET_FILE).read_bytes() == data, text


def test_a_local_folder_wins_for_load_and_is_refused_by_pull(hf_env, here, capsys) -> None:
    hub.push(ticket_zoo.load(OTHER), "tester/t")
    ticket_zoo.save(ticket_zoo.load(NAME), here / "tester" / "t")  # a different ticket, named like the repo
    assert ticket_zoo.load("tester/t").arch == "lenet_300_100"  # the local folder
    assert ticket_zoo.load("hf-hub:tester/t").arch == "conv4"  # the Hub repo
    with pytest.raises(TicketNotFoundError, match="is a local file or folder .*not something to pull") as err:
        hub.pull("tester/t", here / "out")
    assert "for the Hub repo write hf-hub:tester/t" in _one_line(err)
    assert hub.pull("hf-hub:tester/t", here / "out") == here / "out"
    capsys.readouterr()  # the progress bars of the pull above
    assert cli.main(["pull", "tester/t", "--out", str(here / "out2")]) == 2
    out, errout = capsys.readouterr()
    assert errout.startswith("ticket-zoo: error: tester/t is a local file or folder") and errout.count("\n") == 1


def test_a_missing_hub_repo_without_the_prefix_says_no_local_folder_either(hf_env, here) -> None:
    with pytest.raises(HubRepoNotFoundError, match="nobody/nothing is no file or folder here") as err:
        ticket_zoo.load("nobody/nothing")
    _one_line(err)
    with pytest.raises(HubRepoNotFoundError) as explicit:
        ticket_zoo.load("hf-hub:nobody/nothing")
    assert "no file or folder" not in str(explicit.value)


def test_cli_info_reads_the_same_specs(here, capsys) -> None:
    assert cli.main(["info", NAME]) == 0
    assert f"load it: ticket_zoo.load('{NAME}')" in capsys.readouterr().out
    ticket_zoo.save(ticket_zoo.load(OTHER), here / "mine")
    assert cli.main(["info", "mine"]) == 0
    out = capsys.readouterr().out
    assert "arch: conv4" in out and "load it: ticket_zoo.load('mine')" in out
    assert cli.main(["info", "me/tickets"]) == 2
    errout = capsys.readouterr().err
    assert "is a Hub repo, not a catalogue name" in errout and errout.count("\n") == 1


# --- layering of the storage modules ------------------------------------------------------------------

# Lower layers first; a module may import only modules of lower layers (directly or through others).
LAYERS = [("specs", "format"), ("zoo",), ("cards",), ("hub",), ("api",)]
STORAGE = {m for layer in LAYERS for m in layer}
BELOW_ALL = ("_io", "errors", "ticket")  # plumbing every layer uses: it imports none of them


def _module_names() -> set[str]:
    return {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def _imports(module: str, known: set[str]) -> set[str]:
    """ticket_zoo modules ``module`` imports anywhere in its code: at module level, inside functions,
    under ``if TYPE_CHECKING`` (docstrings are strings, not code, and are not counted)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "ticket_zoo" and len(parts) > 1:
                    out.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1 or (node.level == 0 and (node.module or "").split(".")[0] == "ticket_zoo"):
                base = (node.module or "") if node.level == 1 else (node.module or "").partition(".")[2]
                if base:
                    out.add(base.split(".")[0])
                else:  # from . import zoo / from ticket_zoo import zoo: the names are modules (or lazy names)
                    out.update(alias.name for alias in node.names if alias.name in known)
            else:
                assert node.level == 0, f"{module}: relative import beyond the package"
    return out & known


def _graph() -> dict[str, set[str]]:
    known = _module_names()
    return {m: _imports(m, known) - {m} for m in known}


def _reachable(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """{module: one import chain from ``start`` to it} for every module ``start`` imports, even indirectly."""
    chains: dict[str, list[str]] = {}
    todo = [[start]]
    while todo:
        chain = todo.pop()
        for nxt in sorted(graph.get(chain[-1], ())):
            if nxt not in chains:
                chains[nxt] = [*chain, nxt]
                todo.append(chains[nxt])
    return chains


def test_the_import_graph_is_read_from_real_imports() -> None:
    graph = _graph()
    assert {"zoo", "format", "cards", "hub", "specs"} <= graph["api"]  # module level and function level
    assert "format" in graph["zoo"]  # only inside _describe_local: function-level imports count
    assert "_hub_http" in graph["hub"]


def test_storage_modules_have_no_import_cycle() -> None:
    graph = _graph()
    for module in sorted(STORAGE):
        chains = _reachable(graph, module)
        assert module not in chains, f"import cycle: {' -> '.join(chains[module])}"


def test_storage_layers_only_import_downwards() -> None:
    graph = _graph()
    for rank, layer in enumerate(LAYERS):
        not_below = {m for later in LAYERS[rank:] for m in later}
        for module in layer:
            chains = _reachable(graph, module)
            wrong = sorted((not_below - {module}) & set(chains))
            assert not wrong, f"{module} imports a module of its own or a higher layer: " + "; ".join(
                " -> ".join(chains[w]) for w in wrong
            )
    for module in BELOW_ALL:
        chains = _reachable(graph, module)
        assert not STORAGE & set(chains), f"{module} reaches {sorted(STORAGE & set(chains))}"
    # the catalogue never reaches the network code
    assert not {"hub", "_hub_http"} & set(_reachable(graph, "zoo"))


def test_importing_every_module_leaves_the_umask_alone() -> None:
    code = (
        "import importlib, os, sys\n"
        "os.umask(0o027)\n"
        "import ticket_zoo\n"
        "assert os.umask(0o027) == 0o027\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(f'ticket_zoo.{name}')\n"
        "    mask = os.umask(0o027)\n"
        "    assert mask == 0o027, (name, oct(mask))\n"
        "print('ok')\n"
    )
    modules = sorted(_module_names())
    result = subprocess.run(
        [sys.executable, "-c", code, *modules],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
