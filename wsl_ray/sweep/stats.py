"""The statistics of a confirmation over seeds and of a sweep's early stopping.

Differences of two configurations (`Difference`): Welch's interval of independent arms, the
paired interval of arms that share their seeds, the correlation between the arms, and the
power of either (the smallest difference it detects, the seeds it needs). Rank correlations
(Spearman's rho, Kendall's tau-b) with Fisher-z intervals, for how well an early epoch's
ranking of trials predicts the final one. Student's t quantiles are computed here (no scipy).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import statistics

ALPHA = 0.05  # two-sided level of every interval and test here: 95%
POWER = 0.80  # the chance that a true difference of `detectable` size comes out significant
Z = statistics.NormalDist()


@functools.cache
def t_quantile(p: float, df: float) -> float:
    """The p-quantile (p > 0.5) of Student's t with `df` > 0 degrees of freedom (any real
    df): the root of CDF(t) = p, the CDF being 1/2 + integral_0^t of the density
    f(x) = Gamma((df+1)/2) / (sqrt(df pi) Gamma(df/2)) (1 + x^2/df)^(-(df+1)/2), integrated
    by Simpson's rule on the substitution x = tan(u), which keeps the heavy tails smooth.
    Newton's steps t += (p - CDF(t)) / f(t) from t = 0: the CDF is concave for t > 0, so
    they rise to the root without passing it."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(x: float) -> float:
        return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))

    def cdf(t: float) -> float:
        upper, n = math.atan(t), 2000

        def f(u: float) -> float:  # the density at tan(u), times d tan(u) / du
            x = math.tan(u)
            return density(x) * (1 + x * x)

        h = upper / n
        total = f(0) + f(upper) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, n))
        return 0.5 + total * h / 3

    t = 0.0
    for _ in range(200):
        step = (p - cdf(t)) / density(t)
        t += step
        if abs(step) <= 1e-13 * max(t, 1.0):
            break
    return t


@dataclasses.dataclass(frozen=True)
class Difference:
    """An estimated difference of means `diff` with standard error `se` on `df` degrees of
    freedom (Student's t), from `paired` per-seed differences or from independent arms;
    `spread` is the seed spread that `design` takes for the same kind of comparison."""

    diff: float
    se: float
    df: float
    paired: bool
    spread: float

    def interval(self, level: float = 1 - ALPHA) -> tuple[float, float]:
        """(low, high) = diff -+ t_{(1+level)/2, df} se; zero width for se = 0."""
        if self.se == 0:
            return self.diff, self.diff
        half = t_quantile(0.5 + level / 2, self.df) * self.se
        return self.diff - half, self.diff + half

    def detectable(self, alpha: float = ALPHA, power: float = POWER) -> float:
        """The smallest true difference that the two-sided t test at level alpha (reject
        when |diff| / se > t_{1-alpha/2, df}) finds significant with probability `power`:
        se times `noncentrality(df, alpha, power)`. Exact for the paired test (and equal
        arms); for Welch's test, whose statistic is only nearly t, as exact as its df."""
        if self.se == 0:
            return 0.0
        return noncentrality(self.df, alpha, power) * self.se


def _phi(x: float) -> float:
    """The standard normal CDF."""
    return 0.5 * math.erfc(-x / math.sqrt(2))


def t_test_power(delta: float, df: float, alpha: float = ALPHA) -> float:
    """The chance that the two-sided t test at level alpha rejects when the true difference
    is delta standard errors: T = (Z + delta) / S with S = sqrt(chi2_df / df) (noncentral
    t), so with c = t_{1-alpha/2, df},

        power = E_S[Phi(delta - c S) + Phi(-delta - c S)],

    S having the density 2 (df/2)^(df/2) s^(df-1) exp(-df s^2 / 2) / Gamma(df/2)
    (df >= 1), integrated by Simpson's rule over mean 1 -+ 12 of S's approximate stds."""
    c = t_quantile(1 - alpha / 2, df)
    log_k = math.log(2) + df / 2 * math.log(df / 2) - math.lgamma(df / 2)
    lo, hi, n = max(0.0, 1 - 12 / math.sqrt(2 * df)), 1 + 12 / math.sqrt(2 * df), 2000

    def f(s: float) -> float:
        if s == 0:  # the density there: 0 above 1 df, the constant at 1 df
            return math.exp(log_k) * (_phi(delta) + _phi(-delta)) if df == 1 else 0.0
        density = math.exp(log_k + (df - 1) * math.log(s) - df * s * s / 2)
        return density * (_phi(delta - c * s) + _phi(-delta - c * s))

    h = (hi - lo) / n
    total = f(lo) + f(hi) + sum((4 if i % 2 else 2) * f(lo + i * h) for i in range(1, n))
    return total * h / 3


