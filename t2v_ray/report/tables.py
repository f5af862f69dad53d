"""Table 1 (model selection performance) as CSV and Markdown.

The CSV keeps the raw numbers of ``core.selection.evaluate_selectors`` (fractions, not percent). The Markdown
reads like the paper's Table 1: the Optimal row gives the mean error, every other row the relative error
increase over optimal, mean(e_sel) / mean(e_opt) - 1, with its bootstrap 95% interval over tasks and test
images; the mean error carries its bootstrap standard error. "vs Generic" is the paired difference of mean errors
against the generic expert (the same bootstrap draws): its interval excluding 0 orders the two selectors.
"""

from __future__ import annotations

import math

import pandas as pd

CSV_COLUMNS = [
    "selector",
    "mean_error",
    "mean_error_se",
    "rel_increase",
    "rel_increase_lo",
    "rel_increase_hi",
    "mean_rel_increase",
    "regret",
    "top3",
    "kendall_tau",
    "n_tasks",
    "vs_generic",
    "vs_generic_lo",
    "vs_generic_hi",
]
HEADERS = [
    "Selector",
    "Mean error",
    "Rel. increase vs optimal [95% CI]",
    "vs Generic, pp [95% CI, paired]",
    "Mean of ratios",
    "Regret (pp)",
    "Top-3",
    "Kendall τ",
]


def _pct(x: float, signed: bool = True) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{100 * x:+.2f}%" if signed else f"{100 * x:.2f}%"


def _num(x: float, fmt: str) -> str:
    return "–" if x is None or not math.isfinite(x) else format(x, fmt)


def _mean_error(r: dict) -> str:
    se = r.get("mean_error_se")
    text = _pct(r["mean_error"], signed=False)
    return text if se is None or not math.isfinite(se) else f"{text} ± {100 * se:.2f}"


def _vs_generic(r: dict) -> str:
    """mean(e_sel) - mean(e_generic) in points with its paired interval; '–' for Generic itself or without it."""
    est = r.get("vs_generic")
    if r["selector"] == "Generic" or est is None or not math.isfinite(est):
        return "–"
    lo, hi = r.get("vs_generic_lo", math.nan), r.get("vs_generic_hi", math.nan)
    return f"{100 * est:+.2f} [{_num(100 * lo, '+.2f')}, {_num(100 * hi, '+.2f')}]"


def format_rows(table: pd.DataFrame) -> list[list[str]]:
    """Display strings per selector, in the order of ``HEADERS`` (shared by Markdown and the rich console table)."""
    rows = []
    for r in table.to_dict("records"):
        optimal = r["selector"] == "Optimal"
        rel = (
            "–"
            if optimal
            else f"{_pct(r['rel_increase'])} [{_pct(r['rel_increase_lo'])}, {_pct(r['rel_increase_hi'])}]"
        )
        rows.append(
            [
                str(r["selector"]),
                _mean_error(r),
                rel,
                _vs_generic(r),
                "–" if optimal else _pct(r["mean_rel_increase"]),
                _num(100 * r["regret"], ".2f"),
                _pct(r["top3"], signed=False),
                _num(r["kendall_tau"], ".3f"),
            ]
        )
    return rows


def table_markdown(table: pd.DataFrame, title: str = "", note: str = "") -> str:
    """Markdown rendering of Table 1 (``title`` as a heading, ``note`` as a paragraph under the table)."""
    lines = [f"## {title}", ""] if title else []
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(HEADERS) - 1)) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in format_rows(table)]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def table_csv(table: pd.DataFrame) -> str:
    """CSV text with the raw metrics (fractions), one row per selector."""
    cols = [c for c in CSV_COLUMNS if c in table.columns]
    return table[cols].to_csv(index=False, float_format="%.6g")
