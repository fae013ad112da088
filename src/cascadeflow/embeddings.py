"""The small text-embedding model every feature that compares meanings shares (offline, no download).

WordLlama's 256-dimension ``l2_supercat`` weights ship inside the ``wordllama`` wheel; its own
loader would fetch the tokenizer from Hugging Face, so :func:`load_wordllama` reads both files
from the installed package. Used by the semantic response cache, semantic sample agreement and
the pre-generation router's optional embedding; it lives below all three so none imports another.
Install with the ``semantic`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Embedder", "load_wordllama", "load_embedder", "SEMANTIC_EXTRA"]

SEMANTIC_EXTRA = "pip install -e '.[semantic]' (wordllama, numpy, safetensors)"


class Embedder(Protocol):
    def embed(self, texts: list[str], norm: bool = ...) -> np.ndarray: ...


def load_embedder(purpose: str) -> Embedder:
    """WordLlama for ``purpose`` (what needs it, for the message); a :class:`ConfigError` naming the extra when
    it is not installed."""
    try:
        return load_wordllama()
    except ImportError as exc:
        raise ConfigError(f"{purpose} needs the semantic extra: {SEMANTIC_EXTRA} ({exc.name or exc} is missing)") from None


def load_wordllama() -> Embedder:
    """WordLlama's shipped weights and tokenizer, read from the installed wheel (no network)."""
    from pathlib import Path

    import wordllama
    from safetensors import safe_open
    from tokenizers import Tokenizer
    from wordllama.inference import WordLlamaInference

    root = Path(wordllama.__file__).parent
    tokenizer = Tokenizer.from_file(str(root / "tokenizers" / "l2_supercat_tokenizer_config.json"))
    with safe_open(str(root / "weights" / "l2_supercat_256.safetensors"), framework="np", device="cpu") as weights:
        embedding = weights.get_tensor("embedding.weight")
    return WordLlamaInference(embedding, tokenizer)
