"""Model cards the Hub understands (ticket_zoo.cards): each card is read back with huggingface_hub's own
readers (``ModelCard.load``, ``repocard.metadata_load``, ``model_index_to_eval_results``) and checked for
the Hub dataset id, the pipeline tag, the source accuracy, the preprocessing and the load line of
wherever the ticket lives (a saved folder, a pushed repo on the test Hub, a catalogue entry)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard import metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

import ticket_zoo as tz
from ticket_zoo import hub
from ticket_zoo.cards import PIPELINE_TAG, hub_dataset_id, preprocessing, render_card, retarget_card
from ticket_zoo.data import data_config, get_spec
from ticket_zoo.ticket import Ticket

CATALOGUE = "lenet_300_100-digits04-5pct"
DIGITS = get_spec("digits")
CIFAR100 = get_spec("cifar100")


@pytest.fixture(scope="module")
def digits() -> Ticket:
    return tz.load(CATALOGUE)


@pytest.fixture(scope="module")
def cifar(digits: Ticket) -> Ticket:
    """A ticket whose meta says it was found on cifar100 (find would also record source_hub_id; here it
    is missing, so the card must take the id from the dataset registry)."""
    meta = {k: v for k, v in digits.meta.items() if k != "source_hub_id"}
    return digits.with_(
        meta={**meta, "source": "cifar100", "source_test_acc": 61.25, "name": "lenet_300_100-cifar100-5pct"}
    )


def _read(path: Path) -> tuple[ModelCard, dict[str, Any], str, list[Any]]:
    """The card as the Hub's client reads it: the card, its raw YAML, and the parsed model-index."""
    card = ModelCard.load(path)
    meta = metadata_load(path)
    assert meta is not None, "no YAML front matter"
    name, results = model_index_to_eval_results(meta["model-index"])
    return card, meta, name, results


def _write(card: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(card), encoding="utf-8")
    return path


# --- YAML the Hub reads -----------------------------------------------------------------------------


def test_digits_card_has_no_datasets_entry_and_keeps_the_subset_in_the_ticket_block(digits, tmp_path) -> None:
    folder = tz.save(digits, tmp_path / "mine")
    card, meta, name, results = _read(folder / "README.md")
    assert meta["library_name"] == "ticket-zoo"
    assert meta["pipeline_tag"] == PIPELINE_TAG == "image-classification" == card.data.pipeline_tag
    assert "datasets" not in meta and card.data.datasets is None  # digits is not on the Hub
    assert meta["ticket"]["source"] == "digits[0-4]"  # the exact source expression
    assert name == CATALOGUE
    (result,) = results
    assert result.task_type == "image-classification" and result.metric_type == "accuracy"
    assert result.metric_value == pytest.approx(digits.meta["source_test_acc"], abs=1e-4)
    assert result.dataset_name == "digits[0-4]" and result.dataset_type == "digits"  # never a subset as a type
    assert result.dataset_split == "test"


def test_cifar100_card_names_the_hub_dataset_from_the_registry(cifar, tmp_path) -> None:
    assert CIFAR100.hub_id == "uoft-cs/cifar100"
    path = _write(render_card(cifar, path="tickets/cifar"), tmp_path / "README.md")
    card, meta, name, results = _read(path)
    assert meta["datasets"] == [CIFAR100.hub_id] and card.data.datasets == [CIFAR100.hub_id]
    assert meta["pipeline_tag"] == "image-classification"
    assert meta["ticket"]["source"] == "cifar100"
    assert name == "lenet_300_100-cifar100-5pct"
    (result,) = results
    assert result.dataset_type == CIFAR100.hub_id and result.dataset_name == "cifar100"
    assert result.metric_value == pytest.approx(61.25)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("cifar100", ["uoft-cs/cifar100"]),
        ("cifar10[0-4]", ["uoft-cs/cifar10"]),  # a subset names its dataset; the subset is in ticket.source
        ("digits", None),
        ("digits[0-4]", None),
        ("imagefolder:/nowhere/pets", None),  # local data: no id, and nothing is read
        ("parquet:/nowhere/*.parquet", None),
        ("no-such-dataset", None),
    ],
)
def test_datasets_holds_hub_ids_only(digits, source, expected) -> None:
    ticket = digits.with_(meta={**digits.meta, "source": source, "source_hub_id": None})
    data = render_card(ticket).data
    assert data.datasets == expected
    assert data.ticket["source"] == source
    assert hub_dataset_id(ticket.meta) == (expected[0] if expected else None)


