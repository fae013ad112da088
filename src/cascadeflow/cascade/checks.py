"""Built-in quality checks on a draft answer, how they combine, and how config names them.

Every check is cheap and deterministic: it runs once per draft, on the request path, so
it must cost far less than the escalation it may save. A check returns None when it has
nothing to say about a request/answer (e.g. no tools were offered), so that "not
applicable" never counts as a doubt. Checks are conservative: a false alarm costs one
escalation, a missed bad draft costs a wrong answer to the caller.
"""

from __future__ import annotations

import ast
import importlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from jsonschema.exceptions import best_match
from jsonschema.validators import Draft202012Validator, validator_for

from .answer import Check, CheckResult, DraftAnswer, ToolCall

__all__ = [
    "StructuralCheck", "ToolUseCheck", "FormatCheck", "LogprobCheck", "FunctionCheck", "logprob_features",
    "combine", "COMBINE_RULES", "DEFAULT_CHECKS", "BUILTIN_CHECKS", "resolve_checks", "run_checks", "run_early",
]  # fmt: skip

#: below this score an early (streaming) verdict stops the draft
EARLY_FAIL_BELOW = 0.5
COMBINE_RULES = ("min", "mean", "product")
_MAX_MESSAGE = 120


def _short(message: str, limit: int = _MAX_MESSAGE) -> str:
    """Keep reasons readable in logs and headers: validator messages can quote whole inputs."""
    return message if len(message) <= limit else message[: limit - 1] + "…"


#: leading whitespace / markdown (headings, emphasis, quotes, bullets) before the first word;
#: no backtick, so an answer that opens with code is never read as a refusal
_LEAD = r"[\s>*_#\"'“‘\-]*"
#: idioms that open like a refusal but are not one ("I can't wait", "I cannot stress enough")
_NOT_A_REFUSAL = (
    r"(?!\s+(?:wait|stress|emphasi[sz]e|overstate|believe|thank|recommend|help\s+but|be\s+(?:sure|certain)))"
)
_REFUSAL_START = re.compile(
    _LEAD + r"(?:i\s+(?:can['’]t|cannot|can\s+not)" + _NOT_A_REFUSAL
    + r"|i['’]m\s+(?:unable|not\s+able)\b|i\s+am\s+unable\b|i\s+won['’]t(?!\s+(?:lie|bore))"
    r"|i(?:['’]m|\s+am)\s+sorry,?\s+but\b|sorry,?\s+but\s+i\b|as\s+an\s+ai\b)",
    re.IGNORECASE,
)  # fmt: skip
_HEDGE = (
    r"(?:i(?:['’]m|\s+am)\s+not\s+(?:sure|certain)|i\s+(?:don['’]t|do\s+not)\s+know|it(?:['’]s|\s+is)\s+unclear"
    r"|i\s+don['’]t\s+have\s+enough\s+information|i\s+(?:cannot|can['’]t)\s+be\s+(?:certain|sure))\b"
)
_HEDGE_START = re.compile(_LEAD + _HEDGE, re.IGNORECASE)
_HEDGE_ANYWHERE = re.compile(r"\b" + _HEDGE, re.IGNORECASE)
#: fenced code, including a fence still open at the end of the text
_FENCE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
#: markdown table rows: repetitive by nature, so left to the repeated-line test
_TABLE_ROW = re.compile(r"^[ \t]*\|.*$", re.MULTILINE)
_ALNUM = re.compile(r"[^\W_]")

_OPENING_CHARS = 200
_SHORT_ANSWER_WORDS = 60
_REPETITION_MIN_WORDS = 40
_REPEATED_NGRAM_SHARE = 0.5
_REPEATED_LINE_RUN = 6
_EARLY_MIN_CHARS = 40


def _refuses(text: str) -> bool:
    """A refusal phrase opening the answer. Mid-text phrases ("... I can't wait") are ordinary prose."""
    return _REFUSAL_START.match(text[:_OPENING_CHARS]) is not None


def _hedges(text: str) -> bool:
    """A short answer that hedges anywhere has little else in it; a long one only matters if it opens so."""
    if len(text.split()) < _SHORT_ANSWER_WORDS:
        return _HEDGE_ANYWHERE.search(_FENCE.sub(" ", text)) is not None
    return _HEDGE_START.match(text[:_OPENING_CHARS]) is not None


