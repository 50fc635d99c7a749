"""The unit tier runs in this process: a test that starts a process belongs to tests/integration."""

from __future__ import annotations

import subprocess

import pytest


@pytest.fixture(autouse=True)
def no_processes(monkeypatch):
    def refuse(self, args, *rest, **kwargs):
        raise AssertionError(f"a unit test started a process ({args!r}): move it to tests/integration or tests/system")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
