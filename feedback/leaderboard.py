"""Per-version strength from blind arena choices: a Bradley-Terry fit with an interval.

Each choice is one match between two versions: the winner scores 1, a tie or "both bad"
scores each side 1/2 (neither was preferred). The model: P(a beats b) =
sigmoid(theta_a - theta_b). The strengths are the maximum of the likelihood times a
Gaussian prior on each theta (standard deviation `PRIOR_SD`), found by Newton's method;
the prior keeps a version that won every match finite and centres the scale. The 95%
interval of each strength is the Laplace approximation: theta +- 1.96 standard deviations
from the inverse of the negative Hessian at the optimum.

Strengths are shown on the Elo scale (400 points per factor of 10 in odds, 1000 for the
prior's centre), so "+100" reads as the usual Elo gap (about 64% expected wins).

Pure arithmetic on small lists (a user has a handful of versions); no database access.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Hashable

PRIOR_SD = 1.0  # in log-odds: a version's strength is a priori within about +-340 Elo of the others
ELO_PER_LOGIT = 400 / math.log(10)
ELO_CENTRE = 1000.0
Z_95 = 1.959964


@dataclass(frozen=True)
class Match:
    """One arena choice: `score` is what `first` scored against `second` (1, 1/2 or 0)."""

    first: Hashable
    second: Hashable
    score: float


@dataclass(frozen=True)
class Strength:
    player: Hashable
    rating: float  # Elo scale
    low: float  # 95% interval
    high: float
    wins: int
    losses: int
    ties: int  # ties and "both bad"

    @property
    def num_matches(self) -> int:
        return self.wins + self.losses + self.ties


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """x with matrix @ x = vector, by Gaussian elimination with partial pivoting."""
    n = len(vector)
    rows = [list(row) + [value] for row, value in zip(matrix, vector)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(rows[r][col]))
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(n):
            if r != col and rows[r][col] != 0.0:
                factor = rows[r][col] / rows[col][col]
                rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col])]
    return [rows[i][n] / rows[i][i] for i in range(n)]


def _inverse_diagonal(matrix: list[list[float]]) -> list[float]:
    n = len(matrix)
    return [_solve(matrix, [1.0 if j == i else 0.0 for j in range(n)])[i] for i in range(n)]


def bradley_terry(matches: Sequence[Match], players: Sequence[Hashable] = ()) -> list[Strength]:
    """Strength of every player in `matches` (and of `players` with no match yet, at the
    prior), strongest first."""
    names = list(dict.fromkeys([*players, *(m.first for m in matches), *(m.second for m in matches)]))
    index = {name: i for i, name in enumerate(names)}
    n = len(names)
    theta = [0.0] * n
    precision = 1.0 / PRIOR_SD**2
    information = [[0.0] * n for _ in range(n)]
    for _ in range(100):
        gradient = [-precision * t for t in theta]
        information = [[precision if i == j else 0.0 for j in range(n)] for i in range(n)]
        for match in matches:
            a, b = index[match.first], index[match.second]
            p = 1.0 / (1.0 + math.exp(theta[b] - theta[a]))
            gradient[a] += match.score - p
            gradient[b] -= match.score - p
            w = p * (1.0 - p)
            information[a][a] += w
            information[b][b] += w
            information[a][b] -= w
            information[b][a] -= w
        step = _solve(information, gradient) if n else []
        theta = [t + s for t, s in zip(theta, step)]
        if max((abs(s) for s in step), default=0.0) < 1e-10:
            break
    variances = _inverse_diagonal(information) if n else []
    tallies = {name: [0, 0, 0] for name in names}
    for match in matches:
        if match.score == 0.5:
            tallies[match.first][2] += 1
            tallies[match.second][2] += 1
        else:
            winner, loser = (match.first, match.second) if match.score > 0.5 else (match.second, match.first)
            tallies[winner][0] += 1
            tallies[loser][1] += 1
    strengths = []
    for name, t, variance in zip(names, theta, variances):
        half_width = Z_95 * math.sqrt(max(variance, 0.0))
        wins, losses, ties = tallies[name]
        strengths.append(Strength(
            name, ELO_CENTRE + ELO_PER_LOGIT * t, ELO_CENTRE + ELO_PER_LOGIT * (t - half_width),
            ELO_CENTRE + ELO_PER_LOGIT * (t + half_width), wins, losses, ties,
        ))
    return sorted(strengths, key=lambda s: s.rating, reverse=True)
