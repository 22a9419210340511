"""Configuration: defaults, config file, environment and CLI flags, in that rising order of precedence."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from syntropism.cli import app
from syntropism.config import ConfigError, Settings, load_settings, parse_overrides


def test_defaults_are_documented_and_sane() -> None:
    settings = load_settings()
    assert settings.nats_url is None  # embedded NATS
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.clearing_interval_seconds == 10
    assert settings.attention_supply == 1
    assert settings.cpu_cores > 0 and settings.memory_bytes > 0
    assert all(field.description for field in Settings.model_fields.values()), "every knob says what it means"


def test_precedence_file_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "syntropism.toml"
    config.write_text('clearing_interval_seconds = 3.0\nllm_spend_limit = 500\nreward_weight_useful = "2.5"\n')
    settings = load_settings(config)
    assert (settings.clearing_interval_seconds, settings.llm_spend_limit) == (3.0, 500)
    assert settings.reward_weights == (Decimal(1), Decimal("2.5"), Decimal(1))

    monkeypatch.setenv("SYNTROPISM_LLM_SPEND_LIMIT", "700")
    settings = load_settings(config)
    assert (settings.clearing_interval_seconds, settings.llm_spend_limit) == (3.0, 700)

    settings = load_settings(config, parse_overrides(["llm-spend-limit=900", "SYNTROPISM_API_PORT=9000"]))
    assert (settings.llm_spend_limit, settings.api_port) == (900, 9000)


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text('nats_url = "nats://10.0.0.1:4222"\n')
    monkeypatch.setenv("SYNTROPISM_CONFIG", str(config))
    assert load_settings().nats_url == "nats://10.0.0.1:4222"


def test_bad_configuration_is_rejected_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="unknown setting 'clearing_speed'"):
        parse_overrides(["clearing_speed=3"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["clearing_interval_seconds"])
    with pytest.raises(ValidationError, match="clearing_interval_seconds"):
        load_settings(overrides={"clearing_interval_seconds": "-1"})
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text("no_such_knob = 1\n")
    with pytest.raises(ValidationError, match="no_such_knob"):
        load_settings(bad_file)


def test_cli_prints_effective_configuration(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["--state-dir", str(tmp_path), "--set", "price_floor=0.01", "config", "--json"],
        env={"SYNTROPISM_API_PORT": "9100"},
    )
    assert result.exit_code == 0, result.output
    values = json.loads(result.stdout)
    assert values["state_dir"] == str(tmp_path)
    assert values["price_floor"] == "0.01"
    assert values["api_port"] == 9100

    table = runner.invoke(app, ["config"])
    assert table.exit_code == 0
    assert "llm_spend_limit" in table.stdout and "SYNTROPISM_<KNOB>" in table.stdout


def test_cli_reports_invalid_values_without_a_traceback() -> None:
    result = CliRunner().invoke(app, ["--set", "api_port=99999", "config"])
    assert result.exit_code == 2
    assert "api_port" in result.output and "99999" in result.output
