"""The test Hub (tests/hub_server.py) driven by the real huggingface_hub client, so the project's
Hub tests rest on a server that the client really accepts. Everything stays on 127.0.0.1."""

from __future__ import annotations

import hashlib
import random
import urllib.request
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.hub_server import HubServer, git_blob_sha1, parse_range

REPO = "tester/tickets"
README = "---\nlicense: mit\ntags:\n- lottery-ticket\n---\n# A ticket\n"


def test_installed_client_is_in_the_range_this_server_models() -> None:
    # HUB_PROTOCOL.md and this server follow huggingface_hub 2.x: the project's requirement must keep
    # a 3.x out (a major bump must be re-checked against the protocol), and the installed client must
    # satisfy that requirement, whatever 2.x release it is.
    import tomllib
    from packaging.requirements import Requirement
    from packaging.version import Version

    with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    (req,) = [Requirement(d) for d in deps if Requirement(d).name == "huggingface-hub"]
    assert Version(huggingface_hub.__version__) in req.specifier
    assert Version("3.0") not in req.specifier and Version("2.0") in req.specifier


def _folder(root: Path, version: int) -> tuple[Path, dict[str, bytes]]:
    """A README with YAML front matter and ~100 kB of seeded random bytes (different per version)."""
    folder = root / f"v{version}"
    folder.mkdir()
    files = {
        "README.md": README.encode(),
        "weights.bin": random.Random(version).randbytes(100_000),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder, files


def _push(api: HfApi, root: Path, version: int) -> tuple[str, dict[str, bytes]]:
    folder, files = _folder(root, version)
    info = api.upload_folder(repo_id=REPO, folder_path=folder, commit_message=f"v{version}")
    return info.oid, files


@pytest.fixture
def api(hf_env) -> HfApi:
    api = HfApi(endpoint=hf_env.url, token=hf_env.token)
    api.create_repo(REPO)
    return api


def test_create_repo_conflict_and_exist_ok(hf_env) -> None:
    api = HfApi(endpoint=hf_env.url, token=hf_env.token)
    url = api.create_repo(REPO)
    assert url.repo_id == REPO and url.startswith(hf_env.url)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO)
    assert err.value.response.status_code == 409
    assert api.create_repo(REPO, exist_ok=True).repo_id == REPO
    # a new repo starts with one commit on main, like the real Hub
    assert [f.rfilename for f in api.model_info(REPO).siblings] == [".gitattributes"]
    # no namespace -> the token owner's, as on huggingface.co
    assert api.create_repo("solo").repo_id == "user/solo"
    assert api.whoami()["name"] == "user"


def test_xet_enabled_with_lfs_answers_fails_fast(hf_env, api, tmp_path) -> None:
    # The server has no Xet storage: with Xet on, "lfs" files must not be uploaded (all_regular instead).
    hf_env.set_xet(True)
    before = len(hf_env.server.repo(REPO).commits)
    with pytest.raises(ConnectionError, match="xet-write-token"):
        _push(api, tmp_path, 1)
    assert len(hf_env.server.repo(REPO).commits) == before


@pytest.mark.parametrize("mode", ["lfs", "regular"])
def test_upload_folder_then_download_identical_bytes(hf_env, api, tmp_path, mode) -> None:
    server = hf_env.server
    if mode == "regular":
        server.all_regular = True
        hf_env.set_xet(True)  # all-regular uploads never ask for Xet, even when it is enabled
    sha, files = _push(api, tmp_path, 1)

    commit = server.repo(REPO).commits[sha]
    assert set(commit.files) == {".gitattributes", "README.md", "weights.bin"}
    assert server.count("POST", "/api/validate-yaml") >= 1  # README.md in the commit triggers the check
    assert server.count("GET", "xet-write-token") == 0
    if mode == "lfs":
        assert commit.lfs == {"weights.bin"}
        assert server.count("PUT", "/_lfs/") == 1
        assert hashlib.sha256(files["weights.bin"]).hexdigest() in server.lfs_objects
    else:
        assert commit.lfs == frozenset() and server.count("PUT") == 0

    for name, data in files.items():
        path = hf_hub_download(REPO, name)
        assert Path(path).read_bytes() == data
        assert Path(path).is_relative_to(hf_env.cache_dir)
    info = api.model_info(REPO)
    assert info.sha == sha
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert sizes["weights.bin"] == 100_000 and sizes["README.md"] == len(README.encode())
    assert (info.siblings[-1].lfs is not None) == (mode == "lfs")


def test_second_download_is_served_from_cache(hf_env, api, tmp_path) -> None:
    _, files = _push(api, tmp_path, 1)
    hf_env.server.reset_log()
    first = hf_hub_download(REPO, "weights.bin")
    second = hf_hub_download(REPO, "weights.bin")
    assert first == second and Path(second).read_bytes() == files["weights.bin"]
    # each call checks the ETag with a HEAD, but the bytes travel once
    assert hf_env.server.count("GET", "/resolve/main/weights.bin") == 1
    assert hf_env.server.count("HEAD", "/resolve/main/weights.bin") == 2


