"""Ray plumbing shared by the distributed stages: connecting, worker environment, a dynamic actor pool.

``ray`` is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from t2v_ray.data.retry import StorageUnavailableError, call_with_retries, is_transient_error, retry_policy

log = logging.getLogger(__name__)

# Forwarded to workers through runtime_env (STACK pitfall 7: on a cluster, workers do not see the driver's
# shell). Only endpoint and region settings: secrets stay out of runtime_env, which the dashboard displays;
# nodes get credentials from their own environment or instance role.
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EC2_METADATA_DISABLED",
    "MLFLOW_S3_ENDPOINT_URL",
    "TORCH_HOME",
    "T2V_S3_PATIENCE_S",  # t2v_ray.data.retry.PATIENCE_ENV: how long workers wait out an S3 outage
)


# Ray Tune copies these from the driver's environment into every trainable's runtime_env
# (ray.tune.execution.class_cache), which each node's runtime env agent writes to its log and the dashboard shows.
# Trials get credentials the way every other worker does: from their node's environment or instance role.
TUNE_PROPAGATED_CREDENTIALS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SECURITY_TOKEN",
    "AWS_SESSION_TOKEN",
)


def keep_credentials_out_of_tune() -> None:
    """Stop Ray Tune from putting the driver's AWS credentials into trial runtime envs (no-op if Ray changes)."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:
        return
    names = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if isinstance(names, set | frozenset):
        class_cache.ENV_VARS_TO_PROPAGATE = set(names) - set(TUNE_PROPAGATED_CREDENTIALS)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to Ray unless already connected; returns True when this call started a local instance.

    Args:
        address: cluster address (``auto``, ``host:port``, ``ray://…``). ``None``: the ``RAY_ADDRESS`` set by
            ``ray job submit``, else a new local instance (never some other user's cluster on this host).
        num_cpus: CPUs of a new local instance (``None``: all cores); ignored when connecting (pitfall 7).
    """
    import ray

    if ray.is_initialized():
        return False
    # STACK pitfalls 5 and 8: workers at nice 15 starve on shared machines; no network for usage stats.
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or None, log_to_driver=True)
        return False
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
    from t2v_ray.distributed.reaper import start_reaper

    start_reaper()  # a driver killed with -9 must not leave Ray's agents running
    return True


def check_resources(cpus: float, gpus: float, local: bool) -> None:
    """Fail fast when a local instance can never host one actor; on a cluster, warn that it must scale up.

    Raises:
        ValueError: ``local`` and no node offers ``cpus`` CPUs and ``gpus`` GPUs.
    """
    import ray

    total = ray.cluster_resources()
    have_cpu, have_gpu = total.get("CPU", 0.0), total.get("GPU", 0.0)
    if have_cpu >= cpus and have_gpu >= gpus:
        return
    msg = f"an actor needs {cpus} CPU and {gpus} GPU; the cluster has {have_cpu} CPU and {have_gpu} GPU"
    if local:
        raise ValueError(msg + " (local Ray instance: lower --cpus-per-actor/--gpus-per-actor)")
    log.warning("%s; waiting for the cluster to scale up", msg)


def worker_env(threads: int | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """``runtime_env`` env_vars for workers: forwarded settings, thread caps, then ``extra``."""
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    if threads is not None:
        # Caps the OpenMP/MKL pools too, not just torch's intra-op pool (STACK pitfall 21).
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.update(extra or {})
    return env


def is_actor_failure(err: BaseException) -> bool:
    """True when ``err`` means the actor process died or is unreachable (not an exception in user code)."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(err, RayActorError | ActorDiedError | ActorUnavailableError)


@dataclass
class Completed:
    """One finished item: ``value`` when the call returned, ``error`` when the actor died running it."""

    item: Any
    slot: int
    value: Any = None
    error: BaseException | None = None


class PoolExhausted(RuntimeError):
    """Every actor of a :class:`DynamicPool` died for good (out of restarts) while items remained.

    Attributes:
        remaining: the items never run, in queue order.
        last_failure: the last actor failure seen.
    """

    def __init__(self, n_actors: int, remaining: list[Any], last_failure: BaseException | None) -> None:
        super().__init__(
            f"all {n_actors} actors died; {len(remaining)} items not run; last failure: {last_failure}"
        )
        self.remaining, self.last_failure = remaining, last_failure


class DynamicPool:
    """Spread items over actors as they free up (one call in flight per actor), tolerating actor deaths.

    Actors join when their readiness call returns (so slow-starting or autoscaled actors simply start later)
    and leave when they die for good. After a failed call the actor is pinged: Ray restarts actors up to
    ``max_restarts``, and a restarted actor that answers rejoins the pool.

    Args:
        actors: actor handles.
        ready: ``ready(actor) -> ObjectRef`` of a call whose value describes a ready actor.
        submit: ``submit(actor, item) -> ObjectRef`` of the work call.
        on_ready: ``on_ready(slot, info)`` when an actor (re)joins; may raise to abort the run.
        poll_seconds: :meth:`run` yields ``None`` at least this often while waiting, for progress/flushing.
        claim: ``claim(item) -> bool`` right before an item is dispatched (e.g. take its lease); an item it
            refuses is not run but collected in :attr:`deferred` (another run holds it).
    """

    def __init__(
        self,
        actors: list[Any],
        ready: Callable[[Any], Any],
        submit: Callable[[Any, Any], Any],
        on_ready: Callable[[int, Any], None] | None = None,
        poll_seconds: float = 1.0,
        claim: Callable[[Any], bool] | None = None,
    ):
        self.actors = list(actors)
        self._ready, self._submit = ready, submit
        self._on_ready = on_ready or (lambda slot, info: None)
        self.poll_seconds = poll_seconds
        self._claim = claim
        self.deferred: list[Any] = []
        self.idle: deque[int] = deque()
        self.dead: set[int] = set()
        self.last_failure: BaseException | None = None
        self._probes: dict[Any, int] = {self._ready(a): i for i, a in enumerate(self.actors)}
        self._work: dict[Any, tuple[int, Any]] = {}

    @property
    def in_flight(self) -> dict[int, Any]:
        """``{slot: item}`` for every call currently running (or queued) on an actor."""
        return {slot: item for slot, item in self._work.values()}

    def wait_ready(self, timeout: float | None = None) -> int:
        """Block until at least one actor is ready; returns the number of ready actors."""
        import ray

        while not self.idle:
            if not self._probes:
                raise RuntimeError(f"no actor could start; last failure: {self.last_failure}")
            ready, _ = ray.wait(list(self._probes), num_returns=1, timeout=timeout)
            if not ready:
                raise TimeoutError(f"no actor became ready within {timeout} s (not enough CPUs/GPUs?)")
            self._settle_probe(ready[0])
        return len(self.idle)

    def run(self, items: Iterable[Any]) -> Iterator[Completed | None]:
        """Run every item once; yields each :class:`Completed`, or ``None`` on a quiet poll interval.

        Raises:
            PoolExhausted: every actor died for good while items remained (``remaining`` lists them).
        """
        import ray

        queue = deque(items)
        while queue or self._work:
            self._fill(queue)
            if queue and not self._work and not self._probes:
                raise PoolExhausted(len(self.actors), list(queue), self.last_failure)
            refs = list(self._work) + list(self._probes)
            done, _ = ray.wait(refs, num_returns=1, timeout=self.poll_seconds)
            if not done:
                yield None
            elif done[0] in self._probes:
                self._settle_probe(done[0])
            else:
                event = self._settle_work(done[0])
                # Give the freed actor its next item before the caller spends time on this result.
                self._fill(queue)
                yield event

    def _fill(self, queue: deque) -> None:
        while self.idle and queue:
            item = queue.popleft()
            if self._claim is not None and not self._claim(item):
                self.deferred.append(item)
                continue
            slot = self.idle.popleft()
            self._work[self._submit(self.actors[slot], item)] = (slot, item)

    def _settle_probe(self, ref: Any) -> None:
        import ray

        slot = self._probes.pop(ref)
        try:
            info = ray.get(ref)
        except Exception as err:
            if not is_actor_failure(err):
                raise
            log.warning("actor %d is gone for good: %s", slot, err)
            self.dead.add(slot)
            self.last_failure = err
            return
        self._on_ready(slot, info)
        self.idle.append(slot)

    def _settle_work(self, ref: Any) -> Completed:
        import ray

        slot, item = self._work.pop(ref)
        try:
            value = ray.get(ref)
        except Exception as err:
            if not is_actor_failure(err):
                raise
            # Ray already retried the call max_task_retries times; ask whether the actor came back.
            self.last_failure = err
            self._probes[self._ready(self.actors[slot])] = slot
            return Completed(item, slot, error=err)
        self.idle.append(slot)
        return Completed(item, slot, value=value)


def retry_io(
    fn: Callable[[], Any], what: str, attempts: int | None = None, backoff_seconds: float | None = None
) -> Any:
    """Call ``fn``, retrying transient storage errors with the storage layer's policy.

    That policy (:func:`t2v_ray.data.retry.retry_policy`: exponential backoff, a total patience from
    ``T2V_S3_PATIENCE_S``) already applies to every storage call ``fn`` makes; this adds retries for
    sequences of calls. Errors that already waited out the patience are not retried again.

    Args:
        fn: the operation.
        what: what it does, for messages.
        attempts: at most this many attempts (within the patience); None: the patience alone decides.
        backoff_seconds: first retry delay instead of the policy's; doubles every attempt.

    Raises:
        TransientIOError: still failing after ``attempts`` tries or the patience (the message says what and how
            often).
        Exception: any non-transient error, unchanged, on first occurrence.
    """
    policy = replace(retry_policy(), max_attempts=attempts)
    if backoff_seconds is not None:
        policy = replace(policy, first_delay_s=backoff_seconds)
    return call_with_retries(fn, what, policy)


# One home for the storage retry policy (t2v_ray.data.retry); the old names stay for callers of this module.
TransientIOError = StorageUnavailableError
is_transient_io_error = is_transient_error
