import json
import math
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cascadeflow.cascade.answer import CheckResult, DraftAnswer, ToolCall
from cascadeflow.cascade.checks import (
    DEFAULT_CHECKS,
    FormatCheck,
    FunctionCheck,
    LogprobCheck,
    StructuralCheck,
    ToolUseCheck,
    combine,
    logprob_features,
    resolve_checks,
    run_checks,
    run_early,
)

PROSE = (
    "The capital of France is Paris. It sits on the Seine, has been the seat of government "
    "for centuries, and is home to the Louvre, Notre-Dame and the Eiffel Tower. About two "
    "million people live in the city proper and over twelve million in the wider region."
)


def structural(text="", **kw):
    return StructuralCheck()({}, DraftAnswer(text=text, **kw), "anthropic")


def call(name, args, id="c1"):
    try:
        parsed, ok = json.loads(args), True
    except ValueError:
        parsed, ok = None, False
    return ToolCall(id=id, name=name, arguments=args, input=parsed, valid_json=ok)


# ---------------------------------------------------------------- structural


def test_structural_ok_for_normal_prose():
    assert structural(PROSE, stop_reason="end_turn") == CheckResult("structural", 1.0, "ok")


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_answer_scores_zero(text):
    assert structural(text) == CheckResult("structural", 0.0, "empty answer")


def test_empty_text_with_tool_call_is_not_empty():
    assert structural("", tool_calls=[call("f", "{}")], stop_reason="tool_use").score == 1.0


def test_truncation_and_refusal_stop_reasons():
    assert structural(PROSE, stop_reason="max_tokens") == CheckResult("structural", 0.0, "truncated at max_tokens")
    assert structural(PROSE, stop_reason="refusal").score == 0.0
    assert structural(PROSE, stop_reason="stop_sequence").score == 1.0


@pytest.mark.parametrize(
    "text",
    [
        "I can't help with that request.",
        "I cannot provide instructions for that.",
        "I can not do that.",
        "I'm unable to access the internet.",
        "I am unable to comply.",
        "I’m not able to browse websites.",
        "I won't write that.",
        "I'm sorry, but I can't assist with that.",
        "Sorry, but I have to decline.",
        "As an AI language model, I do not have opinions.",
        "\n\n**I cannot** help with this.",
        "> I can't do that.",
        "## I'm unable to answer",
    ],
)
def test_refusal_at_start(text):
    assert structural(text) == CheckResult("structural", 0.1, "refusal")


@pytest.mark.parametrize(
    "text",
    [
        PROSE + " Honestly, I can't wait to visit again. I cannot stress that enough.",
        "I can't wait to show you this! " + PROSE,
        "I cannot stress enough how useful this is. " + PROSE,
        "Here is the code:\n```python\nprint(\"I can't do that\")\n```\nIt prints a message. " + PROSE,
        "```\nI cannot open file\n```\n" + PROSE,
    ],
)
def test_refusal_phrase_not_at_start_or_benign_is_ok(text):
    assert structural(text).score == 1.0


@pytest.mark.parametrize(
    "text",
    [
        "I'm not sure, but it might be 42.",
        "The answer could be Paris, though I don't know for certain.",
        "It depends; it's unclear from the question.",
        "I don't have enough information to say.",
        "I cannot be certain, but probably yes.",
        "I am not sure.",
    ],
)
def test_hedging_in_short_answer(text):
    assert structural(text) == CheckResult("structural", 0.4, "hedging")


def test_hedging_in_long_answer_only_counts_at_start():
    mid = PROSE + " Whether it was founded earlier, I'm not sure, and historians differ. " + PROSE
    assert len(mid.split()) >= 60
    assert structural(mid).score == 1.0
    assert structural("I'm not sure about this. " + mid).reason == "hedging"


def test_hedging_inside_code_fence_is_ignored():
    assert structural("Use this:\n```\n# I don't know why this works\nx = 1\n```").score == 1.0


