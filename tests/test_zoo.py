"""The named catalogue (ticket_zoo.zoo + cards/): every shipped card parses, embedded tickets load
and match their pins, filters, info, did-you-mean, path escapes, unpublished entries explain how to
build and publish, publish writes a card that resolves against the test Hub, CLI, packaging."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import metadata_load

import ticket_zoo
from ticket_zoo import cli, hub, zoo
from ticket_zoo.api import load_named, save
from ticket_zoo.errors import (
    ChecksumMismatchError,
    ConfigError,
    TicketNotFoundError,
    TicketNotPublishedError,
)
from ticket_zoo.format import write_ticket
from ticket_zoo.masks import magnitude_masks
from ticket_zoo.ticket import Ticket, create_model

ROOT = Path(__file__).resolve().parent.parent
CARDS = ROOT / "cards"
KWARGS = {"num_classes": 10, "in_chans": 1, "img_size": 8}
GRID_SOURCES = ("imagenet", "places365", "cifar100", "cifar10", "svhn", "fashion_mnist", "mnist")


def make_ticket(seed: int, density: float, source: str = "digits") -> Ticket:
    return _make_ticket(seed, density, source).with_()  # a copy: tests may change it


@functools.cache
def _make_ticket(seed: int, density: float, source: str) -> Ticket:
    torch.manual_seed(seed)
    model = create_model("lenet_300_100", KWARGS)
    weights = {n: p.detach() for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1}
    meta = {
        "name": f"lenet_300_100-{source}-{zoo.pct_label(density)}pct",
        "source": source,
        "source_test_acc": 91.5,
    }
    return Ticket.from_model(
        model, magnitude_masks(weights, density), arch="lenet_300_100", arch_kwargs=KWARGS, meta=meta
    )


def entry(name: str, density: float, **where) -> dict:
    arch, source, _ = name.split("-")
    return {
        "name": name,
        "arch": arch,
        "source": source,
        "density": density,
        "source_accuracy": None,
        "recipe": f"recipes/{arch}-{source}.yaml",
        **where,
    }


@pytest.fixture
def cards(tmp_path, monkeypatch) -> Path:
    """A private catalogue: the real template, three tickets embedded (in a private embedded dir), one
    unpublished entry; ``ticket_zoo.load(name)`` resolves against it."""
    directory = tmp_path / "cards"
    directory.mkdir()
    shutil.copy(CARDS / zoo.TEMPLATE_FILE, directory)
    embedded = tmp_path / "embedded"
    monkeypatch.setattr(zoo, "embedded_dir", lambda: embedded)
    monkeypatch.setenv(zoo.CARDS_ENV, str(directory))
    for seed, density in ((0, 0.5), (1, 0.2), (2, 0.05)):
        ticket = make_ticket(seed, density)
        file = f"{ticket.name}.safetensors"
        write_ticket(ticket, embedded / file)
        sha = hashlib.sha256((embedded / file).read_bytes()).hexdigest()
        zoo.write_card(
            entry(ticket.name, ticket.density, dataset="digits", embedded=file, sha256=sha), directory
        )
    zoo.write_card(entry("conv4-cifar10-20pct", 0.2), directory)
    return directory


# --- the shipped catalogue ---------------------------------------------------------------------------


def test_every_shipped_card_parses_and_names_are_well_formed() -> None:
    entries = zoo.list_tickets(cards_dir=CARDS)
    files = [p for p in CARDS.glob("*.md") if not p.name.startswith("_")]
    assert len(entries) == len(files) >= 98
    for path in files:  # the catalogue reads front matter exactly as huggingface_hub does
        hf = metadata_load(path)
        entry = zoo.info(path.stem, cards_dir=CARDS)
        shared = set(hf) & set(entry)
        assert {"name", "arch", "source", "density", "recipe", "published"} <= shared, path.name
        assert {k: entry[k] for k in shared} == {k: hf[k] for k in shared}, path.name
    for e in entries:
        assert zoo.NAME_RE.fullmatch(e["name"]) and e["name"].endswith("pct")
        assert e["recipe"].startswith("recipes/") and e["recipe"].endswith(".yaml")
        pct = float(e["name"].rsplit("-", 1)[1][: -len("pct")])
        assert abs(100 * e["density"] - pct) <= 0.5 + 1e-9  # the name says what remains
        assert e["published"] == (e["location"] is not None)


def test_morcos_grid_is_complete() -> None:
    names = {e["name"] for e in zoo.list_tickets(cards_dir=CARDS)}
    for arch in ("vgg19", "resnet50"):
        for source in GRID_SOURCES:
            for pct in (80, 51, 20, 10, 5, 2, 1):
                assert f"{arch}-{source}-{pct}pct" in names


def test_catalogue_cards_are_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_catalogue_cards", ROOT / "recipes/make_catalogue_cards.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check", "--cards-dir", str(CARDS)]) == 0


def _embedded_entries() -> list[dict]:
    return [e for e in zoo.list_tickets(cards_dir=CARDS) if e["location"] == "embedded"]


def test_embedded_zoo_is_shipped() -> None:
    entries = _embedded_entries()
    archs = {e["arch"] for e in entries}
    sources = {e["source"] for e in entries}
    assert {"lenet_300_100", "conv4"} <= archs and {"digits04", "digits"} <= sources, entries
    files = {p.name for p in zoo.embedded_dir().glob("*.safetensors")}
    assert files == {e["embedded"] for e in entries}  # no orphan files, no missing ones


@pytest.mark.parametrize("name", [e["name"] for e in _embedded_entries()])
def test_every_embedded_ticket_loads_and_matches_its_pin(name: str) -> None:
    e = zoo.info(name, cards_dir=CARDS)
    data = (zoo.embedded_dir() / e["embedded"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == e["sha256"]
    ticket = load_named(name, cards_dir=CARDS)
    assert ticket.arch == e["arch"] and ticket.name == name
    assert abs(ticket.density - e["density"]) < 1e-6
    out = ticket.build()(torch.zeros(2, *ticket.meta["input_size"]))
    assert out.shape == (2, ticket.num_classes)


# --- lookups ----------------------------------------------------------------------------------------


def test_list_tickets_filters(cards) -> None:
    names = lambda **kw: [e["name"] for e in zoo.list_tickets(**kw)]  # noqa: E731
    assert names() == [
        "conv4-cifar10-20pct",
        "lenet_300_100-digits-50pct",
        "lenet_300_100-digits-20pct",
        "lenet_300_100-digits-5pct",
    ]
    assert names(arch="lenet_300_100", max_density=0.25) == [
        "lenet_300_100-digits-20pct",
        "lenet_300_100-digits-5pct",
    ]
    assert names(min_density=0.2, published=True) == [
        "lenet_300_100-digits-50pct",
        "lenet_300_100-digits-20pct",
    ]
    assert names(published=False) == ["conv4-cifar10-20pct"]
    assert names(source="cifar10") == ["conv4-cifar10-20pct"]
    assert names(arch="vgg19") == []
    # entries are copies: editing one does not change the catalogue
    zoo.list_tickets()[0]["density"] = 9.0
    assert zoo.info("conv4-cifar10-20pct")["density"] == 0.2


def test_load_by_name_from_embedded(cards) -> None:
    ticket = ticket_zoo.load("lenet_300_100-digits-5pct")
    expected = make_ticket(2, 0.05)
    assert all(torch.equal(ticket.masks[k], expected.masks[k]) for k in expected.masks)
    assert abs(ticket.density - 0.05) < 1e-3


def test_damaged_embedded_file_is_refused(cards, tmp_path) -> None:
    path = tmp_path / "embedded" / "lenet_300_100-digits-20pct.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="reinstall"):
        load_named("lenet_300_100-digits-20pct")
    path.unlink()
    with pytest.raises(TicketNotFoundError, match="missing"):
        load_named("lenet_300_100-digits-20pct")


def test_info_and_did_you_mean(cards) -> None:
    e = zoo.info("lenet_300_100-digits-20pct")
    assert (
        e["location"] == "embedded"
        and e["dataset"] == "digits"
        and re.fullmatch(r"[0-9a-f]{64}", e["sha256"])
    )
    with pytest.raises(TicketNotFoundError, match="did you mean lenet_300_100-digits-20pct"):
        zoo.info("lenet_300_100-digits-21pct")
    with pytest.raises(TicketNotFoundError, match="ticket-zoo list"):
        ticket_zoo.load("resnet9000-nothing-3pct")


@pytest.mark.parametrize(
    "name",
    [
        "../cards/_template",
        "..",
        "a..b-c-5pct",
        "lenet_300_100-digits-5pct/../x",
        "x\\y-z-5pct",
        "_template",
        "Lenet-digits-5pct",
        "lenet_300_100-digits-5pct.md",
        "",
        "-digits-5pct",
    ],
)
def test_names_cannot_escape_the_catalogue(cards, name) -> None:
    with pytest.raises(TicketNotFoundError):
        load_named(name)


def test_unpublished_entry_says_how_to_build_and_publish(cards) -> None:
    with pytest.raises(TicketNotPublishedError) as err:
        ticket_zoo.load("conv4-cifar10-20pct")
    message = str(err.value)
    assert "ticket-zoo find --config recipes/conv4-cifar10.yaml --out runs/conv4-cifar10" in message
    assert (
        "ticket-zoo publish runs/conv4-cifar10/level_07 --repo <org/name> --name conv4-cifar10-20pct"
        in message
    )


def test_shipped_unpublished_entry_message() -> None:
    with pytest.raises(TicketNotPublishedError) as err:
        load_named("vgg19-imagenet-20pct", cards_dir=CARDS)
    assert "ticket-zoo find --config recipes/vgg19-imagenet.yaml" in str(err.value)
    assert "ticket-zoo publish runs/vgg19-imagenet/level_" in str(err.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name: other-name-5pct\n", "must agree"),
        ("density: 1.5\n", "density"),
        ("repo_id: me/x\nrevision: abc\n", "sha256"),
        ("embedded: ../../etc/passwd.safetensors\nsha256: " + "a" * 64 + "\n", "embedded"),
        ("published: true\n", "no location"),
    ],
)
def test_bad_cards_name_the_file(cards, text, match) -> None:
    fields = {
        "name": "conv4-svhn-5pct",
        "arch": "conv4",
        "source": "svhn",
        "density": 0.05,
        "recipe": "recipes/conv4-svhn.yaml",
        "published": False,
    }
    for line in text.strip().splitlines():
        key, value = line.split(": ", 1)
        fields[key] = {"1.5": 1.5, "true": True}.get(value, value)
    if "published" not in text:
        fields.pop("published")
    body = "".join(f"{k}: {v}\n" for k, v in fields.items())
    (cards / "conv4-svhn-5pct.md").write_text(f"---\n{body}---\n# card\n")
    with pytest.raises(ConfigError, match=match) as err:
        zoo.list_tickets()
    assert "conv4-svhn-5pct.md" in str(err.value)


# --- publish through the test Hub -------------------------------------------------------------------


def test_publish_writes_a_card_that_resolves_against_the_hub(hf_env, cards, tmp_path) -> None:
    ticket = make_ticket(7, 0.2, source="cifar10").with_(meta={"name": "x", "source": "cifar10"})
    directory = save(ticket, tmp_path / "run" / "level_07")
    e = hub.publish(directory, "tester/conv4-cifar10", name="conv4-cifar10-20pct", tag="v1")
    commit = hf_env.server.repo("tester/conv4-cifar10").tags["v1"]
    assert e["location"] == "hub" and e["repo_id"] == "tester/conv4-cifar10" and e["revision"] == commit
    assert e["sha256"] == hashlib.sha256((directory / "ticket.safetensors").read_bytes()).hexdigest()
    assert e["recipe"] == "recipes/conv4-cifar10.yaml"  # kept from the unpublished slot
    assert zoo.info("conv4-cifar10-20pct")["published"]

    loaded = ticket_zoo.load("conv4-cifar10-20pct")
    assert all(torch.equal(loaded.init[k], ticket.init[k]) for k in ticket.init)
    assert loaded.meta["hub"]["commit"] == commit
    # the pin protects: a card whose sha256 does not match the Hub's bytes is refused
    card = Path(e["card"])
    card.write_text(card.read_text().replace(e["sha256"], "f" * 64))
    with pytest.raises(ChecksumMismatchError):
        ticket_zoo.load("conv4-cifar10-20pct")


# --- CLI --------------------------------------------------------------------------------------------


def test_cli_list_info_publish_pull(hf_env, cards, tmp_path, capsys) -> None:
    assert cli.main(["list", "--arch", "lenet_300_100", "--min-density", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "lenet_300_100-digits-50pct" in out and "lenet_300_100-digits-20pct" in out
    assert "5pct" not in out and "conv4" not in out
    assert cli.main(["list", "--published"]) == 0
    assert "conv4-cifar10-20pct" not in capsys.readouterr().out

    assert cli.main(["info", "conv4-cifar10-20pct"]) == 0
    assert "ticket-zoo find --config recipes/conv4-cifar10.yaml" in capsys.readouterr().out
    assert cli.main(["info", "conv4-cifar10-2Opct"]) == 2
    assert "did you mean" in capsys.readouterr().err

    directory = save(make_ticket(3, 0.2), tmp_path / "t")
    assert (
        cli.main(
            [
                "publish",
                str(directory),
                "--repo",
                "tester/c",
                "--name",
                "conv4-cifar10-20pct",
                "--cards-dir",
                str(cards),
            ]
        )
        == 0
    )
    assert "tester/c@" in capsys.readouterr().out
    for name in ("conv4-cifar10-20pct", "lenet_300_100-digits-5pct"):  # a Hub entry and an embedded one
        out_dir = tmp_path / name
        assert cli.main(["pull", name, "--out", str(out_dir)]) == 0
        assert ticket_zoo.load(out_dir).density == pytest.approx(zoo.info(name)["density"], abs=1e-6)
        assert (out_dir / "README.md").is_file()


# --- packaging --------------------------------------------------------------------------------------


def test_pyproject_ships_cards_and_embedded_tickets() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"]["ticket_zoo._catalogue"] == "cards"
    assert "*.md" in config["package-data"]["ticket_zoo._catalogue"]
    assert "embedded/*.safetensors" in config["package-data"]["ticket_zoo"]
    # packages are listed by hand (the catalogue package lives outside ticket_zoo/): none may be missed
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ticket_zoo").rglob("__init__.py")}
    assert on_disk <= set(config["packages"]) and "ticket_zoo._catalogue" in config["packages"]


def test_catalogue_found_without_the_env_override(monkeypatch) -> None:
    monkeypatch.delenv(zoo.CARDS_ENV, raising=False)
    assert zoo.catalogue_dir() == CARDS  # a source checkout / editable install reads the repo's cards/
    assert sys.modules["ticket_zoo.zoo"] is zoo


# --- the embedded zoo is reproducible ---------------------------------------------------------------

CHEAPEST_RECIPE = "recipes/lenet_300_100-digits04.yaml"


@pytest.mark.slow
def test_embedded_zoo_regenerates_bit_identically(tmp_path) -> None:
    """Re-running the cheapest embedded recipe reproduces the shipped ticket files byte for byte."""
    import platform

    import timm

    shipped = [e for e in _embedded_entries() if e["recipe"] == CHEAPEST_RECIPE]
    assert shipped, f"no embedded entry comes from {CHEAPEST_RECIPE}"
    here = {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()}
    # A ticket records the versions it was built with, so its bytes can only match on the same ones;
    # the zoo may hold entries built on different versions: compare those built on this one.
    comparable = set()
    for e in shipped:
        recorded = load_named(e["name"], cards_dir=CARDS).meta["versions"]
        if all(recorded.get(k) == v for k, v in here.items()):
            comparable.add(e["name"])
    if not comparable:
        pytest.skip(f"no shipped ticket of {CHEAPEST_RECIPE} was built with this environment's {here}")
    spec = importlib.util.spec_from_file_location(
        "build_embedded_zoo", ROOT / "recipes/build_embedded_zoo.py"
    )
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    problems = builder.check([CHEAPEST_RECIPE], runs_dir=tmp_path, progress=False)
    assert [p for p in problems if p.split(":")[0] in comparable] == []


# --- hostile or broken cards: one short error line, never a traceback or a flood --------------------


def _laughs(levels: int) -> str:
    """A YAML alias bomb ("billion laughs"): each level repeats the previous one 9 times."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\ndataset: *l{levels - 1}\n"


