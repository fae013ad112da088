"""LiteLLM's Responses and embedding calls through the gateway.

``litellm.responses()`` completes a tool call (the model — the simulator, scripted — calls the
tool, the caller sends the result back with the function call, the model answers), forwarded to
an OpenAI route that serves /v1/responses and translated to a Claude model; ``litellm.embedding()``
is forwarded and priced.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest

from cascadeflow import ProxyConfig
from tests import needs
from tests.conftest import NO_RETRY

SCRIPT = [
    {"match": {"prompt_contains": "weather in Quito"}, "tool_calls": [{"name": "get_weather", "input": {"city": "Quito"}}]},
    {"match": {"prompt_contains": "14C in Quito"}, "text": "It is 14C and raining in Quito."},
]
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def litellm():
    """LiteLLM, imported by the tests that use it, not at collection: its import is ~7 s of CPU, which every
    pytest-xdist worker paid while collecting, though only one runs this file."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of LiteLLM's price list at import
    return pytest.importorskip("litellm", reason=needs.package("litellm"))


@pytest.fixture(scope="module")
def litellm_gw(sim, start_gateway):
    return start_gateway(ProxyConfig.from_dict({"routes": [
        {"name": "anthropic", "provider": "anthropic", "base_url": sim.url, "api_key": "sk-ant-route", **NO_RETRY},
        {"name": "openai", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "sk-openai-route",
         "openai_api": "responses", **NO_RETRY},
    ]}))


@pytest.mark.parametrize(("model", "path"), [("gpt-5.4-mini", "/v1/responses"), ("claude-haiku-5-5", "/v1/messages")],
                         ids=["forwarded", "claude"])
def test_litellm_responses_completes_a_tool_call(litellm, litellm_gw, fresh_sim, model, path):
    fresh_sim.set_script(SCRIPT)
    ask = {"model": f"openai/{model}", "api_base": litellm_gw.url + "/v1", "api_key": "sk-caller", "tools": [WEATHER]}
    first = litellm.responses(input="What is the weather in Quito?", **ask)
    call = next(item for item in first.output if getattr(item, "type", None) == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Quito"}
    follow_up = [
        {"role": "user", "content": "What is the weather in Quito?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "14C in Quito, raining"},
    ]
    second = litellm.responses(input=follow_up, **ask)
    text = "".join(part.text for item in second.output if getattr(item, "type", None) == "message"
                   for part in item.content if getattr(part, "type", None) == "output_text")
    assert text == "It is 14C and raining in Quito."
    assert [r["path"] for r in fresh_sim.requests if r["method"] == "POST"] == [path, path]


def test_litellm_embedding_is_forwarded_and_priced(litellm, litellm_gw, fresh_sim):
    before = httpx.get(litellm_gw.url + "/stats").json()
    result = litellm.embedding(model="openai/text-embedding-3-small", input=["a cascade", "a gateway"],
                               api_base=litellm_gw.url + "/v1", api_key="sk-caller")
    assert len(result.data) == 2 and len(result.data[0]["embedding"]) > 0
    assert [r["path"] for r in fresh_sim.requests if r["method"] == "POST"] == ["/v1/embeddings"]
    after = httpx.get(litellm_gw.url + "/stats").json()
    assert after["total_cost"] > before["total_cost"]
