"""Every README step works as written, in the order shown, on a fresh copy of the repository.

``test_readme_blocks_run_in_order`` extracts each ```bash / ```python block of README.md and runs it
in a temporary copy of the working tree (no ``runs/``, no demo output): bash blocks line by line
with ``bash -e``, python blocks with the project's Python. A block preceded by
``<!-- readme-test: skip (REASON) -->`` is not run (the reason is printed: ``make demo``/``make test``
and Hub publishing); ``<!-- readme-test: continues the block above -->`` runs a python block after
the one before it in the same process. To keep this test to a couple of minutes the copy's digits
recipes get a tiny budget (20 iterations, one seed): the steps, paths and order are the README's.

``test_wheel_works_outside_the_repo`` builds the wheel, installs it with ``--target`` into a
temporary directory and, from an unrelated working directory, checks that the shipped recipes and
catalogue are found by name, that ``--config transfer-digits`` reads the shipped recipe, that the demo's
recipes resolve inside the package, and that a tiny ``ticket-zoo transfer --config transfer-digits``
runs there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.S | re.M)
_MARK = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->\s*$")

# A tiny budget for the copy's digits recipes (train.iterations / eval_every, seeds).
_TINY = {"iterations": 20, "eval_every": 10}


def readme_blocks(text: str) -> list[dict]:
    """The ```bash/```python blocks of ``text`` in order: ``{lang, code, mark, line}``."""
    blocks = []
    for m in _FENCE.finditer(text):
        lang = m.group(1).lower()
        if lang not in ("bash", "python"):
            continue
        before = text[: m.start()].rstrip("\n").splitlines()
        mark = _MARK.search(before[-1]) if before else None
        blocks.append({"lang": lang, "code": m.group(2), "mark": mark.group(1) if mark else "",
                       "line": text[: m.start()].count("\n") + 1})  # fmt: skip
    return blocks


def test_readme_blocks_are_found_and_marked() -> None:
    """Cheap guard: the README has its runnable blocks, and every skip gives a reason."""
    blocks = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert [b["lang"] for b in blocks].count("python") >= 4 and any(
        "ticket-zoo transfer --config recipes/transfer-digits.yaml" in b["code"] for b in blocks
    )
    for b in blocks:
        if b["mark"].startswith("skip"):
            assert re.match(r"skip \(.+\)", b["mark"]), f"README line {b['line']}: a skip needs a (reason)"
        else:
            assert b["mark"] in ("", "continues the block above"), b["mark"]
            assert "make " not in b["code"], f"README line {b['line']}: make blocks must be marked skip"


def _copy_repo(dest: Path) -> Path:
    ignore = shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", ".pytest_cache", "*.egg-info",
                                    "build", "dist", ".ruff_cache")  # fmt: skip
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def _shrink_recipes(repo: Path) -> None:
    """Tiny budgets for the offline digits recipes the README runs (the copy only)."""
    for name in ("lenet_300_100-digits04.yaml", "lenet_300_100-digits.yaml", "transfer-digits.yaml"):
        path = repo / "recipes" / name
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        data["train"].update(_TINY)
        if "target_density" in data:
            data["target_density"] = 0.3  # 6 levels instead of 15
        data["train"].pop("epochs", None)
        if "seeds" in data:
            data["seeds"] = [0]
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(repo),  # the copy's ticket_zoo, ahead of the editable install
        PATH=f"{Path(PY).parent}{os.pathsep}{env.get('PATH', '')}",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        MPLBACKEND="Agg",
    )
    env.pop("TICKET_ZOO_CARDS", None)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], what: str, timeout: int = 300):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


@pytest.mark.slow
def test_readme_blocks_run_in_order(tmp_path) -> None:
    repo = _copy_repo(tmp_path / "clone")
    _shrink_recipes(repo)
    env = _env(repo)
    blocks = readme_blocks((repo / "README.md").read_text(encoding="utf-8"))
    ran = 0
    previous_python = ""
    for b in blocks:
        where = f"README.md line {b['line']} ({b['lang']})"
        if b["mark"].startswith("skip"):
            print(f"{where}: not run: {b['mark']}")
            continue
        if b["lang"] == "bash":
            _run(["bash", "-e", "-c", b["code"]], repo, env, where)
            previous_python = ""
        else:
            code = b["code"]
            if b["mark"] == "continues the block above":
                assert previous_python, f"{where} continues a block, but none runs before it"
                code = previous_python + "\n" + code
            _run([PY, "-c", code], repo, env, where)
            previous_python = code
        ran += 1
    assert ran >= 6
    # what the steps promise: tickets per level, the transfer of the catalogue family and of the find run
    assert (repo / "runs/digits/level_01/ticket.safetensors").is_file()
    assert (repo / "runs/transfer/report.csv").is_file() and (
        repo / "runs/transfer-find/report.csv"
    ).is_file()
    assert (repo / "my_ticket/ticket.safetensors").is_file()
    # a find level's card loads that level, not the catalogue ticket of the same name
    card = (repo / "runs/find/level_05/README.md").read_text(encoding="utf-8")
    assert 'tz.load("runs/find/level_05")' in card, card
    assert 'tz.load("my_ticket")' in (repo / "my_ticket/README.md").read_text(encoding="utf-8")


def _build_wheel(out: Path) -> Path:
    # from a copy: no build/ or egg-info left in the working tree, no stale build/ files in the wheel
    src = _copy_repo(out.parent / "src")
    proc = subprocess.run(
        [PY, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    (wheel,) = out.glob("ticket_zoo-*.whl")
    return wheel


@pytest.mark.slow
def test_wheel_works_outside_the_repo(tmp_path) -> None:
    wheel = _build_wheel(tmp_path / "wheel")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ticket_zoo/recipes/transfer-digits.yaml" in names
    assert "ticket_zoo/recipes/lenet_300_100-digits04.yaml" in names
    assert any(n.startswith("ticket_zoo/_catalogue/") and n.endswith(".md") for n in names)
    assert any(n.startswith("ticket_zoo/embedded/") for n in names)

    site = tmp_path / "site"
    subprocess.run([PY, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    env.pop("TICKET_ZOO_CARDS", None)
    check = f"""