def _nested_block(depth: int) -> str:
    return (
        "extra:\n"
        + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(depth))
        + "  " * (depth + 1)
        + "v: 1\n"
    )


GOOD_FRONT = (
    "name: conv4-svhn-5pct\narch: conv4\nsource: svhn\ndensity: 0.05\nrecipe: recipes/conv4-svhn.yaml\n"
    "published: false\n"
)
BAD_CARDS = [
    ("source_accuracy_text", GOOD_FRONT + "source_accuracy: high\n", "source_accuracy"),
    ("source_accuracy_list", GOOD_FRONT + "source_accuracy: [91, 5]\n", "source_accuracy"),
    ("source_accuracy_over_100", GOOD_FRONT + "source_accuracy: 250\n", "source_accuracy"),
    ("source_accuracy_nan", GOOD_FRONT + "source_accuracy: .nan\n", "source_accuracy"),
    ("source_accuracy_bool", GOOD_FRONT + "source_accuracy: true\n", "source_accuracy"),
    ("dataset_mapping", GOOD_FRONT + "dataset: {a: 1}\n", "'dataset'"),
    ("dataset_alias_bomb", GOOD_FRONT + _laughs(6), "YAML alias"),
    ("depth_flow_100000", GOOD_FRONT + "extra: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested more than"),
    ("depth_block_40", GOOD_FRONT + _nested_block(40), "nested more than"),
    ("size_arch_10mb", GOOD_FRONT.replace("arch: conv4", "arch: " + "a" * 10_000_000), "larger than"),
    ("size_arch_1000", GOOD_FRONT.replace("arch: conv4", "arch: " + "a" * 1000), "'arch'"),
    (
        "recipe_two_lines",
        GOOD_FRONT.replace("recipe: recipes/conv4-svhn.yaml", 'recipe: "a\\nb"'),
        "'recipe'",
    ),
    ("recipe_absolute", GOOD_FRONT.replace("recipes/conv4-svhn.yaml", "/etc/passwd.yaml"), "'recipe'"),
    ("recipe_dotdot", GOOD_FRONT.replace("recipes/conv4-svhn.yaml", "recipes/../../../x.yaml"), "'recipe'"),
    ("recipe_not_yaml", GOOD_FRONT.replace("recipes/conv4-svhn.yaml", "recipes/x.bin"), "'recipe'"),
    ("bigint_density", GOOD_FRONT.replace("density: 0.05", "density: " + "9" * 5000), "cannot load"),
    ("density_text", GOOD_FRONT.replace("density: 0.05", "density: " + "x" * 5000), "'density'"),
    (
        "repo_id_long",
        GOOD_FRONT.replace(
            "published: false", f"repo_id: org/{'r' * 1000}\nrevision: main\nsha256: {'a' * 64}"
        ),
        "'repo_id'",
    ),
]


