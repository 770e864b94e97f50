"""Arena ratings: Bradley–Terry strengths fitted to pairwise votes, on the Elo scale, with bootstrap intervals.

    bradley_terry(votes)                 -> {model: rating}        (mean rating 1000)
    leaderboard(votes, rounds=100, seed) -> rows sorted by rating, each with its 95 % interval and vote count
    records(votes)                       -> {model: {battles, won, tied, lost}}
    head_to_head(votes)                  -> {(model, opponent): {battles, score}}: what the win-rate matrix shows

A vote is (model_a, model_b, outcome), the outcome one of `llm.preference_labels.JUDGEMENTS` ("a", "b", "tie",
"both_bad"); ties and both-bad count as half a win for each side (as FastChat's leaderboard does). Under
Bradley–Terry, model i beats model j with probability p_i / (p_i + p_j); on the Elo scale (400 points per factor
of 10, mean 1000) a 100-point gap means the stronger model wins 64 % of the time. Strengths are fitted by the
minorisation–maximisation iteration (Hunter 2004), with a small prior of half a tie between every two models
that met, so a model that won every vote gets a large but finite rating. The interval: refit on votes
resampled with replacement, take the 2.5th and 97.5th percentiles.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Hashable, Sequence

from llm.preference_labels import JUDGEMENTS, Label

SCALE = 400.0
BASE_RATING = 1000.0
PRIOR_GAMES = 0.5  # virtual games (split evenly) between every two models that met

Vote = tuple[Hashable, Hashable, str]


def _wins(votes: Sequence[Vote]) -> tuple[list, dict, dict]:
    models = sorted({m for a, b, _ in votes for m in (a, b)}, key=str)
    wins: dict = defaultdict(float)   # (i, j) -> wins of i over j
    games: dict = defaultdict(float)  # frozen pair -> games
    for a, b, outcome in votes:
        if outcome not in JUDGEMENTS:
            raise ValueError(f"outcome {str(outcome)!r} is not one of {', '.join(JUDGEMENTS)}")
        if a == b:
            continue
        share = {Label.a: 1.0, Label.b: 0.0}.get(outcome, 0.5)  # a tie or both bad: half a win each
        wins[a, b] += share
        wins[b, a] += 1.0 - share
        games[frozenset((a, b))] += 1.0
    for pair in list(games):
        a, b = tuple(pair)
        wins[a, b] += PRIOR_GAMES / 2
        wins[b, a] += PRIOR_GAMES / 2
        games[pair] += PRIOR_GAMES
    return models, wins, games


def bradley_terry(votes: Sequence[Vote], iterations: int = 500, tolerance: float = 1e-9) -> dict:
    """Elo-scale ratings (mean 1000) of every model in `votes`."""
    models, wins, games = _wins(votes)
    if not models:
        return {}
    strength = {m: 1.0 for m in models}
    total_wins = {m: sum(wins[m, other] for other in models if other != m) for m in models}
    opponents = {m: [(other, games[frozenset((m, other))]) for other in models
                     if other != m and frozenset((m, other)) in games] for m in models}
    for _ in range(iterations):
        updated = {}
        for m in models:
            denominator = sum(n / (strength[m] + strength[other]) for other, n in opponents[m])
            updated[m] = total_wins[m] / denominator if denominator > 0 else strength[m]
        # Only ratios matter: keep the geometric mean at 1 so numbers stay in range.
        log_mean = sum(math.log(value) for value in updated.values()) / len(updated)
        updated = {m: value / math.exp(log_mean) for m, value in updated.items()}
        change = max(abs(math.log(updated[m] / strength[m])) for m in models)
        strength = updated
        if change < tolerance:
            break
    return {m: BASE_RATING + SCALE * math.log10(strength[m]) for m in models}


def win_probability(rating_a: float, rating_b: float) -> float:
    """P(a beats b) under the fitted model."""
    return 1.0 / (1.0 + 10 ** ((rating_b - rating_a) / SCALE))


def leaderboard(votes: Sequence[Vote], rounds: int = 100, seed: int = 0) -> list[dict]:
    """[{model, rating, lower, upper, votes}] best first; lower/upper: 95 % bootstrap interval."""
    votes = list(votes)
    ratings = bradley_terry(votes)
    if not ratings:
        return []
    rng = random.Random(seed)
    samples: dict = defaultdict(list)
    for _ in range(rounds):
        resampled = [votes[rng.randrange(len(votes))] for _ in votes]
        for model, rating in bradley_terry(resampled).items():
            samples[model].append(rating)
    counts: dict = defaultdict(int)
    for a, b, _ in votes:
        counts[a] += 1
        counts[b] += 1

    def percentile(values: list[float], fraction: float) -> float | None:
        if not values:
            return None
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]

    rows = [{"model": model, "rating": rating, "lower": percentile(samples[model], 0.025),
             "upper": percentile(samples[model], 0.975), "votes": counts[model]} for model, rating in ratings.items()]
    return sorted(rows, key=lambda row: -row["rating"])


def records(votes: Sequence[Vote]) -> dict:
    """{model: {battles, won, tied, lost}} as the votes said it (a tie and both bad count as tied)."""
    found: dict = defaultdict(lambda: {"battles": 0, "won": 0, "tied": 0, "lost": 0})
    for a, b, outcome in votes:
        if a == b:
            continue
        for model, won in ((a, Label.a), (b, Label.b)):
            found[model]["battles"] += 1
            found[model]["won" if outcome == won else "tied" if outcome not in (Label.a, Label.b) else "lost"] += 1
    return dict(found)


def head_to_head(votes: Sequence[Vote]) -> dict:
    """{(model, opponent): {battles, score}} for every two models that met, both ways round; score counts a win 1
    and a tie or both bad 1/2, so score / battles is the model's observed win rate against that opponent."""
    found: dict = defaultdict(lambda: {"battles": 0, "score": 0.0})
    for a, b, outcome in votes:
        if a == b:
            continue
        share = {Label.a: 1.0, Label.b: 0.0}.get(outcome, 0.5)
        for model, opponent, score in ((a, b, share), (b, a, 1.0 - share)):
            found[model, opponent]["battles"] += 1
            found[model, opponent]["score"] += score
    return dict(found)