def _repetition(text: str) -> str | None:
    """Detect a model stuck in a loop; the bars are high so that tables, lists and code pass.
    A loop inside code or a table still shows as one line repeated many times in a row."""
    # n-grams over prose only: code, tables, pipes and braces repeat legitimately
    prose = _TABLE_ROW.sub("", _FENCE.sub(" ", text))
    words = [w.lower() for w in prose.split() if _ALNUM.search(w)]
    if len(words) >= _REPETITION_MIN_WORDS:
        grams = list(zip(words, words[1:], words[2:], words[3:]))
        share = 1 - len(set(grams)) / len(grams)
        if share >= _REPEATED_NGRAM_SHARE:
            return f"degenerate repetition ({share:.0%} repeated 4-grams)"
    run, previous = 0, None
    for raw in text.splitlines():
        line = raw.strip()
        if not _ALNUM.search(line):  # blank lines, braces, table rules
            continue
        run = run + 1 if line == previous else 1
        previous = line
        if run >= _REPEATED_LINE_RUN:
            return f"degenerate repetition (a line repeated {run} times in a row)"
    return None


class StructuralCheck:
    """Catches answers that are unusable whatever the question: empty, cut off, refused,
    hedged, looping, or with Python code that does not even parse. The score is the
    worst sub-score; the reason names that one."""

    name = "structural"

    def __call__(self, request: dict, answer: DraftAnswer, dialect: str) -> CheckResult:
        text = answer.text or ""
        found: list[tuple[float, str]] = []
        if answer.stop_reason == "max_tokens":
            found.append((0.0, "truncated at max_tokens"))
        if answer.stop_reason == "refusal":
            found.append((0.0, "refused (stop_reason=refusal)"))
        if not text.strip() and not answer.tool_calls:
            found.append((0.0, "empty answer"))
        if text.strip():
            if _refuses(text):
                found.append((0.1, "refusal"))
            elif _hedges(text):
                found.append((0.4, "hedging"))
            repeated = _repetition(text)
            if repeated:
                found.append((0.2, repeated))
            if "```" in text and _python_breaks(text):
                found.append((0.3, "python code does not parse"))
        if not found:
            return CheckResult(self.name, 1.0, "ok")
        score, reason = min(found, key=lambda item: item[0])
        return CheckResult(self.name, score, reason)

    def early(self, request: dict, answer: DraftAnswer, dialect: str) -> CheckResult | None:
        """Only a refusal can be seen in a stream's first words; emptiness and truncation need its end."""
        text = answer.text or ""
        if len(text) < _EARLY_MIN_CHARS:
            return None
        return CheckResult(self.name, 0.1, "refusal") if _refuses(text) else None


_PYTHON_BLOCK = re.compile(r"```(?:python|py|python3)[ \t]*\n(.*?)```", re.S | re.I)


def _python_breaks(text: str) -> bool:
    """True when a fenced Python block fails to parse (a task-type signal for code answers)."""
    for block in _PYTHON_BLOCK.findall(text):
        try:
            ast.parse(block)
        except (SyntaxError, ValueError):
            return True
    return False


@lru_cache(maxsize=256)
def _compiled_validator(schema_json: str) -> Any:
    """Validator for a canonical schema text (the same tool schema arrives with every request),
    or None if the schema itself is invalid."""
    try:
        schema = json.loads(schema_json)
        cls = validator_for(schema, default=Draft202012Validator)
        cls.check_schema(schema)
        return cls(schema)
    except Exception:  # a caller's broken schema is not the draft's fault
        return None


def _schema_error(schema: Any, instance: Any) -> str | None:
    """The most relevant violation as "<json path>: <message>", or None if valid or not checkable."""
    if not isinstance(schema, (dict, bool)):
        return None
    try:
        validator = _compiled_validator(json.dumps(schema, sort_keys=True, separators=(",", ":")))
        error = best_match(validator.iter_errors(instance)) if validator is not None else None
    except Exception:  # unserialisable schema, unresolvable $ref: not checkable, not a draft failure
        return None
    return None if error is None else f"{error.json_path}: {_short(error.message)}"


