"""Fixtures of the stage tests: the synthetic results root of tests/report."""

from tests.report.conftest import evaluated, synth  # noqa: F401
