"""Responses API clients beyond the openai SDK complete a tool call through the gateway: the OpenAI
Agents SDK's default model, and LangChain's ChatOpenAI with ``use_responses_api=True``.

An agent with one function tool: the model (the simulator, scripted) calls the tool, the
SDK runs it and sends the result back, the model answers. On an OpenAI route that serves
/v1/responses (forwarded), on a chat-only route and on a Claude model (both translated).
"""

from __future__ import annotations

import pytest
from openai import AsyncOpenAI

from cascadeflow import ProxyConfig
from tests import needs
from tests.conftest import NO_RETRY

SCRIPT = [
    {"match": {"prompt_contains": "weather in Lima"}, "tool_calls": [{"name": "get_weather", "input": {"city": "Lima"}}]},
    {"match": {"prompt_contains": "19C in Lima"}, "text": "It is 19C and cloudy in Lima."},
]


@pytest.fixture(scope="module")
def agents():
    """The Agents SDK, imported by the tests that use it, not at collection: its import is ~3 s of CPU, which every
    pytest-xdist worker paid while collecting, though only one runs this file."""
    return pytest.importorskip("agents", reason=needs.package("the OpenAI Agents SDK (openai-agents)"))


@pytest.fixture(scope="module")
def agents_gw(agents, sim, start_gateway):
    agents.set_tracing_disabled(True)  # the SDK would export traces to OpenAI
    return start_gateway(ProxyConfig.from_dict({"routes": [
        {"name": "anthropic", "provider": "anthropic", "base_url": sim.url, "api_key": "sk-ant-route", **NO_RETRY},
        {"name": "openai", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "sk-openai-route",
         "openai_api": "responses", **NO_RETRY},
        {"name": "chat", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "sk-chat-route", **NO_RETRY},
    ]}))


@pytest.mark.parametrize(("model", "path"), [
    ("gpt-5.4-mini", "/v1/responses"), ("chat:gpt-5.4-mini", "/v1/chat/completions"),
    ("claude-haiku-5-5", "/v1/messages"),
], ids=["forwarded", "chat", "claude"])
async def test_agent_tool_call(agents, agents_gw, fresh_sim, model, path):
    fresh_sim.set_script(SCRIPT)
    calls = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"19C in {city}, cloudy"

    client = AsyncOpenAI(base_url=agents_gw.url + "/v1", api_key="sk-caller", max_retries=0)
    agent = agents.Agent(name="weather", instructions="Answer with the tool.", tools=[get_weather],
                         model=agents.OpenAIResponsesModel(model, openai_client=client))
    result = await agents.Runner.run(agent, "What is the weather in Lima?")
    assert calls == ["Lima"]
    assert result.final_output == "It is 19C and cloudy in Lima."
    upstream = [r["path"] for r in fresh_sim.requests if r["method"] == "POST"]
    assert upstream == [path, path]


@pytest.mark.parametrize(("model", "path"), [
    ("gpt-5.4-mini", "/v1/responses"), ("claude-haiku-5-5", "/v1/messages"),
], ids=["forwarded", "claude"])
def test_langchain_use_responses_api_tool_call(agents_gw, fresh_sim, model, path):
    """LangChain's ChatOpenAI with use_responses_api=True: a tool call, its result, the answer."""
    langchain_openai = pytest.importorskip("langchain_openai", reason=needs.package("langchain-openai"))
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    fresh_sim.set_script(SCRIPT)

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"19C in {city}, cloudy"

    chat = langchain_openai.ChatOpenAI(model=model, base_url=agents_gw.url + "/v1", api_key="sk-caller",
                                       use_responses_api=True, max_retries=0).bind_tools([get_weather])
    history = [HumanMessage("What is the weather in Lima?")]
    first = chat.invoke(history)
    (call,) = first.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Lima"}
    history += [first, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    final = chat.invoke(history)
    assert final.text == "It is 19C and cloudy in Lima."
    assert [r["path"] for r in fresh_sim.requests if r["method"] == "POST"] == [path, path]