def _offered_tools(request: dict) -> dict[str, Any]:
    """Tool name → its argument schema (None when it has none), for either dialect's shape."""
    tools: dict[str, Any] = {}
    for tool in request.get("tools") or ():
        if not isinstance(tool, dict):
            continue
        if isinstance(tool.get("function"), dict):  # openai function tool
            name, schema = tool["function"].get("name"), tool["function"].get("parameters")
        elif isinstance(tool.get("custom"), dict):  # openai custom (free-text) tool
            name, schema = tool["custom"].get("name"), None
        elif tool.get("type") == "namespace":  # Responses: its functions are called by their own names
            tools.update(_offered_tools({"tools": tool.get("tools")}))
            continue
        else:  # anthropic client tool, a Responses function or custom tool, or a server tool without a schema
            name, schema = tool.get("name"), tool.get("input_schema", tool.get("parameters"))
        if isinstance(name, str):
            tools[name] = schema if isinstance(schema, dict) else None
    return tools


def _tool_choice(request: dict) -> tuple[str, str | None]:
    """Normalise both dialects' tool_choice to ("auto" | "any" | "none" | "tool", tool name)."""
    choice = request.get("tool_choice")
    kind: Any = choice
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind in ("tool", "function", "custom"):  # Responses names the function (or custom tool) at the top
            function = given if isinstance(given := choice.get("function"), dict) else {}
            name = function.get("name", choice.get("name")) if kind == "function" else choice.get("name")
            return ("tool", name) if isinstance(name, str) else ("any", None)
    if kind in ("any", "required"):
        return "any", None
    if kind == "none":
        return "none", None
    return "auto", None


def _call_problem(call: ToolCall, tools: Mapping[str, Any]) -> str | None:
    """Why one tool call would fail when executed, or None."""
    if call.name not in tools:
        return f"unknown tool {call.name!r}"
    if not call.valid_json or not isinstance(call.input, dict):
        return f"invalid JSON arguments for {call.name!r}"
    schema = tools[call.name]
    if schema is not None:
        error = _schema_error(schema, call.input)
        if error:
            return f"arguments for {call.name!r} invalid at {error}"
    return None


class ToolUseCheck:
    """A tool call the caller cannot execute is worse than no answer: the agent loop breaks.
    Checks that every call names an offered tool, parses, fits its schema, and that
    tool_choice was obeyed."""

    name = "tool_use"

    def __call__(self, request: dict, answer: DraftAnswer, dialect: str) -> CheckResult | None:
        if not request.get("tools") and not answer.tool_calls:
            return None
        failed = self._calls(request, answer)
        if failed:
            return failed
        kind, wanted = _tool_choice(request)
        calls = answer.tool_calls
        if (
            (kind == "any" and not calls)
            or (kind == "none" and calls)
            or (kind == "tool" and not any(c.name == wanted for c in calls))
        ):
            return CheckResult(self.name, 0.0, "tool_choice not honoured")
        return CheckResult(self.name, 1.0, "ok")

    def early(self, request: dict, answer: DraftAnswer, dialect: str) -> CheckResult | None:
        """Each call the stream has completed can be judged at once; tool_choice needs the end."""
        return self._calls(request, answer) if answer.tool_calls else None

    def _calls(self, request: dict, answer: DraftAnswer) -> CheckResult | None:
        tools = _offered_tools(request)
        for call in answer.tool_calls:
            problem = _call_problem(call, tools)
            if problem:
                return CheckResult(self.name, 0.0, problem)
        return None


_JSON_FENCE = re.compile(r"\A```(?:json)?[ \t]*\n(.*?)\n?[ \t]*```\Z", re.DOTALL | re.IGNORECASE)


def _reject_constant(value: str) -> Any:
    raise ValueError(f"{value} is not valid JSON")


