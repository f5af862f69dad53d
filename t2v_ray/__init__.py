"""t2v_ray: TASK2VEC / MODEL2VEC task embeddings and expert selection, from a laptop to a Ray cluster."""

from __future__ import annotations

from t2v_ray.core.distance import asymmetric_distance, symmetric_distance
from t2v_ray.core.embedding import TaskEmbedding

__all__ = ["Task2Vec", "TaskEmbedding", "asymmetric_distance", "get_probe", "symmetric_distance"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: importing the package must stay cheap (CLI start-up, Ray workers).
    if name == "Task2Vec":
        from t2v_ray.task2vec import Task2Vec

        return Task2Vec
    if name == "get_probe":
        from t2v_ray.probes import get_probe

        return get_probe
    raise AttributeError(name)
