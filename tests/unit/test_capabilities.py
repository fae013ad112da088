"""Whether a draft can serve a request at all: server tools only some upstreams run."""

from __future__ import annotations

import orjson

from cascadeflow.cascade.capabilities import capability_gap
from cascadeflow.pricing import ModelRegistry

REGISTRY = ModelRegistry()


def gap(body: dict, dialect: str, draft_provider: str, verifier_provider: str) -> str | None:
    return capability_gap(body, b"{}", dialect, "claude-haiku-5-5", draft_provider, verifier_provider, REGISTRY)


def test_a_web_search_runs_on_claude_too_but_other_hosted_tools_only_on_openai():
    search = {"model": "gpt-5.4", "input": "hi", "tools": [{"type": "web_search"}]}
    assert gap(search, "responses", "anthropic", "openai") is None  # Claude runs its own search
    files = {**search, "tools": [{"type": "web_search"}, {"type": "file_search"}]}
    assert gap(files, "responses", "anthropic", "openai") == "capability:server_tools"
    chat = {"model": "gpt-5.4", "messages": [], "web_search_options": {}}
    assert gap(chat, "openai", "anthropic", "openai") is None
    server = {"model": "claude-opus-5-5", "messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}
    assert gap(server, "anthropic", "openai", "anthropic") == "capability:server_tools"


def _text_only() -> ModelRegistry:
    registry = ModelRegistry()
    registry.register("text-draft", media=[])  # reads no media
    registry.register("image-draft", media=["image"])
    return registry


def media_gap(body: dict, dialect: str, draft: str = "text-draft") -> str | None:
    raw = orjson.dumps(body)  # the bytes the gateway got, as a client would spell them
    return capability_gap(body, raw, dialect, draft, "anthropic", "anthropic", _text_only())


def test_media_in_a_tool_result_gates_the_draft_in_every_spelling():
    png = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    nested = {"model": "claude-opus-5-5", "messages": [
        {"role": "user", "content": "look"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {"p": "a.png"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": [{"type": "text", "text": "a picture"}, {"type": "image", "source": png}]}]}]}
    assert media_gap(nested, "anthropic") == "capability:image"
    assert media_gap(nested, "anthropic", "image-draft") is None
    # the client may escape any character of a JSON string: the bytes then never spell "image"
    escaped = orjson.dumps(nested).replace(b'"image', b'"\\u0069mage')
    assert orjson.loads(escaped) == nested
    assert capability_gap(nested, escaped, "anthropic", "text-draft", "anthropic", "anthropic",
                          _text_only()) == "capability:image"
    # a Responses image input by file id (before: missed, its bytes hold neither '"image' nor 'file"')
    responses = {"model": "gpt-5.4", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "what is it"}, {"type": "input_image", "file_id": "file-abc"}]}]}
    assert media_gap(responses, "responses") == "capability:image"
    output = {"model": "gpt-5.4", "input": [{"type": "function_call_output", "call_id": "c1", "output": [
        {"type": "input_image", "image_url": "data:image/png;base64,iVBO"}]}]}
    assert media_gap(output, "responses") == "capability:image"
    chat = {"model": "gpt-5.4", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]}]}
    assert media_gap(chat, "openai") == "capability:document"  # the first missing kind, by name
    assert media_gap(chat, "openai", "image-draft") == "capability:document"


def test_words_about_media_are_not_media():
    talk = {"model": "claude-opus-5-5", "tools": [{"name": "Read", "description": 'reads an "image" or a "file"',
                                                 "input_schema": {"type": "object", "properties": {
                                                     "file": {"type": "string", "enum": ["image", "document"]}}}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": '{"type": "image"} is a "document"'}]},
                         {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read",
                                                            "input": {"file": "image"}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                                       "content": '"type":"image" "input_file"'}]}]}
    assert media_gap(talk, "anthropic") is None
    assert media_gap({"model": "gpt-5.4", "messages": [{"role": "user", "content": [{"type": ["image"]}]}]},
                     "openai") is None  # a malformed block is no media (and no crash)
