"""What any rule on faces' absolute negative probability can do when unhappy people arrive.

A person who arrives unhappy has no calm level of their own to rise from (mood.score =
"change"), so the only evidence is how likely the model finds their face negative. This
estimates, on the face bank, the best a queue-level rule of that kind can do: each person's
level is their negative probability averaged over their camera views (the most a long look
gives), a queue's score the mean level of the people in it, and the threshold is set so that a
calm queue of `faces` crosses it at most a budget's number of times in 8 hours, counting each
new person's arrival as a fresh queue (a crossing queue stays crossed for a whole wait, far
longer than an alert's hold). It reports the share of queues with `unhappy_faces` unhappy
newcomers among them that cross the same threshold, for two queue scores: the mean level, and
the sum of each person's log likelihood ratio (unhappy vs calm, learnt from the levels), the
most powerful score for independent people (Neyman-Pearson), so no rule on these levels does
better. Beside them, the per-person AUC a model would need for 95% under the textbook binormal
model (calm and unhappy levels normal with equal spread). The model's separation of calm from
unhappy faces, not the policy, sets this bound.

How far a better model could take it (annotator_ceiling): the truth, the majority of about ten
annotators, is itself a noisy draw on faces they split on. A model that knew each face's
annotator split exactly, the best an image model can do against their majority, still misses
some arrivals; that ceiling is estimated from the votes alone.
"""

from __future__ import annotations

from math import sqrt
from pathlib import Path
from statistics import NormalDist

import numpy as np

from benchmarks import common
from benchmarks.queue_sim import CALM, UNHAPPY
from edge.labels import LABELS

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


