"""Student's t quantiles and Welch's interval: the statistics of a confirmation over seeds."""

from __future__ import annotations

import math
import statistics


def t_quantile(p: float, df: float) -> float:
    """The p-quantile (p > 0.5) of Student's t with `df` > 0 degrees of freedom (any real
    df): bisection on the CDF 1/2 + integral_0^t of the density
    Gamma((df+1)/2) / (sqrt(df pi) Gamma(df/2)) (1 + x^2/df)^(-(df+1)/2), integrated by
    Simpson's rule on the substitution x = tan(u), which keeps the heavy tails smooth."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(t: float) -> float:
        upper, n = math.atan(t), 2000

        def f(u: float) -> float:  # the density at tan(u), times d tan(u) / du
            x = math.tan(u)
            return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df)) * (1 + x * x)

        h = upper / n
        total = f(0) + f(upper) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, n))
        return 0.5 + total * h / 3

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def welch_interval(a: list[float], b: list[float], level: float = 0.95) -> tuple[float, ...]:
    """(mean(a) - mean(b), low, high): the Welch's t interval of the difference of means,
    se = sqrt(s_a^2/n_a + s_b^2/n_b), df = se^4 / sum_i (s_i^2/n_i)^2 / (n_i - 1).
    Needs two or more values per side; zero spread gives a zero-width interval."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's interval needs at least 2 seeds per configuration (--seeds)")
    diff = statistics.fmean(a) - statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(0.5 + level / 2, df) * se
    return diff, diff - half, diff + half


def mean_std(values: list[float], scale: float = 1.0) -> str:
    """`mean ± sample std` of `values` times `scale`, for tables: "-" for none, and the
    value with "(one seed)" for one, which has no spread (not "± 0.00")."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{scale * values[0]:.2f} (one seed)"
    return f"{scale * statistics.fmean(values):.2f} ± {scale * statistics.stdev(values):.2f}"
