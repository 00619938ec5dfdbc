"""Clustering short texts into k groups (φ-Decoding's alignment and final selection: docs/algorithms/phi-decoding.md).

Default: TF-IDF vectors and k-means, as the reference implementation does (scikit-learn). Optional:
sentence embeddings, which group texts by meaning rather than shared words; they need the
`sentence-transformers` package, which is not a dependency of the toolkit.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import TfidfVectorizer

from tts.errors import UserError

ClusteringMethod = Literal["tfidf", "embedding"]
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
_MISSING_EMBEDDINGS = (
    "clustering='embedding' needs the sentence-transformers package (pip install sentence-transformers); "
    "it is not a dependency of this toolkit. Use clustering='tfidf' (the default) instead."
)


class ClusteringError(Exception):
    """The texts cannot be split into k clusters (fewer texts than k, no usable words)."""


def tfidf_vectors(texts: Sequence[str], model: str) -> Any:
    """TF-IDF with scikit-learn's defaults (what the reference code uses); `model` is unused."""
    try:
        return TfidfVectorizer().fit_transform(list(texts))
    except ValueError as exc:  # "empty vocabulary": texts without a single two-character word
        raise ClusteringError(str(exc)) from exc


def embedding_vectors(texts: Sequence[str], model: str) -> np.ndarray:
    """Unit-length sentence embeddings."""
    return _embedder(model).encode(list(texts), normalize_embeddings=True)


VECTORISERS: dict[str, Callable[[Sequence[str], str], Any]] = {
    "tfidf": tfidf_vectors,
    "embedding": embedding_vectors,
}


def require_embeddings() -> None:
    """Fail early, with the fix, when the embedding path is asked for but its package is missing."""
    if importlib.util.find_spec("sentence_transformers") is None:
        raise UserError(_MISSING_EMBEDDINGS)


@lru_cache(maxsize=2)
def _embedder(model: str):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise UserError(_MISSING_EMBEDDINGS) from exc
    return SentenceTransformer(model)


def cluster_texts(
    texts: Sequence[str],
    k: int,
    *,
    method: ClusteringMethod = "tfidf",
    seed: int = 0,
    embedding_model: str = DEFAULT_EMBEDDING_MODEL,
) -> np.ndarray:
    """A k-means cluster label (0..k-1) for each text; deterministic for a given seed.

    Raises ClusteringError where k-means cannot run, so callers can fall back as the spec says.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if method not in VECTORISERS:
        raise UserError(f"unknown clustering method {method!r}; choose one of {sorted(VECTORISERS)}")
    if len(texts) < k:
        raise ClusteringError(f"{len(texts)} texts cannot form {k} clusters")
    vectors = VECTORISERS[method](texts, embedding_model)
    # Duplicate texts: with d < k distinct points k-means leaves k - d clusters empty (and warns); asking
    # for d clusters gives the same partition without the warning.
    dense = vectors.toarray() if hasattr(vectors, "toarray") else np.asarray(vectors)
    distinct = len(np.unique(dense.round(12), axis=0))
    try:
        return KMeans(n_clusters=min(k, distinct), random_state=seed, n_init="auto").fit_predict(vectors)
    except ValueError as exc:
        raise ClusteringError(str(exc)) from exc


def cluster_shares(labels: Sequence[int]) -> np.ndarray:
    """Share of all items in each cluster, indexed by label."""
    arr = np.asarray(labels, dtype=int)
    if arr.size == 0:
        return np.zeros(0)
    return np.bincount(arr) / arr.size
