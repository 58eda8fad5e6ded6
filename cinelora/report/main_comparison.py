"""The study's main comparison, stated before the runs (paper, Method and setup): `study.MAIN` against
`study.BASELINE` on the held-out domains, clean and attacked conditioning frames.

- LPIPS: the per-clip difference main − baseline (seeds averaged per clip, pooled over the held-out domains), its
  95% bootstrap CI, the paired test (`cinelora.stats.paired_test`) Holm-adjusted over the two conditions' tests,
  and its rank-biserial effect size;
- FVD: per held-out domain and condition, both methods' values (mean over seeds) beside the domain's real-vs-real
  noise floor (`table2.read_fvd_floors`).
The answer is positive only if held-out LPIPS is lower at an adjusted p < ALPHA under either condition and no
held-out FVD of the main method exceeds the baseline's by more than that domain's noise floor.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cinelora.atomic import atomic_write_text
from cinelora.report import fixed, latex_escape, most_real_profile, scale_notes
from cinelora.report.table2 import ALPHA, Floor, clip_means, paired_on_clips, read_fvd_floors
from cinelora.results import CONDITIONS, METRICS, read_results
from cinelora.stats import PairedTest, bootstrap_mean_ci, holm_adjust
from cinelora.study import BASELINE, MAIN, TRAIN_DOMAIN

VERDICTS = ("positive", "not positive", "undecided")  # undecided: a test or a noise floor is missing


@dataclass(frozen=True)
class LpipsComparison:
    """Held-out LPIPS, main − baseline, under one condition."""

    difference: float
    low: float | None
    high: float | None
    test: PairedTest
    p_holm: float | None


@dataclass(frozen=True)
class MainComparison:
    profile: str
    lpips: dict[str, LpipsComparison]  # condition -> comparison
    fvd: dict[tuple[str, str], tuple[float, float, int]]  # (domain, condition) -> (baseline, main, N)
    floors: dict[str, Floor]  # held-out domain -> its noise floor
    verdict: str


def _held_out_lpips(rows: pd.DataFrame, experiment: str, condition: str) -> pd.DataFrame:
    return rows[(rows["experiment"] == experiment) & (rows["condition"] == condition) & (rows["metric"] == "lpips")
                & (rows["domain"] != TRAIN_DOMAIN) & (rows["clip"] != "all")]


def _fvd(rows: pd.DataFrame, experiment: str, domain: str, condition: str) -> tuple[float, int] | None:
    def select(metric: str) -> pd.Series:
        return rows[(rows["experiment"] == experiment) & (rows["domain"] == domain)
                    & (rows["condition"] == condition) & (rows["metric"] == metric)]["value"]
    values, sizes = select("fvd"), select("fvd_clips")
    return (float(values.mean()), int(sizes.max()) if len(sizes) else 0) if len(values) else None


def _verdict(lpips: dict[str, LpipsComparison], fvd: dict[tuple[str, str], tuple[float, float, int]],
             floors: dict[str, Floor], domains: list[str]) -> str:
    if len(lpips) < len(CONDITIONS):
        return VERDICTS[2]
    # no test (identical outputs): no evidence of a difference
    lower = any(c.p_holm is not None and c.p_holm < ALPHA and c.difference < 0 for c in lpips.values())
    if not lower:
        return VERDICTS[1]
    if any(d not in floors for d in domains) or len(fvd) < len(domains) * len(CONDITIONS):
        return VERDICTS[2]
    worse = any(main - base > floors[d].fvd for (d, _), (base, main, _) in fvd.items())
    return VERDICTS[1] if worse else VERDICTS[0]


def main_comparison(metrics: pd.DataFrame, floors: dict[tuple[str, str], Floor]) -> MainComparison | None:
    """The comparison at the most real profile where both methods have clean held-out rows; None without one."""
    both = metrics[metrics["experiment"].isin([MAIN, BASELINE])]
    profiles = [p for p in set(both["profile"])
                if all(len(_held_out_lpips(both[both["profile"] == p], e, "clean")) for e in (MAIN, BASELINE))]
    if not profiles:
        return None
    profile = most_real_profile(profiles)
    rows = both[both["profile"] == profile]
    found: dict[str, tuple[float, float | None, float | None, PairedTest]] = {}
    for condition in CONDITIONS:
        main, base = (_held_out_lpips(rows, e, condition) for e in (MAIN, BASELINE))
        test = paired_on_clips(main, base) if len(main) and len(base) else None
        if test is None:
            continue
        a, b = clip_means(main), clip_means(base)
        common = a.index.intersection(b.index)
        ci = bootstrap_mean_ci((a[common] - b[common]).to_numpy())
        found[condition] = (ci.mean, ci.low, ci.high, test)
    adjusted = holm_adjust([test.p_value for *_, test in found.values()])
    lpips = {c: LpipsComparison(*values, p) for (c, values), p in zip(found.items(), adjusted)}
    domains = sorted(set(rows["domain"]) - {TRAIN_DOMAIN})
    fvd = {}
    for domain in domains:
        for condition in CONDITIONS:
            base, main = _fvd(rows, BASELINE, domain, condition), _fvd(rows, MAIN, domain, condition)
            if base is not None and main is not None:
                fvd[domain, condition] = (base[0], main[0], min(base[1], main[1]))
    held_floors = {d: floors[profile, d] for d in domains if (profile, d) in floors}
    return MainComparison(profile, lpips, fvd, held_floors, _verdict(lpips, fvd, held_floors, domains))


def _p(p: float | None) -> str:
    return "--" if p is None else r"$<0.001$" if p < 0.001 else f"${p:.2g}$"


def make_main_comparison(comparison: MainComparison | None) -> str:
    """The table (label `tab:main`) of `main_comparison`'s result; one line saying what to run when there is none."""
    head = [r"% Generated by `python -m cinelora report main-comparison` from results/: do not edit.",
            r"\begin{table}[t]", r"\centering"]
    if comparison is None:
        return "\n".join([*head, rf"\caption{{The main comparison: no held-out rows of both \texttt{{{latex_escape(MAIN)}}} "
                          rf"and \texttt{{{latex_escape(BASELINE)}}} in \texttt{{results/}} yet.}}",
                          r"\label{tab:main}", r"\end{table}"]) + "\n"
    c = comparison
    domains = sorted({d for d, _ in c.fvd})
    digits = METRICS["lpips"].decimals + 1
    fvd_digits = METRICS["fvd"].decimals
    lines = [*head, rf"\caption{{The main comparison, as stated before the runs (\emph{{{c.profile}}} profile): "
             rf"\texttt{{{latex_escape(MAIN)}}} minus \texttt{{{latex_escape(BASELINE)}}} on the held-out domains. "
             r"LPIPS: mean per-clip difference (seeds averaged per clip, held-out domains pooled) with its 95\% "
             r"bootstrap CI; $p$: two-sided paired test, Holm-adjusted over the two conditions; $r$: rank-biserial "
             r"effect size. FVD: each held-out domain's value for " + rf"\texttt{{{latex_escape(BASELINE)}}} $\to$ "
             rf"\texttt{{{latex_escape(MAIN)}}} (mean over seeds; N clips each), with the domain's real-vs-real "
             rf"noise floor in brackets where it is measured. Verdict by the stated rule: \textbf{{{c.verdict}}}. "
             + scale_notes([c.profile]) + "}",
             r"\label{tab:main}", r"\small",
             rf"\begin{{tabular}}{{lccc{'c' * len(domains)}}}", r"\toprule",
             " & ".join([r"Frames", r"$\Delta$ LPIPS [95\% CI]", "$p$", "$r$",
                         *(rf"FVD {latex_escape(d)}" + (f" [{fixed(c.floors[d].fvd, fvd_digits)}]" if d in c.floors
                                                         else "") for d in domains)]) + r" \\", r"\midrule"]
    for condition in CONDITIONS:
        lp = c.lpips.get(condition)
        cells = [condition]
        if lp is None:
            cells += ["--", "--", "--"]
        else:
            interval = "" if lp.low is None else f" [{fixed(lp.low, digits)}, {fixed(lp.high, digits)}]"
            effect = "--" if lp.test.rank_biserial is None else f"${lp.test.rank_biserial:+.2f}$"
            cells += [f"${fixed(lp.difference, digits)}${interval}", _p(lp.p_holm), effect]
        for d in domains:
            base_main = c.fvd.get((d, condition))
            cells.append("--" if base_main is None else
                         f"${fixed(base_main[0], fvd_digits)} \\to {fixed(base_main[1], fvd_digits)}$ (N={base_main[2]})")
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def main(results_root: Path, out: Path) -> None:
    """`python -m cinelora report main-comparison`: results/ → `out` (paper/tables/main_comparison.tex)."""
    comparison = main_comparison(read_results(results_root), read_fvd_floors(results_root))
    atomic_write_text(out, make_main_comparison(comparison))


__all__ = ["VERDICTS", "LpipsComparison", "MainComparison", "main_comparison", "make_main_comparison", "main"]
