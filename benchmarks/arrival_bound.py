"""What any rule on faces' absolute negative probability can do when unhappy people arrive.

A person who arrives unhappy has no calm level of their own to rise from (mood.score =
"change"), so the only evidence is how likely the model finds their face negative. This
estimates, on the face bank, the best a queue-level rule of that kind can do: each person's
level is their negative probability averaged over their camera views (the most a long look
gives), a queue's score the mean level of the people in it, and the threshold is set so that a
calm queue of `faces` crosses it at most a budget's number of times in 8 hours, counting each
new person's arrival as a fresh queue (a crossing queue stays crossed for a whole wait, far
longer than an alert's hold). It reports the share of queues with `unhappy_faces` unhappy
newcomers among them that cross the same threshold. The model's separation of calm from
unhappy faces, not the policy, sets this bound.
"""

from __future__ import annotations

import numpy as np

from benchmarks import common
from benchmarks.queue_sim import CALM, UNHAPPY

# False-alarm budgets per 8 hours of calm queue; the alerts issue's target is the first.
BUDGETS_PER_8H = (1.0, 2.0, 5.0)


def person_levels(bank, negative: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(calm people's levels, unhappy people's levels): each face's probability of the `negative`
    classes, averaged over its views and widths; calm and unhappy as the simulation draws its
    people (queue_sim.CALM / UNHAPPY)."""
    neg = [bank.labels.index(c) for c in negative]
    level = bank.probs[..., neg].sum(-1).reshape(len(bank.probs), -1).mean(1)
    calm = bank.faces_of([c for c in CALM if c in bank.labels])
    unhappy = bank.faces_of([c for c in UNHAPPY if c in bank.labels])
    return level[calm], level[unhappy]


def auc(low: np.ndarray, high: np.ndarray) -> float:
    """Chance that a random `high` value exceeds a random `low` one (ties count half)."""
    ranked = np.sort(low)
    below = np.searchsorted(ranked, high, "left")
    ties = np.searchsorted(ranked, high, "right") - below
    return float((below + 0.5 * ties).mean() / len(low))


def bound(calm: np.ndarray, unhappy: np.ndarray, arrivals_per_8h: float, faces: int = 3, unhappy_faces: int = 2,
          samples: int = 400_000, seed: int = 0) -> dict:
    """For each false-alarm budget: the threshold on the queue's mean level and the share of
    queues with `unhappy_faces` unhappy people (the rest calm) at or above it."""
    if len(calm) == 0 or len(unhappy) == 0 or arrivals_per_8h <= 0:
        return {}
    rng = np.random.default_rng(seed)
    calm_q = rng.choice(calm, (samples, faces)).mean(1)
    mixed = np.concatenate([rng.choice(unhappy, (samples, unhappy_faces)),
                            rng.choice(calm, (samples, faces - unhappy_faces))], axis=1).mean(1)
    rows = []
    for budget in BUDGETS_PER_8H:
        share = min(1.0, budget / arrivals_per_8h)  # calm queues allowed to cross
        th = float(np.quantile(calm_q, 1 - share))
        rows.append({"false_alarms_per_8h": budget, "calm_queues_crossing": round(share, 5), "threshold": round(th, 3),
                     "unhappy_arrivals_caught": round(float((mixed >= th).mean()), 3)})
    return {"faces": faces, "unhappy_faces": unhappy_faces, "arrivals_per_8h": round(arrivals_per_8h, 1),
            "people": {"calm": int(len(calm)), "unhappy": int(len(unhappy))},
            "person_auc": round(auc(calm, unhappy), 3),
            "calm_people_at_or_above_0.5": round(float((calm >= 0.5).mean()), 3),
            "unhappy_people_below_0.5": round(float((unhappy < 0.5).mean()), 3), "rows": rows}


def markdown(b: dict) -> list[str]:
    if not b:
        return []
    rows = [[r["false_alarms_per_8h"], f"{r['calm_queues_crossing']:.2%}", r["threshold"],
             f"{r['unhappy_arrivals_caught']:.0%}"] for r in b["rows"]]
    return ["## Arrivals: the most any rule on absolute levels can catch (estimate)", "",
            f"Each person's level: the model's negative probability averaged over their views ({b['people']['calm']} "
            f"calm, {b['people']['unhappy']} unhappy people; AUC {b['person_auc']}; calm at or above 0.5: "
            f"{b['calm_people_at_or_above_0.5']:.1%}, unhappy below 0.5: {b['unhappy_people_below_0.5']:.1%}). "
            f"A queue of {b['faces']} scores its mean level; the threshold lets calm queues cross it at the false-alarm "
            f"budget, counting each of the calm run's {b['arrivals_per_8h']:g} arrivals per 8 h as a fresh queue; "
            f"caught: queues with {b['unhappy_faces']} unhappy newcomers at or above it.", "",
            common.md_table(["false alarms / 8 h", "calm queues crossing", "threshold", "unhappy arrivals caught"],
                            rows, right=[True] * 4), ""]
