"""The simulated provider: a real HTTP server speaking the Anthropic and OpenAI APIs.

A product feature (``cascadeflow simulate``, ``demo``, ``eval``) that the test suite also uses;
only those commands import it (an import-linter contract in pyproject.toml).

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
