"""Shadow mode end to end: drafts judged on live traffic are paired with the verifier's answer, labelled, and
`cascadeflow calibrate --from-ledger` fits the rule on them; the gateway then loads the rule it wrote.

Driven with the official OpenAI SDK against the simulator: the draft (gpt-4o-mini) answers questions q0…q39 with a
final answer and a log-probability that sets its confidence; the verifier (gpt-4o) always answers "Answer: A". Drafts
that say "A" are right; the confident ones mostly are.
"""

from __future__ import annotations

import os
import shutil
import time

import openai
import pytest
import yaml

from cascadeflow import ProxyConfig
from cascadeflow.cli import main
from cascadeflow.store import Ledger
from tests.conftest import ledger_rows, run_async, sim_routes

QUESTIONS = 40
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _draft_script() -> list[dict]:
    """q0…q39: a right answer with a high log-probability, except every fourth (wrong, low) and every tenth (right, low)."""
    rules = []
    for i in range(QUESTIONS):
        wrong, unsure = i % 4 == 3, i % 10 == 0
        rules.append({"match": {"model": "gpt-4o-mini", "prompt_regex": rf"\bq{i}\b"},
                      "text": "Answer: B" if wrong else "Answer: A",
                      "logprob": -2.5 if wrong or unsure else -0.02})
    # the verifier; its shadow calls take a while, which the client must never wait for
    rules.append({"match": {"model": "gpt-4o"}, "text": "Answer: A", "latency": 0.8})
    return rules


def _dashboard_shadow_row(url: str, rule: str) -> dict[str, str]:
    """The dashboard's shadow-mode row for ``rule``, as headless Chromium renders it."""
    from playwright.sync_api import sync_playwright

    def read() -> dict[str, str]:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            try:
                page = browser.new_page()
                page.goto(f"{url}/dashboard")
                page.wait_for_selector("body[data-ready=true]")
                cells = page.locator(f'#shadow tr[data-rule="{rule}"] td[data-field]')
                return {cells.nth(i).get_attribute("data-field"): cells.nth(i).inner_text() for i in range(cells.count())}
            finally:
                browser.close()

    return run_async_in_thread(read)


def run_async_in_thread(work):  # noqa: ANN001, ANN201 - Playwright's sync API wants a thread without an event loop
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(work).result()


def _pairs(database: str, at_least: int) -> list[dict]:
    async def read() -> list[dict]:
        ledger = await Ledger(database, retention_days=None).start()
        try:
            return await ledger.shadow_pairs()
        finally:
            await ledger.aclose()

    deadline = time.monotonic() + 15
    while True:
        pairs = run_async(read())
        if len(pairs) >= at_least or time.monotonic() > deadline:
            return pairs
        time.sleep(0.2)


@pytest.fixture()
def config_file(sim, fresh_sim, tmp_path):
    path = tmp_path / "cascadeflow-proxy.yaml"
    path.write_text(yaml.safe_dump({
        "routes": sim_routes(sim),
        "database_url": f"sqlite:///{tmp_path / 'ledger.db'}",
        "cascade_rules": [{"name": "mini", "request_model": "gpt-4o", "draft_model": "gpt-4o-mini",
                           "quality_threshold": 0.5, "shadow": {"share": 1.0, "max_daily_usd": 5.0}}],
    }))
    sim.set_script(_draft_script())
    return path


