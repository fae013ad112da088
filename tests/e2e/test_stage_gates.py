"""Each draft stage is gated on its own model: a request the first stage cannot serve is drafted on the next.

A rule's ``stages`` are tried in order before the verifier. The capability gates (media, server tools,
features, context window, learned beta refusals) and the cache economics judge each stage's model; the
request skips drafting only when no stage may draft it, and a stage passed over while another drafts is
named in ``x-cascadeflow-skipped-stages`` and the ledger row's ``detail``. Driven with the Anthropic SDK
against the simulator over HTTP; the simulator's recorded requests say which models were really called.
"""

from __future__ import annotations

import time
import uuid

import anthropic
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cascadeflow import ProxyConfig
from cascadeflow.cli import main
from tests.conftest import ledger_rows, sim_routes

OPUS, SONNET, HAIKU = "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"
#: OpenAI-compatible drafts the registry knows no media for: they read text only
TEXT_ONLY = {name: {"provider": "openai", "input_per_mtok": 0.1, "output_per_mtok": 0.1}
             for name in ("local-coder", "local-writer")}
BASH = {"name": "Bash", "description": "Run a command", "input_schema": {
    "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}
SCREENSHOT = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
#: an image inside a tool result, as an agent's screenshot tool returns it
WITH_IMAGE = [{"role": "user", "content": "What does the page show?"},
              {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash",
                                                 "input": {"command": "shot"}}]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [SCREENSHOT]}]}]


def gateway_with(sim, start_gateway, stages: list[str], database: str, models: dict = TEXT_ONLY, **policies):
    rule = {"name": "opus", "request_model": OPUS, "stages": [{"model": m} for m in stages], "quality_threshold": 0.0,
            "policies": {"cache_economics": False, **policies}}
    config = {"routes": sim_routes(sim), "cascade_rules": [rule], "models": models, "database_url": database}
    return start_gateway(ProxyConfig.from_dict(config))


def models_called(sim) -> list[str]:
    return [r["body"]["model"] for r in sim.requests]


def ask(gw, messages: list, *, stream: bool, session: str | None = None) -> dict:
    client = anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)
    headers = {"X-Claude-Code-Session-Id": session} if session else None
    if stream:
        with client.messages.stream(model=OPUS, max_tokens=400, tools=[BASH], messages=messages,
                                    extra_headers=headers) as answer:
            answer.get_final_message()
            return dict(answer.response.headers)
    raw = client.messages.with_raw_response.create(model=OPUS, max_tokens=400, tools=[BASH], messages=messages,
                                                   extra_headers=headers)
    raw.parse()
    return dict(raw.headers)


@pytest.mark.parametrize("stream", [False, True])
def test_a_stage_that_cannot_read_the_image_is_passed_over_and_the_next_drafts(
        sim, fresh_sim, start_gateway, tmp_path, stream):
    database = f"sqlite:///{tmp_path / 'ledger.db'}"
    gw = gateway_with(sim, start_gateway, ["local-coder", HAIKU], database)
    headers = ask(gw, WITH_IMAGE, stream=stream)
    assert (headers["x-cascadeflow-decision"], headers["x-cascadeflow-draft-model"]) == ("accepted", HAIKU)
    assert headers["x-cascadeflow-skipped-stages"] == "local-coder=capability:image"
    assert models_called(sim) == [HAIKU], "the text-only stage is never sent the image"
    # text only: the first stage drafts, and nothing is passed over
    sim.clear()
    headers = ask(gw, WITH_IMAGE[:1], stream=stream)
    assert (headers["x-cascadeflow-decision"], headers["x-cascadeflow-draft-model"]) == ("accepted", "local-coder")
    assert "x-cascadeflow-skipped-stages" not in headers
    assert models_called(sim) == ["local-coder"]
    rows = ledger_rows(database, at_least=2)
    assert [(r["decision"], r["draft_model"]) for r in rows] == [("accepted", HAIKU), ("accepted", "local-coder")]
    assert rows[0]["detail"].endswith("; skipped local-coder=capability:image"), rows[0]["detail"]
    assert "skipped" not in (rows[1]["detail"] or "")


def test_when_no_stage_can_read_the_image_the_request_skips_drafting_as_before(
        sim, fresh_sim, start_gateway, tmp_path):
    database = f"sqlite:///{tmp_path / 'ledger.db'}"
    gw = gateway_with(sim, start_gateway, ["local-coder", "local-writer"], database)
    headers = ask(gw, WITH_IMAGE, stream=False)
    assert headers["x-cascadeflow-decision"] == "skipped:capability:image"
    assert "x-cascadeflow-skipped-stages" not in headers and "x-cascadeflow-draft-model" not in headers
    assert models_called(sim) == [OPUS]
    assert [r["decision"] for r in ledger_rows(database, at_least=1)] == ["skipped:capability:image"]


def test_cache_economics_price_each_stage_on_its_own_model(sim, fresh_sim, start_gateway, tmp_path):
    """Sonnet (half Opus's price) does not pay on a cached agent conversation, Haiku does: with Sonnet first,
    the conversation is drafted on Haiku, and Sonnet is named as passed over for its economics."""
    database = f"sqlite:///{tmp_path / 'ledger.db'}"
    gw = gateway_with(sim, start_gateway, [SONNET, HAIKU], database, cache_economics=True, sticky_escalations=0)
    system = "You are a coding agent. " * 300
    messages = [{"role": "user", "content": [{"type": "text", "text": system + "Run the tests and fix what fails",
                                              "cache_control": {"type": "ephemeral"}}]}]
    headers = ask(gw, messages, stream=False, session=str(uuid.uuid4()))
    assert (headers["x-cascadeflow-decision"], headers["x-cascadeflow-draft-model"]) == ("accepted", HAIKU)
    assert headers["x-cascadeflow-skipped-stages"] == f"{SONNET}=cache_economics"
    assert float(headers["x-cascadeflow-expected-saving-usd"]) > 0, "Haiku's own expected saving"
    assert models_called(sim) == [HAIKU]