def test_tags_and_revisions(hf_env, api, tmp_path) -> None:
    sha1, v1 = _push(api, tmp_path, 1)
    api.create_tag(REPO, tag="v1")
    sha2, v2 = _push(api, tmp_path, 2)
    assert sha1 != sha2 and v1["weights.bin"] != v2["weights.bin"]

    assert Path(hf_hub_download(REPO, "weights.bin", revision="v1")).read_bytes() == v1["weights.bin"]
    assert Path(hf_hub_download(REPO, "weights.bin", revision=sha1)).read_bytes() == v1["weights.bin"]
    assert Path(hf_hub_download(REPO, "weights.bin")).read_bytes() == v2["weights.bin"]

    refs = api.list_repo_refs(REPO)
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", sha1)]
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", sha2)]
    assert api.model_info(REPO, revision="v1").sha == sha1
    assert [c.commit_id for c in api.list_repo_commits(REPO)][:2] == [sha2, sha1]
    with pytest.raises(HfHubHTTPError) as err:
        api.create_tag(REPO, tag="v1")
    assert err.value.response.status_code == 409

    api.create_branch(REPO, branch="dev", revision="v1")
    assert Path(hf_hub_download(REPO, "weights.bin", revision="dev")).read_bytes() == v1["weights.bin"]


@pytest.mark.parametrize("all_regular", [False, True])
def test_unchanged_reupload_makes_no_commit(hf_env, api, tmp_path, all_regular) -> None:
    hf_env.server.all_regular = all_regular
    folder, _ = _folder(tmp_path, 1)
    first = api.upload_folder(repo_id=REPO, folder_path=folder)
    n_commits = len(hf_env.server.repo(REPO).commits)
    hf_env.server.reset_log()

    again = api.upload_folder(repo_id=REPO, folder_path=folder)
    assert again.oid == first.oid == api.model_info(REPO).sha
    assert len(hf_env.server.repo(REPO).commits) == n_commits
    assert hf_env.server.count("POST", "/commit/") == 0
    assert hf_env.server.count("PUT") == 0  # nothing re-uploaded


def test_changed_file_is_the_only_one_sent(hf_env, api, tmp_path) -> None:
    folder, _ = _folder(tmp_path, 1)
    api.upload_folder(repo_id=REPO, folder_path=folder)
    (folder / "README.md").write_text(README + "more\n")
    hf_env.server.reset_log()
    info = api.upload_folder(repo_id=REPO, folder_path=folder)
    commit = hf_env.server.repo(REPO).commits[info.oid]
    assert commit.files["README.md"].endswith(b"more\n")
    assert hf_env.server.count("PUT") == 0  # the unchanged LFS file is skipped


def test_error_classes(hf_env, api, tmp_path) -> None:
    _push(api, tmp_path, 1)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("tester/missing", "README.md")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("tester/missing")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "README.md", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="no-such-branch")
    with pytest.raises(RemoteEntryNotFoundError) as err:
        hf_hub_download(REPO, "missing.bin")
    assert isinstance(err.value, EntryNotFoundError)
    # the miss is cached under the commit the server named in X-Repo-Commit
    sha = api.model_info(REPO).sha
    assert (hf_env.cache_dir / "models--tester--tickets" / ".no_exist" / sha / "missing.bin").exists()


def test_head_5xx_without_cache_is_retried(hf_env, api, tmp_path) -> None:
    _, files = _push(api, tmp_path, 1)
    hf_env.server.reset_log()
    # 1st HEAD (no retry) fails -> no cached copy -> HEAD again with backoff: fails, sleeps 1 s, succeeds
    hf_env.server.fail_next(2, status=503, paths_containing="/resolve/", method="HEAD")
    path = hf_hub_download(REPO, "weights.bin")
    assert Path(path).read_bytes() == files["weights.bin"]
    assert hf_env.server.count("HEAD", "/resolve/") == 3


def test_head_5xx_with_cache_falls_back_to_cache(hf_env, api, tmp_path) -> None:
    _push(api, tmp_path, 1)
    cached = hf_hub_download(REPO, "weights.bin")
    hf_env.server.reset_log()
    hf_env.server.fail_next(1, status=500, paths_containing="/resolve/", method="HEAD")
    assert hf_hub_download(REPO, "weights.bin") == cached
    assert hf_env.server.requests == [("HEAD", f"/{REPO}/resolve/main/weights.bin")]  # no retry, no GET


def test_get_5xx_is_not_retried(hf_env, api, tmp_path) -> None:
    _, files = _push(api, tmp_path, 1)
    hf_env.server.reset_log()
    hf_env.server.fail_next(1, status=500, paths_containing="/resolve/", method="GET")
    with pytest.raises(HfHubHTTPError) as err:
        hf_hub_download(REPO, "weights.bin")
    assert err.value.response.status_code == 500
    assert hf_env.server.count("GET", "/resolve/") == 1
    # nothing half-written is left behind: the next call downloads cleanly
    assert Path(hf_hub_download(REPO, "weights.bin")).read_bytes() == files["weights.bin"]


