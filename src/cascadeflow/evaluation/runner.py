"""Replay recorded data through the real gateway and collect one Outcome per record.

The simulated provider serves the recorded answers (a replay upstream); a gateway with
the rule under test sits in front of it; every record is sent over HTTP as an OpenAI
chat request for the record's strong model, so the cascade — drafts, checks,
self-verification, decisions — runs exactly as in production. Quality and cost come
from the records (the served text is the recorded one, its grade is known).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import aiohttp

from ..config import CascadeRule, ProxyConfig
from ..gateway import create_app
from ..pricing import ModelRegistry
from ..sim import ServerThread, SimulatedProvider
from ..sim.replay import ReplayTable, load_records
from ..usage import Usage
from .metrics import Outcome

__all__ = ["EvalSetup", "rule_template", "replay_outcomes", "replay_registry", "record_cost", "load_eval_records"]

#: the settings evaluated when no config names a rule: every built-in check plus self-verification
DEFAULT_RULE = {"request_model": "*", "draft_model": "*", "quality_threshold": 0.7, "self_verify": {}}
_VERIFY_OVERHEAD_TOKENS = 24  # the verification question and its framing
#: Hugging Face ids in the replay data that no price list names, priced as their maker's own API sells the
#: same weights: Mistral's open-mixtral-8x7b, $0.70 in / $0.70 out per million tokens (genai-prices 0.2.3's
#: ``mistral`` entry, from https://mistral.ai/pricing; checked 2026-12-03). A list price, not a measured bill.
_SAME_WEIGHTS_AS = {"mistralai/Mixtral-8x7B-Instruct-v0.1": "open-mixtral-8x7b"}


@dataclass
class EvalSetup:
    files: list[Path]
    rule: dict  #: the rule's settings (models are filled in per dataset from the records)
    concurrency: int = 16


def rule_template(config_path: str | None, rule_name: str | None) -> dict:
    """The settings of the rule to evaluate, from a config file, else :data:`DEFAULT_RULE`."""
    if config_path is None:
        return dict(DEFAULT_RULE)
    config = ProxyConfig.from_yaml(config_path)
    rules = config.all_cascade_rules()
    if not rules:
        raise ValueError(f"{config_path} has no cascade rule to evaluate")
    chosen = rules[0] if rule_name is None else next((r for r in rules if (r.name or r.request_model) == rule_name), None)
    if chosen is None:
        raise ValueError(f"no rule named {rule_name!r} in {config_path}")
    return chosen.model_dump(mode="json", exclude_none=True)


def replay_registry() -> ModelRegistry:
    """The registry that prices replay records: genai-prices, plus the maker's price for open-weight model ids
    (:data:`_SAME_WEIGHTS_AS`) where genai-prices has it (else they stay unpriced and savings read unknown)."""
    registry = ModelRegistry()
    for model, maker_name in _SAME_WEIGHTS_AS.items():
        info = registry.info(maker_name)
        if info is not None and info.price is not None:
            registry.register(model, provider=info.provider, input_per_mtok=info.price.input_per_mtok,
                              output_per_mtok=info.price.output_per_mtok)
    return registry


def record_cost(registry: ModelRegistry, side: dict, messages: list) -> float | None:
    """The recorded cost, else the registry's price on the recorded (or estimated) tokens."""
    if side.get("cost_usd") is not None:
        return float(side["cost_usd"])
    tokens_in, tokens_out = side.get("input_tokens"), side.get("output_tokens")
    if tokens_in is None or tokens_out is None:
        tokens_in = sum(len(str(m.get("content", ""))) for m in messages) // 4 + 4 * len(messages)
        tokens_out = max(1, len(side.get("text") or "") // 4)
    return registry.cost(side.get("model", ""), Usage(tokens_in, tokens_out))


def _check_cost(registry: ModelRegistry, record: dict, draft_cost: float | None, features: dict, rule: dict) -> float:
    """What the costly checks that ran spent: a verification call, extra samples of the draft."""
    cost = _verify_cost(registry, record, draft_cost) if "self_verify" in features else 0.0
    if "agreement" in features or "semantic_agreement" in features:
        cost += (draft_cost or 0.0) * int((rule.get("sample_agreement") or {}).get("samples", 5))
    return cost


def _verify_cost(registry: ModelRegistry, record: dict, draft_cost: float | None) -> float:
    draft = record["draft"]
    tokens_in = (draft.get("input_tokens") or 0) + (draft.get("output_tokens") or 0) + _VERIFY_OVERHEAD_TOKENS
    cost = registry.cost(draft.get("model", ""), Usage(tokens_in, 1)) if tokens_in > _VERIFY_OVERHEAD_TOKENS else None
    return cost if cost is not None else (draft_cost or 0.0)


def pair_model(record: dict) -> str:
    """The virtual model a record is sent to: one per (draft, strong) pair, so files that share a strong
    model but differ in draft each get their own draft (a rule per strong model would draft with the first)."""
    return f"replay/{record['draft']['model']}->{record['strong']['model']}"


def _eval_config(sim: SimulatedProvider, records: list[dict], template: dict, folder: str) -> ProxyConfig:
    pairs = sorted({(r["strong"]["model"], r["draft"]["model"]) for r in records})
    settings = {k: v for k, v in template.items() if k not in ("request_model", "draft_model", "stages", "name", "verifier_model")}
    settings.setdefault("policies", {})["sticky_escalations"] = 0  # records are independent questions
    models = {
        pair_model({"draft": {"model": draft}, "strong": {"model": strong}}): {
            **settings, "name": f"{draft}->{strong}", "draft_model": draft, "verifier_model": strong}
        for strong, draft in pairs
    }
    return ProxyConfig.from_dict(
        {
            "routes": [{"name": "replay", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "replay",
                        "replay": True}],
            "cascade_models": models,
            "server": {"log_level": "warning"},
            "database_url": f"sqlite:///{folder}/eval.db",  # an evaluation leaves no ledger behind
        }
    )


def load_eval_records(files: Iterable[Path]) -> list[dict]:
    """The records an evaluation replays (those marked for checker training only are left out)."""
    return _load(files)


def _load(files: Iterable[Path]) -> list[dict]:
    """Evaluation records (those marked for checker training only are left out)."""
    return [r for r in load_records(files) if not r.get("checker_training_only")]


async def _send_all(url: str, records: list[dict], concurrency: int, progress: TextIO | None) -> list[dict]:
    semaphore = asyncio.Semaphore(concurrency)
    done = 0
    results: list[dict] = [{} for _ in records]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def one(index: int, record: dict) -> None:
            nonlocal done
            body = {"model": pair_model(record), "messages": record["messages"]}
            headers = {"authorization": "Bearer eval", "x-replay-record": str(record["id"])}
            async with semaphore, session.post(url, json=body, headers=headers) as response:
                await response.read()
                results[index] = {"status": response.status, **{k.lower(): v for k, v in response.headers.items()}}
            done += 1
            if progress is not None and (done % 10 == 0 or done == len(records)):
                width = 30
                filled = width * done // len(records)
                progress.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{len(records)}")
                progress.flush()

        await asyncio.gather(*(one(i, r) for i, r in enumerate(records)))
    if progress is not None:
        progress.write("\n")
    return results


def replay_outcomes(setup: EvalSetup, progress: TextIO | None = sys.stderr) -> list[Outcome]:
    """Run every record through a gateway in front of a replay upstream."""
    records = _load(setup.files)
    if not records:
        raise ValueError("no evaluation records in the given files")
    registry = replay_registry()
    with SimulatedProvider(replay=ReplayTable(records), record=False) as sim, tempfile.TemporaryDirectory() as folder:
        with ServerThread(create_app(_eval_config(sim, records, setup.rule, folder))) as gateway:
            replies = asyncio.run(_send_all(gateway.url + "/v1/chat/completions", records, setup.concurrency, progress))
        misses = sim.replay_misses
    if misses:  # an answer the data does not hold: never judge a synthetic stand-in
        shown = "; ".join(misses[:3]) + (f"; … {len(misses) - 3} more" if len(misses) > 3 else "")
        raise RuntimeError(f"the replay data holds no recorded answer for {len(misses)} request(s): {shown}")
    outcomes = []
    unpriced: set[str] = set()
    for record, reply in zip(records, replies, strict=True):
        if reply.get("status") != 200:
            raise RuntimeError(f"record {record['id']}: the gateway answered {reply.get('status')}")
        features = _features(reply.get("x-cascadeflow-checks", ""))
        draft_cost = record_cost(registry, record["draft"], record["messages"])
        strong_cost = record_cost(registry, record["strong"], record.get("strong_messages") or record["messages"])
        unpriced.update(side["model"] for side, cost in ((record["draft"], draft_cost), (record["strong"], strong_cost)) if cost is None)
        confidence = reply.get("x-cascadeflow-confidence")
        outcomes.append(
            Outcome(
                id=record["id"],
                dataset=record["dataset"],
                confidence=float(confidence) if confidence is not None else None,
                accepted=reply.get("x-cascadeflow-draft-accepted") == "true",
                draft_score=float(record["draft"]["score"]),
                strong_score=float(record["strong"]["score"]),
                draft_cost=draft_cost or 0.0,
                strong_cost=strong_cost or 0.0,
                extra_cost=_check_cost(registry, record, draft_cost, features, setup.rule),
                features=features,
                drafted=not reply.get("x-cascadeflow-decision", "").startswith("skipped:"),
                routed=reply.get("x-cascadeflow-decision") == "skipped:router",
                priced=draft_cost is not None and strong_cost is not None,
                task_type=record.get("task_type"),
            )
        )
    if unpriced and progress is not None:
        progress.write(f"no price known for {', '.join(sorted(unpriced))}: costs and savings are unknown "
                       "(give the price under models: in the config, or record cost_usd)\n")
    return outcomes


def _features(header: str) -> dict[str, float]:
    features = {}
    for pair in filter(None, header.split(",")):
        name, _, value = pair.partition("=")
        try:
            features[name] = float(value)
        except ValueError:
            continue
    return features


def rule_with(template: dict, **changes: object) -> dict:
    """A copy of the rule's settings with ``changes`` applied (validated)."""
    updated = {**template, **changes}
    CascadeRule.model_validate({**updated, "request_model": updated.get("request_model", "*"),
                                "draft_model": updated.get("draft_model", "*")})
    return updated
