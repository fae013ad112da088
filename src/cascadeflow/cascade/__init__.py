"""The cascade: rules, draft policies, quality checks, and the engine that decides."""

from .answer import Check, CheckResult, DraftAnswer, ToolCall
from .decision import CascadeReply, Decision
from .engine import CascadeEngine
from .port import CallOptions, Opened, Sent, Target, UpstreamPort
from .rules import RuleSet
from .shadow import ShadowRecorder, label_pair

__all__ = ["CascadeEngine", "CascadeReply", "Decision", "RuleSet", "Check", "CheckResult", "DraftAnswer", "ToolCall",
           "ShadowRecorder", "label_pair", "UpstreamPort", "Target", "CallOptions", "Sent", "Opened"]
