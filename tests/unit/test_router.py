import pytest

from cascadeflow import ModelRegistry, ProxyRoutingError
from cascadeflow.proxy import ProxyRoute, ProxyRouter


@pytest.fixture()
def router():
    return ProxyRouter(
        [
            ProxyRoute(name="anthropic", provider="anthropic", base_url="http://a"),
            ProxyRoute(name="openai", provider="openai", base_url="http://o/v1"),
            ProxyRoute(name="local", provider="openai", base_url="http://l/v1", models={"llama3:8b", "qwen-*"}),
        ],
        ModelRegistry(),
    )


@pytest.mark.parametrize(
    ("model", "dialect", "route", "upstream"),
    [
        ("openai:gpt-4o", None, "openai", "gpt-4o"),
        ("openai/gpt-4o", None, "openai", "gpt-4o"),
        ("local:qwen-7b", None, "local", "qwen-7b"),
        ("anthropic/claude-sonnet-5-5", None, "anthropic", "claude-sonnet-5-5"),
        ("llama3:8b", None, "local", "llama3:8b"),  # a colon that is not a route prefix
        ("qwen-2", "anthropic", "local", "qwen-2"),  # allowlist beats the caller's dialect
        ("claude-opus-5-5", None, "anthropic", "claude-opus-5-5"),  # registry
        ("gpt-5.4-mini", None, "openai", "gpt-5.4-mini"),
        ("meta-llama/Llama-3-8B", "openai", "openai", "meta-llama/Llama-3-8B"),  # unknown: caller's dialect
        ("my-custom-model", "anthropic", "anthropic", "my-custom-model"),
    ],
)
def test_resolution_order(router, model, dialect, route, upstream):
    match = router.resolve(model, dialect)
    assert (match.route.name, match.model) == (route, upstream)


def test_unknown_model_without_dialect_is_a_routing_error(router):
    with pytest.raises(ProxyRoutingError, match="no route serves model 'mystery'"):
        router.resolve("mystery")


def test_forced_route_respects_allowlist(router):
    with pytest.raises(ProxyRoutingError, match="not in the allowlist of route 'local'"):
        router.resolve("local:gpt-4o")
    with pytest.raises(ProxyRoutingError, match="names a route but no model"):
        router.resolve("openai:")


def test_allowlisted_only_routes_refuse_other_models():
    router = ProxyRouter([ProxyRoute(name="only", provider="openai", base_url="http://x", models={"a"})])
    assert router.resolve("a", "openai").route.name == "only"
    with pytest.raises(ProxyRoutingError):
        router.resolve("b", "openai")


def test_exact_allowlist_name_beats_a_provider_prefix():
    router = ProxyRouter(
        [
            ProxyRoute(name="openai", provider="openai", base_url="http://o/v1"),
            ProxyRoute(name="openrouter", provider="openai", base_url="http://r/v1", models={"openai/gpt-oss-20b"}),
        ]
    )
    match = router.resolve("openai/gpt-oss-20b", "openai")
    assert (match.route.name, match.model) == ("openrouter", "openai/gpt-oss-20b")
    assert router.resolve("openai/gpt-4o", "openai").route.name == "openai"