def likelihood_ratio(calm: np.ndarray, unhappy: np.ndarray, bins: int = 40, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Each level replaced by the log of how much likelier it is among unhappy people than calm
    ones: binned on quantiles, made non-decreasing, and cross-fitted (each half of the people is
    scored with the ratio learnt on the other half, so the estimate is not flattered by fitting
    the same people it scores). A tiny multiple of the level breaks ties within a bin."""
    rng = np.random.default_rng(seed)
    folds = [rng.permutation(len(x)) % 2 for x in (calm, unhappy)]
    out = [np.empty(len(calm)), np.empty(len(unhappy))]
    for f in (0, 1):
        fit_c, fit_u = calm[folds[0] != f], unhappy[folds[1] != f]
        edges = np.quantile(np.concatenate([fit_c, fit_u]), np.linspace(0, 1, bins + 1))
        edges[0], edges[-1] = -np.inf, np.inf
        dens_c = (np.histogram(fit_c, edges)[0] + 0.5) / (len(fit_c) + 0.5 * bins)
        dens_u = (np.histogram(fit_u, edges)[0] + 0.5) / (len(fit_u) + 0.5 * bins)
        ratio = np.maximum.accumulate(np.log(dens_u / dens_c))
        for k, x in enumerate((calm, unhappy)):
            mine = folds[k] == f
            out[k][mine] = ratio[np.clip(np.searchsorted(edges, x[mine], "right") - 1, 0, bins - 1)] + 1e-6 * x[mine]
    return out[0], out[1]


# The textbook binormal model: calm levels N(0, 1), unhappy N(d, 1), so a person's AUC is
# Phi(d / sqrt 2); a queue of n with k unhappy has mean N(k d / n, 1 / n).
def binormal_caught(person_auc: float, calm_share: float, faces: int, unhappy_faces: int) -> float:
    """Share of queues with `unhappy_faces` unhappy people whose mean crosses the threshold that
    `calm_share` of calm queues cross, for binormal levels with this per-person AUC."""
    z = NormalDist()
    d = sqrt(2) * z.inv_cdf(person_auc)
    return z.cdf(unhappy_faces * d / sqrt(faces) - z.inv_cdf(1 - calm_share))


def auc_needed(calm_share: float, faces: int, unhappy_faces: int, catch: float = 0.95) -> float:
    """The per-person AUC at which binormal_caught reaches `catch`."""
    z = NormalDist()
    d = (z.inv_cdf(1 - calm_share) + z.inv_cdf(catch)) * sqrt(faces) / unhappy_faces
    return z.cdf(d / sqrt(2))


def _caught(calm: np.ndarray, unhappy: np.ndarray, shares, faces: int, unhappy_faces: int, samples: int,
            seed: int, score=lambda queues: queues.mean(1)) -> list[tuple[float, float]]:
    """(threshold, share of mixed queues at or above it) for each allowed share of calm queues;
    score: (queues, faces) people's values -> each queue's score (default their mean)."""
    rng = np.random.default_rng(seed)
    calm_q = score(rng.choice(calm, (samples, faces)))
    mixed = score(np.concatenate([rng.choice(unhappy, (samples, unhappy_faces)),
                                  rng.choice(calm, (samples, faces - unhappy_faces))], axis=1))
    ths = [float(np.quantile(calm_q, 1 - share)) for share in shares]
    return [(th, float((mixed >= th).mean())) for th in ths]


def bound(calm: np.ndarray, unhappy: np.ndarray, arrivals_per_8h: float, faces: int = 3, unhappy_faces: int = 2,
          samples: int = 400_000, seed: int = 0) -> dict:
    """For each false-alarm budget: the threshold on the queue's mean level, the share of queues
    with `unhappy_faces` unhappy people (the rest calm) at or above it, the same share for the
    likelihood-ratio score, and the binormal model's view (caught at this AUC, AUC needed)."""
    if len(calm) == 0 or len(unhappy) == 0 or arrivals_per_8h <= 0:
        return {}
    shares = [min(1.0, budget / arrivals_per_8h) for budget in BUDGETS_PER_8H]  # calm queues allowed to cross
    person_auc = min(auc(calm, unhappy), 1 - 1e-9)  # the binormal model's inverse CDF needs it below 1
    by_mean = _caught(calm, unhappy, shares, faces, unhappy_faces, samples, seed)
    by_ratio = _caught(*likelihood_ratio(calm, unhappy, seed=seed), shares, faces, unhappy_faces, samples, seed)
    rows = [{"false_alarms_per_8h": budget, "calm_queues_crossing": round(share, 5), "threshold": round(th, 3),
             "unhappy_arrivals_caught": round(caught, 3), "caught_by_likelihood_ratio": round(ratio_caught, 3),
             "caught_if_binormal": round(binormal_caught(person_auc, share, faces, unhappy_faces), 3),
             "person_auc_needed_for_95": round(auc_needed(share, faces, unhappy_faces), 4)}
            for budget, share, (th, caught), (_, ratio_caught) in zip(BUDGETS_PER_8H, shares, by_mean, by_ratio)]
    return {"faces": faces, "unhappy_faces": unhappy_faces, "arrivals_per_8h": round(arrivals_per_8h, 1),
            "people": {"calm": int(len(calm)), "unhappy": int(len(unhappy))},
            "person_auc": round(person_auc, 3),
            "calm_people_at_or_above_0.5": round(float((calm >= 0.5).mean()), 3),
            "unhappy_people_below_0.5": round(float((unhappy < 0.5).mean()), 3), "rows": rows}


# Pseudo-votes of the prior (spread like all the votes) added to each face's own votes when its
# annotator split is drawn: how far a face's true split may lie from its ~10 observed votes.
PRIOR_VOTES = (0.1, 0.5, 1.0, 2.0)


def symmetric_sums(x: np.ndarray, k: int) -> np.ndarray:
    """The k-th elementary symmetric polynomial of each row of x (the sum over k-subsets of the
    product of their entries)."""
    e = [np.ones(len(x))] + [np.zeros(len(x)) for _ in range(k)]
    for col in x.T:  # e_j += e_(j-1) * col, from the top down so each column enters once
        for j in range(k, 0, -1):
            e[j] = e[j] + e[j - 1] * col
    return e[k]


def majority_negative_chance(split: np.ndarray, n_votes: np.ndarray, negative: np.ndarray, rng,
                             draws: int) -> np.ndarray:
    """Per face, the chance that `n_votes` annotators drawn from `split` (n, classes) give a
    negative class the most votes, ties broken at random (Monte Carlo, `draws` panels)."""
    out = np.empty(len(split))
    for lo in range(0, len(split), 512):  # (draws, faces, classes) per chunk keeps memory small
        hi = min(lo + 512, len(split))
        panel = rng.multinomial(n_votes[lo:hi], split[lo:hi], size=(draws, hi - lo)).astype(np.float64)
        top = (panel + 1e-3 * rng.random(panel.shape)).argmax(-1)
        out[lo:hi] = negative[top].mean(0)
    return out


def annotator_ceiling(counts: np.ndarray, unhappy: np.ndarray, negative: np.ndarray, arrivals_per_8h: float,
                      faces: int = 3, unhappy_faces: int = 2, repeats: int = 5, draws: int = 1000,
                      samples: int = 200_000, seed: int = 0) -> dict:
    """The bound for a perfect model. counts: (people, classes) annotator votes; unhappy: their
    majority is negative (the simulation's truth); negative: (classes,) bool. Each face's true
    split is drawn from its votes plus a weak prior (Dirichlet, PRIOR_VOTES pseudo-votes); the
    perfect model's level is the chance that a panel like its own names a negative class; a
    queue is scored by the exact likelihood ratio of `unhappy_faces` unhappy people among
    `faces` (the most powerful test). Per prior: the person AUC and the share of arrivals caught
    at each false-alarm budget (mean and range over `repeats` draws)."""
    if len(counts) == 0 or unhappy.all() or not unhappy.any() or arrivals_per_8h <= 0:
        return {}
    rng = np.random.default_rng(seed)
    counts = counts.astype(np.float64)
    n_votes = counts.sum(1).astype(np.int64)
    prior = counts.sum(0) / counts.sum()
    shares = [min(1.0, budget / arrivals_per_8h) for budget in BUDGETS_PER_8H]
    odds = unhappy.mean() / (1 - unhappy.mean())

    def likelihood(queues):  # the exact ratio of `unhappy_faces` unhappy people among `faces`, logged
        return np.log(symmetric_sums(queues, unhappy_faces))

    out = []
    for prior_votes in PRIOR_VOTES:
        aucs, caught = [], []
        for r in range(repeats):
            g = rng.gamma(counts + prior_votes * prior)
            level = majority_negative_chance(g / g.sum(1, keepdims=True), n_votes, negative, rng, draws)
            level = np.clip(level, 0.5 / draws, 1 - 0.5 / draws)  # a finite ratio for the unanimous
            aucs.append(auc(level[~unhappy], level[unhappy]))
            ratio = level / (1 - level) / odds  # each person's likelihood ratio, unhappy : calm
            caught.append([c for _, c in _caught(ratio[~unhappy], ratio[unhappy], shares, faces, unhappy_faces,
                                                 samples, seed + r, score=likelihood)])
        caught = np.array(caught)
        out.append({"prior_votes": prior_votes, "person_auc": round(float(np.mean(aucs)), 4),
                    "rows": [{"false_alarms_per_8h": budget, "caught": round(float(caught[:, j].mean()), 3),
                              "caught_range": [round(float(caught[:, j].min()), 3), round(float(caught[:, j].max()), 3)]}
                             for j, budget in enumerate(BUDGETS_PER_8H)]})
    return {"people": {"calm": int((~unhappy).sum()), "unhappy": int(unhappy.sum())},
            "votes_per_face": round(float(n_votes.mean()), 2), "repeats": repeats, "priors": out}


def bank_votes(bank, root, votes, negative: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(votes per face over LABELS, unhappy per face, LABELS that are negative) for the bank's
    faces that the simulation uses (a FER+ majority in CALM or UNHAPPY)."""
    dataset = Path(root).resolve().parent
    people = np.concatenate([bank.faces_of([c for c in CALM if c in bank.labels]),
                             bank.faces_of([c for c in UNHAPPY if c in bank.labels])])
    names = [Path(bank.files[i]).resolve().relative_to(dataset).as_posix() for i in people]
    counts = np.stack([votes.counts[n] for n in names]) if names else np.zeros((0, len(LABELS)), np.int64)
    unhappy = np.array([bank.labels[k] in negative for k in bank.face_labels[people]], bool)
    return counts, unhappy, np.array([c in negative for c in LABELS])


def markdown(b: dict) -> list[str]:
    if not b:
        return []

    def cell(r, key, fmt):  # results written before a column existed show a dash there
        return format(r[key], fmt) if key in r else "-"

    rows = [[r["false_alarms_per_8h"], f"{r['calm_queues_crossing']:.2%}", r["threshold"],
             cell(r, "unhappy_arrivals_caught", ".0%"), cell(r, "caught_by_likelihood_ratio", ".0%"),
             cell(r, "caught_if_binormal", ".0%"), cell(r, "person_auc_needed_for_95", ".4f")] for r in b["rows"]]
    return ["## Arrivals: the most a rule on absolute levels can catch (estimate)", "",
            f"Each person's level: the model's negative probability averaged over their views ({b['people']['calm']} "
            f"calm, {b['people']['unhappy']} unhappy people; AUC {b['person_auc']}; calm at or above 0.5: "
            f"{b['calm_people_at_or_above_0.5']:.1%}, unhappy below 0.5: {b['unhappy_people_below_0.5']:.1%}). "
            f"A queue of {b['faces']} is scored by its mean level, or by the sum of its people's log likelihood "
            f"ratios (learnt from the levels, cross-fitted: no score of these levels does better); the threshold lets "
            f"calm queues cross at the false-alarm budget, counting each of the calm run's {b['arrivals_per_8h']:g} "
            f"arrivals per 8 h as a fresh queue; caught: queues with {b['unhappy_faces']} unhappy newcomers at or "
            f"above it. Binormal: what a mean catches if levels were normal with equal spread and this AUC (a check that "
            f"the textbook model fits), and the per-person AUC it would need to catch 95%.", "",
            common.md_table(["false alarms / 8 h", "calm queues crossing", "threshold (mean)", "caught: mean level",
                             "caught: likelihood ratio", "binormal at this AUC", "AUC needed for 95%"], rows,
                            right=[True] * 7), ""]


def ceiling_markdown(c: dict) -> list[str]:
    if not c:
        return []
    budgets = [r["false_alarms_per_8h"] for r in c["priors"][0]["rows"]]
    rows = [[p["prior_votes"], p["person_auc"]] + [f"{r['caught']:.0%} ({r['caught_range'][0]:.0%}-{r['caught_range'][1]:.0%})"
                                                  for r in p["rows"]] for p in c["priors"]]
    return ["### The same for a perfect model (the annotators' own disagreement)", "",
            f"The truth is the majority of about {c['votes_per_face']:g} annotators per face, a noisy draw on faces they "
            f"split on. A model that knew each face's annotator split exactly (drawn from its votes plus a few "
            f"pseudo-votes spread like all the votes) scores each person by the chance that a panel like theirs "
            f"names a negative class, and a queue by the exact likelihood ratio of the unhappy newcomers among "
            f"its people; {c['people']['calm']} calm and {c['people']['unhappy']} unhappy people, mean (range) of "
            f"{c['repeats']} draws. No model scores these people better against this truth.", "",
            common.md_table(["prior pseudo-votes", "person AUC"] + [f"caught at {b:g} false alarm(s) / 8 h" for b in budgets],
                            rows, right=[True] * (2 + len(budgets))), ""]