LONG_PROMPT = [{"role": "user", "content": "Summarise this log: " + "GET /index.html 200\n" * 800}]
#: ``local-coder`` with a 2,000-token window: :data:`LONG_PROMPT` does not fit it
SMALL_WINDOW = {"local-coder": {**TEXT_ONLY["local-coder"], "context_window": 2_000}}


def test_a_stage_whose_context_window_is_too_small_is_passed_over(sim, fresh_sim, start_gateway, tmp_path):
    """The context-window policy judges each stage's own window (here ``local-coder`` has 2,000 tokens)."""
    database = f"sqlite:///{tmp_path / 'ledger.db'}"
    gw = gateway_with(sim, start_gateway, ["local-coder", HAIKU], database, models=SMALL_WINDOW)
    headers = ask(gw, LONG_PROMPT, stream=False)
    assert (headers["x-cascadeflow-decision"], headers["x-cascadeflow-draft-model"]) == ("accepted", HAIKU)
    assert headers["x-cascadeflow-skipped-stages"] == "local-coder=context_too_long"
    assert models_called(sim) == [HAIKU]


def stage_skip_samples(gw) -> dict[tuple[str, str, str], float]:
    """``cascadeflow_cascade_skipped_stages_total`` from one /metrics scrape: (rule, model, reason) → count."""
    text = httpx.get(gw.url + "/metrics").raise_for_status().text
    return {(s.labels["rule"], s.labels["model"], s.labels["reason"]): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == "cascadeflow_cascade_skipped_stages_total"}


def test_stages_passed_over_are_counted_in_stats_metrics_and_the_ledgers_overview(
        sim, fresh_sim, start_gateway, tmp_path, capsys):
    """Each stage passed over is counted per rule as (stage model, why): in this process's /stats, in the
    Prometheus metrics, and from the ledger (the dashboard's overview and ``cascadeflow stats``), alike."""
    database = f"sqlite:///{tmp_path / 'ledger.db'}"
    gw = gateway_with(sim, start_gateway, ["local-coder", HAIKU], database, models=SMALL_WINDOW)
    for messages, stream in ((WITH_IMAGE, False), (WITH_IMAGE, True), (LONG_PROMPT, False), (WITH_IMAGE[:1], False)):
        ask(gw, messages, stream=stream)
    want = {"local-coder": {"capability:image": 2, "context_too_long": 1}}

    deadline = time.monotonic() + 10  # a stream's record is made as its last byte goes out
    while (stats := httpx.get(gw.url + "/stats").json())["cascade"]["opus"]["requests"] < 4 \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    figures = stats["cascade"]["opus"]
    assert figures["skipped_stages"] == want
    assert figures["skipped_by_policy"] == {} and figures["accepted_by_stage"] == {HAIKU: 3, "local-coder": 1}
    assert stage_skip_samples(gw) == {("opus", "local-coder", "capability:image"): 2.0,
                                      ("opus", "local-coder", "context_too_long"): 1.0}

    rows = ledger_rows(database, at_least=4)
    assert [r["skipped_stages"] for r in rows] == ["local-coder=capability:image"] * 2 + [
        "local-coder=context_too_long", None]
    overview = httpx.get(gw.url + "/dashboard/api/overview", params={"range": "all"}).json()
    assert [(r["rule"], r["skipped_stages"]) for r in overview["rules"]] == [("opus", want)]
    (tmp_path / "c.yaml").write_text(f'database_url: "{database}"\n')
    assert main(["stats", "-c", str(tmp_path / "c.yaml")]) == 0
    rules = capsys.readouterr().out.split("\n\ncascade rules")[1].split("\n\n")[0]
    passed_over = {line.split("stage passed over: ")[1].rsplit(None, 1)[0]: line.split()[-1]
                   for line in rules.splitlines() if "stage passed over:" in line}
    assert passed_over == {"local-coder (capability:image)": "2", "local-coder (context_too_long)": "1"}, rules


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_skipped_for_its_kind_reports_its_kind_before_any_stage_gate(
        sim, fresh_sim, start_gateway, tmp_path, stream):
    """A rule that drafts only Claude Code's main loop: an SDK request (kind ``other``) with a screenshot no
    stage can read is skipped for its kind — the reason that holds whatever the stage, decided before the
    stages' gates are run — and goes to the verifier alone."""
    database = f"sqlite:///{tmp_path / 'ledger.db'}"
    gw = gateway_with(sim, start_gateway, ["local-coder", "local-writer"], database, draft_kinds=["main"])
    headers = ask(gw, WITH_IMAGE, stream=stream)
    assert (headers["x-cascadeflow-decision"], headers["x-cascadeflow-request-kind"]) == ("skipped:kind:other", "other")
    assert "x-cascadeflow-skipped-stages" not in headers and "x-cascadeflow-draft-model" not in headers
    assert models_called(sim) == [OPUS]
    assert [r["decision"] for r in ledger_rows(database, at_least=1)] == ["skipped:kind:other"]
    stats = httpx.get(gw.url + "/stats").json()["cascade"]["opus"]  # the record is counted before the ledger's write
    assert stats["skipped_by_policy"] == {"kind:other": 1} and stats["skipped_stages"] == {}