@functools.cache
def noncentrality(df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The true difference, in standard errors, that the two-sided t test on df degrees of
    freedom at level alpha detects with probability `power`: the root of
    t_test_power(delta, df, alpha) = power, by bisection (the power grows with delta).
    Above z_{1-alpha/2} + z_power (the normal approximation), towards which it falls as df
    grows."""
    lo, hi = 0.0, 1.0
    while t_test_power(hi, df, alpha) < power:
        lo, hi = hi, hi * 2
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_test_power(mid, df, alpha) < power else (lo, mid)
    return (lo + hi) / 2


def paired_difference(a: list[float], b: list[float]) -> Difference:
    """a - b over paired seeds (a[i] and b[i] ran with the same seed): d_i = a_i - b_i,
    diff = mean(d), se = s_d / sqrt(n) with s_d the sample std of the d_i, df = n - 1."""
    if len(a) != len(b):
        raise ValueError(f"a paired difference needs pairs: {len(a)} and {len(b)} values")
    if len(a) < 2:
        raise ValueError("the paired interval needs at least 2 seeds per configuration (--seeds)")
    d = [x - y for x, y in zip(a, b, strict=True)]
    spread = statistics.stdev(d)
    return Difference(statistics.fmean(d), spread / math.sqrt(len(d)), len(d) - 1, True, spread)


def welch_difference(a: list[float], b: list[float]) -> Difference:
    """mean(a) - mean(b) of independent arms, se = sqrt(s_a^2/n_a + s_b^2/n_b), and the
    Welch-Satterthwaite df = se^4 / sum_i (s_i^2/n_i)^2 / (n_i - 1) (n_a + n_b - 2 when both
    arms have zero spread, where df does not matter); spread sqrt((s_a^2 + s_b^2) / 2)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's interval needs at least 2 seeds per configuration (--seeds)")
    diff = statistics.fmean(a) - statistics.fmean(b)
    spread = math.sqrt((statistics.variance(a) + statistics.variance(b)) / 2)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return Difference(diff, 0.0, len(a) + len(b) - 2, False, spread)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return Difference(diff, math.sqrt(va + vb), df, False, spread)


def welch_interval(a: list[float], b: list[float], level: float = 1 - ALPHA) -> tuple[float, ...]:
    """(mean(a) - mean(b), low, high): Welch's t interval (`welch_difference`)."""
    d = welch_difference(a, b)
    return d.diff, *d.interval(level)


def paired_interval(a: list[float], b: list[float], level: float = 1 - ALPHA) -> tuple[float, ...]:
    """(mean(a - b), low, high): the paired t interval (`paired_difference`)."""
    d = paired_difference(a, b)
    return d.diff, *d.interval(level)


def correlation(a: list[float], b: list[float]) -> float | None:
    """Pearson's correlation of paired values, sum (a-a')(b-b') / sqrt(sum (a-a')^2 sum
    (b-b')^2); None when there are fewer than 2 pairs or one side has no spread. The paired
    difference's variance is var(a) + var(b) - 2 r sd(a) sd(b): pairing pays when r > 0."""
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return statistics.correlation(a, b)


def design(spread: float, n: int, paired: bool) -> Difference:
    """The comparison of two configurations over n seeds each, before it runs (diff 0):
    paired, `spread` is the std of the per-seed differences, se = spread / sqrt(n), df = n-1;
    unpaired, `spread` is each arm's std over seeds, se = spread sqrt(2/n), df = 2(n-1)
    (Welch's df for equal arms)."""
    if paired:
        return Difference(0.0, spread / math.sqrt(n), n - 1, True, spread)
    return Difference(0.0, spread * math.sqrt(2 / n), 2 * (n - 1), False, spread)


def detectable_difference(
    spread: float, n: int, paired: bool, alpha: float = ALPHA, power: float = POWER
) -> float:
    """The smallest difference a comparison over n >= 2 seeds per arm detects at level
    alpha with probability `power`: noncentrality(df) * se (`design` gives se and df from
    `spread`)."""
    if n < 2:
        raise ValueError(f"{n} seed(s): a comparison over seeds needs at least 2")
    return design(spread, n, paired).detectable(alpha, power)


def seeds_needed(
    gain: float, spread: float, paired: bool, alpha: float = ALPHA, power: float = POWER
) -> int:
    """The fewest seeds per arm (>= 2) whose comparison detects a difference of `gain` > 0
    (`detectable_difference` <= gain). Starts from the normal approximation
    n = 2 or 1 (per `design`) * ((z_{1-alpha/2} + z_power) spread / gain)^2, which never
    overshoots (the t test needs more than z_{1-alpha/2} + z_power standard errors), then
    counts up, each step on its own df."""
    if not gain > 0:
        raise ValueError(f"a gain of {gain}: give a difference > 0 to detect")
    factor = 1 if paired else 2
    start = factor * ((Z.inv_cdf(1 - alpha / 2) + Z.inv_cdf(power)) * spread / gain) ** 2
    return next(
        n
        for n in itertools.count(max(2, math.floor(start)))
        if detectable_difference(spread, n, paired, alpha, power) <= gain
    )


def mean_std(values: list[float], scale: float = 1.0) -> str:
    """`mean ± sample std` of `values` times `scale`, for tables: "-" for none, and the
    value with "(one seed)" for one, which has no spread (not "± 0.00")."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{scale * values[0]:.2f} (one seed)"
    return f"{scale * statistics.fmean(values):.2f} ± {scale * statistics.stdev(values):.2f}"


def average_ranks(values: list[float]) -> list[float]:
    """1-based ranks of `values`; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    for _, group in itertools.groupby(enumerate(order), key=lambda p: values[p[1]]):
        spanned = list(group)
        for _, i in spanned:
            ranks[i] = (spanned[0][0] + spanned[-1][0]) / 2 + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks (ties share
    their mean rank); NaN when one side is all ties."""
    rx, ry = average_ranks(x), average_ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else math.nan


def kendall_tau_b(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b: (C - D) / sqrt((n0 - n1)(n0 - n2)) over the n0 = n(n-1)/2 pairs, C
    concordant and D discordant (a pair tied in x or y is neither), n1 = sum t(t-1)/2 over
    the groups of t tied x values, n2 the same for y; NaN when one side is all ties."""
    pairs = list(itertools.combinations(zip(x, y, strict=True), 2))
    s = sum(_sign((xi - xj) * (yi - yj)) for (xi, yi), (xj, yj) in pairs)
    n0 = len(pairs)
    n1, n2 = (sum(t * (t - 1) / 2 for t in _tie_sizes(v)) for v in (x, y))
    denominator = math.sqrt((n0 - n1) * (n0 - n2))
    return s / denominator if denominator else math.nan


def _sign(v: float) -> int:
    return (v > 0) - (v < 0)


def _tie_sizes(values: list[float]) -> list[int]:
    return [len(list(g)) for _, g in itertools.groupby(sorted(values))]


# the variances of Fisher's z of the two rank correlations, c / (n - k), after
# Fieller, Hartley and Pearson (1957), Biometrika 44: 470-481
FISHER_VARIANCE = {"spearman": (1.06, 3), "kendall": (0.437, 4)}


def rank_interval(
    r: float, n: int, kind: str, level: float = 1 - ALPHA
) -> tuple[float, float] | None:
    """The interval tanh(atanh(r) -+ z_{(1+level)/2} sqrt(c / (n - k))) of a rank
    correlation r over n pairs, (c, k) = (1.06, 3) for Spearman and (0.437, 4) for Kendall
    (`FISHER_VARIANCE`); None where n <= k or r is undefined (NaN). At |r| = 1 the
    transform is infinite and the interval collapses onto r, the formula's limit."""
    c, k = FISHER_VARIANCE[kind]
    if n <= k or math.isnan(r):
        return None
    if abs(r) >= 1:
        return r, r
    half = Z.inv_cdf(0.5 + level / 2) * math.sqrt(c / (n - k))
    return math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)


