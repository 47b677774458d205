"""ticket_zoo.hub with the real huggingface_hub client over real HTTP to the in-memory test Hub
(tests/hub_server.py): push/load round trips, pinned revisions, cache, offline mode, error mapping,
retries of server errors, checksum failures, both upload paths. Nothing leaves 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import HfApi

import ticket_zoo
from ticket_zoo import cli, hub, zoo
from ticket_zoo.api import load_named, save
from ticket_zoo.errors import (
    ChecksumMismatchError,
    ConfigError,
    HubError,
    HubFileNotFoundError,
    HubOfflineError,
    HubPermissionError,
    HubRateLimitedError,
    HubRepoNotFoundError,
    HubRevisionNotFoundError,
    HubServerError,
    HubTimeoutError,
    HubUploadError,
    OutputDirError,
    TicketNotFoundError,
)
from ticket_zoo.masks import magnitude_masks
from ticket_zoo.specs import TicketSpec, parse_hub_spec
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


def test_cli_push_and_pull(hf_env, tmp_path, capsys) -> None:
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


# --- hardening: helpers ------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run_cli(capsys):
    """``run_cli(argv) -> (exit code, error line)``; asserts a failure is exactly one line of its own
    (after huggingface_hub's progress bars, if any), never a traceback."""

    def run(argv: list[str]) -> tuple[int, str]:
        capsys.readouterr()
        rc = cli.main([str(a) for a in argv])
        err = capsys.readouterr().err
        if rc == 0:
            return rc, err
        assert "Traceback" not in err
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("ticket-zoo: error: "), err
        progress = re.compile(r"\[\d+:\d\d[<,\]]")  # tqdm's "[00:00<?, ?B/s]" / "[00:00, 5MB/s]"
        assert all(progress.search(line) for line in lines[:-1]), err  # only progress bars before it
        return rc, lines[-1]

    return run


@pytest.fixture
def pushed(hf_env, tmp_path) -> tuple[Ticket, Path, str]:
    """REPO on the test Hub with one ticket at main: (ticket, its local directory, commit sha)."""
    ticket = make_ticket(0)
    directory = save(ticket, tmp_path / "local", name=ticket.name)
    return ticket, directory, hub.push(directory, REPO)


def _cached_files(cache: Path) -> list[Path]:
    """Files in the HF cache that a later load could trust: blobs and snapshot entries."""
    return [p for p in cache.rglob("*") if p.is_file() and ("blobs" in p.parts or "snapshots" in p.parts)]


# --- 1. revisions never become paths ---------------------------------------------------------------

GOOD_REVISIONS = ["main", "v1", "v1.0", "feature/x", "refs/pr/1", "release-2024.01_rc", "a@b", "0" * 40, "f" * 40]
BAD_REVISIONS = [
    "..",
    ".",
    "../../../../escaped",
    "a/../../../../../escaped",
    "refs/../../../../escaped",
    "/tmp/escaped",
    "/",
    "..\\..\\escaped",
    "a\\b",
    "C:\\x",
    "a\x00b",
    "main\n",
    "a\nb",
    "a\rb",
    "a\tb",
    "a\x7fb",
    "a\x1bb",
    "a b",
    "a\u00a0b",
    "a\u202eb",
    "a//b",
    "a/",
    "./a",
    "a/.",
    "a/./b",
    ".hidden",
    "a/.git",
    "x.lock",
    "a/b.lock/c",
    "a..b",
    "a.",
    "@",
    "a@{1}",
    "~1",
    "a^",
    "a:b",
    "a?",
    "a*",
    "a[",
    "-rf",
    "x" * 256,
    "a/" * 128 + "b",
]


@pytest.mark.parametrize("revision", GOOD_REVISIONS)
def test_validate_revision_accepts_branches_tags_and_shas(revision) -> None:
    assert hub.validate_revision(revision) == revision
    assert parse_hub_spec(f"hf-hub:{REPO}@{revision}") == TicketSpec("hub", repo_id=REPO, revision=revision)


@pytest.mark.parametrize("revision", BAD_REVISIONS, ids=lambda r: repr(r)[:24])
def test_validate_revision_rejects_paths_controls_and_git_forbidden_names(revision) -> None:
    with pytest.raises(ConfigError) as info:
        hub.validate_revision(revision)
    message = str(info.value)
    assert "\n" not in message and "\x00" not in message and len(message) < 400  # one short line
    assert "invalid Hub revision" in message


def _outside_cache(tmp_path: Path, hf_env) -> set[str]:
    """Every path under tmp_path except inside the HF home (which holds the cache)."""
    return {
        str(p.relative_to(tmp_path))
        for p in tmp_path.rglob("*")
        if hf_env.home not in p.parents and p != hf_env.home
    }


def _card(directory: Path, name: str, revision: str) -> None:
    """A published Hub catalogue card whose pinned revision is ``revision``."""
    directory.mkdir(exist_ok=True)
    shutil.copy(ROOT / "cards" / zoo.TEMPLATE_FILE, directory)
    meta = {
        "name": name,
        "arch": "lenet_300_100",
        "source": "digits",
        "density": 0.2,
        "recipe": "recipes/lenet_300_100-digits.yaml",
        "repo_id": REPO,
        "revision": revision,
        "sha256": "0" * 64,
    }
    (directory / f"{name}.md").write_text("---\n" + yaml.safe_dump(meta) + "---\n# card\n", encoding="utf-8")


def test_raw_client_would_write_outside_the_cache(hf_env, pushed, tmp_path) -> None:
    # The threat, shown with huggingface_hub itself: when the server resolves a revision, the client
    # stores refs/<revision> under its cache, wherever "../" leads. This proves the check below can see it.
    from huggingface_hub import hf_hub_download

    hf_env.server.resolve_any_revision = True
    before = _outside_cache(tmp_path, hf_env)
    hf_hub_download(REPO, "README.md", revision="../../../../escaped")
    escaped = _outside_cache(tmp_path, hf_env) - before
    if not escaped:  # huggingface_hub fixed it upstream: our own check below still has to hold
        pytest.skip("this huggingface_hub no longer writes refs/<revision> outside its cache")
    assert escaped == {"escaped"}


@pytest.mark.parametrize("revision", BAD_REVISIONS, ids=lambda r: repr(r)[:24])
def test_bad_revisions_are_refused_at_every_entry_point(hf_env, pushed, tmp_path, run_cli, monkeypatch, revision):
    _, directory, _ = pushed
    server = hf_env.server
    server.resolve_any_revision = True  # a hostile mirror: whatever reaches the client is served
    cards = tmp_path / "cards"
    _card(cards, "lenet_300_100-digits-20pct", revision)
    before = _outside_cache(tmp_path, hf_env)
    server.reset_log()
    spec = f"hf-hub:{REPO}@{revision}"

    attempts = {
        "load": lambda: ticket_zoo.load(spec),
        "load_from_hub": lambda: hub.load_from_hub(f"{REPO}@{revision}"),
        "pull": lambda: hub.pull(spec, tmp_path / "out"),
        "push revision=": lambda: hub.push(directory, REPO, revision=revision),
        "push repo@rev": lambda: hub.push(directory, f"{REPO}@{revision}"),
        "push tag=": lambda: hub.push(directory, REPO, tag=revision),
        "card": lambda: load_named("lenet_300_100-digits-20pct", cards_dir=cards),
    }
    for where, attempt in attempts.items():
        with pytest.raises(ConfigError, match="invalid Hub (revision|tag)"):
            attempt()
            pytest.fail(f"{where} accepted {revision!r}")
    monkeypatch.setenv(zoo.CARDS_ENV, str(cards))
    for argv in (
        ["pull", spec],
        ["pull", spec, "--out", tmp_path / "out2"],
        ["push", directory, "--repo", REPO, f"--revision={revision}"],
        ["push", directory, "--repo", REPO, f"--tag={revision}"],
        ["pull", "lenet_300_100-digits-20pct"],
    ):
        rc, err = run_cli(argv)
        assert rc == 2 and "invalid Hub" in err, (argv, err)
    # nothing reached the Hub, nothing was written outside the HF cache
    assert [r for r in server.requests if "/resolve/" in r[1] or "/commit/" in r[1]] == []
    assert _outside_cache(tmp_path, hf_env) == before


def test_an_invalid_commit_id_from_the_server_is_refused(hf_env, pushed, monkeypatch) -> None:
    # X-Repo-Commit becomes snapshots/<commit>/ and is reused as a revision for the card: only 40-hex
    import huggingface_hub.file_download as fd

    real = fd.get_hf_file_metadata

    def lying(*args, **kwargs):
        meta = real(*args, **kwargs)
        return type(meta)(**{**meta.__dict__, "commit_hash": "not-a-sha"})

    monkeypatch.setattr(fd, "get_hf_file_metadata", lying)
    with pytest.raises(HubError, match="invalid commit id"):
        hub.load_from_hub(REPO)


# --- 5. downloads cut short or of the wrong size ---------------------------------------------------


@pytest.mark.parametrize(("kind", "method"), [("short", "GET"), ("wrong_size", "HEAD")])
def test_a_bad_download_is_retried_once(hf_env, pushed, kind, method) -> None:
    ticket, _, _ = pushed
    server = hf_env.server
    server.fault_next(1, kind, paths_containing="/resolve/", method=method)
    server.reset_log()
    _same(hub.load_from_hub(REPO), ticket)
    assert server.count(method, "/resolve/") == 2  # one bad answer, one good


@pytest.mark.parametrize(("kind", "method"), [("short", "GET"), ("wrong_size", "HEAD")])
def test_a_persistently_bad_download_is_one_clear_error_and_nothing_is_cached(
    hf_env, pushed, run_cli, kind, method
) -> None:
    server = hf_env.server
    server.fault_next(100, kind, paths_containing="/resolve/", method=method)
    server.reset_log()
    start = time.monotonic()
    with pytest.raises(ChecksumMismatchError, match="also when retried; nothing was kept in the cache"):
        hub.load_from_hub(REPO)
    assert time.monotonic() - start < 15
    assert server.count("GET", "/resolve/") <= 2  # bounded: never huggingface_hub's 6 resumes per attempt
    assert _cached_files(hf_env.cache_dir) == []
    rc, err = run_cli(["pull", f"hf-hub:{REPO}"])
    assert rc == 2 and "the download" in err
    assert _cached_files(hf_env.cache_dir) == []


# --- 6. the card is verified like the ticket -------------------------------------------------------


def test_a_corrupt_card_is_rejected_evicted_and_pulled_again(hf_env, pushed, tmp_path, run_cli) -> None:
    _, directory, sha = pushed
    server = hf_env.server
    server.corrupt_paths = {"README.md"}
    with pytest.raises(ChecksumMismatchError, match="README.md has git blob sha1"):
        hub.pull(f"hf-hub:{REPO}", tmp_path / "out")
    assert not (tmp_path / "out" / "README.md").exists()
    (snapshot,) = hf_env.cache_dir.rglob(f"snapshots/{sha}")
    assert not (snapshot / "README.md").exists()  # evicted: not trusted by the next pull
    good = server.repo(REPO).commits[sha].files["README.md"]  # the pushed card: it names the repo, not the folder
    assert good != (directory / "README.md").read_bytes() and f"hf-hub:{REPO}@main".encode() in good
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # what the server sent
    assert all(p.read_bytes() != bytes(bad) for p in _cached_files(hf_env.cache_dir))
    rc, err = run_cli(["pull", f"hf-hub:{REPO}", "--out", tmp_path / "cli"])
    assert rc == 2 and "README.md" in err
    server.corrupt_paths = set()
    out = hub.pull(f"hf-hub:{REPO}", tmp_path / "out")
    assert (out / "README.md").read_bytes() == good
    assert (snapshot / "README.md").read_bytes() == good


# --- 7. failing uploads ------------------------------------------------------------------------------


@pytest.fixture
def fast_lfs_backoff(monkeypatch):
    """huggingface_hub's LFS calls retry 5 times with 1-8 s pauses (23 s); same attempts, no pauses."""
    import huggingface_hub.lfs as lfs

    monkeypatch.setattr(lfs, "http_backoff", functools.partial(lfs.http_backoff, base_wait_time=0, max_wait_time=0))


@pytest.mark.parametrize(
    ("path", "method"), [("/_lfs/", "PUT"), ("/info/lfs/objects/batch", "POST"), ("/verify", "POST")]
)
def test_a_failing_lfs_upload_is_an_upload_error(hf_env, pushed, fast_lfs_backoff, run_cli, path, method) -> None:
    server = hf_env.server
    head = server.repo(REPO).branches["main"]
    server.fail_next(100, status=500, paths_containing=path, method=method)
    server.reset_log()
    with pytest.raises(HubUploadError, match="HTTP 500.*the commit was not made"):
        hub.push(make_ticket(1), REPO)
    assert server.count(method, path) == 6  # huggingface_hub's own bounded retries, not more
    assert server.count("POST", "/commit/") == 0 and server.repo(REPO).branches["main"] == head
    directory = save(make_ticket(2), hf_env.home.parent / "t2")
    rc, err = run_cli(["push", directory, "--repo", REPO])
    assert rc == 2 and "uploading" in err and "RuntimeError" not in err


@pytest.mark.parametrize("status", [400, 409, 422])
def test_a_refused_commit_is_an_upload_error(hf_env, pushed, status) -> None:
    hf_env.server.fail_next(1, status=status, paths_containing="/commit/", method="POST")
    with pytest.raises(HubUploadError, match=f"refused the commit to {REPO}@main \\(HTTP {status}\\): injected failure"):
        hub.push(make_ticket(1), REPO)


# --- 8. every Hub call has a time limit -------------------------------------------------------------


@pytest.fixture
def short_timeout(monkeypatch):
    monkeypatch.setenv(hub.TIMEOUT_ENV, "1")


@pytest.mark.parametrize(
    ("kind", "method"), [("hang", "HEAD"), ("hang", "GET"), ("stall", "GET"), ("trickle", "GET")]
)
def test_a_hanging_download_times_out(hf_env, pushed, short_timeout, run_cli, kind, method) -> None:
    server = hf_env.server
    server.fault_next(100, kind, paths_containing="/resolve/", method=method, seconds=30)
    server.reset_log()
    start = time.monotonic()
    with pytest.raises(HubTimeoutError, match=rf"did not finish within 1 s \({method} .*, 2 attempts\).*TICKET_ZOO_HUB_TIMEOUT"):
        hub.load_from_hub(REPO)
    assert time.monotonic() - start < 12  # two attempts of ~1 s (+ the client's 1 s resume pause)
    assert server.count(method, "/resolve/") == 2  # retried once, not more
    assert _cached_files(hf_env.cache_dir) == []
    start = time.monotonic()
    rc, err = run_cli(["pull", f"hf-hub:{REPO}"])
    assert rc == 2 and "did not finish within 1 s" in err and time.monotonic() - start < 12


def test_one_hang_is_retried_and_the_download_succeeds(hf_env, pushed) -> None:
    ticket, _, _ = pushed
    hf_env.server.fault_next(1, "hang", paths_containing="/resolve/", method="HEAD", seconds=30)
    start = time.monotonic()
    _same(hub.load_from_hub(REPO, timeout=2), ticket)
    assert time.monotonic() - start < 8


def test_a_hanging_commit_times_out_and_is_not_retried(hf_env, pushed, run_cli, monkeypatch) -> None:
    server = hf_env.server
    head = server.repo(REPO).branches["main"]
    server.fault_next(100, "hang", paths_containing="/commit/", method="POST", seconds=30)
    server.reset_log()
    start = time.monotonic()
    with pytest.raises(HubTimeoutError, match="commit to .* within 3 s \\(POST .*may or may not have been made"):
        hub.push(make_ticket(1), REPO, timeout=3)
    assert time.monotonic() - start < 12
    assert server.count("POST", "/commit/") == 1  # a commit that timed out may have been made: never resent
    assert server.repo(REPO).branches["main"] == head
    monkeypatch.setenv(hub.TIMEOUT_ENV, "3")
    directory = save(make_ticket(2), hf_env.home.parent / "t2")
    start = time.monotonic()
    rc, err = run_cli(["push", directory, "--repo", REPO])
    assert rc == 2 and "did not finish within 3 s" in err and time.monotonic() - start < 12
    assert server.count("POST", "/commit/") == 2


def test_a_hanging_api_call_times_out(hf_env, run_cli, tmp_path, short_timeout) -> None:
    hf_env.server.fault_next(100, "hang", paths_containing="/api/repos/create", seconds=30)
    start = time.monotonic()
    with pytest.raises(HubTimeoutError, match="creating tester/new on the Hub did not finish"):
        hub.push(make_ticket(1), "tester/new")
    assert time.monotonic() - start < 8
    assert hf_env.server.count("POST", "/api/repos/create") == 2  # idempotent: retried once


@pytest.mark.parametrize("value", ["abc", "0", "-1", "inf", "nan"])
def test_the_time_limit_is_validated(monkeypatch, value) -> None:
    monkeypatch.setenv(hub.TIMEOUT_ENV, value)
    with pytest.raises(ConfigError, match=hub.TIMEOUT_ENV):
        hub.hub_timeout()
    with pytest.raises(ConfigError, match="timeout"):
        hub.hub_timeout(float(value) if value != "abc" else -5)
    monkeypatch.setenv(hub.TIMEOUT_ENV, "7.5")
    assert hub.hub_timeout() == 7.5 and hub.hub_timeout(3) == 3.0
    monkeypatch.delenv(hub.TIMEOUT_ENV)
    assert hub.hub_timeout() == hub.DEFAULT_TIMEOUT


def test_requests_outside_ticket_zoo_calls_are_left_alone(hf_env, pushed, short_timeout) -> None:
    # the guarded client is shared with other huggingface_hub users: no limit on their requests
    from huggingface_hub import hf_hub_download

    hub.load_from_hub(REPO)  # installs the guard; its time limit must end with the call
    hf_env.server.fault_next(1, "stall", paths_containing="/resolve/", method="GET", seconds=1.5)
    start = time.monotonic()
    hf_hub_download(REPO, "README.md", force_download=True)  # the client resumes after the stall
    assert time.monotonic() - start >= 1.4  # waited for the server, not cut at our 1 s limit


# --- 9. each HTTP status gets its own error ---------------------------------------------------------

STATUS_CASES = [
    (401, None, HubPermissionError, "HTTP 401.*log in"),
    (403, None, HubPermissionError, "HTTP 403.*log in"),
    (404, None, None, "HTTP 404"),
    (429, {"Retry-After": "30"}, HubRateLimitedError, "rate-limited.*retry after 30 s"),
    (500, None, HubServerError, "HTTP 500"),
    (503, None, HubServerError, "HTTP 503"),
]


@pytest.fixture
def quick_rate_limits(monkeypatch):
    monkeypatch.setattr(hub, "RATE_LIMIT_RETRIES", 1)
    monkeypatch.setattr(hub, "RATE_LIMIT_MAX_WAIT", 0.0)


@pytest.mark.parametrize(("status", "headers", "error", "match"), STATUS_CASES)
def test_each_status_on_download_has_its_own_error(
    hf_env, pushed, quick_rate_limits, run_cli, status, headers, error, match
) -> None:
    server = hf_env.server
    # 5xx on the GET (the client's HEAD back-off for 5xx alone takes 23 s); the rest on the first request
    method = "GET" if status >= 500 else "HEAD"
    error = error or HubFileNotFoundError
    for attempt in ("api", "cli"):
        server.fail_next(100, status, paths_containing="/resolve/", method=method, headers=headers)
        server.reset_log()
        if attempt == "api":
            with pytest.raises(error, match=match) as info:
                hub.load_from_hub(REPO)
            message = str(info.value)
        else:
            rc, message = run_cli(["pull", f"hf-hub:{REPO}"])
            assert rc == 2
        assert "cannot reach" not in message and "check your connection" not in message
        attempts = server.count(method, "/resolve/")
        assert attempts == {429: 2, 500: 4, 503: 4}.get(status, 1), attempts  # bounded retries
        server.clear_failures()


@pytest.mark.parametrize(("status", "headers", "error", "match"), STATUS_CASES)
def test_each_status_on_push_has_its_own_error(
    hf_env, pushed, quick_rate_limits, run_cli, status, headers, error, match
) -> None:
    server = hf_env.server
    error = error or HubRepoNotFoundError
    head = server.repo(REPO).branches["main"]
    for attempt in ("api", "cli"):
        server.fail_next(100, status, paths_containing="/commit/", method="POST", headers=headers)
        server.reset_log()
        if attempt == "api":
            with pytest.raises(error, match=match) as info:
                hub.push(make_ticket(1), REPO)
            message = str(info.value)
        else:
            rc, message = run_cli(["push", save(make_ticket(1), hf_env.home.parent / "t1"), "--repo", REPO])
            assert rc == 2
        assert "cannot reach" not in message
        if status in (401, 403):
            assert "write" in message
        attempts = server.count("POST", "/commit/")
        assert attempts == {429: 2, 500: 4, 503: 4}.get(status, 1), attempts
        assert server.repo(REPO).branches["main"] == head
        server.clear_failures()


def test_a_rate_limit_is_waited_out_as_asked(hf_env, pushed) -> None:
    ticket, _, _ = pushed
    server = hf_env.server
    server.fail_next(1, 429, paths_containing="/resolve/", method="GET", headers={"Retry-After": "1"})
    server.fail_next(1, 429, paths_containing="/commit/", method="POST", headers={"Retry-After": "1"})
    start = time.monotonic()
    _same(hub.load_from_hub(REPO), ticket)
    assert time.monotonic() - start >= 1.0  # waited as the Hub asked before asking again
    start = time.monotonic()
    sha = hub.push(make_ticket(1), REPO)
    assert time.monotonic() - start >= 1.0 and server.repo(REPO).branches["main"] == sha


def test_a_huge_retry_after_is_capped(hf_env, pushed, monkeypatch) -> None:
    monkeypatch.setattr(hub, "RATE_LIMIT_MAX_WAIT", 0.5)
    monkeypatch.setattr(hub, "RATE_LIMIT_RETRIES", 2)
    hf_env.server.fail_next(100, 429, paths_containing="/commit/", method="POST", headers={"Retry-After": "3600"})
    hf_env.server.reset_log()
    start = time.monotonic()
    with pytest.raises(HubRateLimitedError, match="retry after 3600 s"):
        hub.push(make_ticket(1), REPO)
    assert time.monotonic() - start < 5  # two capped waits, not an hour
    assert hf_env.server.count("POST", "/commit/") == 3


# --- pull --out ------------------------------------------------------------------------------------


def _bad_outs(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "afile").write_text("x")
    if os.geteuid() != 0:
        readonly = tmp_path / "readonly"
        readonly.mkdir()
        readonly.chmod(0o555)
    else:  # root writes anywhere permissions allow; sysfs refuses new files even to root
        readonly = Path("/sys")
    return {
        "an existing file": tmp_path / "afile",
        "below a file": tmp_path / "afile" / "sub",
        "read-only": readonly,
        "/proc": Path("/proc/x"),
    }


@pytest.mark.parametrize("case", ["an existing file", "below a file", "read-only", "/proc"])
def test_pull_into_a_bad_out_is_one_line(hf_env, pushed, tmp_path, run_cli, case) -> None:
    out = _bad_outs(tmp_path)[case]
    if case == "read-only" and os.access(out, os.W_OK) and os.geteuid() != 0:
        pytest.skip("this file system ignores permissions")
    hf_env.server.reset_log()
    with pytest.raises(OutputDirError, match="--out"):
        hub.pull(f"hf-hub:{REPO}", out)
    rc, err = run_cli(["pull", f"hf-hub:{REPO}", "--out", out])
    assert rc == 2 and "--out" in err
    assert hf_env.server.count("GET") == 0  # refused before downloading anything
    rc, err = run_cli(["pull", "lenet_300_100-digits04-5pct", "--out", out])  # an embedded ticket
    assert rc == 2 and "--out" in err


def test_pull_never_silently_replaces_a_different_ticket(hf_env, pushed, tmp_path, run_cli) -> None:
    _, directory, sha1 = pushed
    first = (directory / "ticket.safetensors").read_bytes()
    out = tmp_path / "run" / "level_01"
    assert hub.pull(f"hf-hub:{REPO}@{sha1}", out) == out
    assert hub.pull(f"hf-hub:{REPO}@{sha1}", out) == out  # the same bytes again: fine
    sha2 = hub.push(make_ticket(7), REPO)
    with pytest.raises(OutputDirError, match="already holds a different ticket.*--force"):
        hub.pull(f"hf-hub:{REPO}@{sha2}", out)
    rc, err = run_cli(["pull", f"hf-hub:{REPO}@{sha2}", "--out", out])
    assert rc == 2 and "different ticket" in err and "lenet_300_100" in err
    assert (out / "ticket.safetensors").read_bytes() == first  # untouched
    rc, _ = run_cli(["pull", f"hf-hub:{REPO}@{sha2}", "--out", out, "--force"])
    assert rc == 0
    second = hf_env.server.repo(REPO).commits[sha2].files["ticket.safetensors"]
    assert (out / "ticket.safetensors").read_bytes() == second
    # the embedded catalogue path refuses the same way
    rc, err = run_cli(["pull", "lenet_300_100-digits04-5pct", "--out", out])
    assert rc == 2 and "different ticket" in err
    assert (out / "ticket.safetensors").read_bytes() == second
    assert hub.pull("lenet_300_100-digits04-5pct", out, force=True) == out
    assert hub.pull("lenet_300_100-digits04-5pct", out) == out  # idempotent


def test_lfs_batch_object_errors_are_an_upload_error(hf_env, pushed, run_cli, monkeypatch) -> None:
    from tests import hub_server

    def refuse(self, repo_type, repo_id):  # the batch answers 200 but refuses each object
        objects = [
            {"oid": o["oid"], "size": o["size"], "error": {"code": 507, "message": "LFS quota exceeded"}}
            for o in self._payload()["objects"]
        ]
        return 200, {"transfer": "basic", "objects": objects}

    monkeypatch.setattr(hub_server._Handler, "_lfs_batch", refuse)
    head = hf_env.server.repo(REPO).branches["main"]
    with pytest.raises(HubUploadError, match="LFS quota exceeded"):
        hub.push(make_ticket(1), REPO)
    rc, err = run_cli(["push", save(make_ticket(1), hf_env.home.parent / "t1"), "--repo", REPO])
    assert rc == 2 and "LFS quota exceeded" in err
    assert hf_env.server.repo(REPO).branches["main"] == head