def test_degenerate_ngram_repetition():
    text = "the cat sat on the mat and " * 12
    result = structural(text)
    assert result.score == 0.2
    assert result.reason.startswith("degenerate repetition")


def test_repeated_line_run():
    text = "Here you go:\n" + "Let me check that.\n" * 6 + "Done."
    assert structural(text).score == 0.2
    five = "Here you go:\n" + "Let me check that.\n" * 5 + "Done."
    assert structural(five).score == 1.0


def test_markdown_table_is_not_repetition():
    rows = "\n".join(
        f"| {day} | 09:00 | 17:00 | open | yes |"
        for day in ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"] * 2
    )
    table = "| Day | Opens | Closes | Status | Staffed |\n|---|---|---|---|---|\n" + rows
    assert len(table.split()) >= 40
    assert structural(table).score == 1.0  # two weeks of identical hours is data, not a loop


def test_table_stuck_on_one_row_is_repetition():
    table = "| Day | Opens |\n|---|---|\n" + "| Monday | 09:00 |\n" * 6
    assert structural(table).score == 0.2


def test_numbered_list_is_not_repetition():
    items = "\n".join(f"{i}. Add step {i} to the build script and run the tests again." for i in range(1, 12))
    assert structural(items).score == 1.0


def test_code_with_repeated_braces_is_not_repetition():
    code = "```js\n" + "".join(f"{'  ' * i}{{\n" for i in range(8))
    code += "".join("}\n" for _ in range(8)) + "```\nThe code above nests eight blocks."
    assert structural(code).score == 1.0


def test_similar_code_lines_are_not_repetition():
    services = ["api", "web", "worker", "cron", "cache", "queue", "search", "mail", "auth", "billing"]
    yaml = "".join(f"- name: {s}\n  enabled: true\n  retries: 3\n  timeout: 30\n" for s in services)
    assert structural("Here is the config:\n```yaml\n" + yaml + "```\nEach service retries thrice.").score == 1.0
    calls = "".join(f"result = run(strict = True, retries = 3, timeout = 30, case = {i})\n" for i in range(12))
    assert structural("Test cases:\n```python\n" + calls + "```").score == 1.0
    # the same lines outside a code fence do read as a loop: code is exempt from the n-gram share
    assert structural(calls).reason.startswith("degenerate repetition")


def test_loop_inside_code_is_caught_by_line_run():
    text = "```python\n" + "print('retrying')\n" * 8 + "```"
    assert structural(text).score == 0.2


def test_structural_reports_worst_subscore():
    text = "I can't " + "do it do it do it " * 20
    assert structural(text, stop_reason="max_tokens").reason == "truncated at max_tokens"
    assert structural(text).reason == "refusal"  # 0.1 beats repetition's 0.2


def test_structural_early():
    check = StructuralCheck()
    partial = DraftAnswer(text="I'm sorry, but", partial=True)
    assert check.early({}, partial, "openai") is None  # under 40 characters
    partial.text = "I'm sorry, but I can't help with that particular request."
    assert check.early({}, partial, "openai") == CheckResult("structural", 0.1, "refusal")
    assert check.early({}, DraftAnswer(text=PROSE, partial=True), "openai") is None
    # truncation and emptiness cannot be judged early
    assert check.early({}, DraftAnswer(text="", stop_reason="max_tokens"), "openai") is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2000), st.sampled_from([None, "end_turn", "max_tokens", "refusal", "tool_use"]))
def test_structural_property_scores_in_range(text, stop_reason):
    answer = DraftAnswer(text=text, stop_reason=stop_reason)
    result = StructuralCheck()({}, answer, "anthropic")
    assert 0.0 <= result.score <= 1.0
    early = StructuralCheck().early({}, answer, "anthropic")
    assert early is None or 0.0 <= early.score <= 1.0
    json_request = {"response_format": {"type": "json_object"}}
    confidence, _, results = run_checks(resolve_checks(None), json_request, answer, "openai")
    assert 0.0 <= confidence <= 1.0
    assert all(0.0 <= r.score <= 1.0 for r in results)