@dataclasses.dataclass(frozen=True)
class RankAgreement:
    """How an evaluated epoch's ranking of trials agrees with the final one: over `trials`
    trials, Spearman's rho and Kendall's tau-b with their 95% intervals (`rank_interval`);
    None where undefined (all tied, or too few trials for the interval)."""

    epoch: int
    trials: int
    spearman: float | None
    spearman_interval: tuple[float, float] | None
    kendall: float | None
    kendall_interval: tuple[float, float] | None


def rank_agreement(epoch: int, early: list[float], final: list[float]) -> RankAgreement:
    """The RankAgreement of the `early` metric of some trials at `epoch` with their
    `final` one (same order)."""

    def defined(r: float) -> float | None:
        return None if math.isnan(r) else r

    rho, tau = spearman(early, final), kendall_tau_b(early, final)
    n = len(early)
    return RankAgreement(
        epoch,
        n,
        defined(rho),
        rank_interval(rho, n, "spearman"),
        defined(tau),
        rank_interval(tau, n, "kendall"),
    )


def rung_agreements(rows: list[dict], metric: str) -> tuple[int, list[RankAgreement]]:
    """(n, agreements): over the n trials of one sweep that reached the end (TERMINATED,
    with a final `metric`), each evaluated epoch before the end, where 3 or more of them
    were evaluated, with its `rank_agreement` against the final `metric`: would a
    scheduler's cut at that epoch have kept the trials that end best? Empty for n < 3.
    `rows` are results rows (wsl_ray.sweep.results: `history` lists the evaluated epochs)."""
    ended = [r for r in rows if r["status"] == "TERMINATED" and _finite(r.get(metric))]
    if len(ended) < 3:
        return len(ended), []
    at: dict[int, list[tuple[float, float]]] = {}
    for r in ended:
        for h in r.get("history") or []:
            if h.get("epoch") is not None and h["epoch"] < r["epochs"] and _finite(h.get(metric)):
                at.setdefault(h["epoch"], []).append((h[metric], r[metric]))
    return len(ended), [
        rank_agreement(epoch, [e for e, _ in pairs], [f for _, f in pairs])
        for epoch, pairs in sorted(at.items())
        if len(pairs) >= 3
    ]


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def format_agreement(r: float | None, interval: tuple[float, float] | None) -> str:
    """`+0.62 [+0.21, +0.85]` for tables: "-" for an undefined r, no interval without one."""
    if r is None:
        return "-"
    return f"{r:+.2f}" + (f" [{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else "")


def power_text(seeds: int, spread: float, paired: bool, detect: float | None = None) -> str:
    """What a confirmation of `seeds` seeds per configuration can detect with a seed
    `spread` (as `design` takes it, in the metric's units; printed in points, x100), and
    the seeds per configuration it needs for a gain of `detect` points: two-sided 5% level,
    80% power (`detectable_difference`, `seeds_needed`)."""
    design_words = "paired seeds" if paired else "independent arms"
    text = f"confirmation power (95% two-sided, 80% power, {design_words}): "
    if seeds >= 2:
        x = detectable_difference(spread, seeds, paired)
        text += f"with --seeds {seeds} it detects a difference of {100 * x:.2f} points or more"
    else:
        text += f"--seeds {seeds} gives no interval (2 or more are needed)"
    if detect is not None:
        needed = seeds_needed(detect / 100, spread, paired)
        text += f"; a gain of {detect:g} points (--detect) needs about {needed} seeds each"
    return text + "."
