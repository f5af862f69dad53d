"""Trial errors reach the summary as ``Type: message`` of the real cause, not Ray's coloured remote traceback."""

from __future__ import annotations

from t2v_ray.distributed.tune_utils import error_message


class _RayTaskErrorLike(Exception):
    """Shape of ``ray.exceptions.RayTaskError``: a remote traceback as text and the original in ``cause``."""

    def __init__(self, cause: BaseException | None) -> None:
        super().__init__(
            "\x1b[36mray::ImplicitFunc.train()\x1b[39m\nTraceback (most recent call last):\n  ..."
        )
        self.cause = cause


def test_the_cause_of_a_ray_task_error_is_reported():
    err = _RayTaskErrorLike(ValueError("Invalid learning rate: -1.0"))
    assert error_message(err) == "ValueError: Invalid learning rate: -1.0"


def test_without_a_cause_the_last_traceback_line_is_used_and_colours_are_dropped():
    err = _RayTaskErrorLike(None)
    err.args = ("\x1b[36mray::x\x1b[39m\nTraceback\n  File 'a.py'\nKeyError: 'label'",)
    assert error_message(err) == "KeyError: 'label'"
    assert error_message(RuntimeError("plain")) == "RuntimeError: plain"
