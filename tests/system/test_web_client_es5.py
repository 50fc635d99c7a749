"""The browser client is ES5: acorn (Debian's node-acorn), told to accept ECMAScript 5 only, parses it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.harness import REPO

ACORN = shutil.which("acorn")
CLIENT = REPO / "clients" / "web" / "inspyrenet-client.js"


def acorn_es5(path) -> subprocess.CompletedProcess:
    if ACORN is None:
        pytest.skip("no acorn here (Debian: apt-get install node-acorn; .ci/run installs it)")
    return subprocess.run([ACORN, "--ecma5", "--silent", str(path)], capture_output=True, text=True, timeout=60)


def test_the_client_parses_as_es5():
    result = acorn_es5(CLIENT)
    assert result.returncode == 0, result.stderr


def test_es2015_syntax_would_be_refused(tmp_path):
    """The check can fail: the client with one arrow function is not ES5."""
    modern = tmp_path / "client.js"
    modern.write_text(CLIENT.read_text().replace("function now() {", "var later = () => 1;\n  function now() {"))
    result = acorn_es5(modern)
    assert result.returncode != 0
    assert "Unexpected token" in result.stderr
