from pathlib import Path

import pytest

from cascadeflow import ConfigError, ModelRegistry, ProxyConfig, Usage
from cascadeflow.cli import main
from cascadeflow.config import CascadeRule, interpolate


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cascadeflow-proxy.yaml"
    path.write_text(text)
    return path


def test_interpolation_reads_environment_with_defaults():
    env = {"KEY": "secret", "EMPTY": ""}
    doc = {"a": "${KEY}", "b": "x-${MISSING:-fallback}-y", "c": ["${EMPTY:-d}"], "n": 3}
    assert interpolate(doc, env) == {"a": "secret", "b": "x-fallback-y", "c": ["d"], "n": 3}


def test_yaml_file_loads_with_env_and_typed_values(tmp_path, monkeypatch):
    monkeypatch.setenv("SIM_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("PORT_FOR_TEST", "8123")
    path = write(
        tmp_path,
        """
server: {port: "${PORT_FOR_TEST}", workers: 2}
routes:
  - name: local
    provider: openai
    base_url: ${SIM_URL}/v1/
    models: [llama3, "qwen-*"]
    cost_per_1k_tokens: {input: 0.001, output: 0.002}
cascade_rules:
  - request_model: claude-opus-*
    draft_model: claude-haiku-5-5
    quality_threshold: 0.8
""",
    )
    config = ProxyConfig.from_yaml(path)
    assert config.server.port == 8123 and config.server.workers == 2
    route = config.routes[0]
    assert route.base_url == "http://127.0.0.1:9999/v1"
    assert route.url("/v1/chat/completions") == "http://127.0.0.1:9999/v1/chat/completions"
    assert route.allows("qwen-2.5") and not route.allows("gpt-4o")
    assert config.cascade_rules[0].quality_threshold == 0.8
    # explicit routes without api_keys shorthand: no default routes are added
    assert [r.name for r in config.effective_routes()] == ["local"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server: {prot: 8000}", "server.prot: unknown key"),
        ("routes: [{name: x, provider: google, base_url: 'http://a'}]", "routes.0.provider"),
        ("routes: [{name: x, provider: openai, base_url: 'ftp://a'}]", "routes.0.base_url"),
        ("cascade_rules: [{request_model: a, draft_model: b, quality_threshold: 1.5}]", "cascade_rules.0.quality_threshold"),
        ("cascade_rules: [{request_model: a}]", "needs draft_model or stages"),
        ("server: [1, 2]", "server"),
        ("server: {port: abc}", "server.port"),
        ("routes: [{name: a, provider: openai, base_url: 'http://x'}, {name: a, provider: openai, base_url: 'http://y'}]", "repeated: a"),
        ("auth: {mode: sometimes}", "auth.mode"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        ProxyConfig.from_yaml(write(tmp_path, text))
    assert expected in str(info.value)


def test_bad_yaml_and_missing_file_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        ProxyConfig.from_yaml(write(tmp_path, "server: {port: [}"))
    with pytest.raises(ConfigError, match="cannot read config file"):
        ProxyConfig.from_yaml(tmp_path / "nope.yaml")


def test_secret_values_are_not_echoed_in_errors(tmp_path):
    with pytest.raises(ConfigError) as info:
        ProxyConfig.from_yaml(write(tmp_path, "routes: [{name: a, provider: openai, base_url: 'http://x', api_key: [sk-secret-1234]}]"))
    assert "sk-secret-1234" not in str(info.value)


def test_from_env_builds_default_routes_with_overrides():
    config = ProxyConfig.from_env(
        {
            "ANTHROPIC_API_KEY": "sk-ant-x",
            "CASCADEFLOW_OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
            "CASCADEFLOW_PORT": "8200",
        }
    )
    routes = {r.name: r for r in config.effective_routes()}
    assert set(routes) == {"anthropic", "openai"}
    assert routes["anthropic"].base_url == "https://api.anthropic.com"
    assert routes["anthropic"].api_key.get_secret_value() == "sk-ant-x"
    assert routes["openai"].base_url == "http://127.0.0.1:9/v1" and routes["openai"].api_key is None
    assert config.server.port == 8200
    assert "sk-ant-x" not in repr(config)


def test_groq_shorthand_needs_a_key():
    assert "groq" not in {r.name for r in ProxyConfig.from_env({}).effective_routes()}
    routes = {r.name: r for r in ProxyConfig.from_env({"GROQ_API_KEY": "gk"}).effective_routes()}
    assert routes["groq"].provider == "openai" and routes["groq"].base_url.startswith("https://api.groq.com")


def test_cli_init_writes_a_config_that_loads(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    assert main(["proxy", "init", "--path", str(path)]) == 0
    config = ProxyConfig.from_yaml(path)
    assert config.server.port == 8000
    text = path.read_text()
    assert "# " in text  # commented
    # default cascades for the current families, each with its saving ceiling from the registry
    registry = ModelRegistry()
    rules = {r.request_model: r.draft_model for r in config.cascade_rules}
    assert rules["claude-opus-*"] == "claude-haiku-5-5" and rules["claude-sonnet-*"] == "claude-haiku-5-5"
    assert all(registry.info(d) is not None for d in rules.values())
    opus, haiku = registry.cost("claude-opus-5-5", Usage(2000, 500)), registry.cost("claude-haiku-5-5", Usage(2000, 500))
    assert f"saving ceiling {1 - haiku / opus:.0%} (vs claude-opus-5-5)" in text
    assert main(["proxy", "init", "--path", str(path)]) == 1  # refuses to overwrite


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    path = write(tmp_path, "server: {port: 70000}")
    assert main(["proxy", "start", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "server.port" in err and "Traceback" not in err


def test_shorthand_only_makes_the_routes_it_names():
    config = ProxyConfig.from_dict(
        {"routes": [{"name": "local", "provider": "openai", "base_url": "http://x/v1"}], "api_keys": {"openai": "sk-o"}}
    )
    assert [r.name for r in config.effective_routes()] == ["local", "openai"]
    assert {r.name for r in ProxyConfig.from_dict({}).effective_routes()} == {"anthropic", "openai"}


def test_api_key_for_an_explicit_route_is_refused_not_ignored():
    with pytest.raises(ConfigError, match="api_keys.openai would be ignored"):
        ProxyConfig.from_dict(
            {"routes": [{"name": "openai", "provider": "openai", "base_url": "http://x/v1"}], "api_keys": {"openai": "sk-o"}}
        )


def test_empty_allowlist_is_an_error():
    with pytest.raises(ConfigError, match="routes.0.models: .*unreachable"):
        ProxyConfig.from_dict({"routes": [{"name": "a", "provider": "openai", "base_url": "http://x", "models": []}]})


def test_embedded_defaults_cascade_unless_turned_off():
    rules = ProxyConfig.from_env({}).all_cascade_rules()
    assert ("claude-opus-*", "claude-haiku-5-5") in [(r.request_model, r.draft_model) for r in rules]
    assert ProxyConfig.from_env({"CASCADEFLOW_CASCADE": "off"}).all_cascade_rules() == []


def test_cascade_rule_validation():
    with pytest.raises(ConfigError, match="either draft_model or stages"):
        ProxyConfig.from_dict({"cascade_rules": [{"request_model": "a", "draft_model": "b", "stages": [{"model": "c"}]}]})
    with pytest.raises(ConfigError, match="cascade_models.cascade/x.verifier_model: required"):
        ProxyConfig.from_dict({"cascade_models": {"cascade/x": {"draft_model": "b"}}})
    config = ProxyConfig.from_dict(
        {"cascade_rules": [{"request_model": "a", "stages": [{"model": "b"}, {"model": "c", "quality_threshold": 0.9}], "quality_threshold": 0.6}]}
    )
    assert [(s.model, s.quality_threshold) for s in config.cascade_rules[0].draft_stages()] == [("b", 0.6), ("c", 0.9)]


def test_documented_variables_override_the_file_and_say_so(tmp_path, monkeypatch):
    path = write(tmp_path, """
server: {host: 127.0.0.1, port: 8100}
auth: {mode: none}
database_url: "sqlite:///from-file.db"
base_urls: {anthropic: "http://file-host:1"}
cascade_rules: [{request_model: "claude-opus-*", draft_model: claude-sonnet-5-5}]
""")
    monkeypatch.setenv("CASCADEFLOW_AUTH_MODE", "api_key")
    monkeypatch.setenv("CASCADEFLOW_MASTER_KEY", "master-from-env")
    monkeypatch.setenv("CASCADEFLOW_PORT", "8201")
    monkeypatch.setenv("CASCADEFLOW_ANTHROPIC_BASE_URL", "http://env-host:2")
    monkeypatch.setenv("CASCADEFLOW_CASCADE", "off")
    monkeypatch.setenv("CASCADEFLOW_REDIS_URL", "")  # empty counts as unset
    config = ProxyConfig.load(path)
    assert config.auth.mode == "api_key" and config.auth.master_key.get_secret_value() == "master-from-env"
    assert config.server.port == 8201 and config.server.host == "127.0.0.1"
    assert config.base_urls == {"anthropic": "http://env-host:2"}
    assert config.cascade_rules == [] and config.redis_url is None
    assert config.database_url == "sqlite:///from-file.db"
    origin = config.origin
    assert origin.file == str(path.absolute())
    assert origin.source("auth.mode") == "$CASCADEFLOW_AUTH_MODE"
    assert origin.source("server.port") == "$CASCADEFLOW_PORT"
    assert origin.source("server.host") == "file" and origin.source("database_url") == "file"
    assert origin.source("redis_url") == "default"


def test_the_same_rule_without_a_file(monkeypatch):
    config = ProxyConfig.from_env({"CASCADEFLOW_AUTH_MODE": "hybrid", "CASCADEFLOW_DATABASE_URL": "postgresql://u:pw@h/db"})
    assert config.origin.file is None
    assert config.auth.mode == "hybrid" and config.origin.source("auth.mode") == "$CASCADEFLOW_AUTH_MODE"
    assert config.database_url == "postgresql://u:pw@h/db"
    assert len(config.cascade_rules) > 0 and config.origin.source("cascade_rules") == "default"


@pytest.mark.parametrize(("env", "expected"), [
    ({"CASCADEFLOW_OPENAI_BASE_URL": "127.0.0.1:9000/v1"},
     "base_urls.openai (from $CASCADEFLOW_OPENAI_BASE_URL): must start with http:// or https://"),
    ({"CASCADEFLOW_DATABASE_URL": "mysql://user:hunter2@db/x"}, "database_url (from $CASCADEFLOW_DATABASE_URL): must be"),
    ({"CASCADEFLOW_REDIS_URL": "127.0.0.1:6379"}, "redis_url (from $CASCADEFLOW_REDIS_URL): must be redis://"),
])
def test_a_bad_variable_is_named(env, expected):
    with pytest.raises(ConfigError) as info:
        ProxyConfig.from_env(env)
    assert expected in str(info.value)
    assert "hunter2" not in str(info.value)


def test_default_ledger_is_in_the_data_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADEFLOW_DATA_DIR", str(tmp_path / "data"))
    assert ProxyConfig.from_env({}).database_url == f"sqlite:///{tmp_path / 'data' / 'cascadeflow.db'}"
    monkeypatch.delenv("CASCADEFLOW_DATA_DIR")
    assert ProxyConfig().database_url.endswith("/cascadeflow/cascadeflow.db")
    assert ProxyConfig().database_url.startswith("sqlite:////")  # absolute: not relative to the working directory


def test_draft_stages_are_built_once_per_rule_and_follow_its_fields():
    rule = CascadeRule(request_model="claude-opus-*", stages=[{"model": "a"}, {"model": "b", "quality_threshold": 0.9}])
    first = rule.draft_stages()
    assert [(s.model, s.quality_threshold) for s in first] == [("a", 0.7), ("b", 0.9)]
    assert all(x is y for x, y in zip(first, rule.draft_stages())), "built once"
    assert rule == CascadeRule(request_model="claude-opus-*", stages=[{"model": "a"}, {"model": "b", "quality_threshold": 0.9}])
    assert "_draft_stages" not in rule.model_dump()
    copy = rule.model_copy(update={"quality_threshold": 0.5})  # a copy with other fields builds its own
    assert [s.quality_threshold for s in copy.draft_stages()] == [0.5, 0.9]
    assert [s.quality_threshold for s in rule.draft_stages()] == [0.7, 0.9]
    single = CascadeRule(request_model="gpt-5.5", draft_model="gpt-5.4-mini", quality_threshold=0.6)
    assert [(s.model, s.quality_threshold) for s in single.draft_stages()] == [("gpt-5.4-mini", 0.6)]
