"""The dashboard in headless Chromium, after a scripted workload through the official SDKs.

Three virtual keys send accepted, escalated, skipped, pass-through and failed requests
(over a week of older ledger history); every figure the page shows must equal the
ledger's, the page must load nothing but the gateway's own files, the master key must
guard the data, and the page must refresh by itself. ``cascadeflow stats`` must print
the same figures. Set ``CASCADEFLOW_DASHBOARD_SCREENSHOT=docs/dashboard.png`` to
refresh the screenshot in the docs.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import anthropic
import httpx
import openai
import pytest

from cascadeflow import ProxyConfig
from cascadeflow.store import Ledger, LedgerEntry
from tests.conftest import ledger_rows, run_async, sim_routes
from tests.unit.test_queries import expected

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
MASTER = "mk-dashboard-test-0123456789"
KEYS = {"alice": "cfk_alice_" + "a" * 24, "bob": "cfk_bob_" + "b" * 24, "ci": "cfk_ci_" + "c" * 24}
OPUS, SONNET, HAIKU = "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"
GPT, MINI = "gpt-4o", "gpt-4o-mini"  # a draft with log-probabilities (GPT-5 models refuse them)
WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
SCRIPT = [
    {"match": {"model": HAIKU, "prompt_contains": "capital of France"}, "text": "Paris is the capital of France."},
    {"match": {"model": HAIKU, "prompt_contains": "say nothing"}, "text": ""},
    {"match": {"model": HAIKU, "prompt_contains": "forbidden"}, "text": "I can't help with that request, sorry. " + "More words. " * 20},
    {"match": {"model": MINI, "prompt_contains": "easy sum"}, "text": "2 + 2 = 4", "logprob": -0.01},
    {"match": {"model": MINI, "prompt_contains": "hard proof"}, "text": "Perhaps it follows by induction", "logprob": -3.0},
]
#: what the browser reads off the page: every figure's exact value (data-value), keyed like the API
READ_PAGE = """() => {
  const fields = (tr) => Object.fromEntries([...tr.querySelectorAll("td[data-field]")].map((td) => [td.dataset.field, td.dataset.value]));
  const rows = (sel, key) => Object.fromEntries([...document.querySelectorAll(sel)].map((tr) => [tr.dataset[key], tr]));
  const counts = (tr, sel, key) => Object.fromEntries([...tr.querySelectorAll(sel)].map((li) => [li.dataset[key], +li.dataset.count]));
  const map = (o, f) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, f(v)]));
  return {
    since: document.body.dataset.since,
    totals: Object.fromEntries([...document.querySelectorAll("[id^='total-']")].map((e) => [e.id.slice(6), e.dataset.value])),
    text: Object.fromEntries([...document.querySelectorAll("[id^='total-']")].map((e) => [e.id.slice(6), e.textContent])),
    rules: map(rows("#rules tr[data-rule]", "rule"), (tr) => ({...fields(tr),
      escalations: counts(tr, "li[data-reason]", "reason"), skips: counts(tr, "li[data-skip]", "skip"),
      stageSkips: counts(tr, "li[data-stage-skip]", "stageSkip")})),
    spend: Object.fromEntries(["key", "user", "team", "model"].map((n) => [n, map(rows(`#spend-${n} tr[data-name]`, "name"), fields)])),
    latency: map(rows("#latency tr[data-metric]", "metric"), fields),
    recent: [...document.querySelectorAll("#recent tr[data-request-id]")].map((tr) => ({id: tr.dataset.requestId, ...fields(tr)})),
    buckets: [...document.querySelectorAll("#series .bucket")].map((r) => [+r.dataset.requests, +r.dataset.cost, +r.dataset.baseline]),
  };
}"""


def history(now: float) -> list[LedgerEntry]:
    """A week of earlier traffic from the same keys (kept clear of the 24h and 7d range edges)."""
    rng = random.Random(42)
    who = {"alice": ("alice", "core"), "bob": ("bob", "research"), "ci": (None, "core")}
    entries = []
    for i in range(160):
        age = rng.choice((rng.uniform(60, 23 * 3600), rng.uniform(25 * 3600, 6.9 * 86400)))
        key = rng.choice(("alice", "alice", "bob", "ci"))
        base = dict(endpoint="/v1/messages", dialect="anthropic", stream=i % 3 == 0, status=200, ts=now - age,
                    request_id=f"old-{i}", key_id=key, user_id=who[key][0], team=who[key][1], input_tokens=400,
                    output_tokens=rng.randint(20, 300), latency_ms=rng.uniform(200, 2500), ttfb_ms=rng.uniform(80, 700))
        if i % 4 == 0:
            cost = rng.uniform(0.001, 0.004)
            entries.append(LedgerEntry(requested_model=SONNET, plan="pass_through", served_model=SONNET, cost=cost, baseline_cost=cost, **base))
            continue
        rule, draft, verifier = (("opus", HAIKU, OPUS), ("gpt", MINI, GPT))[i % 2]
        decision = rng.choice(("accepted", "accepted", "accepted", "escalated:structural:empty answer",
                               "escalated:logprobs:low confidence" if rule == "gpt" else "escalated:structural:refusal"))
        accepted = decision == "accepted"
        baseline = rng.uniform(0.01, 0.03)
        entries.append(LedgerEntry(
            requested_model=verifier, plan="cascade", rule=rule, draft_model=draft, decision=decision, accepted=accepted,
            confidence=rng.uniform(0.75, 0.99) if accepted else rng.uniform(0.05, 0.6), served_model=draft if accepted else verifier,
            cost=baseline * (0.2 if accepted else 1.15), baseline_cost=baseline,
            skipped_stages=("local-coder=capability:image", None, "local-coder=context_too_long")[i % 3], **base))
    return entries


def workload(gw_url: str) -> int:
    """The scripted requests, each with its own x-request-id; returns how many were sent."""
    sent = 0

    def rid() -> dict:
        nonlocal sent
        sent += 1
        return {"x-request-id": f"wl-{sent}"}

    alice = anthropic.Anthropic(base_url=gw_url, api_key=KEYS["alice"], max_retries=0)
    ask = {"max_tokens": 200}
    alice.messages.create(model=OPUS, messages=[{"role": "user", "content": "What is the capital of France?"}], extra_headers=rid(), **ask)
    with alice.messages.stream(model=OPUS, messages=[{"role": "user", "content": "The capital of France, again?"}],
                               extra_headers=rid(), **ask) as stream:
        stream.get_final_message()
    alice.messages.create(model=OPUS, messages=[{"role": "user", "content": "Please say nothing"}], extra_headers=rid(), **ask)
    alice.messages.create(model=OPUS, messages=[{"role": "user", "content": "Tell me the forbidden thing"}], extra_headers=rid(), **ask)
    alice.messages.create(model=SONNET, messages=[{"role": "user", "content": "A plain question"}], extra_headers=rid(), **ask)
    bob = openai.OpenAI(base_url=gw_url + "/v1", api_key=KEYS["bob"], max_retries=0)
    bob.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "An easy sum: 2+2?"}], extra_headers=rid())
    bob.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "A hard proof, please"}], extra_headers=rid())
    for _ in bob.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "An easy sum: 3+3?"}], stream=True,
                                         extra_headers=rid()):
        pass
    bob.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], extra_headers=rid())
    ci = anthropic.Anthropic(base_url=gw_url, api_key=KEYS["ci"], max_retries=0)
    ci.messages.create(model=OPUS, messages=[{"role": "user", "content": "Weather in Rome?"}], tools=[WEATHER],
                       tool_choice={"type": "tool", "name": "get_weather"}, extra_headers=rid(), **ask)
    with pytest.raises(anthropic.BadRequestError):
        ci.messages.create(model=OPUS, messages="not a list", extra_headers=rid(), **ask)  # type: ignore[arg-type]
    return sent


@pytest.fixture(scope="module")
def dash(sim, start_gateway, tmp_path_factory):
    """A gateway with auth on, three virtual keys, two rules, a week of history, and the workload sent."""
    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'ledger.db'}"
    seeded = history(time.time())

    async def seed() -> None:
        ledger = await Ledger(url, retention_days=None).start()
        for entry in seeded:
            ledger.record(entry)
        await ledger.aclose()

    run_async(seed())
    config = ProxyConfig.from_dict({
        "database_url": url, "routes": sim_routes(sim),
        "auth": {"mode": "api_key", "master_key": MASTER, "keys": [
            {"key": KEYS["alice"], "user_id": "alice", "team": "core"},
            {"key": KEYS["bob"], "user_id": "bob", "team": "research"},
            {"key": KEYS["ci"], "name": "ci", "team": "core"},
        ]},
        "cascade_rules": [
            {"name": "opus", "request_model": OPUS, "draft_model": HAIKU, "quality_threshold": 0.7,
             "policies": {"skip_forced_tool_choice": True}},
            {"name": "gpt", "request_model": GPT, "draft_model": MINI, "quality_threshold": 0.7},
        ],
    })
    gw = start_gateway(config)
    sim.set_script(SCRIPT)
    sim.clear()
    try:
        sent = workload(gw.url)
    finally:
        sim.set_script([])
    rows = ledger_rows(url, len(seeded) + sent)
    assert len(rows) == len(seeded) + sent
    return SimpleNamespace(gw=gw, url=url, sent=sent)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, dash):
    """A fresh tab that may reach the gateway and nothing else; ``page.elsewhere`` lists what it tried."""
    context = browser.new_context(viewport={"width": 1360, "height": 900}, device_scale_factor=1)
    tab = context.new_page()
    elsewhere: list[str] = []

    def only_the_gateway(route) -> None:
        if route.request.url.startswith(dash.gw.url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort("blockedbyclient")

    tab.route("**/*", only_the_gateway)
    tab.elsewhere = elsewhere  # type: ignore[attr-defined]
    yield tab
    context.close()


def shown(tab) -> dict:
    return tab.evaluate(READ_PAGE)


def check_figures(tab, rows: list[dict]) -> dict:
    """Everything the page shows against the ledger's rows for the page's own time range."""
    page = shown(tab)
    since = float(page["since"]) if page["since"] else None
    want = expected(rows, since)
    got = page["totals"]
    approx = lambda v: pytest.approx(v, rel=1e-9, abs=1e-12)  # noqa: E731
    assert int(got["requests"]) == want["requests"]
    assert page["text"]["requests"] == f"{want['requests']:,}"
    for field in ("accepted", "escalated", "errors", "cascaded", "pass-through", "cancelled"):
        assert int(got[field]) == want[field.replace("-", "_")], field
    assert float(got["cost"]) == approx(want["cost"]) and float(got["baseline"]) == approx(want["baseline"])
    assert float(got["saving"]) == approx(want["baseline"] - want["cost"])
    saving_pct = 100 * (want["baseline"] - want["cost"]) / want["baseline"]
    assert float(got["saving-pct"]) == approx(saving_pct) and page["text"]["saving-pct"] == f"{saving_pct:.1f}%"
    accepted_pct = 100 * want["accepted"] / (want["accepted"] + want["escalated"])  # of the drafts, not all requests
    assert float(got["accepted-pct"]) == approx(accepted_pct) and page["text"]["accepted-pct"] == f"{accepted_pct:.1f}%"
    assert int(got["drafted"]) == want["accepted"] + want["escalated"]

    assert set(page["rules"]) == set(want["rules"])
    for name, rule in page["rules"].items():
        w = want["rules"][name]
        for field in ("requests", "accepted", "escalated", "skipped", "errors"):
            assert int(rule[field]) == w[field], (name, field)
        assert float(rule["cost"]) == approx(w["cost"]) and float(rule["saving"]) == approx(w["saving"])
        assert rule["escalations"] == w["escalations"] and rule["skips"] == w["skips"]
        assert rule["stageSkips"] == {f"{model}={why}": n for model, reasons in w["skipped_stages"].items()
                                      for why, n in reasons.items()}, name

    for dimension, groups in want["spend"].items():
        top = dict(sorted(groups.items(), key=lambda kv: -kv[1][1])[:20])
        assert set(page["spend"][dimension]) == {"" if k is None else k for k in top}, dimension
        for name, (requests, cost, baseline) in top.items():
            figures = page["spend"][dimension]["" if name is None else name]
            assert int(figures["requests"]) == requests and float(figures["cost"]) == approx(cost)
            assert float(figures["saving"]) == approx(baseline - cost)

    for metric, figures in want["latency"].items():
        for field, value in figures.items():
            assert float(page["latency"][metric][field]) == approx(value), (metric, field)

    assert [r["id"] for r in page["recent"]] == want["recent"]
    by_id = {r["request_id"]: r for r in rows}
    for shown_row in page["recent"]:
        row = by_id[shown_row["id"]]
        assert shown_row["requested_model"] == row["requested_model"] and int(shown_row["status"]) == row["status"]
        assert shown_row["decision"] == (row["decision"] or "") and shown_row["rule"] == (row["rule"] or "")
        assert shown_row["served_model"] == (row["served_model"] or "")
        assert (float(shown_row["cost"]) if shown_row["cost"] else None) == row["cost"]
        assert (float(shown_row["confidence"]) if shown_row["confidence"] else None) == row["confidence"]

    buckets = page["buckets"]
    assert sum(b[0] for b in buckets) == want["requests"]
    assert sum(b[1] for b in buckets) == approx(want["cost"]) and sum(b[2] for b in buckets) == approx(want["baseline"])
    return page


def wait_until(check, timeout: float = 15.0) -> None:
    """Poll from here: the page's CSP (no eval) rules out Playwright's wait_for_function."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def open_with_key(tab, url: str) -> None:
    tab.add_init_script(f"sessionStorage.setItem('cascadeflow.masterKey', {MASTER!r})")
    tab.goto(url)
    tab.wait_for_selector("body[data-ready='true']")


