"""Test helpers: a simulated LLM provider speaking the Anthropic and OpenAI APIs.

See :mod:`cascadeflow.sim.simulator` (server and lifecycle),
:mod:`cascadeflow.sim.script` (rules and faults) and
:mod:`cascadeflow.sim.engine` (deterministic answers and token estimates).
"""

from .engine import default_text, estimate_input_tokens
from .script import Fault, Match, Script, ScriptRule, load_script
from .server import ServerThread
from .simulator import DEFAULT_MODELS, SimulatedProvider, run_simulator

__all__ = [
    "DEFAULT_MODELS",
    "Fault",
    "Match",
    "Script",
    "ScriptRule",
    "ServerThread",
    "SimulatedProvider",
    "default_text",
    "estimate_input_tokens",
    "load_script",
    "run_simulator",
]
