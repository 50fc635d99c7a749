"""Each use of LitServe's internals (serving/http/litserve_adapter.py) against the pinned LitServe.

A test per adapter function: it fails when a LitServe upgrade moves, renames or
stops using what the function patches or reads.
"""

from __future__ import annotations

import inspect
import os
import threading
from types import SimpleNamespace

import pytest

from serving import logs
from serving.http import litserve_adapter


@pytest.fixture(scope="module")
def litserve():
    return litserve_adapter.import_litserve()


@pytest.fixture
def server(litserve):
    class Echo(litserve.LitAPI):
        def setup(self, device):
            pass

        def predict(self, x):
            return x

    return litserve.LitServer(Echo(), accelerator="cpu", workers_per_device=1)


def server_source(litserve) -> str:
    return inspect.getsource(litserve.server.LitServer)


def test_the_key_is_hidden_from_litserve_which_reads_it_once_at_import(monkeypatch, litserve):
    # LitServe would guard /health with it, and Cloud Run's probe sends no key: our gateway guards the rest.
    assert 'LIT_SERVER_API_KEY = os.environ.get("LIT_SERVER_API_KEY")' in inspect.getsource(litserve.server)
    monkeypatch.setenv("LIT_SERVER_API_KEY", "k")
    litserve_adapter.import_litserve()
    assert "LIT_SERVER_API_KEY" not in os.environ


def test_our_log_set_up_replaces_the_one_litserve_runs(litserve):
    assert litserve.server.configure_logging is logs.configure_litserve
    assert "configure_logging(" in inspect.getsource(litserve.server.LitServer.run)


def test_gzip_is_dropped(server):
    from starlette.middleware.gzip import GZipMiddleware

    assert GZipMiddleware in [m.cls for m in server.app.user_middleware]
    litserve_adapter.drop_gzip(server)
    assert GZipMiddleware not in [m.cls for m in server.app.user_middleware]


def test_litserves_own_routes_are_dropped(server):
    def paths():
        return {getattr(route, "path", None) for route in server.app.router.routes}

    assert {"/health", "/", "/info"} <= paths()
    litserve_adapter.drop_routes(server, {"/health", "/", "/info"})
    assert not {"/health", "/", "/info"} & paths()
    assert "/predict" in paths()


def test_the_restart_interval_is_what_litserves_monitor_sleeps(server, litserve):
    assert server.monitor_internal == 2
    litserve_adapter.set_restart_interval(server, 0.25)
    assert server.monitor_internal == 0.25
    assert "time.sleep(self.monitor_internal)" in server_source(litserve)


def test_worker_statuses_are_read_and_set_where_litserve_keeps_them(server, litserve):
    from litserve.utils import WorkerSetupStatus

    assert "self.workers_setup_status = manager.dict()" in server_source(litserve)
    assert "self.inference_workers = []" in server_source(litserve)
    assert litserve_adapter.inference_workers(server) == []
    server.workers_setup_status = {"lit_api_0": WorkerSetupStatus.STARTING, "lit_api_1": WorkerSetupStatus.READY}
    assert litserve_adapter.any_worker_ready(server)
    litserve_adapter.mark_worker_starting(server, 1)
    assert not litserve_adapter.any_worker_ready(server)
    litserve_adapter.mark_worker_failed(server, 0)
    assert server.workers_setup_status["lit_api_0"] == WorkerSetupStatus.ERROR


def test_shutdown_is_litserves_event(server, litserve):
    assert "self._shutdown_event = manager.Event()" in server_source(litserve)
    server._shutdown_event = None  # before LitServe has started its manager
    assert not litserve_adapter.shutting_down(server)
    litserve_adapter.request_shutdown(server)  # nothing to stop yet: no error
    server._shutdown_event = threading.Event()
    litserve_adapter.request_shutdown(server)
    assert litserve_adapter.shutting_down(server)


def test_http_processes_are_found_by_the_name_litserve_gives_them(monkeypatch, litserve):
    assert f'name=f"{litserve_adapter.HTTP_PROCESS_PREFIX}{{' in server_source(litserve)
    children = [SimpleNamespace(name="LitServer-7"), SimpleNamespace(name="SpawnProcess-1")]
    monkeypatch.setattr(litserve_adapter.mp, "active_children", lambda: children)
    assert litserve_adapter.http_processes() == children[:1]


def test_the_manager_is_created_where_forks_ignore_sigterm(server, litserve, monkeypatch):
    import signal

    from serving.http import lifetime

    assert "manager = self._init_manager(num_api_servers)" in server_source(litserve)
    assert "manager = mp.Manager()" in inspect.getsource(litserve.server.LitServer._init_manager)
    seen = []
    monkeypatch.setattr(server, "_init_manager", lambda n: seen.append(lifetime._fork_sigterm[0]) or "manager")
    litserve_adapter.manager_ignores_sigterm(server)
    assert server._init_manager(1) == "manager"
    assert seen == [signal.SIG_IGN]  # a fork inside ignores SIGTERM; after it, forks take the default again
    assert lifetime._fork_sigterm[0] == signal.SIG_DFL


def test_the_http_processes_are_recorded_as_litserve_starts_them(server, litserve, monkeypatch):
    assert "uvicorn_workers = self._start_server(" in server_source(litserve)
    assert "return dict(enumerate(workers))" in inspect.getsource(litserve.server.LitServer._start_server)
    process = SimpleNamespace(pid=41, name="LitServer-0")
    monkeypatch.setattr(server, "_start_server", lambda *a, **k: {0: process})
    started = litserve_adapter.on_http_started(server)
    assert not started.event.is_set()
    assert server._start_server(8080, 1, "info", None, "process") == {0: process}
    assert started.event.is_set()
    assert started.processes == [process]


def test_litserves_already_stopped_warning_is_the_one_filtered(litserve, caplog):
    assert 'logger.warning(f"{log_prefix}: Already not alive.")' in server_source(litserve)
    litserve_adapter.quiet_shutdown()
    import logging

    logger = logging.getLogger("litserve.server")
    with caplog.at_level(logging.WARNING, logger="litserve.server"):
        logger.warning("LitServer-0 (PID: 4): Already not alive.")
        logger.warning("LitServer-0 (PID: 4): Did not terminate gracefully. Forcibly killing.")
    assert [r.getMessage() for r in caplog.records] == [
        "LitServer-0 (PID: 4): Did not terminate gracefully. Forcibly killing."
    ]


def test_workers_start_from_the_given_context_and_nothing_else_moves(litserve, monkeypatch):
    import multiprocessing as mp

    server_module = litserve.server
    for method in ("launch_inference_worker", "launch_single_inference_worker"):
        assert 'ctx = mp.get_context("spawn")' in inspect.getsource(getattr(server_module.LitServer, method))
    monkeypatch.setattr(server_module, "mp", server_module.mp)  # put back after the test
    context = mp.get_context("forkserver")
    litserve_adapter.workers_from(server_module, context)
    assert server_module.mp.get_context("spawn") is context
    assert server_module.mp.get_context("fork") is mp.get_context("fork")  # the HTTP processes, as before
    assert server_module.mp.Manager is mp.Manager