def test_the_workload_is_in_the_ledger_under_each_key(dash):
    rows = {r["request_id"]: r for r in ledger_rows(dash.url) if r["request_id"].startswith("wl-")}
    assert len(rows) == dash.sent
    decisions = [rows[f"wl-{i}"]["decision"] for i in range(1, dash.sent + 1)]
    assert decisions[:2] == ["accepted", "accepted"] and decisions[2] == "escalated:structural:empty answer"
    assert decisions[3].startswith("escalated:") and decisions[4] is None  # refusal; a pass-through
    assert decisions[5] == "accepted" and decisions[6].startswith("escalated:logprobs") and decisions[8] is None
    assert decisions[9] == "skipped:forced_tool_choice" and rows[f"wl-{dash.sent}"]["status"] == 400
    assert [rows[f"wl-{i}"]["key_id"] for i in (1, 6, 10)] == ["alice", "bob", "ci"]
    assert rows["wl-6"]["user_id"] == "bob" and rows["wl-10"]["team"] == "core"


def test_the_page_shows_the_ledgers_figures_and_needs_nothing_else(page, dash):
    started = time.monotonic()
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    with page.expect_response(lambda r: "/dashboard/api/overview" in r.url) as first:
        page.goto(dash.gw.url + "/dashboard")
    assert first.value.status == 401  # no key yet: the data is refused, the page asks for the key
    page.wait_for_selector("#auth-form", state="visible")
    assert page.is_hidden("#content")

    page.fill("#master-key", "not-the-master-key")
    page.click("#auth-form button[type=submit]")
    wait_until(lambda: "refused" in page.text_content("#auth-error"))
    assert page.is_hidden("#content")

    page.fill("#master-key", MASTER)
    page.click("#auth-form button[type=submit]")
    page.wait_for_selector("body[data-ready='true']")
    assert page.is_visible("#content") and page.is_hidden("#auth-form")
    assert page.evaluate("sessionStorage.getItem('cascadeflow.masterKey')") == MASTER
    rows = ledger_rows(dash.url)
    figures = check_figures(page, rows)
    assert page.get_attribute("body", "data-range") == "24h"
    assert 0 < int(figures["totals"]["requests"]) < len(rows)  # the week-old history is outside 24h

    page.click("#ranges button[data-range='7d']")
    page.wait_for_selector("body[data-range='7d']")
    figures = check_figures(page, rows)
    assert int(figures["totals"]["requests"]) == len(rows)
    assert {"alice", "bob", "ci"} <= set(figures["spend"]["key"])
    shot = page.screenshot(full_page=True)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
    target = os.environ.get("CASCADEFLOW_DASHBOARD_SCREENSHOT")
    if target:  # the docs' picture: the top of the page, as a browser window shows it
        page.set_viewport_size({"width": 1360, "height": 1640})
        page.screenshot(path=target)

    page.click("#ranges button[data-range='1h']")
    page.wait_for_selector("body[data-range='1h']")
    check_figures(page, rows)
    assert page.url.endswith("#range=1h")

    assert page.elsewhere == []  # type: ignore[attr-defined]
    assert seen and all(url.startswith(dash.gw.url + "/") for url in seen), seen
    assert time.monotonic() - started < 30