@pytest.mark.parametrize(("case", "front", "match"), BAD_CARDS, ids=[c for c, _, _ in BAD_CARDS])
def test_bad_card_fields_are_one_short_error_line(cards, capsys, case, front, match) -> None:
    (cards / "conv4-svhn-5pct.md").write_text(f"---\n{front}---\n# card\n")
    with pytest.raises(ConfigError, match=match) as err:
        zoo.list_tickets()
    assert "conv4-svhn-5pct.md" in str(err.value) and len(str(err.value)) <= len(str(cards)) + 400
    for argv in (["list"], ["info", "conv4-svhn-5pct"], ["info", "conv4-cifar10-20pct"]):
        assert cli.main(argv) == 2
        out, errout = capsys.readouterr()
        assert "Traceback" not in errout and errout.count("\n") == 1, errout[:2000]
        assert errout.startswith("ticket-zoo: error: "), errout[:2000]
        assert len(errout) <= len(str(cards)) + 450, errout[:2000]
        assert len(out) < 1000


def test_card_that_is_not_utf8_is_one_error_line(cards, capsys) -> None:
    (cards / "conv4-svhn-5pct.md").write_bytes(b"---\n" + GOOD_FRONT.encode() + b"note: \xff\xfe\n---\n")
    assert cli.main(["list"]) == 2
    errout = capsys.readouterr().err
    assert "not UTF-8" in errout and errout.count("\n") == 1