def test_a_recorded_source_hub_id_wins_but_never_a_subset_expression(digits) -> None:
    recorded = digits.with_(meta={**digits.meta, "source": "kmnist", "source_hub_id": "my-org/kmnist"})
    assert render_card(recorded).data.datasets == ["my-org/kmnist"]  # registered in another process
    bad = digits.with_(meta={**digits.meta, "source_hub_id": "digits[0-4]"})
    assert render_card(bad).data.datasets is None


# --- preprocessing --------------------------------------------------------------------------------


def test_card_records_preprocessing_from_meta_and_the_source_spec(digits, cifar, tmp_path) -> None:
    card, meta, _, _ = _read(tz.save(digits, tmp_path / "d") / "README.md")
    prep = meta["ticket"]["preprocessing"]
    assert prep["input_size"] == digits.meta["input_size"] == [1, 8, 8]
    assert prep["mean"] == pytest.approx(DIGITS.mean, abs=1e-6) and prep["std"] == pytest.approx(DIGITS.std, abs=1e-6)
    assert "## Preprocessing" in card.text
    assert f"| 1×8×8 | {DIGITS.mean[0]:g} | {DIGITS.std[0]:g} |" in card.text

    # an RGB source fed to a 1-channel input: averaged over channels, as training did
    prep = preprocessing(cifar)
    assert prep["input_size"] == [1, 8, 8]
    assert prep["mean"] == pytest.approx([sum(CIFAR100.mean) / 3], abs=1e-6)
    assert prep["std"] == pytest.approx([sum(CIFAR100.std) / 3], abs=1e-6)


def test_card_records_timm_data_config_with_interpolation_and_crop(digits, tmp_path) -> None:
    cfg = data_config("imagenet", (3, 160, 160))
    ticket = digits.with_(meta={**digits.meta, "source": "imagenet", "data_config": cfg, "input_size": [3, 160, 160]})
    card, meta, _, _ = _read(_write(render_card(ticket, path="t"), tmp_path / "README.md"))
    prep = meta["ticket"]["preprocessing"]
    assert prep["input_size"] == [3, 160, 160]
    assert prep["mean"] == pytest.approx(list(cfg["mean"])) and prep["std"] == pytest.approx(list(cfg["std"]))
    assert prep["interpolation"] == cfg["interpolation"] == "bilinear"
    assert prep["crop_pct"] == pytest.approx(cfg["crop_pct"])
    assert meta["datasets"] == ["ILSVRC/imagenet-1k"]
    assert "| 3×160×160 | 0.485, 0.456, 0.406 | 0.229, 0.224, 0.225 | bilinear | 0.875 |" in card.text
    assert 'create_transform(**tz.load("t").meta["data_config"])' in card.text


def test_nothing_known_means_no_preprocessing_entry(digits) -> None:
    bare = digits.with_(meta={"source": "imagefolder:/nowhere"})
    assert preprocessing(bare) == {}
    card = render_card(bare)
    assert card.data.ticket["preprocessing"] is None and "## Preprocessing" not in card.text


# --- the load line --------------------------------------------------------------------------------