def test_the_page_refreshes_by_itself(page, dash):
    open_with_key(page, dash.gw.url + "/dashboard?refresh=0.5#range=24h")
    before = int(page.get_attribute("#total-requests", "data-value"))
    claude = anthropic.Anthropic(base_url=dash.gw.url, api_key=KEYS["alice"], max_retries=0)
    claude.messages.create(model=SONNET, max_tokens=50, messages=[{"role": "user", "content": "one more"}],
                           extra_headers={"x-request-id": "live-1"})
    wait_until(lambda: page.get_attribute("#total-requests", "data-value") == str(before + 1))
    page.wait_for_selector("#recent tr[data-request-id='live-1']")
    assert page.get_attribute("#recent tbody tr", "data-request-id") == "live-1"  # newest first
    check_figures(page, ledger_rows(dash.url))
    page.uncheck("#live")  # live off: the figures stay as they are
    claude.messages.create(model=SONNET, max_tokens=50, messages=[{"role": "user", "content": "and another"}])
    ledger_rows(dash.url, before + 2)
    page.wait_for_timeout(1500)
    assert int(page.get_attribute("#total-requests", "data-value")) == before + 1
    assert page.elsewhere == []  # type: ignore[attr-defined]


def test_the_data_needs_the_master_key_and_the_shell_loads_nothing_foreign(dash):
    with httpx.Client(base_url=dash.gw.url, timeout=10) as http:
        shell = http.get("/dashboard")
        assert shell.status_code == 200 and shell.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in shell.headers["content-security-policy"]
        assert "http" not in shell.text.replace("http-equiv", "")  # no absolute URL: nothing from elsewhere
        for name in ("dashboard.js", "dashboard.css"):
            asset = http.get(f"/dashboard/static/{name}")
            assert asset.status_code == 200 and "https://" not in asset.text and "@import" not in asset.text
        assert http.get("/dashboard/static/secret.py").status_code == 404
        assert http.get("/dashboard/").status_code == 307
        api = "/dashboard/api/overview"
        assert http.get(api).status_code == 401
        assert http.get(api, headers={"authorization": "Bearer wrong"}).status_code == 401
        assert http.get(api, headers={"authorization": f"Bearer {KEYS['alice']}"}).status_code == 401  # a virtual key is not enough
        ok = http.get(api, params={"range": "all"}, headers={"authorization": f"Bearer {MASTER}"})
        assert ok.status_code == 200 and ok.headers["cache-control"] == "no-store"
        assert ok.json()["totals"]["requests"] == len(ledger_rows(dash.url))
        assert http.get(api, headers={"x-api-key": MASTER}).status_code == 200
        assert http.get(api, params={"range": "5y"}, headers={"x-api-key": MASTER}).status_code == 400