def test_list_and_info_print_a_recorded_source_accuracy(cards, capsys) -> None:
    (cards / "conv4-svhn-5pct.md").write_text(f"---\n{GOOD_FRONT}source_accuracy: 91.5\n---\n# card\n")
    assert zoo.info("conv4-svhn-5pct")["source_accuracy"] == 91.5
    assert cli.main(["list", "--arch", "conv4"]) == 0
    assert re.search(r"conv4-svhn-5pct\s+5\.00%\s+91\.50\s+not published", capsys.readouterr().out)
    assert cli.main(["info", "conv4-svhn-5pct"]) == 0
    assert "source_accuracy: 91.5" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["a" * 300, "a" * 300 + "-digits-5pct", "x" * 5000, "ab\ncd" * 100])
@pytest.mark.parametrize("command", ["info", "pull", "load"])
def test_overlong_names_are_one_short_error_line(cards, capsys, monkeypatch, tmp_path, command, name) -> None:
    monkeypatch.chdir(tmp_path)
    if command == "load":
        with pytest.raises(TicketNotFoundError) as err:
            ticket_zoo.load(name)  # Path.is_dir raised OSError(ENAMETOOLONG) here
        message = str(err.value)
    else:
        assert cli.main([command, name]) == 2
        out, message = capsys.readouterr()
        assert out == "" and message.startswith("ticket-zoo: error: ") and message.count("\n") == 1
    assert "Traceback" not in message and len(message) <= 400, message[:1000]
    assert "\n" not in message.rstrip("\n")