def test_shadow_pairs_are_labelled_and_calibrate_from_ledger_writes_a_rule_the_gateway_loads(
        sim, start_gateway, config_file, capsys):
    gw = start_gateway(ProxyConfig.from_yaml(config_file))
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="caller", max_retries=0)
    decisions, accepted_waits = {}, []
    for i in range(QUESTIONS):
        messages = [{"role": "user", "content": f"Question q{i}: which option?"}]
        started = time.monotonic()
        if i % 2:
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
            raw.parse()
        else:
            with client.chat.completions.with_streaming_response.create(model="gpt-4o", messages=messages,
                                                                        stream=True) as raw:
                list(raw.iter_lines())
        decisions[i] = raw.headers["x-cascadeflow-decision"]
        if decisions[i] == "accepted":
            accepted_waits.append(time.monotonic() - started)
    accepted = [i for i, d in decisions.items() if d == "accepted"]
    assert accepted and len(accepted) < QUESTIONS, decisions
    assert max(accepted_waits) < 0.6, "the client never waits for the shadow call to the verifier (0.8 s)"

    database = f"sqlite:///{config_file.parent / 'ledger.db'}"
    pairs = _pairs(database, QUESTIONS)
    assert len(pairs) == QUESTIONS, "every judged draft is paired at share 1.0"
    by_request = {p["request_id"]: p for p in pairs}
    rows = {r["request_id"]: r for r in ledger_rows(database, at_least=QUESTIONS) if r["plan"] == "cascade"}
    for request_id, pair in by_request.items():
        row = rows[request_id]
        assert pair["accepted"] == row["accepted"] and pair["confidence"] == row["confidence"]
        assert pair["method"] == "final_answer" and pair["verifier_answer"] == "Answer: A"
        assert (pair["draft_model"], pair["verifier_model"]) == ("gpt-4o-mini", "gpt-4o")
        assert pair["label"] == (pair["draft_answer"] == "Answer: A")
        # an accepted draft's pair paid for a verifier call; an escalated one's did not (the verifier served)
        assert (pair["shadow_cost"] > 0) == bool(pair["accepted"])
    shadow_calls = [r for r in sim.requests if r["body"]["model"] == "gpt-4o" and not r["body"].get("stream")]
    assert len(shadow_calls) >= len(accepted)

    # the measured quality, in `cascadeflow stats`
    assert main(["stats", "-c", str(config_file)]) == 0
    report = capsys.readouterr().out
    assert "quality measured on live traffic" in report and "mini" in report

    # …and on the dashboard, as the ledger says (where headless Chromium is installed: the page tests say so when not)
    if os.path.exists(CHROMIUM):
        row = _dashboard_shadow_row(gw.url, "mini")
        wrong = sum(1 for p in pairs if p["accepted"] and p["label"] is False)
        assert row["pairs"] == str(QUESTIONS) and row["accepted_wrong"] == str(wrong)
        assert row["quality_retained"] == f"{1 - wrong / QUESTIONS:.3f}" and "–" in row["interval"]

    # calibrate on the ledger: a threshold that keeps 0.9 of the verifier's quality, written into the rule
    assert main(["calibrate", "--from-ledger", "-c", str(config_file), "--rule", "mini", "--target-quality", "0.9",
                 "--folds", "4"]) == 0
    out = capsys.readouterr().out
    assert f"{QUESTIONS} shadow pairs" in out
    written = yaml.safe_load(config_file.read_text())["cascade_rules"][0]
    assert not written.get("never_draft"), out
    confidences = sorted({p["confidence"] for p in pairs})
    assert confidences[0] < written["quality_threshold"] <= confidences[-1], written  # above the unsure drafts only
    rule = ProxyConfig.from_yaml(config_file).all_cascade_rules()[0]
    assert rule.quality_threshold == written["quality_threshold"]
    loaded = start_gateway(ProxyConfig.from_yaml(config_file))
    again = openai.OpenAI(base_url=f"{loaded.url}/v1", api_key="caller", max_retries=0)
    wrong = again.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Question q3: which option?"}])
    right = again.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Question q1: which option?"}])
    assert wrong.headers["x-cascadeflow-decision"].startswith("escalated:")
    assert right.headers["x-cascadeflow-decision"] == "accepted"


def test_calibrate_from_ledger_without_pairs_says_what_to_do(config_file, capsys):
    assert main(["calibrate", "--from-ledger", "-c", str(config_file), "--target-quality", "0.9"]) != 0
    err = capsys.readouterr().err
    assert "too few to calibrate" in err and "shadow" in err
