"""Typed settings read from the environment and, under it, the configuration file.

Every service has one `Settings` class (in its own `settings.py`) deriving from `ServiceSettings`,
with its `env_prefix` and listen defaults from its row in `mailflow.services`. The fields here are
common to all services and are read from unprefixed `MAILFLOW_*` names, so one environment serves the
whole stack. Sources, first wins: arguments, the environment, the TOML file MAILFLOW_CONFIG names
(`mailflow.configfile`: the same names), the defaults. A missing secret or a malformed value fails at
startup with a pydantic error naming the variable; an unreadable or malformed file with ConfigError
naming the file; nothing starts half-configured.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from mailflow import configfile
from mailflow.services import LOCAL_HOST, MAILBOX_STORE, NATS_PORT, QUEUE


def common(name: str, **kw):
    """A field read from `MAILFLOW_<NAME>` whatever the subclass's own prefix is."""
    return Field(validation_alias=AliasChoices(f"MAILFLOW_{name.upper()}"), **kw)


class ConfigFileSource(EnvSettingsSource):
    """The configuration file, read exactly as the environment is (names, prefixes, aliases, parsing)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(configfile.values(), self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class FileSettings(BaseSettings):
    """Settings read from the arguments, the environment, the configuration file, the defaults (in that
    order): every service's and the certificate renewer's (`mailflow.certs`)."""

    # hide_input_in_errors (inherited by every Settings): a startup error names the variable
    # and the rule, never the values given (a password, a token, the session key)
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, hide_input_in_errors=True)

    log_level: str = common("log_level", default="INFO")  # DEBUG, INFO, WARNING, ERROR
    log_format: str = common("log_format", default="text")  # "json" in containers

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        if v not in ("text", "json"):
            raise ValueError("log_format must be 'text' or 'json'")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then the configuration file, then the defaults."""
        return init_settings, env_settings, ConfigFileSource(settings_cls), file_secret_settings


class ServiceSettings(FileSettings):
    nats_url: str = common("nats_url", default=f"nats://{LOCAL_HOST}:{NATS_PORT}")
    # This service's own NATS user (what it may publish and subscribe to: contracts/permissions.py).
    # Empty: no credentials, for a nats-server without authorization (as in tests).
    nats_user: str = common("nats_user", default="")
    nats_password: SecretStr = common("nats_password", default=SecretStr(""))  # that user's password
    # Shared secret every internal REST call carries (header X-Mailflow-Token). No default: the local
    # runner generates one on first start; containers get it from a Secret.
    service_token: SecretStr = common("service_token")
    # Where mailbox-store's REST API answers.
    store_url: str = common("store_url", default=MAILBOX_STORE.url)
    # Where queue's REST API answers (admin and tracing).
    queue_url: str = common("queue_url", default=QUEUE.url)
    # The name this host gives itself in SMTP greetings and Received: headers.
    hostname: str = common("hostname", default="localhost")
    # TLS certificate chain and key (PEM). The local runner makes a self-signed pair on first start.
    tls_cert: str = common("tls_cert", default="")
    tls_key: str = common("tls_key", default="")
    # How often the TLS listeners look at those files and load a new pair (seconds; 0: never, only at start).
    tls_reload_s: float = common("tls_reload_s", default=5.0, ge=0)
    # Each service answers /healthz, /readyz and /metrics here (and its REST API, if it has one).
    http_listen: str = f"{LOCAL_HOST}:0"

    def nats_login(self) -> dict[str, str]:
        """natsconn.connect's `user` and `password`."""
        return {"user": self.nats_user, "password": self.nats_password.get_secret_value()}


def env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """{environment variable: field name} that a Settings class reads; the file uses the same names."""
    prefix = cls.model_config.get("env_prefix", "")
    names: dict[str, str] = {}
    for fname, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            for choice in alias.choices:
                if isinstance(choice, str):
                    names[choice.upper()] = fname
        elif isinstance(alias, str):
            names[alias.upper()] = fname
        else:
            names[(prefix + fname).upper()] = fname
    return names
