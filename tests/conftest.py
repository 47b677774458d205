"""Shared fixtures. The Hub fixtures run the in-memory test Hub of ``tests/hub_server.py``.

- ``hub_server``: a started :class:`HubServer` (stopped after the test).
- ``one_thread``: torch on one intra-op thread for a test module (tiny models train several times
  faster so on 2 cores, and in-process runs reduce floats in the same order as 1-thread subprocesses);
  modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
- ``hf_env``: ``hub_server`` plus ``huggingface_hub`` pointed at it (endpoint, a fresh cache in
  ``tmp_path``, dummy token, Xet disabled, online); ``hf_env.server``, ``.url``, ``.cache_dir``,
  ``.set_offline(bool)``, ``.set_xet(bool)``.
"""

from __future__ import annotations

import os

import pytest

# Safety net before anything imports huggingface_hub: no test may reach huggingface.co. Tests that
# talk to the test Hub get online mode back from the ``hf_env`` fixture.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_UPDATE_CHECK", "1")

from tests.hub_server import HubEnv, HubServer, configure_client  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def hub_server():
    """A fresh in-memory Hub on 127.0.0.1 for one test."""
    server = HubServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hf_env(hub_server: HubServer, tmp_path, monkeypatch) -> HubEnv:
    """``huggingface_hub`` pointed at ``hub_server`` with an isolated cache (Xet off, online)."""
    return configure_client(hub_server, tmp_path, monkeypatch)