def test_upload_requests_are_retried_on_5xx(hf_env, api, tmp_path) -> None:
    hf_env.server.fail_next(1, status=502, paths_containing="/preupload/")
    sha, _ = _push(api, tmp_path, 1)
    assert api.model_info(REPO).sha == sha
    assert hf_env.server.count("POST", "/preupload/") == 2


def test_commit_5xx_is_not_retried(hf_env, api, tmp_path) -> None:
    hf_env.server.fail_next(1, status=500, paths_containing="/commit/")
    with pytest.raises(HfHubHTTPError) as err:
        _push(api, tmp_path, 1)
    assert err.value.response.status_code == 500
    assert hf_env.server.count("POST", "/commit/") == 1


def test_corrupted_download_is_not_detected_by_the_client(hf_env, api, tmp_path) -> None:
    # huggingface_hub only checks the size: callers must verify sha256 themselves
    _, files = _push(api, tmp_path, 1)
    hf_env.server.corrupt_downloads = True
    data = Path(hf_hub_download(REPO, "weights.bin")).read_bytes()
    assert len(data) == len(files["weights.bin"]) and data != files["weights.bin"]
    assert hashlib.sha256(data).hexdigest() != hashlib.sha256(files["weights.bin"]).hexdigest()


def test_offline_mode(hf_env, api, tmp_path) -> None:
    _, files = _push(api, tmp_path, 1)
    cached = hf_hub_download(REPO, "weights.bin")
    hf_env.set_offline(True)
    hf_env.server.reset_log()
    assert hf_hub_download(REPO, "weights.bin") == cached
    assert Path(cached).read_bytes() == files["weights.bin"]
    with pytest.raises(LocalEntryNotFoundError) as err:
        hf_hub_download(REPO, "README.md")  # never downloaded
    assert isinstance(err.value.__cause__, OfflineModeIsEnabled)
    with pytest.raises(OfflineModeIsEnabled):
        api.model_info(REPO)
    assert hf_env.server.requests == []
    hf_env.set_offline(False)
    assert Path(hf_hub_download(REPO, "README.md")).read_bytes() == files["README.md"]


def test_local_files_only_without_cache(hf_env, api, tmp_path) -> None:
    _push(api, tmp_path, 1)
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "weights.bin", local_files_only=True)


def test_snapshot_download_and_listing(hf_env, api, tmp_path) -> None:
    sha, files = _push(api, tmp_path, 1)
    local = Path(snapshot_download(REPO))
    assert local.name == sha
    for name, data in files.items():
        assert (local / name).read_bytes() == data
    assert sorted(api.list_repo_files(REPO)) == [".gitattributes", "README.md", "weights.bin"]
    api.upload_file(path_or_fileobj=b"x", path_in_repo="sub/dir/a.txt", repo_id=REPO)
    tree = {e.path for e in api.list_repo_tree(REPO, recursive=True)}
    assert {"sub", "sub/dir", "sub/dir/a.txt"} <= tree
    assert {e.path for e in api.list_repo_tree(REPO)} == {".gitattributes", "README.md", "weights.bin", "sub"}
    api.delete_file("sub/dir/a.txt", repo_id=REPO)
    assert "sub/dir/a.txt" not in api.list_repo_files(REPO)


def test_range_requests_and_headers(hf_env, api, tmp_path) -> None:
    _, files = _push(api, tmp_path, 1)
    data = files["weights.bin"]
    url = f"{hf_env.url}/{REPO}/resolve/main/weights.bin"
    request = urllib.request.Request(url, headers={"Range": "bytes=99990-"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 206 and resp.read() == data[99990:]
        assert resp.headers["Content-Range"] == "bytes 99990-99999/100000"
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5) as resp:
        assert resp.headers["X-Linked-Etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        assert resp.headers["X-Linked-Size"] == "100000"
        assert resp.headers["X-Repo-Commit"] == hf_env.server.repo(REPO).branches["main"]
    readme = f"{hf_env.url}/{REPO}/resolve/main/README.md"
    with urllib.request.urlopen(urllib.request.Request(readme, method="HEAD"), timeout=5) as resp:
        assert resp.headers["ETag"] == f'"{git_blob_sha1(README.encode())}"'
        assert "X-Linked-Etag" not in resp.headers
        assert resp.headers["Content-Length"] == str(len(README.encode()))


def test_parse_range() -> None:
    assert parse_range("bytes=0-", 10) == (0, 9)
    assert parse_range("bytes=2-4", 10) == (2, 4)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=10-", 10)[0] is None
    assert parse_range("items=0-1", 10)[0] is None


def test_fail_next_counts_down_and_filters(hub_server: HubServer) -> None:
    hub_server.fail_next(2, status=503, paths_containing="/api/whoami")
    url = f"{hub_server.url}/api/whoami-v2"
    statuses = []
    for _ in range(3):
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                statuses.append(resp.status)
        except urllib.error.HTTPError as err:
            statuses.append(err.code)
    assert statuses == [503, 503, 200]
    with pytest.raises(ValueError):
        hub_server.fail_next(0)


def test_stop_is_idempotent_and_frees_the_port() -> None:
    server = HubServer().start()
    url = server.url
    server.stop()
    server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/api/whoami-v2", timeout=2)