import ticket_zoo, ticket_zoo.demo as demo
from pathlib import Path
from ticket_zoo._recipe import resolve_recipe, shipped_recipes
from ticket_zoo.transfer_grid import TransferConfig
from ticket_zoo.find import FindConfig
site = Path({str(site)!r}).resolve()
assert Path(ticket_zoo.__file__).resolve().is_relative_to(site), ticket_zoo.__file__
for spec in ("transfer-digits", "transfer-digits.yaml", "recipes/transfer-digits.yaml"):
    assert resolve_recipe(spec).resolve().is_relative_to(site), (spec, resolve_recipe(spec))
assert Path(demo.DEFAULT_FIND_RECIPE).resolve().is_relative_to(site) and Path(demo.DEFAULT_FIND_RECIPE).is_file()
assert Path(demo.DEFAULT_TRANSFER_RECIPE).is_file()
assert "lenet_300_100-digits04" in shipped_recipes()
cfg = TransferConfig.from_yaml("transfer-digits", {{"train.iterations": 5, "seeds": [0, 1]}})
assert cfg.train["iterations"] == 5 and cfg.seeds == [0, 1]
assert FindConfig.from_yaml("lenet_300_100-digits04", {{"train.iterations": 7}}).train.iterations == 7
names = [e["name"] for e in ticket_zoo.list_tickets(source="digits04")]
assert "lenet_300_100-digits04-5pct" in names, names
ticket_zoo.load("lenet_300_100-digits04-5pct").build(num_classes=5, new_head=True)
print("ok")
"""
    proc = _run([PY, "-c", check], elsewhere, env, "checks from the wheel")
    assert proc.stdout.strip().endswith("ok")
    cli = [PY, "-c", "import sys; from ticket_zoo.cli import main; sys.exit(main())"]
    for argv in (["demo", "--help"], ["transfer", "--config", "transfer-digits", "--help"]):
        _run(cli + argv, elsewhere, env, " ".join(argv))
    # a tiny transfer of the shipped recipe, run from an unrelated directory
    _run(cli + ["transfer", "--config", "transfer-digits", "--out", "t", "--iterations", "5", "--seeds", "0",
                "--optimizers", "sgd", "--controls", "winning", "dense", "--limit", "200", "--quiet"],
         elsewhere, env, "transfer --config transfer-digits")  # fmt: skip
    assert (elsewhere / "t" / "results.jsonl").is_file()


# --- the API the README shows (fast) -----------------------------------------------------------------


def test_find_and_transfer_overrides_mean_what_the_cli_means() -> None:
    from ticket_zoo.find import FindConfig
    from ticket_zoo.transfer_grid import TransferConfig

    over = {"train.iterations": 50, "seeds": [0, 1], "optimizers.sgd.lr": 0.1}
    cfg = TransferConfig.from_yaml("transfer-digits", over)  # a shipped recipe by name
    assert cfg.train["iterations"] == 50 and cfg.seeds == [0, 1] and cfg.optimizers["sgd"]["lr"] == 0.1
    assert cfg.train["batch_size"] == 64  # a dotted key replaces one value, not the section
    same = TransferConfig.from_yaml("recipes/transfer-digits.yaml", over)
    assert same == cfg
    # an optimizer's own budget gives way to train.iterations (one budget for every cell)
    raw = {"tickets": ["t"], "targets": ["digits"], "optimizers": {"a": {"optimizer": "adam", "epochs": 3}},
           "train": {"epochs": 2}}  # fmt: skip
    t = TransferConfig.from_dict(raw, {"train.iterations": 9})
    assert t.train == {"iterations": 9} and t.optimizers["a"] == {"optimizer": "adam"}
    f = FindConfig.from_yaml("lenet_300_100-digits04.yaml", {"train.iterations": 50, "seed": 1})
    assert f.train.iterations == 50 and f.seed == 1
    # every shipped transfer recipe names tickets that need no earlier run
    tickets = TransferConfig.from_yaml("transfer-digits").tickets
    assert all("/" not in t for t in tickets), tickets


def test_find_tickets_and_transfer_take_overrides(tmp_path) -> None:
    import inspect

    import ticket_zoo as tz

    for fn in (tz.find_tickets, tz.transfer):
        assert "overrides" in inspect.signature(fn).parameters


def test_missing_ticket_path_says_how_to_make_it(tmp_path, monkeypatch) -> None:
    from ticket_zoo.errors import ConfigError
    from ticket_zoo.transfer_cells import plan
    from ticket_zoo.transfer_grid import TransferConfig

    monkeypatch.chdir(tmp_path)
    cfg = TransferConfig.from_yaml("transfer-digits", {"tickets": ["runs/demo/find"]})
    with pytest.raises(ConfigError, match="runs/demo/find does not exist.*ticket-zoo find"):
        plan(cfg)  # planning reads the tickets (validate() reads none)


def test_build_new_head_is_explicit() -> None:
    import torch

    import ticket_zoo as tz
    from ticket_zoo.models import classifier_param_names

    ticket = tz.load("lenet_300_100-digits04-5pct")
    same = ticket.build(num_classes=ticket.num_classes)  # default: same N keeps the ticket's head
    fresh = ticket.build(num_classes=ticket.num_classes, new_head=True, head_seed=3)
    head = set(classifier_param_names(fresh))
    assert set(ticket.masks_for(same)) == set(ticket.masks)
    assert set(ticket.masks_for(fresh)) == set(ticket.masks) - head  # the fresh head is not masked
    changed = {k for k, v in fresh.state_dict().items() if not torch.equal(v, same.state_dict()[k])}
    assert changed and changed <= head  # only the head is new (a zero-initialised bias may not change)
    assert ticket.build(num_classes=3).get_classifier().out_features == 3  # different N: fresh by default
    with pytest.raises(ValueError, match="new_head=False"):
        ticket.build(num_classes=3, new_head=False)


def test_card_load_line_names_what_loads_it(tmp_path, monkeypatch) -> None:
    import ticket_zoo as tz
    from ticket_zoo.cards import render_card

    monkeypatch.chdir(tmp_path)
    catalogue = tz.load("lenet_300_100-digits04-5pct")
    assert 'tz.load("lenet_300_100-digits04-5pct")' in str(render_card(catalogue))
    assert 'tz.load("hf-hub:me/t")' in str(render_card(catalogue, repo_id="me/t"))
    # the user's own ticket named like a catalogue entry (as a find level is): its directory
    own = catalogue.with_(meta={**catalogue.meta, "source_test_acc": 12.5})
    assert 'tz.load("lenet_300_100-digits04-5pct")' not in str(render_card(own))
    tz.save(own, "runs/find/level_14")
    text = (tmp_path / "runs/find/level_14/README.md").read_text(encoding="utf-8")
    assert 'tz.load("runs/find/level_14")' in text and "--ticket runs/find/level_14" in text
    assert tz.load("runs/find/level_14").meta["source_test_acc"] == 12.5


def test_publish_writes_the_card_to_cwd_cards_not_the_package(hf_env, tmp_path, monkeypatch) -> None:
    import ticket_zoo as tz
    from ticket_zoo import hub, zoo

    monkeypatch.delenv(zoo.CARDS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    installed = {p.name for p in zoo.catalogue_dir().iterdir()}
    own = tz.load("lenet_300_100-digits04-5pct")
    own = own.with_(meta={**own.meta, "name": "lenet_300_100-digits04-4pct"})
    tz.save(own, "runs/find/level_15")
    entry = hub.publish("runs/find/level_15", "tester/lenet-digits04")
    assert Path(entry["card"]).resolve() == (tmp_path / "cards" / "lenet_300_100-digits04-4pct.md").resolve()
    assert {p.name for p in zoo.catalogue_dir().iterdir()} == installed