def test_load_line_of_a_saved_folder_loads_it(digits, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    own = digits.with_(meta={**digits.meta, "seed": 5})  # named like the catalogue entry, not the same ticket
    tz.save(own, "runs/find/level_14")
    card, meta, _, _ = _read(tmp_path / "runs/find/level_14/README.md")
    assert meta["ticket"]["load"] == "runs/find/level_14"
    assert 'tz.load("runs/find/level_14")' in card.text and "--ticket runs/find/level_14 " in card.text
    assert f'tz.load("{CATALOGUE}")' not in card.text
    assert tz.load(meta["ticket"]["load"]).meta["seed"] == 5


def test_load_line_of_a_catalogue_entry_is_its_name(digits, tmp_path) -> None:
    card, meta, _, _ = _read(_write(render_card(digits), tmp_path / "README.md"))
    assert meta["ticket"]["load"] == CATALOGUE and f'tz.load("{CATALOGUE}")' in card.text
    # a ticket that lives nowhere yet gets a placeholder, and no load target in the YAML
    other = render_card(digits.with_(meta={**digits.meta, "seed": 3}))
    assert other.data.ticket["load"] is None and 'tz.load("path/to/ticket_dir")' in other.text


def _pushed_readme(hf_env, repo: str, sha: str, tmp_path: Path) -> Path:
    path = tmp_path / "pushed" / repo / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(hf_env.server.repo(repo).commits[sha].files["README.md"])
    return path


def test_pushed_directory_card_names_the_hub_repo_not_the_folder(hf_env, digits, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    own = digits.with_(meta={**digits.meta, "seed": 5})
    folder = tz.save(own, "runs/find/level_14")
    readme = folder / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + "\nNotes a person wrote.\n", encoding="utf-8")

    sha = hub.push(folder, "tester/lenet-own", tag="v1")
    card, meta, name, results = _read(_pushed_readme(hf_env, "tester/lenet-own", sha, tmp_path))
    target = "hf-hub:tester/lenet-own@v1"
    assert meta["ticket"]["load"] == target
    assert f'tz.load("{target}")' in card.text and f"--ticket {target} " in card.text
    assert "runs/find/level_14" not in card.text  # the folder it was saved in is no load target up there
    assert "Notes a person wrote." in card.text  # the person's text is kept
    assert meta["pipeline_tag"] == "image-classification" and "datasets" not in meta
    assert name == CATALOGUE and results[0].metric_value == pytest.approx(own.meta["source_test_acc"], abs=1e-4)
    assert tz.load(meta["ticket"]["load"]).meta["seed"] == 5  # the line loads this very ticket
    assert 'tz.load("runs/find/level_14")' in readme.read_text(encoding="utf-8")  # the local card is left alone


def test_pushed_ticket_card_names_repo_and_branch(hf_env, cifar, tmp_path) -> None:
    sha = hub.push(cifar, "tester/cifar")
    card, meta, _, results = _read(_pushed_readme(hf_env, "tester/cifar", sha, tmp_path))
    assert meta["ticket"]["load"] == "hf-hub:tester/cifar@main"
    assert 'tz.load("hf-hub:tester/cifar@main")' in card.text
    assert meta["datasets"] == ["uoft-cs/cifar100"] and results[0].dataset_type == "uoft-cs/cifar100"
    sha = hub.push(cifar, "tester/cifar", revision="dev")
    card = ModelCard.load(_pushed_readme(hf_env, "tester/cifar", sha, tmp_path))
    assert card.data.ticket["load"] == "hf-hub:tester/cifar@dev" and 'tz.load("hf-hub:tester/cifar@dev")' in card.text
    assert tz.load(card.data.ticket["load"]).meta["source"] == "cifar100"


def test_retarget_updates_an_older_card_and_keeps_what_a_person_added(digits) -> None:
    older = (
        "---\nlicense: mit\nlanguage: en\nlibrary_name: ticket-zoo\ndatasets:\n- digits[0-4]\n---\n"
        '# my ticket\n\n```python\nmodel = tz.load("/home/me/level_14").build(num_classes=10)\n```\n'
        "ticket-zoo transfer --ticket /home/me/level_14 --target cifar10\n"
        'also compare with tz.load("other/ticket")\n'
    )
    text = retarget_card(older, digits, repo_id="me/t", revision="v2")
    card = ModelCard(text)
    data = card.data.to_dict()
    assert data["license"] == "mit" and data["language"] == "en"  # a person's keys are kept
    assert data["pipeline_tag"] == "image-classification" and "datasets" not in data  # the stale subset is gone
    assert data["ticket"]["load"] == "hf-hub:me/t@v2" and data["ticket"]["source"] == "digits[0-4]"
    assert 'tz.load("hf-hub:me/t@v2")' in card.text and "--ticket hf-hub:me/t@v2 --target" in card.text
    assert "/home/me/level_14" not in card.text and 'tz.load("other/ticket")' in card.text
    _, results = model_index_to_eval_results(data["model-index"])
    assert results[0].metric_value == pytest.approx(digits.meta["source_test_acc"], abs=1e-4)
    # re-targeting is stable: the same push twice gives the same card (no new commit)
    assert retarget_card(text, digits, repo_id="me/t", revision="v2") == text


def test_retarget_leaves_the_body_of_a_hand_written_readme_alone(digits) -> None:
    mine = '# Notes\n\nI compared it with tz.load("other/ticket").\n'
    card = ModelCard(retarget_card(mine, digits, repo_id="me/t", revision="main"))
    assert card.text.strip() == mine.strip()  # not our card: only the YAML the Hub reads is added
    assert card.data.pipeline_tag == "image-classification" and card.data.ticket["load"] == "hf-hub:me/t@main"