def _requested_format(request: dict) -> tuple[str, Any] | None:
    """("json_object" | "json_schema", schema or None) when the caller asked for JSON output."""
    response_format = request.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_object":
            return "json_object", None
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            return "json_schema", spec.get("schema") if isinstance(spec, dict) else None
    config, text = request.get("output_config"), request.get("text")  # text.format: the Responses API
    if isinstance(text, dict) and isinstance(text.get("format"), dict) and text["format"].get("type") == "json_object":
        return "json_object", None
    for fmt in (request.get("output_format"), config.get("format") if isinstance(config, dict) else None,
                text.get("format") if isinstance(text, dict) else None):
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            return "json_schema", fmt.get("schema")
    return None


class FormatCheck:
    """A caller that asked for JSON will parse the answer; text that does not parse, or does
    not fit the schema, breaks it. A ```json fence around valid JSON is forgiven."""

    name = "format"

    def __call__(self, request: dict, answer: DraftAnswer, dialect: str) -> CheckResult | None:
        requested = _requested_format(request)
        if requested is None or answer.tool_calls:
            return None
        kind, schema = requested
        text = (answer.text or "").strip()
        if fenced := _JSON_FENCE.match(text):
            text = fenced.group(1)
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            return CheckResult(self.name, 0.0, f"not valid JSON ({_short(str(exc))})")
        if kind == "json_object" and not isinstance(value, dict):
            return CheckResult(self.name, 0.0, "JSON is not an object")
        if kind == "json_schema" and schema is not None:
            error = _schema_error(schema, value)
            if error:
                return CheckResult(self.name, 0.0, f"JSON does not match schema at {error}")
        return CheckResult(self.name, 1.0, "ok")

    def early(self, request: dict, answer: DraftAnswer, dialect: str) -> CheckResult | None:
        return None  # half a JSON document is never valid


