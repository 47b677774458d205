"""ticket_zoo.hub with the real huggingface_hub client over real HTTP to the in-memory test Hub
(tests/hub_server.py): push/load round trips, pinned revisions, cache, offline mode, error mapping,
retries of server errors, checksum failures, both upload paths. Nothing leaves 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi

import ticket_zoo
from ticket_zoo import cli, hub
from ticket_zoo.api import save
from ticket_zoo.errors import (
    ChecksumMismatchError,
    ConfigError,
    HubFileNotFoundError,
    HubOfflineError,
    HubRepoNotFoundError,
    HubRevisionNotFoundError,
    HubServerError,
    TicketNotFoundError,
)
from ticket_zoo.masks import magnitude_masks
from ticket_zoo.ticket import Ticket, create_model

REPO = "tester/lenet-digits"
KWARGS = {"num_classes": 10, "in_chans": 1, "img_size": 8}


def make_ticket(seed: int, density: float = 0.2, arch: str = "lenet_300_100") -> Ticket:
    """A real (small) ticket: seeded init, global magnitude masks over the hidden layers."""
    torch.manual_seed(seed)
    model = create_model(arch, KWARGS)
    weights = {n: p.detach() for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1}
    masks = magnitude_masks(weights, density)
    meta = {"name": f"{arch}-digits-{round(100 * density)}pct", "source": "digits", "seed": seed}
    return Ticket.from_model(model, masks, arch=arch, arch_kwargs=KWARGS, meta=meta)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(hub, "RETRY_DELAYS", (0.0, 0.0, 0.0))


def _same(a: Ticket, b: Ticket) -> None:
    assert a.arch == b.arch and a.arch_kwargs == b.arch_kwargs
    assert set(a.masks) == set(b.masks) and set(a.init) == set(b.init)
    for name in a.masks:
        assert torch.equal(a.masks[name], b.masks[name])
    for name in a.init:
        assert torch.equal(a.init[name], b.init[name])


@pytest.mark.parametrize("mode", ["lfs", "regular"])
def test_push_load_round_trip_is_bit_exact(hf_env, tmp_path, mode) -> None:
    server = hf_env.server
    if mode == "regular":
        server.all_regular = True
        hf_env.set_xet(True)  # all-regular uploads never use Xet
    ticket = make_ticket(0)
    directory = save(ticket, tmp_path / "t", name=ticket.name)
    (tmp_path / "t" / "done.json").write_text('{"row": {}}\n')
    sha = hub.push(directory, REPO)

    commit = server.repo(REPO).commits[sha]
    assert {"ticket.safetensors", "README.md", "done.json"} <= set(commit.files)
    assert commit.files["ticket.safetensors"] == (directory / "ticket.safetensors").read_bytes()
    assert ("ticket.safetensors" in commit.lfs) == (mode == "lfs")

    loaded = ticket_zoo.load(f"hf-hub:{REPO}")
    _same(ticket, loaded)
    (cached,) = hf_env.cache_dir.rglob("snapshots/*/ticket.safetensors")
    assert cached.read_bytes() == (directory / "ticket.safetensors").read_bytes()  # bit-exact transfer
    assert loaded.meta["hub"] == {"repo_id": REPO, "revision": "main", "commit": sha}


def test_push_a_ticket_object_renders_card_with_repo_and_extra_files_from_run(hf_env, tmp_path) -> None:
    run = tmp_path / "run"
    level = save(make_ticket(1), run / "level_03")
    (run / "config.yaml").write_text("arch: lenet_300_100\n")
    (run / "summary.json").write_text("{}\n")
    sha = hub.push(level, REPO)
    files = hf_env.server.repo(REPO).commits[sha].files
    assert files["config.yaml"] == b"arch: lenet_300_100\n" and "summary.json" in files

    sha2 = hub.push(make_ticket(2), "tester/obj")
    readme = hf_env.server.repo("tester/obj").commits[sha2].files["README.md"].decode()
    assert "hf-hub:tester/obj" in readme and "library_name: ticket-zoo" in readme


def test_pinned_revisions_tag_sha_and_branch(hf_env, tmp_path) -> None:
    v1, v2 = make_ticket(1), make_ticket(2)
    sha1 = hub.push(v1, REPO, tag="v1")
    sha2 = hub.push(v2, REPO)
    assert sha1 != sha2
    _same(hub.load_from_hub(f"{REPO}@v1"), v1)
    _same(hub.load_from_hub(f"{REPO}@{sha1}"), v1)
    _same(hub.load_from_hub(REPO), v2)
    assert hub.load_from_hub(f"{REPO}@v1").meta["hub"]["commit"] == sha1
    # a branch push leaves main alone
    v3 = make_ticket(3)
    sha3 = hub.push(v3, REPO, revision="dev")
    _same(hub.load_from_hub(f"{REPO}@dev"), v3)
    assert hf_env.server.repo(REPO).branches == {"main": sha2, "dev": sha3}
    # a tag is never moved
    with pytest.raises(ticket_zoo.HubError, match="already points"):
        hub.push(v3, REPO, revision="dev", tag="v1")


def test_second_load_downloads_nothing(hf_env) -> None:
    sha = hub.push(make_ticket(0), REPO)
    server = hf_env.server
    server.reset_log()
    hub.load_from_hub(REPO)
    hub.load_from_hub(REPO)
    assert server.count("GET", "/resolve/") == 1  # the bytes travel once
    hub.load_from_hub(f"{REPO}@{sha}")  # pinned to a commit in the cache: no request at all
    assert server.count("GET", "/resolve/") == 1 and server.count("HEAD", f"/resolve/{sha}") == 0


def test_offline_uses_cache_and_explains_when_uncached(hf_env) -> None:
    ticket = make_ticket(0)
    hub.push(ticket, REPO)
    hub.push(make_ticket(4), "tester/other")
    hub.load_from_hub(REPO)  # cache it
    hf_env.set_offline(True)
    hf_env.server.reset_log()
    _same(hub.load_from_hub(REPO), ticket)
    with pytest.raises(HubOfflineError, match="HF_HUB_OFFLINE"):
        hub.load_from_hub("tester/other")
    assert hf_env.server.requests == []


def test_missing_repo_revision_and_file(hf_env) -> None:
    hub.push(make_ticket(0), REPO)
    with pytest.raises(HubRepoNotFoundError, match="check the id"):
        hub.load_from_hub("tester/nope")
    with pytest.raises(HubRevisionNotFoundError, match="'v9'"):
        hub.load_from_hub(f"{REPO}@v9")
    HfApi(endpoint=hf_env.url, token=hf_env.token).create_repo("tester/empty")
    with pytest.raises(HubFileNotFoundError, match="ticket.safetensors"):
        hub.load_from_hub("tester/empty")
    with pytest.raises(ConfigError):
        hub.load_from_hub("not a repo id!")


def test_server_errors_are_retried_then_reported(hf_env) -> None:
    ticket = make_ticket(0)
    hub.push(ticket, REPO)
    server = hf_env.server
    server.fail_next(2, status=500, paths_containing="/resolve/", method="GET")
    server.reset_log()
    _same(hub.load_from_hub(REPO), ticket)
    assert server.count("GET", "/resolve/") == 3  # two failures, then success

    # a Hub that keeps failing: bounded attempts, then a clear error (nothing cached under a new commit)
    sha = hub.push(make_ticket(5), REPO)
    server.fail_next(50, status=503, paths_containing="/resolve/", method="GET")
    server.reset_log()
    with pytest.raises(HubServerError, match="503"):
        hub.load_from_hub(f"{REPO}@{sha}")
    assert server.count("GET", "/resolve/") == len(hub.RETRY_DELAYS) + 1


def test_commit_is_retried_on_server_errors(hf_env) -> None:
    server = hf_env.server
    hub.push(make_ticket(0), REPO)
    server.fail_next(2, status=502, paths_containing="/commit/", method="POST")
    sha = hub.push(make_ticket(1), REPO)
    assert server.repo(REPO).branches["main"] == sha
    server.fail_next(10, status=500, paths_containing="/commit/", method="POST")
    with pytest.raises(HubServerError, match="500"):
        hub.push(make_ticket(2), REPO)
    assert server.repo(REPO).branches["main"] == sha


def _blobs(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("blobs/*") if p.is_file()]


@pytest.mark.parametrize("mode", ["lfs", "regular"])
def test_corrupt_download_is_rejected_and_not_cached(hf_env, mode) -> None:
    server = hf_env.server
    if mode == "regular":
        server.all_regular = True
        hf_env.set_xet(True)
    ticket = make_ticket(0)
    hub.push(ticket, REPO)
    server.corrupt_downloads = True
    with pytest.raises(ChecksumMismatchError, match="removed from the cache"):
        hub.load_from_hub(REPO)
    assert _blobs(hf_env.cache_dir) == []  # the bad bytes are gone, not left as a good cache entry
    assert not list(hf_env.cache_dir.rglob("snapshots/*/ticket.safetensors"))
    server.corrupt_downloads = False
    server.reset_log()
    _same(hub.load_from_hub(REPO), ticket)
    assert server.count("GET", "/resolve/") == 1  # downloaded again


def test_corruption_is_caught_without_symlinks_too(hf_env, monkeypatch) -> None:
    # Where the cache holds copies (no symlinks), the Hub's digest is asked for instead of read from
    # the blob name.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_SYMLINKS", True)
    ticket = make_ticket(0)
    hub.push(ticket, REPO)
    hf_env.server.corrupt_downloads = True
    with pytest.raises(ChecksumMismatchError, match="the Hub reports"):
        hub.load_from_hub(REPO)
    (snapshot,) = hf_env.cache_dir.rglob("snapshots/*")
    assert not (snapshot / "ticket.safetensors").exists()
    hf_env.server.corrupt_downloads = False
    loaded = hub.load_from_hub(REPO)
    assert not (snapshot / "ticket.safetensors").is_symlink()  # really the copy layout
    _same(loaded, ticket)


def test_catalogue_pin_mismatch_is_a_checksum_error(hf_env) -> None:
    ticket = make_ticket(0)
    sha = hub.push(ticket, REPO)
    good = hashlib.sha256(hf_env.server.repo(REPO).commits[sha].files["ticket.safetensors"]).hexdigest()
    _same(hub.load_from_hub(f"{REPO}@{sha}", sha256=good), ticket)
    with pytest.raises(ChecksumMismatchError, match="catalogue pins"):
        hub.load_from_hub(f"{REPO}@{sha}", sha256="0" * 64)


@pytest.mark.parametrize("all_regular", [False, True])
def test_repush_unchanged_makes_no_commit(hf_env, tmp_path, all_regular) -> None:
    server = hf_env.server
    server.all_regular = all_regular
    directory = save(make_ticket(0), tmp_path / "t")
    sha = hub.push(directory, REPO)
    n = len(server.repo(REPO).commits)
    assert hub.push(directory, REPO) == sha
    assert len(server.repo(REPO).commits) == n


def test_push_rejects_a_directory_without_ticket(hf_env, tmp_path) -> None:
    with pytest.raises(TicketNotFoundError, match="ticket.safetensors"):
        hub.push(tmp_path, REPO)


def test_cli_push_and_pull(hf_env, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(cli, "_STAGES", ("zoo", "hub"))  # only the stages this file tests
    ticket = make_ticket(0)
    directory = save(ticket, tmp_path / "t")
    assert cli.main(["push", str(directory), "--repo", REPO, "--tag", "v1"]) == 0
    sha = hf_env.server.repo(REPO).tags["v1"]
    assert sha in capsys.readouterr().out
    out = tmp_path / "pulled"
    assert cli.main(["pull", f"hf-hub:{REPO}@v1", "--out", str(out)]) == 0
    assert (out / "ticket.safetensors").read_bytes() == (directory / "ticket.safetensors").read_bytes()
    assert (out / "README.md").read_text().startswith("---")
    # without --out: the verified snapshot directory in the HF cache
    assert cli.main(["pull", f"hf-hub:{REPO}"]) == 0
    cached = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert cached.is_relative_to(hf_env.cache_dir) and (cached / "ticket.safetensors").is_file()
    assert cli.main(["pull", "hf-hub:tester/nope"]) == 2
    assert "not found" in capsys.readouterr().err
    assert os.environ["HF_ENDPOINT"] == hf_env.url
