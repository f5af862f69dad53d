"""Ray Tune plumbing shared by the classifier grid (:mod:`t2v_ray.stages.grid`) and expert training
(:mod:`t2v_ray.stages.experts`): scheduling settings, the driver environment trials re-apply, where
Tune keeps experiment state, and running one trial per item with restore-on-resume.

Ray is imported inside the functions that need it, so importing this module stays light.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from t2v_ray.config import Uri
from t2v_ray.data import storage
from t2v_ray.results.layout import DEFAULT_DATA_DIR, TUNE_DIR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneSettings:
    """How trials are scheduled (Tune owns resources; trainables only read them).

    Attributes:
        cpus_per_trial: CPUs reserved per trial; torch uses that many threads (fractions round up to 1).
        gpus_per_trial: GPUs per trial; fractions pack several trials on one GPU on a cluster.
        max_concurrent: cap on trials running at once (0: as many as resources allow).
        max_failures: retries of a trial that raised (``FailureConfig``).
        reuse_actors: keep trial processes (and their loaded torch, library, expert) between trials.
        storage_path: where Tune keeps its experiment state (default: :func:`default_state_root`).
        ray_address: cluster to join when Ray is not initialised yet (None: ``RAY_ADDRESS`` or a local one).
        verbose: Tune's console verbosity (0 silent ... 3 detailed).
    """

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0
    max_failures: int = 2
    reuse_actors: bool = True
    storage_path: Uri | None = None
    ray_address: str | None = None
    verbose: int = 1


def apply_trial_env(env: dict[str, str], cpus: float) -> None:
    """In a trial: adopt the driver's storage env and size torch's thread pool to the trial's CPUs.

    Under CPU contention torch with more threads than reserved CPUs trains far slower (STACK pitfall 21).
    """
    import math

    import torch

    os.environ.update(env)
    torch.set_num_threads(max(1, math.ceil(cpus)))


def default_state_root(out_uri: str, settings: TuneSettings) -> str:
    """Where Tune keeps experiment state for outputs at ``out_uri``."""
    if settings.storage_path:
        return settings.storage_path
    if storage.is_local(out_uri):
        return storage.join(out_uri, TUNE_DIR)
    return os.path.abspath(os.path.join(DEFAULT_DATA_DIR, TUNE_DIR))


def state_key(*uris: str) -> str:
    """Stable short name for the Tune experiments of one (library, experts, out) combination."""
    return hashlib.sha256("|".join(uris).encode()).hexdigest()[:10]


def _fs_args(root: str) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for Tune: plain local paths, or our pyarrow fs for URIs."""
    if storage.is_local(root):
        return os.path.abspath(os.path.expanduser(root.removeprefix("file://"))), None
    fs, path = storage.open_fs(root)
    return path, fs


def latest_restorable(root: str, prefix: str) -> str | None:
    from ray.tune import Tuner

    path, fs = _fs_args(root)
    for name in sorted((n for n in storage.list_dir(root) if n.startswith(prefix)), reverse=True):
        candidate = f"{path.rstrip('/')}/{name}"
        if Tuner.can_restore(candidate, storage_filesystem=fs):
            return candidate
    return None


def _trial_dirname(trial: Any) -> str:
    # Tune's default name repeats the whole config; pair ids can be long and nested.
    return f"trial_{trial.trial_id}"


def run_trials(
    trainable: Callable,
    items: Sequence[dict],
    settings: TuneSettings,
    state_root: str,
    prefix: str,
    resume: bool = False,
) -> Any:
    """Run ``trainable`` once per item (``config["item"]``) on Tune; returns the ``ResultGrid``.

    Args:
        trainable: ``fn(config)`` that calls ``tune.report`` once (already wrapped by ``tune.with_parameters``).
        items: one JSON-able dict per trial, in the order trials should start (group by expert for actor reuse).
        settings: resources, retries, actor reuse.
        state_root: folder or URI holding Tune experiment state.
        prefix: experiment-name prefix; fresh runs append a UTC timestamp, ``resume`` restores the latest.
        resume: restore the latest restorable experiment with this prefix, if any.
    """
    from ray import tune

    from t2v_ray.distributed.ray_utils import keep_credentials_out_of_tune

    keep_credentials_out_of_tune()
    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    wrapped = tune.with_resources(trainable, resources)
    path, fs = _fs_args(state_root)
    restore = latest_restorable(state_root, prefix) if resume else None
    if restore is not None:
        # Finished trials stay finished; unfinished and errored ones start again (the pair records make a
        # restarted pair that had already finished return at once).
        try:
            tuner = tune.Tuner.restore(
                restore, wrapped, resume_errored=False, restart_errored=True, storage_filesystem=fs
            )
        except Exception as err:  # unreadable state: the records still say what is done, start afresh
            log.warning("cannot restore Tune experiment %s (%s); starting a fresh one", restore, err)
        else:
            log.info("restoring Tune experiment %s", restore)
            return tuner.fit()
    tuner = tune.Tuner(
        wrapped,
        param_space={"item": tune.grid_search(list(items))},
        tune_config=tune.TuneConfig(
            reuse_actors=settings.reuse_actors,
            max_concurrent_trials=settings.max_concurrent or None,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=f"{prefix}{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}",
            storage_path=path,
            storage_filesystem=fs,
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            verbose=settings.verbose,
        ),
    )
    return tuner.fit()


def trial_errors(results: Any) -> list[tuple[dict, str]]:
    """``(item, message)`` for every trial that still failed after its retries."""
    out = []
    for r in results:
        if r.error is not None:
            item = (r.config or {}).get("item", {})
            out.append((item, error_message(r.error)[:2000]))
    return out


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_message(err: BaseException) -> str:
    """``Type: message`` of the exception a trial raised, unwrapped from Ray's ``RayTaskError`` (whose text is a
    coloured remote traceback) so a summary line names the real cause, e.g. ``ValueError: Invalid learning rate``."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException) and cause is not err:
        return error_message(cause)
    text = _ANSI.sub("", str(err)).strip()
    last = text.splitlines()[-1].strip() if text else ""
    return (
        last
        if re.match(r"^[A-Za-z_.]+(Error|Exception)\b", last)
        else f"{type(err).__name__}: {last or text}"
    )