def _nearest_rank(ordered: Sequence[float], percent: int) -> float:
    """Nearest-rank percentile of an ascending sequence (integer arithmetic: no float ceil drift)."""
    rank = max(1, -(-percent * len(ordered) // 100))
    return ordered[rank - 1]


def logprob_features(logprobs: Iterable[float]) -> dict[str, float]:
    """Summary features of token log-probabilities (natural log): mean, min, p10, p25, count.

    NaNs are dropped and positive values clipped to 0 (a probability cannot exceed 1).
    Exposed so the score below can be fitted on labelled drafts.
    """
    values = sorted(min(float(v), 0.0) for v in logprobs if not math.isnan(float(v)))
    if not values:
        raise ValueError("no log-probabilities")
    mean = math.fsum(values) / len(values)
    p10, p25 = _nearest_rank(values, 10), _nearest_rank(values, 25)
    return {"mean": mean, "min": values[0], "p10": p10, "p25": p25, "count": float(len(values))}


class LogprobCheck:
    """The model's own token confidence, when the upstream returned it.

    score = 0.6·exp(mean) + 0.4·exp(p10), clamped to [0, 1]. This is an UNCALIBRATED
    default: the mean captures overall fluency, p10 the few uncertain tokens that usually
    carry a wrong fact. The weights should be fitted on labelled data (see logprob_features).
    """

    name = "logprobs"

    def __call__(self, request: dict, answer: DraftAnswer, dialect: str) -> CheckResult | None:
        if not answer.logprobs:
            return None
        try:
            f = logprob_features(answer.logprobs)
        except ValueError:
            return None
        score = min(1.0, max(0.0, 0.6 * math.exp(f["mean"]) + 0.4 * math.exp(f["p10"])))
        reason = f"mean p={math.exp(f['mean']):.2f}, p10={math.exp(f['p10']):.2f}, min={math.exp(f['min']):.2f}"
        return CheckResult(self.name, score, reason)

    def early(self, request: dict, answer: DraftAnswer, dialect: str) -> CheckResult | None:
        return None  # a few early tokens say little about the whole answer


def combine(results: Iterable[CheckResult | None], rule: str = "min") -> tuple[float, str]:
    """One confidence from several verdicts.

    "min" (default): the weakest link decides; any one failed check should escalate.
    "mean" and "product" soften or compound doubts. Not-applicable (None) results are ignored.
    """
    if rule not in COMBINE_RULES:
        raise ValueError(f"unknown combine rule {rule!r}; expected one of {', '.join(COMBINE_RULES)}")
    applied = [r for r in results if r is not None]
    if not applied:
        return 1.0, "no check applied"
    weakest = min(applied, key=lambda r: r.score)
    if rule == "min":
        return weakest.score, f"{weakest.name}: {weakest.reason}"
    scores = [r.score for r in applied]
    score = math.fsum(scores) / len(scores) if rule == "mean" else math.prod(scores)
    return score, f"{rule} of {len(applied)} checks; weakest {weakest.name}: {weakest.reason}"


class FunctionCheck:
    """A plain function ``f(request, answer, dialect)`` as a Check, with no early verdict."""

    __slots__ = ("name", "func")

    def __init__(self, func: Callable[[dict, DraftAnswer, str], CheckResult | None], name: str | None = None):
        self.func = func
        self.name: str = name or str(getattr(func, "__name__", "custom"))

    def __call__(self, request: dict, answer: DraftAnswer, dialect: str) -> CheckResult | None:
        return self.func(request, answer, dialect)

    def early(self, request: dict, answer: DraftAnswer, dialect: str) -> CheckResult | None:
        return None


DEFAULT_CHECKS = ("structural", "tool_use", "format", "logprobs")
BUILTIN_CHECKS: Mapping[str, type] = MappingProxyType(
    {"structural": StructuralCheck, "tool_use": ToolUseCheck, "format": FormatCheck, "logprobs": LogprobCheck}
)


def _load(spec: str) -> Check:
    """Import "package.module:Attribute" (dots after the colon walk nested attributes)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"custom check {spec!r} must look like 'package.module:name'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load check {spec!r}: {exc}") from exc
    if isinstance(obj, type):
        return obj()
    if callable(obj) and hasattr(obj, "early"):
        return obj  # already a check instance
    if callable(obj):
        return FunctionCheck(obj)
    raise ValueError(f"check {spec!r} is not a class or function")


def resolve_checks(names: Sequence[str] | None = None) -> list[Check]:
    """Check instances for config names: built-ins by name, custom ones as "module:attribute"."""
    checks: list[Check] = []
    for name in DEFAULT_CHECKS if names is None else names:
        if ":" in name:
            checks.append(_load(name))
        elif name in BUILTIN_CHECKS:
            checks.append(BUILTIN_CHECKS[name]())
        else:
            raise ValueError(
                f"unknown check {name!r}; built-in checks are {', '.join(BUILTIN_CHECKS)}"
                " (or give a custom one as 'package.module:name')"
            )
    return checks


def _guarded(check: Any, method: Callable, request: dict, answer: DraftAnswer, dialect: str) -> CheckResult | None:
    """Run one check so that its bugs escalate the draft rather than crash the request."""
    name = str(getattr(check, "name", None) or type(check).__name__)
    try:
        result = method(request, answer, dialect)
        if result is None:
            return None
        if isinstance(result, (int, float)) and not isinstance(result, bool):
            result = CheckResult(name, float(result), "ok")
        if not isinstance(result, CheckResult):
            raise TypeError(f"returned {type(result).__name__}, not CheckResult")
        score = float(result.score)
    except Exception as exc:
        return CheckResult(name, 0.0, f"check {name} failed: {type(exc).__name__}: {_short(str(exc))}")
    clamped = 0.0 if math.isnan(score) else min(1.0, max(0.0, score))
    return result if clamped == result.score else CheckResult(result.name, clamped, result.reason)


def run_checks(
    checks: Iterable[Check], request: dict, answer: DraftAnswer, dialect: str, combine_rule: str = "min"
) -> tuple[float, str, list[CheckResult]]:
    """Run every check on a finished draft: (confidence, reason, the applicable results)."""
    results = [r for c in checks if (r := _guarded(c, c, request, answer, dialect)) is not None]
    confidence, reason = combine(results, combine_rule)
    return confidence, reason, results


def run_early(checks: Iterable[Check], request: dict, answer: DraftAnswer, dialect: str) -> CheckResult | None:
    """The first early verdict below 0.5 on a partial answer (stop the draft now), else None."""
    for check in checks:
        early = getattr(check, "early", None)
        if early is None:
            continue
        result = _guarded(check, early, request, answer, dialect)
        if result is not None and result.score < EARLY_FAIL_BELOW:
            return result
    return None
