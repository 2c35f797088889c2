"""Byte-level language-model tasks: an LSTM or a Transformer on LM1B or a text corpus.

Loss: masked mean token cross-entropy of next-byte prediction (docs/tasks.md);
``max_loss = 1.5 ln(BYTE_VOCAB)``. Batches are ``{"inputs", "targets": int32 (B, T),
"mask": float32 (B, T)}`` (leading axis K with ``copies=K``).

Data: ``dataset="lm1b"`` reads sentences from disk per batch (one padded sequence per sentence);
any other name is a text corpus (``data.text``; default ``stdlib_docs``), held in memory as a
byte stream cut into sequences of ``seq_len``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from star_core.tasks import base
from star_core.tasks.data import batching, store, text
from star_core.tasks.models import attention, recurrent

ARCHITECTURES = ("lstm", "transformer")
# Dataset name that selects LM1B; every other name is a text corpus of data.text.
LM1B = "lm1b"


@dataclasses.dataclass(frozen=True)
class LanguageModel:
    """``width``: LSTM hidden size or Transformer width; ``embed_dim``: LSTM embedding size;
    ``num_blocks``/``num_heads``: Transformer depth and heads."""

    name: str
    architecture: str
    dataset: str = text.DEFAULT_CORPUS
    batch_size: int = 32
    seq_len: int = 64
    width: int = 64
    embed_dim: int = 32
    num_blocks: int = 2
    num_heads: int = 4
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {list(ARCHITECTURES)}, got {self.architecture!r}"
            )
        if self.dataset != LM1B:
            text.check_corpus_name(self.dataset)
        for field in ("batch_size", "seq_len", "width", "embed_dim", "num_blocks", "num_heads"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be a positive integer, got {value!r}")
        if self.width % self.num_heads:
            raise ValueError(f"width must be a multiple of num_heads={self.num_heads}")

    @property
    def max_loss(self) -> float:
        return base.classifier_max_loss(text.BYTE_VOCAB)

    def init(self, key: jax.Array) -> base.Params:
        if self.architecture == "lstm":
            return recurrent.init_lstm_lm(key, text.BYTE_VOCAB, self.embed_dim, self.width)
        return attention.init_transformer_lm(
            key, text.BYTE_VOCAB, self.width, self.num_blocks, self.seq_len
        )

    def logits(self, params: base.Params, batch: base.Batch) -> jax.Array:
        tokens = jnp.asarray(batch["inputs"])
        if self.architecture == "lstm":
            return recurrent.lstm_lm(params, tokens)
        return attention.transformer_lm(params, tokens, self.num_heads)

    def loss(self, params: base.Params, key: jax.Array, batch: base.Batch) -> jax.Array:
        del key  # Deterministic model: no dropout.
        logits = self.logits(params, batch)
        targets, mask = jnp.asarray(batch["targets"]), jnp.asarray(batch["mask"])
        return base.masked_token_cross_entropy(logits, targets, mask)

    def normalizer(self, loss: jax.Array) -> jax.Array:
        return base.normalize_loss(loss, self.max_loss)

    def batches(
        self, seed: int, split: str = "train", copies: int | None = None
    ) -> Iterator[base.Batch]:
        if self.dataset == LM1B:
            source = _lm1b_source(split, str(store.resolve_data_dir(self.data_dir)))
            read = functools.partial(_read_sentences, source, self.seq_len)
            return batching.record_batches(len(source), read, self.batch_size, seed, split, copies)
        arrays = text.corpus_sequences(self.dataset, split, self.seq_len, self.data_dir)
        return batching.array_batches(arrays, self.batch_size, seed, split, copies)


@functools.lru_cache(maxsize=4)
def _lm1b_source(split: str, root: str) -> Any:
    return store.open_split(LM1B, split, root)


def _read_sentences(source: Any, seq_len: int, indices: np.ndarray) -> dict[str, np.ndarray]:
    sentences = (source[int(i)]["text"] for i in indices)
    return text.sentence_sequences((text.as_str(s) for s in sentences), seq_len)
