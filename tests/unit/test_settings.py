"""Server settings: environment variables, defaults, validation, documentation."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.settings import Settings, SettingsError, describe
from tests.harness import REPO


def test_defaults_and_environment():
    assert Settings.from_env({}) == Settings()
    settings = Settings.from_env(
        {
            "PORT": "9000",
            "INSPYRENET_WORKERS": "3",
            "INSPYRENET_CORS_ORIGINS": "https://a.example, https://b.example",
            "INSPYRENET_VERIFY": "false",
            "INSPYRENET_ARTIFACTS": "/srv/bundle",
        }
    )
    assert settings.port == 9000
    assert settings.workers == 3
    assert settings.verify is False
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.artifacts == Path("/srv/bundle")


def test_flags_override_environment():
    settings = Settings.from_env({"PORT": "9000"}, port=9100, backend=None)
    assert settings.port == 9100
    assert settings.backend == "auto"


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"PORT": "eighty"}, "PORT='eighty' is not a valid int"),
        ({"PORT": "80"}, "port must be from 1024"),
        ({"INSPYRENET_BACKEND": "tensorflow"}, "backend must be one of"),
        ({"INSPYRENET_WORKERS": "0"}, "workers must be at least 1"),
        ({"INSPYRENET_VERIFY": "perhaps"}, "not a valid bool"),
    ],
)
def test_bad_settings_are_refused(environ, words):
    with pytest.raises(SettingsError, match=words):
        Settings.from_env(environ)


def test_docs_list_every_setting_with_its_default():
    page = (REPO / "docs" / "http-api.md").read_text()
    for env, default, _ in describe():
        row = [line for line in page.splitlines() if line.startswith(f"| `{env}` |")]
        assert row, f"{env} is not in docs/http-api.md's settings table"
        shown = default.lower() if default else "(none)"
        assert shown in row[0].lower(), f"docs/http-api.md shows another default for {env}: {row[0]}"


def test_threads_setting_caps_the_onnx_runtime_session(toy_bundle):
    """INSPYRENET_THREADS reaches ONNX Runtime (the CPU service sets it to its vCPUs: a container's
    runtime default may count the host's cores)."""
    from serving.loading import load_warm_backend

    settings = Settings.from_env({"INSPYRENET_ARTIFACTS": str(toy_bundle), "INSPYRENET_THREADS": "1"})
    backend, _ = load_warm_backend(settings, ["onnxruntime"], set(), lambda backend: (1,), {}, settings.threads)
    assert backend.session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(SettingsError, match="threads must be 0"):
        Settings.from_env({"INSPYRENET_THREADS": "-1"})