# ---------------------------------------------------------------- tool use

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"],
}
ANTHROPIC_TOOLS = {"tools": [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}, {"name": "noop"}]}
OPENAI_TOOLS = {"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]}


def tool_use(request, calls, dialect="anthropic", text=""):
    return ToolUseCheck()(request, DraftAnswer(text=text, tool_calls=calls), dialect)


def test_tool_use_not_applicable_without_tools_or_calls():
    assert tool_use({}, []) is None


@pytest.mark.parametrize("request_, dialect", [(ANTHROPIC_TOOLS, "anthropic"), (OPENAI_TOOLS, "openai")])
def test_tool_use_valid_call(request_, dialect):
    assert tool_use(request_, [call("get_weather", '{"city": "Oslo", "days": 3}')], dialect) == CheckResult(
        "tool_use", 1.0, "ok"
    )


def test_tool_use_no_call_with_auto_is_ok():
    assert tool_use(ANTHROPIC_TOOLS, [], text="It is sunny.").score == 1.0


def test_unknown_tool():
    assert tool_use(OPENAI_TOOLS, [call("get_time", "{}")], "openai") == CheckResult(
        "tool_use", 0.0, "unknown tool 'get_time'"
    )
    assert tool_use({}, [call("get_time", "{}")]).reason == "unknown tool 'get_time'"


@pytest.mark.parametrize("args", ['{"city": "Oslo"', '["Oslo"]', "42"])
def test_invalid_json_arguments(args):
    assert tool_use(ANTHROPIC_TOOLS, [call("get_weather", args)]) == CheckResult(
        "tool_use", 0.0, "invalid JSON arguments for 'get_weather'"
    )


def test_schema_missing_required_field_names_it():
    result = tool_use(ANTHROPIC_TOOLS, [call("get_weather", '{"days": 2}')])
    assert result.score == 0.0
    assert result.reason == "arguments for 'get_weather' invalid at $: 'city' is a required property"


def test_schema_wrong_type_names_path():
    result = tool_use(OPENAI_TOOLS, [call("get_weather", '{"city": "Oslo", "days": 0}')], "openai")
    assert result.score == 0.0
    assert "$.days" in result.reason and "minimum" in result.reason


def test_tool_without_schema_accepts_any_object():
    assert tool_use(ANTHROPIC_TOOLS, [call("noop", '{"anything": [1, 2]}')]).score == 1.0


@pytest.mark.parametrize(
    "bad_schema",
    [{"type": "not-a-type"}, {"type": "object", "required": "city"}, {"$ref": "https://example.invalid/s.json"}],
)
def test_invalid_caller_schema_is_not_checkable(bad_schema):
    request = {"tools": [{"name": "t", "input_schema": bad_schema}]}
    assert tool_use(request, [call("t", '{"x": 1}')]).score == 1.0


@pytest.mark.parametrize(
    "choice, names, ok",
    [
        ({"type": "auto"}, [], True),
        ({"type": "any"}, [], False),
        ({"type": "any"}, ["get_weather"], True),
        ({"type": "tool", "name": "noop"}, ["get_weather"], False),
        ({"type": "tool", "name": "noop"}, ["get_weather", "noop"], True),
        ({"type": "none"}, ["noop"], False),
        ({"type": "none"}, [], True),
    ],
)
def test_tool_choice_anthropic(choice, names, ok):
    calls = [call(n, '{"city": "Oslo"}' if n == "get_weather" else "{}", id=n) for n in names]
    result = tool_use({**ANTHROPIC_TOOLS, "tool_choice": choice}, calls)
    assert result == CheckResult("tool_use", 1.0, "ok") if ok else result == CheckResult(
        "tool_use", 0.0, "tool_choice not honoured"
    )


OPENAI_TWO = {
    "tools": OPENAI_TOOLS["tools"]
    + [{"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}}]
}


@pytest.mark.parametrize(
    "choice, names, ok",
    [
        ("auto", [], True),
        ("required", [], False),
        ("required", ["noop"], True),
        ({"type": "function", "function": {"name": "get_weather"}}, ["noop"], False),
        ({"type": "function", "function": {"name": "get_weather"}}, ["get_weather"], True),
        ("none", ["noop"], False),
        ("none", [], True),
    ],
)
def test_tool_choice_openai(choice, names, ok):
    calls = [call(n, '{"city": "Oslo"}' if n == "get_weather" else "{}", id=n) for n in names]
    result = tool_use({**OPENAI_TWO, "tool_choice": choice}, calls, "openai")
    assert result.score == (1.0 if ok else 0.0)
    if not ok:
        assert result.reason == "tool_choice not honoured"


def test_tool_use_early_judges_complete_calls_only_per_call():
    check = ToolUseCheck()
    request = {**ANTHROPIC_TOOLS, "tool_choice": {"type": "tool", "name": "noop"}}
    good = DraftAnswer(tool_calls=[call("get_weather", '{"city": "Oslo"}')], partial=True)
    assert check.early(request, good, "anthropic") is None  # tool_choice waits for the end
    bad = DraftAnswer(tool_calls=[call("get_weather", '{"days": "x"}')], partial=True)
    assert check.early(request, bad, "anthropic").score == 0.0
    assert check.early(request, DraftAnswer(text="Let me", partial=True), "anthropic") is None


# ---------------------------------------------------------------- format

PERSON_SCHEMA = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}


def fmt(request, text, tool_calls=()):
    return FormatCheck()(request, DraftAnswer(text=text, tool_calls=list(tool_calls)), "openai")


def test_format_not_applicable():
    assert fmt({}, "hello") is None
    assert fmt({"response_format": {"type": "text"}}, "hello") is None
    assert fmt({"response_format": {"type": "json_object"}}, "", [call("f", "{}")]) is None


def test_format_json_object():
    rf = {"response_format": {"type": "json_object"}}
    assert fmt(rf, '{"a": 1}') == CheckResult("format", 1.0, "ok")
    assert fmt(rf, "[1, 2]") == CheckResult("format", 0.0, "JSON is not an object")
    bad = fmt(rf, "Sure! Here it is: {\"a\": 1}")
    assert bad.score == 0.0 and bad.reason.startswith("not valid JSON")
    assert fmt(rf, '{"a": NaN}').score == 0.0


def test_format_fenced_json_is_accepted():
    rf = {"response_format": {"type": "json_object"}}
    assert fmt(rf, '```json\n{"a": 1}\n```').score == 1.0
    assert fmt(rf, '  ```\n{"a": 1}\n```  ').score == 1.0


@pytest.mark.parametrize(
    "request_",
    [
        {"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON_SCHEMA}}},
        {"output_format": {"type": "json_schema", "schema": PERSON_SCHEMA}},
        {"output_config": {"format": {"type": "json_schema", "schema": PERSON_SCHEMA}}},
    ],
)
def test_format_json_schema(request_):
    assert fmt(request_, '{"age": 30}').score == 1.0
    result = fmt(request_, '{"age": "thirty"}')
    assert result.score == 0.0
    assert result.reason == "JSON does not match schema at $.age: 'thirty' is not of type 'integer'"
    assert "'age' is a required property" in fmt(request_, "{}").reason
    assert fmt(request_, "not json").reason.startswith("not valid JSON")


def test_format_early_is_none():
    assert FormatCheck().early({"response_format": {"type": "json_object"}}, DraftAnswer(text="{"), "openai") is None


# ---------------------------------------------------------------- logprobs


def test_logprob_features_and_score():
    lps = [-0.01, -0.05, -0.1, -0.2, -0.02, -0.3, -2.0, -0.01, -0.04, -0.07, -1.2, -0.03]
    f = logprob_features(lps)
    ordered = sorted(lps)
    # nearest rank: p10 of 12 values is rank ceil(1.2) = 2, p25 is rank 3
    assert f == {"mean": pytest.approx(sum(lps) / 12), "min": -2.0, "p10": ordered[1], "p25": ordered[2], "count": 12.0}
    assert f["p10"] == -1.2 and f["p25"] == -0.3

    result = LogprobCheck()({}, DraftAnswer(text="x", logprobs=lps), "openai")
    expected = 0.6 * math.exp(sum(lps) / 12) + 0.4 * math.exp(-1.2)
    assert result.score == pytest.approx(expected)
    # mean = -4.03 / 12 = -0.335833…; exp → 0.7147422; exp(-1.2) = 0.3011942
    assert result.score == pytest.approx(0.6 * 0.7147422 + 0.4 * 0.3011942, rel=1e-6)
    assert result.reason == "mean p=0.71, p10=0.30, min=0.14"


def test_logprob_score_clamped_and_not_applicable():
    assert LogprobCheck()({}, DraftAnswer(logprobs=[0.0, 0.0]), "openai").score == 1.0
    assert LogprobCheck()({}, DraftAnswer(logprobs=[float("-inf")]), "openai").score == 0.0
    assert LogprobCheck()({}, DraftAnswer(logprobs=[]), "openai") is None
    assert LogprobCheck()({}, DraftAnswer(logprobs=None), "openai") is None
    with pytest.raises(ValueError):
        logprob_features([])


# ---------------------------------------------------------------- combine

A = CheckResult("a", 0.9, "fine")
B = CheckResult("b", 0.5, "meh")


def test_combine_rules():
    assert combine([A, None, B]) == (0.5, "b: meh")
    score, reason = combine([A, B], "mean")
    assert score == pytest.approx(0.7) and "weakest b: meh" in reason
    assert combine([A, B], "product")[0] == pytest.approx(0.45)
    assert combine([], "min") == (1.0, "no check applied")
    assert combine([None, None], "product") == (1.0, "no check applied")
    with pytest.raises(ValueError):
        combine([A], "max")


# ---------------------------------------------------------------- registry and runner


def test_resolve_builtins():
    checks = resolve_checks(None)
    assert [c.name for c in checks] == list(DEFAULT_CHECKS)
    assert [c.name for c in resolve_checks(["format"])] == ["format"]
    with pytest.raises(ValueError, match="structural, tool_use, format, logprobs"):
        resolve_checks(["nope"])


def test_resolve_custom_class_and_function(tmp_path, monkeypatch):
    (tmp_path / "my_checks_mod.py").write_text(
        textwrap.dedent(
            """
            from cascadeflow.cascade.answer import CheckResult

            class Polite:
                name = "polite"
                def __call__(self, request, answer, dialect):
                    return CheckResult(self.name, 1.0 if "please" in answer.text else 0.3, "politeness")
                def early(self, request, answer, dialect):
                    return None

            def no_digits(request, answer, dialect):
                bad = any(ch.isdigit() for ch in answer.text)
                return CheckResult("no_digits", 0.0 if bad else 1.0, "digits" if bad else "ok")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    polite, digits = resolve_checks(["my_checks_mod:Polite", "my_checks_mod:no_digits"])
    assert polite.name == "polite"
    assert isinstance(digits, FunctionCheck) and digits.name == "no_digits"
    assert digits.early({}, DraftAnswer(text="1"), "openai") is None
    confidence, reason, results = run_checks([polite, digits], {}, DraftAnswer(text="call 911"), "openai")
    assert (confidence, reason) == (0.0, "no_digits: digits")
    assert [r.score for r in results] == [0.3, 0.0]
    with pytest.raises(ValueError, match="cannot load"):
        resolve_checks(["my_checks_mod:Missing"])
    with pytest.raises(ValueError, match="cannot load"):
        resolve_checks(["no_such_module_xyz:f"])


def test_raising_check_scores_zero_and_does_not_crash():
    def boom(request, answer, dialect):
        raise RuntimeError("kaput")

    class EarlyBoom:
        name = "early_boom"

        def __call__(self, request, answer, dialect):
            return None

        def early(self, request, answer, dialect):
            raise KeyError("x")

    answer = DraftAnswer(text=PROSE, stop_reason="end_turn")
    confidence, reason, results = run_checks([StructuralCheck(), FunctionCheck(boom)], {}, answer, "openai")
    assert confidence == 0.0
    assert reason == "boom: check boom failed: RuntimeError: kaput"
    assert results[0].score == 1.0
    early = run_early([StructuralCheck(), EarlyBoom()], {}, answer, "openai")
    assert early.name == "early_boom" and early.score == 0.0 and early.reason.startswith("check early_boom failed")


def test_out_of_range_scores_are_clamped():
    checks = [FunctionCheck(lambda r, a, d: CheckResult("hi", 1.7, "x")), FunctionCheck(lambda r, a, d: float("nan"))]
    _, _, results = run_checks(checks, {}, DraftAnswer(text="x"), "openai")
    assert [r.score for r in results] == [1.0, 0.0]


def test_run_early_returns_first_failure_or_none():
    checks = resolve_checks(None)
    request = dict(ANTHROPIC_TOOLS)
    assert run_early(checks, request, DraftAnswer(text=PROSE, partial=True), "anthropic") is None
    refusing = DraftAnswer(text="I cannot help with that, it would be against policy.", partial=True)
    assert run_early(checks, request, refusing, "anthropic") == CheckResult("structural", 0.1, "refusal")
    bad_call = DraftAnswer(tool_calls=[call("get_weather", "{}")], partial=True)
    assert run_early(checks, request, bad_call, "anthropic").name == "tool_use"


def test_run_checks_full_pipeline():
    request = {**OPENAI_TOOLS, "tool_choice": "required"}
    calls = [call("get_weather", '{"city": "Oslo"}')]
    answer = DraftAnswer(tool_calls=calls, stop_reason="tool_use", logprobs=[-0.1] * 5)
    confidence, reason, results = run_checks(resolve_checks(None), request, answer, "openai")
    assert [r.name for r in results] == ["structural", "tool_use", "logprobs"]
    assert confidence == pytest.approx(math.exp(-0.1))
    assert reason == "logprobs: mean p=0.90, p10=0.90, min=0.90"


def test_python_code_that_does_not_parse_is_flagged():
    from cascadeflow.cascade.checks import StructuralCheck

    good = DraftAnswer(text="Here:\n```python\ndef add(a, b):\n    return a + b\n```\n")
    bad = DraftAnswer(text="Here:\n```python\ndef add(a, b)\n    return a + b\n```\n")
    other = DraftAnswer(text="```js\nconst x = ;\n```")  # only Python is parsed
    check = StructuralCheck()
    assert check({}, good, "openai").score == 1.0
    result = check({}, bad, "openai")
    assert result.score == 0.3 and result.reason == "python code does not parse"
    assert check({}, other, "openai").score == 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Explain: yesterday was April 30, 2021, so today is May 1, 2021.\nA: 05/01/2021", "05/01/2021"),
        ("05/01/2021", "05/01/2021"),
        ("Step 1: 3 x 60 = 180. Step 2: 180 x 3 = 540 meters in total, so he runs 540 meters a week.", "540"),
        ("The answer is **1,234**.", "1234"),
        ("Final answer: B", "b"),
        ("Paris", "paris"),
    ],
)
def test_final_answer_extraction(text, expected):
    from cascadeflow.cascade.agreement import final_answer

    assert final_answer(text) == expected


def test_agreement_is_the_share_of_samples_reaching_the_drafts_answer():
    from cascadeflow.cascade.agreement import agreement

    draft = "Reasoning…\nA: 05/01/2021"
    result = agreement(draft, ["05/01/2021", "A: 05/01/2021", "04/30/2021", "05/01/2021."])
    assert result.name == "agreement" and result.score == 0.75 and result.reason == "3 of 4 samples agree"
    assert agreement(draft, []) is None