def test_without_auth_the_dashboard_is_open(gw):
    response = httpx.get(gw.url + "/dashboard/api/overview", params={"range": "1h"})
    assert response.status_code == 200 and set(response.json()) >= {"totals", "series", "rules", "spend", "latency", "recent"}


def test_auth_on_without_a_master_key_keeps_the_data_closed(sim, start_gateway, tmp_path):
    config = ProxyConfig.from_dict({"database_url": f"sqlite:///{tmp_path / 'l.db'}", "routes": sim_routes(sim),
                                    "auth": {"mode": "api_key", "keys": [{"key": KEYS["alice"]}]}})
    gw = start_gateway(config)
    assert httpx.get(gw.url + "/dashboard/api/overview", headers={"authorization": f"Bearer {KEYS['alice']}"}).status_code == 403
    assert httpx.get(gw.url + "/dashboard").status_code == 200


def test_stats_prints_the_dashboards_tables(dash, tmp_path):
    (tmp_path / "c.yaml").write_text(f'database_url: "{dash.url}"\n')
    result = subprocess.run([sys.executable, "-m", "cascadeflow.cli", "stats", "--config", str(tmp_path / "c.yaml"),
                             "--since", "7d", "--by", "key", "--recent", "5"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    rows = ledger_rows(dash.url)
    want = expected(rows, min(r["ts"] for r in rows))
    lines = {line.split()[0]: line.split() for line in out.split("\n\n")[0].splitlines()[3:]}
    assert lines["total"][1] == str(want["requests"]) and lines["alice"][1] == str(want["spend"]["key"]["alice"][0])
    saving = want["baseline"] - want["cost"]
    assert f"saving ${saving:.6f} of ${want['baseline']:.6f} baseline ({100 * saving / want['baseline']:.1f}%)" in out
    sections = {block.splitlines()[0].split("  ")[0].strip(): block for block in out.split("\n\n")[1:]}
    assert {"cascade rules", "spend by key", "spend by user", "spend by team", "spend by requested model",
            "latency (ms)", "recent decisions"} <= set(sections)
    assert any(title.startswith("saving over time") for title in sections)
    rules = {line.split()[0]: line.split() for line in sections["cascade rules"].splitlines()[2:] if not line.startswith("  ")}
    for name, rule in want["rules"].items():
        assert rules[name][1] == str(rule["requests"]) and rules[name][2] == str(rule["accepted"])
        assert rules[name][4] == str(rule["escalated"])
        for reason in rule["escalations"]:
            assert f"escalated: {reason}" in sections["cascade rules"]
    users = {line.split()[0]: line.split() for line in sections["spend by user"].splitlines()[2:]}
    assert users["bob"][1] == str(want["spend"]["user"]["bob"][0]) and users["bob"][2] == f"{want['spend']['user']['bob'][1]:.6f}"
    latency = {line.split()[0]: line.split() for line in sections["latency (ms)"].splitlines()[2:]}
    assert latency["end"][3] == f"{want['latency']['latency']['p50']:.1f}" and latency["first"][5] == str(want["latency"]["ttfb"]["count"])
    decisions = sections["recent decisions"].splitlines()[2:]
    newest = max(rows, key=lambda r: (r["ts"], r["id"]))
    assert len(decisions) == 5 and newest["requested_model"] in decisions[0]
