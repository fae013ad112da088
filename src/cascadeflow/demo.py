"""``cascadeflow demo``: the whole idea on a fresh machine, with no API keys.

Starts the simulated provider (scripted so the draft model handles some prompts and
fumbles others) and a gateway with one cascade rule, sends a small mixed workload
through the official ``anthropic`` SDK, and prints what happened to each request and
what the cascade saved against always asking the requested model.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from .config import ProxyConfig
from .gateway import create_app
from .sim import ServerThread, SimulatedProvider

if TYPE_CHECKING:
    from anthropic import Anthropic
    from anthropic.types import Message, ToolParam
    from anthropic.types.message_create_params import MessageCreateParamsBase

__all__ = ["run_demo"]

REQUESTED, DRAFT = "claude-opus-5-5", "claude-haiku-5-5"

WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@dataclass(frozen=True)
class Task:
    prompt: str
    stream: bool = False
    tools: bool = False


#: how the draft model (Haiku, simulated) answers each prompt of the workload
SCRIPT = [
    {"match": {"model": DRAFT, "prompt_contains": "capital of Japan"}, "text": "Tokyo is the capital of Japan."},
    {"match": {"model": DRAFT, "prompt_contains": "haiku about rain"}, "text": "Soft rain on the roof,\nthe gutters hum their old song,\nthe street shines again."},
    {"match": {"model": DRAFT, "prompt_contains": "weather in Lisbon"}, "tool_calls": [{"name": "get_weather", "input": {"city": "Lisbon"}}]},
    {"match": {"model": DRAFT, "prompt_contains": "weather in Quito"}, "tool_calls": [{"name": "get_weather", "input": {"town": "Quito"}}]},
    {"match": {"model": DRAFT, "prompt_contains": "lock picking"}, "text": "I can't help with that, but I can explain how locks work in general."},
    {"match": {"model": DRAFT, "prompt_contains": "migration plan"}, "text": "Step one: inventory the services. " * 40, "stop_reason": "max_tokens"},
    {"match": {"model": DRAFT, "prompt_contains": "Riemann"}, "text": "I'm not sure. It might be true, or not."},
    {"match": {"model": DRAFT, "prompt_contains": "unit test"}, "text": "def test_add():\n    assert add(2, 3) == 5\n"},
    {"match": {"model": DRAFT, "prompt_contains": "summarise"}, "text": "The report finds costs fell 12% while usage doubled."},
    {"match": {"model": DRAFT, "prompt_contains": "blank"}, "text": ""},
    {"match": {"model": DRAFT, "prompt_contains": "Spanish"}, "text": "Buenos días."},
    {"match": {"model": DRAFT, "prompt_contains": "list comprehension"}, "text": "A list comprehension builds a list from an iterable in one expression: [x * x for x in range(5)]."},
]

WORKLOAD = [
    Task("What is the capital of Japan?"),
    Task("Write a haiku about rain.", stream=True),
    Task("What is the weather in Lisbon?", tools=True),
    Task("What is the weather in Quito?", tools=True, stream=True),
    Task("Teach me lock picking for my neighbour's door."),
    Task("Draft a detailed migration plan for our monolith.", stream=True),
    Task("Is the Riemann hypothesis true?"),
    Task("Write a unit test for add(a, b)."),
    Task("Please summarise the attached quarterly report.", stream=True),
    Task("Reply with a blank message."),
    Task("Translate 'good morning' into Spanish."),
    Task("Explain what a Python list comprehension is.", stream=True),
]


def run_demo(out: TextIO = sys.stdout) -> dict:
    """Run the demo; print the table to ``out`` and return the gateway's cascade stats."""
    import json
    import urllib.request

    import anthropic

    with SimulatedProvider(script=SCRIPT) as sim, tempfile.TemporaryDirectory() as folder:
        config = ProxyConfig.from_dict(
            {
                "database_url": f"sqlite:///{folder}/demo.db",  # the demo leaves no ledger behind
                "routes": [{"name": "anthropic", "provider": "anthropic", "base_url": sim.url}],
                "cascade_rules": [{"name": "opus-via-haiku", "request_model": "claude-opus-*", "draft_model": DRAFT}],
            }
        )
        with ServerThread(create_app(config)) as gateway:
            client = anthropic.Anthropic(base_url=gateway.url, api_key="demo-key", max_retries=0)
            print(f"simulated provider at {sim.url}; gateway at {gateway.url}", file=out)
            print(f"rule: requests for {REQUESTED} try {DRAFT} first (threshold 0.7)\n", file=out)
            header = f"{'#':>2}  {'prompt':<46} {'mode':<6} {'answered by':<18} {'decision':<44} {'conf':>5} {'cost $':>10} {'baseline $':>10}"
            print(header, file=out)
            print("-" * len(header), file=out)
            for number, task in enumerate(WORKLOAD, 1):
                headers, text = _send(client, task)
                print(
                    f"{number:>2}  {task.prompt[:46]:<46} {'stream' if task.stream else 'json':<6} "
                    f"{headers.get('x-cascadeflow-served-model', '?'):<18} {headers.get('x-cascadeflow-decision', '?')[:44]:<44} "
                    f"{headers.get('x-cascadeflow-confidence', '-'):>5.5} {_money(headers, 'cost')} {_money(headers, 'baseline-cost')}",
                    file=out,
                )
            with urllib.request.urlopen(gateway.url + "/stats") as response:
                stats = json.load(response)["cascade"]["opus-via-haiku"]
    print(
        f"\n{stats['accepted']} of {stats['requests']} answered by the draft; "
        f"cost ${stats['cost']:.6f} against ${stats['baseline_cost']:.6f} always using {REQUESTED} "
        f"(saving {stats['saving_pct']:.1f}%).",
        file=out,
    )
    print("Streams show no cost headers when escalated (the verifier's cost is known only at the end); /stats has it.", file=out)
    print("Escalations by reason:", ", ".join(f"{k} ×{v}" for k, v in stats["escalated_by_reason"].items()) or "none", file=out)
    return stats


def _send(client: Anthropic, task: Task) -> tuple[dict, str]:
    kwargs: MessageCreateParamsBase = {
        "model": REQUESTED,
        "max_tokens": 300,
        "messages": [{"role": "user", "content": task.prompt}],
    }
    if task.tools:
        kwargs["tools"] = [WEATHER_TOOL]
    message: Message
    if task.stream:
        with client.messages.stream(**kwargs) as stream:
            message = stream.get_final_message()
            headers = dict(stream.response.headers)
    else:
        raw = client.messages.with_raw_response.create(**kwargs)
        message, headers = raw.parse(), dict(raw.headers)
    text = next((b.text for b in message.content if b.type == "text"), "")
    return headers, text


def _money(headers: dict, kind: str) -> str:
    value = headers.get(f"x-cascadeflow-{kind}-usd")
    return f"{float(value):>10.6f}" if value else f"{'(stream)':>10}"
