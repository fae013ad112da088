"""``/`` and ``/docs``: what a newcomer opens first, served by the gateway itself with no CDN.

The docs page is driven in headless Chromium: it renders every operation of
``/openapi.json`` and sends a real request through the gateway to the simulator.
"""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

from cascadeflow import __version__
from cascadeflow.gateway.openapi import openapi_spec

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_the_landing_page_points_clients_here(http, gw):
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert f"cascadeflow <span>{__version__}</span>" in page.text
    assert f'base_url="{gw.url}"' in page.text and f"ANTHROPIC_BASE_URL={gw.url} claude" in page.text
    assert 'href="docs"' in page.text and 'href="dashboard"' in page.text
    assert "http://" not in page.text.replace(gw.url, "")  # nothing loaded from elsewhere
    forged = http.get("/", headers={"host": 'x"><script>alert(1)</script>'})
    assert "<script>alert(1)" not in forged.text  # the address is escaped


def test_the_description_covers_the_admin_api():
    spec = openapi_spec()
    paths = spec["paths"]
    assert set(paths["/admin/keys"]) == {"post", "get"} and set(paths["/admin/keys/{key_id}"]) == {"get", "delete"}
    assert set(paths["/admin/keys/reseal"]) == {"post"}
    new_key = paths["/admin/keys"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "provider_keys" in new_key["properties"]
    assert all(op["security"] == [{"masterKey": []}] for path in ("/admin/keys", "/admin/keys/{key_id}",
                                                                 "/admin/keys/reseal", "/metrics")
               for op in paths[path].values())
    assert spec["components"]["securitySchemes"]["masterKey"]["scheme"] == "bearer"
    assert {"API", "gateway", "admin"} == {op["tags"][0] for item in paths.values() for op in item.values()}


def test_docs_assets_are_served_with_a_strict_policy(http):
    docs = http.get("/docs")
    assert docs.status_code == 200 and 'src="docs/static/docs.js"' in docs.text
    for name in ("docs.js", "site.css"):
        asset = http.get(f"/docs/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-security-policy"].startswith("default-src 'self'")
    assert http.get("/docs/static/../app.py").status_code == 404
    missing = http.get("/docs/static/nothing.js")
    assert missing.status_code == 404 and "error" in missing.json()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


def test_docs_page_renders_every_operation_and_sends_a_request(browser, gw):
    tab = browser.new_page()
    elsewhere: list[str] = []
    tab.on("request", lambda r: None if r.url.startswith(gw.url) else elsewhere.append(r.url))
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(gw.url + "/docs")
    tab.wait_for_selector("body[data-ready='true']")
    shown = tab.eval_on_selector_all("details.op", "ops => ops.map(o => o.dataset.method + ' ' + o.dataset.path)")
    expected = {f"{method} {path}" for path, item in httpx.get(gw.url + "/openapi.json").json()["paths"].items()
                for method in item}
    assert set(shown) == expected and "post /admin/keys" in shown

    tab.fill("#credential", "sk-ant-from-the-docs-page")
    operation = tab.locator("details.op[data-method='post'][data-path='/v1/messages']")
    operation.locator("summary").click()
    operation.locator("button").click()
    operation.locator(".status").filter(has_text="200").wait_for()
    answer = operation.locator("pre").inner_text()
    assert "[claude-haiku-5-5]" in answer or "[claude-sonnet-5-5]" in answer  # the example, through the cascade
    assert "x-cascadeflow-" in answer
    assert elsewhere == [] and errors == []
    tab.close()
