"""Settings: database URLs people paste, and the JWT secret rules."""

import os
import stat

import pytest

import config
from config import ConfigError, finalize_config, normalize_database_url, resolve_jwt_secret
from devlab import create_app
from tests.conftest import TEST_SETTINGS

STRONG_SECRET = "k3Vq9-random-and-long-enough-for-production-use"


@pytest.mark.parametrize(
    ("pasted", "used"),
    [
        ("postgres://u:p@db:5432/devlab", "postgresql+psycopg2://u:p@db:5432/devlab"),
        ("postgresql://u:p@db/devlab", "postgresql+psycopg2://u:p@db/devlab"),
        ("postgresql+psycopg2://u@db/devlab", "postgresql+psycopg2://u@db/devlab"),
        ("sqlite:///devlab.db", "sqlite:///devlab.db"),
    ],
)
def test_database_urls_always_use_psycopg2_for_postgresql(pasted, used):
    assert normalize_database_url(pasted) == used


def test_the_app_connects_through_psycopg2_for_a_bare_postgresql_url():
    app = create_app(TEST_SETTINGS | {"SQLALCHEMY_DATABASE_URI": "postgresql://u@localhost/x"})

    with app.app_context():
        from devlab.extensions import db

        assert db.engine.dialect.driver == "psycopg2"


@pytest.mark.parametrize(
    "secret",
    [None, "", "change-me", "secret", "CHANGE-ME", "short-but-not-a-placeholder", "x" * 31],
)
def test_production_refuses_a_missing_short_or_placeholder_secret(tmp_path, secret):
    config = {"DEVLAB_ENV": "production", "JWT_SECRET_KEY": secret}

    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        resolve_jwt_secret(config, str(tmp_path))


def test_production_accepts_a_strong_secret_and_writes_no_file(tmp_path):
    config = {"DEVLAB_ENV": "production", "JWT_SECRET_KEY": STRONG_SECRET}

    assert resolve_jwt_secret(config, str(tmp_path)) == STRONG_SECRET
    assert list(tmp_path.iterdir()) == []


def test_create_app_refuses_production_without_a_secret():
    settings = TEST_SETTINGS | {"DEVLAB_ENV": "production", "JWT_SECRET_KEY": None}

    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        create_app(settings)


def test_development_generates_one_private_secret_and_keeps_it(tmp_path):
    config = {"DEVLAB_ENV": "development", "JWT_SECRET_KEY": None}

    first = resolve_jwt_secret(dict(config), str(tmp_path / "instance"))
    second = resolve_jwt_secret(dict(config), str(tmp_path / "instance"))

    assert first == second
    assert len(first) >= 32
    key_files = list((tmp_path / "instance").iterdir())
    assert [f.name for f in key_files] == ["jwt-secret"]
    assert stat.S_IMODE(os.stat(key_files[0]).st_mode) == 0o600


def test_development_uses_a_configured_secret_as_given(tmp_path):
    config = {"DEVLAB_ENV": "development", "JWT_SECRET_KEY": "dev"}

    assert resolve_jwt_secret(config, str(tmp_path)) == "dev"


def test_an_unknown_environment_name_is_refused(tmp_path):
    config = dict(TEST_SETTINGS, DEVLAB_ENV="prod")

    with pytest.raises(ConfigError, match="DEVLAB_ENV"):
        finalize_config(config, str(tmp_path))


@pytest.mark.parametrize("name", ["JWT_SECRET_KEY", "AUDIT_SIGNING_KEY", "DATABASE_URL"])
def test_secrets_may_come_from_the_file_their_name_file_variable_names(tmp_path, monkeypatch, name):
    secret_file = tmp_path / "secret"
    secret_file.write_text("the value from the file\n")
    monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(f"{name}_FILE", str(secret_file))

    assert config.secret_from_env(name) == "the value from the file"

    monkeypatch.setenv(name, "a value of its own")
    with pytest.raises(ConfigError, match=f"Set {name} or {name}_FILE, not both"):
        config.secret_from_env(name)
    monkeypatch.delenv(name)
    monkeypatch.setenv(f"{name}_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=f"{name}_FILE names a file that cannot be read"):
        config.secret_from_env(name)
