"""Alerts a store can trust: false alarms per 8 hours of calm queue, the share of unhappy
periods alerted, time to alert and to clear, and how well tracks follow people, measured on
simulated queues with ground truth (queue_sim.py).

Level (a): the real classifier's outputs on real FER2013 val faces, jittered like camera
frames (face_bank.py), through the product's own tracker, mood window and alert policy
(`QueueMonitor`), frame by frame: hundreds of queue-hours in minutes. The operating point is
the config (defaults, or --config/--set); a sweep varies the mood and alert parameters and
plots false alarms against time-to-alert.

Level (b): a few rendered queue videos through the `edge run` loop (queue_video.py).

    python benchmarks/scenarios.py --data data/fer2013/val [--hours 40] [--config my.toml]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common
from benchmarks.arrival_bound import annotator_ceiling, bank_votes, bound, ceiling_markdown, person_levels
from benchmarks.arrival_bound import markdown as arrival_markdown
from benchmarks.face_bank import Jitter, build_bank
from benchmarks.queue_sim import GRACE_S, Scenario, Simulation, identity, replay, score
from edge.errors import UserError

NAME = "scenarios"
# The settings shipped before this benchmark existed: the sweep's reference row.
LEGACY = {"tracking.max_gap_s": 1.5, "tracking.min_look_similarity": 0.0, "tracking.refind_s": 0.0,
          "mood.score": "votes", "mood.window_s": 10.0, "mood.min_seen_s": 0.0, "mood.min_seen_share": 0.0,
          "alert.raise_share": 0.5, "alert.clear_share": 0.3, "alert.raise_after_s": 5.0, "alert.clear_after_s": 5.0}
TARGETS = [  # from the issue: (scenario kind, metric, op, value), 3 faces; false alarms over all calm time
    ("all calm time", "false_alarms_per_8h", "<=", 1.0),
    ("people turn unhappy", "alerted_share", ">=", 0.95),
    ("unhappy people arrive", "alerted_share", ">=", 0.95),
    ("people turn unhappy", "time_to_alert_median_s", "<=", 12.0),
    ("people turn unhappy", "time_to_alert_p90_s", "<=", 20.0),
    ("unhappy people arrive", "time_to_alert_median_s", "<=", 12.0),
    ("people turn unhappy", "time_to_clear_p90_s", "<=", 20.0),
    ("all 3-face runs", "one_track_share", ">=", 0.95),
]


def default_data() -> Path:
    return common.REPO / "data" / "fer2013"


def split_folder(p: Path) -> Path:
    """A FER2013 split folder (class folders inside); a dataset root means its val/ split."""
    p = Path(p).expanduser()
    if (p / "val").is_dir():
        p = p / "val"
    if not p.is_dir():
        raise UserError(f"{p} is not a folder; pass --data with FER2013 class folders (e.g. data/fer2013/val).")
    return p


def config_for(args, overrides: dict | None = None):
    from edge.config import load_config

    return load_config(args.config, {**args.set, **(overrides or {})})


def parse_set(items) -> dict:
    """--set mood.score=expected -> {"mood.score": "expected"}: a value is read as a TOML value
    (numbers, true and false, lists such as mood.negative=["sad","angry"], which no other form
    could give), else taken as the string it is."""
    import tomllib

    out = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--set {item!r} is not KEY=VALUE; write e.g. --set alert.raise_share=0.5.")
        k, v = item.split("=", 1)
        try:
            out[k] = tomllib.loads(f"v = {v}")["v"]
        except tomllib.TOMLDecodeError:
            out[k] = v
    return out


def simulate(bank, cfg, sc: Scenario, seed: int):
    from edge.pipeline.core import QueueMonitor

    return Simulation(bank, sc, QueueMonitor(cfg, bank.labels), seed).run()


def pct(values, q) -> float | None:
    """Nearest-rank percentile; inf (never alerted/cleared) sorts last and can be the answer."""
    if not values:
        return None
    v = sorted(values)
    return float(v[max(0, math.ceil(q / 100 * len(v)) - 1)])


def summarize(alerts: dict, ident: dict | None = None) -> dict:
    tta, ttc = alerts["time_to_alert_s"], alerts["time_to_clear_s"]
    row = {k: alerts[k] for k in ("calm_hours", "false_alarms", "false_alarms_per_8h", "unhappy_periods", "alerted_share")}
    row.update({
        "time_to_alert_median_s": pct(tta, 50), "time_to_alert_p90_s": pct(tta, 90),
        "time_to_clear_median_s": pct(ttc, 50), "time_to_clear_p90_s": pct(ttc, 90),
        "never_cleared": sum(not math.isfinite(v) for v in ttc),
    })
    if ident:
        row.update(ident)
    return row


def merge(*alert_dicts) -> dict:
    """One score over several runs (calm hours add up, periods pool)."""
    calm_h = sum(a["calm_hours"] for a in alert_dicts)
    fa = sum(a["false_alarms"] for a in alert_dicts)
    periods = sum(a["unhappy_periods"] for a in alert_dicts)
    tta = [v for a in alert_dicts for v in a["time_to_alert_s"]]
    return {"calm_hours": calm_h, "false_alarms": fa, "false_alarms_per_8h": 8 * fa / calm_h if calm_h else None,
            "unhappy_periods": periods, "alerted_share": len(tta) / periods if periods else None,
            "time_to_alert_s": tta, "time_to_clear_s": [v for a in alert_dicts for v in a["time_to_clear_s"]]}


KINDS = {  # scenario kinds: (calm only, unhappy people arrive rather than turn)
    "calm queue": (True, False),
    "people turn unhappy": (False, False),
    "unhappy people arrive": (False, True),
}


def scenario_from(args, kind: str, faces: int, hours: float) -> Scenario:
    calm_only, arrive = KINDS[kind]
    kw = dict(name=kind, hours=hours, fps=args.fps, faces=faces, miss_rate=args.miss_rate, unhappy_arrive=arrive,
              occlusions_per_min=args.occlusions_per_min, occlusion_s=tuple(args.occlusion_s),
              flicker_spots=args.flicker_spots, flicker_rate=args.flicker_rate)
    if calm_only:
        kw["unhappy_every_s"] = (0.0, 0.0)
    return Scenario(**kw)


# ---------------------------------------------------------------------------- sweep

def mood_variants(args) -> dict[str, dict]:
    """Mood/tracking settings that need their own simulation (the alert grid is replayed)."""
    guard = {"mood.min_seen_s": 3.0, "mood.min_seen_share": 0.7}  # tracking: the config's (look cue on)
    return {
        "legacy: votes, 10 s window, no guard or look cue": {k: v for k, v in LEGACY.items() if not k.startswith("alert.")},
        "votes, 3 s window, seen guard": {"mood.score": "votes", "mood.window_s": 3.0, **guard},
        "expected, 3 s window, seen guard": {"mood.score": "expected", "mood.window_s": 3.0, **guard},
        "change, 3 s window, seen guard": {"mood.score": "change", "mood.window_s": 3.0, **guard},
        **{f"change or p>={above:g}, 3 s window, seen guard":
           {"mood.score": "change", "mood.window_s": 3.0, "mood.unhappy_above": above, **guard}
           for above in (0.6, 0.7, 0.8, 0.9)},
        **{f"change or camera baseline (rise {rise:g}), 3 s window, seen guard":
           {"mood.score": "change", "mood.window_s": 3.0, "mood.baseline_rise": rise, **guard} for rise in (0.8, 1.0, 1.2)},
    }


def alert_grid(args) -> list[dict]:
    out = []
    for share in args.raise_shares:
        for after in args.raise_afters:
            out.append({"alert.raise_share": share, "alert.clear_share": round(max(0.0, share - 0.15), 3),
                        "alert.raise_after_s": after, "alert.clear_after_s": 3.0})
    return out


def policy_from(cfg):
    from edge.pipeline.alerts import AlertPolicy

    return AlertPolicy(cfg.alert)


def by_kind(runs: dict, transitions: dict) -> dict:
    """Scores per scenario kind, and false alarms over the calm time of all of them."""
    scores = {k: score(r, transitions[k]) for k, r in runs.items()}
    out = {k: summarize(v) for k, v in scores.items()}
    out["all calm time"] = summarize(merge(*scores.values()))
    return out


def judge(head: dict, kind: str, metric: str, op: str, value: float) -> dict:
    """A target's row. Nothing measured fails it only where unhappy periods came and none was
    alerted (no time to alert or clear); a kind not run (--mixed-hours 0) or too short to hold what
    the metric counts (an unhappy period, calm time) is not measured: met None, not a failed target."""
    row = head.get(kind)
    got = (row or {}).get(metric)
    if got is None:
        met = False if row and row.get("unhappy_periods") and metric.startswith("time_to_") else None
    else:
        met = got <= value if op == "<=" else got >= value
    return {"scenario": kind, "metric": metric, "target": f"{op} {value}", "measured": got, "met": met,
            **({"not_measured": "not run" if row is None else "run too short to measure"}
               if met is None else {})}


def sweep(args, bank) -> list[dict]:
    rows = []
    variants = {k: v for k, v in mood_variants(args).items() if not args.variants or any(w in k for w in args.variants)}
    for vi, (label, mood) in enumerate(variants.items()):
        cfg = config_for(args, mood)
        runs = {kind: simulate(bank, cfg, scenario_from(args, kind, 3, args.sweep_hours), args.seed + 100 * (k + 1) + vi)
                for k, kind in enumerate(KINDS)}
        for alert in [{k: v for k, v in LEGACY.items() if k.startswith("alert.")}] + alert_grid(args):
            acfg = config_for(args, {**mood, **alert})
            kinds = by_kind(runs, {k: replay(policy_from(acfg), r) for k, r in runs.items()})
            rows.append({"variant": label, "settings": {**mood, **alert}, "by_kind": kinds})
        print(f"  sweep: {label} done", file=sys.stderr)
    return rows


# ---------------------------------------------------------------------------- run

def run(args, argv) -> dict:
    from edge.config import to_dict
    from edge.pipeline.classifier import Classifier

    args.set = parse_set(args.set)
    model = common.classifier_model(args.model)
    clf = Classifier(model, num_threads=args.threads)
    data = split_folder(args.data)
    cfg = config_for(args)
    bank = build_bank(clf, data, args.faces_per_class, Jitter(per_face=args.views), args.seed)
    truth, votes = {"truth": "FER2013 folder label"}, None
    if args.truth != "folder":
        from train.votes import find_votes, read_votes

        try:
            found = find_votes(data, args.votes)
        except UserError:
            if args.truth == "ferplus" or args.votes:
                raise
            found = None  # auto without a votes file: the folder labels, as the report says
        if found:
            votes = read_votes(found)
            truth = bank.relabel_by_votes(data, votes)
    report = common.run_header(NAME, argv, [model])
    report["data"] = {"folder": str(data), **truth, "faces": int((bank.face_labels >= 0).sum()),
                      "per_class": {l: int((bank.face_labels == k).sum()) for k, l in enumerate(bank.labels)},
                      "views_per_face_and_width": args.views, "widths_px": list(bank.widths_px), "jitter": Jitter().key()}
    report["operating_point"] = {k: to_dict(cfg)[k] for k in ("tracking", "mood", "alert", "schedule")}
    base = dict(fps=args.fps, miss_rate=args.miss_rate, occlusions_per_min=args.occlusions_per_min,
                occlusion_s=list(args.occlusion_s), flicker_spots=args.flicker_spots, flicker_rate=args.flicker_rate)
    report["simulation"] = {**base, "grace_s": GRACE_S, "scenario_defaults": Scenario().__dict__}
    rows, runs3 = [], {}
    plan = [("calm queue", 3, args.hours), ("people turn unhappy", 3, args.mixed_hours),
            ("unhappy people arrive", 3, args.mixed_hours)]
    plan += [(kind, n, args.mixed_hours / 3) for n in args.sizes if n != 3 for kind in list(KINDS)[1:]]
    for k, (name, n, hours) in enumerate(plan):
        if hours <= 0:
            continue
        res = simulate(bank, cfg, scenario_from(args, name, n, hours), args.seed + k)
        alerts = score(res, res.transitions)
        if n == 3:
            runs3[name] = res
        rows.append({"scenario": name, "faces": n, "hours": hours, **summarize(alerts, identity(res)),
                     "classifier_images_per_classification": round(res.images / res.classifications, 3)
                     if res.classifications else None})
        print(f"  {name}, {n} faces, {hours:g} h done", file=sys.stderr)
    report["scenarios"] = rows
    if runs3:
        head = by_kind(runs3, {k: r.transitions for k, r in runs3.items()})
        shares = [identity(r)["one_track_share"] for r in runs3.values()]
        head["all 3-face runs"] = {"one_track_share": float(np.mean([s for s in shares if s is not None]))}
        report["headline_3_faces"] = head
        report["targets"] = [judge(head, *t) for t in TARGETS]
    if "calm queue" in runs3:  # people arriving per 8 h of calm queue: each a fresh queue to judge
        calm_run = runs3["calm queue"]
        levels = person_levels(bank, cfg.mood.negative)
        arrivals_per_8h = len(calm_run.visits) / calm_run.scenario.hours * 8
        report["arrival_bound"] = bound(*levels, arrivals_per_8h, seed=args.seed)
        if votes is not None:  # the truth is the annotators' majority: how well could any model do?
            report["annotator_ceiling"] = annotator_ceiling(*bank_votes(bank, data, votes, cfg.mood.negative),
                                                            arrivals_per_8h, seed=args.seed)
    report["sweep"] = sweep(args, bank) if args.sweep_hours > 0 else []
    report["videos"] = videos(args, cfg, data, model, votes) if args.videos else []
    return report


def videos(args, cfg, data: Path, model: Path, votes=None) -> list[dict]:
    """Level (b): rendered scenes through the `edge run` loop at the operating point."""
    import tempfile

    from benchmarks.queue_video import run_scenes

    cfg.model.path = str(model)
    with tempfile.TemporaryDirectory() as tmp:
        return run_scenes(cfg, data, args.videos, Path(tmp), args.seed, votes)


# ---------------------------------------------------------------------------- output

def _f(v, digits=2):
    if v is None:
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "never"
    return common.fmt(v, digits)


def _hours(v) -> str:
    """Hours to a tenth; under an hour to two significant digits (2 min is 0.033, not 0.0)."""
    return _f(v, 1) if not v or v >= 1 else f"{v:.2g}"


def to_markdown(r: dict) -> str:
    lines = [common.md_header("Queue scenarios: alert quality on simulated queues", r)]
    d = r["data"]
    truth = d.get("truth", "FER2013 folder label")
    if "left_out" in d:
        truth += (f" ({d['votes']}; {d['left_out']} faces with tied or doubtful votes left out, "
                  f"{d['changed_class']} in another class than their FER2013 folder)")
    lines += [f"- faces: {d['faces']} FER2013 images from {d['folder']}, {d['views_per_face_and_width']} camera views "
              f"each at widths {d['widths_px']} px; jitter {d['jitter']}",
              f"- calm or unhappy by: {truth}",
              f"- simulation: {r['simulation']['fps']} fps, detector misses {r['simulation']['miss_rate']:.0%} of frames, "
              f"{r['simulation']['occlusions_per_min']} occlusions/min per person "
              f"({'-'.join(f'{v:g}' for v in r['simulation'].get('occlusion_s', Scenario.occlusion_s))} s), "
              f"{r['simulation']['flicker_spots']} "
              f"flickering spot(s) detected in {r['simulation']['flicker_rate']:.0%} of frames (looking unhappy); "
              f"an alert up to {r['simulation']['grace_s']:g} s after an unhappy period ends still counts for it",
              f"- operating point: mood {r['operating_point']['mood']}, alert {r['operating_point']['alert']}"
              + (f", schedule {r['operating_point']['schedule']}" if "schedule" in r["operating_point"] else ""), ""]
    if r.get("targets"):
        lines += ["## Targets (3 faces)", "", common.md_table(
            ["scenario", "metric", "target", "measured", "met"],
            [[t["scenario"], t["metric"], t["target"], _f(t["measured"]),
              t["not_measured"] if t["met"] is None else "yes" if t["met"] else "**no**"]
             for t in r["targets"]], right=[False, False, True, True, True]), ""]
    lines += [] if not r["scenarios"] else ["## Scenarios at the operating point", "", common.md_table(
        ["scenario", "faces", "hours", "calm h", "false alarms /8 h", "periods", "alerted", "TTA median s",
         "TTA p90 s", "TTC median s", "TTC p90 s", "one track (>=10 s)", "tracks/person", "identity swaps",
         "images / classification"],
        [[s["scenario"], s["faces"], _hours(s["hours"]), _hours(s["calm_hours"]), _f(s["false_alarms_per_8h"]),
          s["unhappy_periods"], _f(s["alerted_share"]), _f(s["time_to_alert_median_s"], 1), _f(s["time_to_alert_p90_s"], 1),
          _f(s["time_to_clear_median_s"], 1), _f(s["time_to_clear_p90_s"], 1), _f(s["one_track_share"]),
          _f(s["tracks_per_person"]), s["identity_swaps"], _f(s.get("classifier_images_per_classification"))]
         for s in r["scenarios"]],
        right=[False] + [True] * 14), "",
        "TTA: time to alert from the unhappy period's start; TTC: time to clear from its end (negative: the "
        "alert cleared while the period was still on); an alert not cleared before the next period counts as "
        "never cleared.", ""]
    lines += arrival_markdown(r.get("arrival_bound") or {})
    lines += ceiling_markdown(r.get("annotator_ceiling") or {})
    if r.get("sweep"):
        rows = []
        for s in r["sweep"]:
            k, turn, arrive = s["by_kind"]["all calm time"], s["by_kind"]["people turn unhappy"], s["by_kind"]["unhappy people arrive"]
            rows.append([s["variant"], s["settings"]["alert.raise_share"], s["settings"]["alert.raise_after_s"],
                         _f(k["false_alarms_per_8h"]), _f(turn["alerted_share"]), _f(turn["time_to_alert_median_s"], 1),
                         _f(turn["time_to_alert_p90_s"], 1), _f(turn["time_to_clear_p90_s"], 1), _f(arrive["alerted_share"]),
                         _f(arrive["time_to_alert_median_s"], 1)])
        lines += ["## Sweep (3 faces; per mood variant one run of each scenario kind, alert settings replayed)", "",
                  "False alarms over the calm time of all three runs; TTA/TTC: time to alert/clear in seconds. "
                  "Each variant's first row is the old alert settings (clear below 0.3 for 5 s); the grid clears "
                  "0.15 below the raise share for 3 s.", "",
                  common.md_table(["mood variant", "raise share", "raise after s", "false alarms /8 h",
                                   "turn: alerted", "turn: TTA median", "turn: TTA p90", "turn: TTC p90",
                                   "arrive: alerted", "arrive: TTA median"], rows, right=[False] + [True] * 9), ""]
    if r.get("videos"):
        from benchmarks.queue_video import SPOTS
        from benchmarks.scenes import H, W

        lines += ["## Rendered scenes through the whole pipeline (`edge run` loop, operating point)", "",
                  "Three spots at queue distance, whole heads (FER2013 faces blended into a head) with faces "
                  f"{min(w for *_, w in SPOTS)}-{max(w for *_, w in SPOTS)} px wide in {W}x{H}, picked only if the "
                  "detector finds them there; 60 s calm, 60 s unhappy (two of three "
                  "people turn unhappy, or leave and unhappy newcomers arrive), 60 s calm; the calm scene has no "
                  "unhappy period; the hide scene is the turn scene with one person hidden for 7 s while calm and each "
                  "unhappy one for 7 s while unhappy. A person is followed through the tracked boxes that overlap "
                  "their face.", "",
                  common.md_table(["scene", "seconds", "alerts (t s)", "false alarms", "alerted", "TTA s", "TTC s",
                                   "people >= 10 s", "one track", "identity swaps"],
                                  [[v["scene"], _f(v["seconds"], 0),
                                    ", ".join(f"{e} {t:.1f}" for t, e in v["transitions"]) or "none",
                                    v["false_alarms"], _f(v["alerted_share"]), _f(v["time_to_alert_s"][0] if v["time_to_alert_s"] else None, 1),
                                    _f(v["time_to_clear_s"][0] if v["time_to_clear_s"] else None, 1),
                                    v["people_in_view_10s"], _f(v["one_track_share"]), v["identity_swaps"]]
                                   for v in r["videos"]], right=[False, True, False] + [True] * 7), ""]
    return "\n".join(lines)


def draw(r: dict, out: Path) -> list[Path]:
    plt = common.pyplot()
    if plt is None or not r.get("sweep"):
        return []
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    turn = "people turn unhappy"
    for label in dict.fromkeys(s["variant"] for s in r["sweep"]):
        pts = [s["by_kind"] for s in r["sweep"] if s["variant"] == label and s["by_kind"][turn]["time_to_alert_median_s"] is not None]
        x = [min(p[turn]["time_to_alert_median_s"], 60) for p in pts]
        line, = axes[0].plot(x, [p["all calm time"]["false_alarms_per_8h"] for p in pts], "o", label=label, alpha=0.8)
        axes[1].plot(x, [p[turn]["alerted_share"] for p in pts], "o", color=line.get_color(), alpha=0.8)
        axes[1].plot(x, [p["unhappy people arrive"]["alerted_share"] for p in pts], "x", color=line.get_color(), alpha=0.8)
    h = r.get("headline_3_faces")
    if h and h[turn]["time_to_alert_median_s"] is not None:
        x0 = min(h[turn]["time_to_alert_median_s"], 60)
        axes[0].plot([x0], [h["all calm time"]["false_alarms_per_8h"]], "k*", ms=14, label="operating point")
        axes[1].plot([x0], [h[turn]["alerted_share"]], "k*", ms=14)
    axes[0].axhline(1.0, color="gray", ls="--")
    axes[0].axvline(12.0, color="gray", ls="--")
    axes[0].set_yscale("symlog", linthresh=1.0)
    axes[0].set_ylim(bottom=-0.2)
    axes[0].set(xlabel="median time to alert (s), people turning unhappy", ylabel="false alarms per 8 h of calm queue",
                title="False alarms vs time to alert (targets dashed)")
    axes[1].axhline(0.95, color="gray", ls="--")
    axes[1].set(xlabel="median time to alert (s), people turning unhappy", ylim=(0, 1.02),
                ylabel="share of 60-s unhappy periods alerted", title="o: people turn unhappy, x: unhappy people arrive")
    axes[0].legend(fontsize=8)
    return [common.save_figure(plt, fig, out, NAME)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    hours = common.number(float, 0)  # a bad count or length: argparse's one line, before the bank is built
    ap.add_argument("--model", default=None, help="int8 .tflite with model.json beside it, or the folder `edge convert "
                    "--out` wrote (default: the shipped model)")
    ap.add_argument("--data", type=Path, default=default_data(), help="FER2013 folder (class folders, or a root with val/)")
    ap.add_argument("--config", default=None, help="a queue-mood TOML config: its tracking/mood/alert are the operating point")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key with a TOML value, e.g. mood.score=expected or "
                    "'mood.negative=[\"sad\", \"angry\"]'")
    ap.add_argument("--truth", choices=["auto", "ferplus", "folder"], default="auto",
                    help="which label says a face is calm or unhappy: the FER+ annotators' majority (needs the votes "
                         "file), FER2013's single folder label, or auto: FER+ when the votes file is found")
    ap.add_argument("--votes", default=None, help="FER+ votes CSV (default: ferplus_votes.csv beside or above --data)")
    ap.add_argument("--faces-per-class", type=common.number(), default=None,
                    help="use at most this many faces per class (default: all)")
    ap.add_argument("--views", type=common.number(), default=4,
                    help="camera views per face and width in the bank (default: %(default)s)")
    ap.add_argument("--hours", type=hours, default=32.0, help="calm queue hours, 3 faces (default: %(default)s)")
    ap.add_argument("--mixed-hours", type=hours, default=6.0,
                    help="hours of each unhappy-period kind, 3 faces (default: %(default)s)")
    ap.add_argument("--sizes", type=common.number(), nargs="*", default=[1, 2, 4, 6],
                    help="other queue sizes, a third of the mixed hours each")
    ap.add_argument("--sweep-hours", type=hours, default=3.0, help="hours per sweep run, calm and mixed (0: no sweep, and no figure; default: 3)")
    ap.add_argument("--raise-shares", type=common.share(), nargs="+", default=[0.3, 0.4, 0.5, 0.6])
    ap.add_argument("--raise-afters", type=common.number(float, 0), nargs="+", default=[3.0, 5.0, 8.0])
    ap.add_argument("--videos", nargs="*", default=["turn", "arrive", "calm"], choices=["turn", "hide", "arrive", "calm"],
                    help="rendered scenes to run through the whole pipeline (none: --videos with no names; 'hide': "
                         "the turn scene with three people hidden for 7 s each, not run by default)")
    ap.add_argument("--variants", nargs="*", default=None, help="only sweep mood variants whose name has one of these words")
    ap.add_argument("--fps", type=common.number(float, 0, above=True), default=5.0)
    # a detector that misses every frame sees no one: nothing to measure (1 is refused)
    ap.add_argument("--miss-rate", type=common.share(below=True), default=0.05)
    ap.add_argument("--occlusions-per-min", type=common.number(float, 0), default=Scenario.occlusions_per_min)
    ap.add_argument("--occlusion-s", type=common.number(float, 0, above=True), nargs=2, default=list(Scenario.occlusion_s), metavar=("MIN", "MAX"),
                    help="how long an occlusion hides a person, drawn uniformly (default: %(default)s; a person "
                         "reading their phone or someone passing in front can hide a face for longer)")
    ap.add_argument("--flicker-spots", type=common.number(int, 0), default=1)
    ap.add_argument("--flicker-rate", type=common.share(), default=0.02)
    ap.add_argument("--threads", type=common.number(), default=None,
                    help="classifier threads for the bank (default: all cores)")
    common.add_common_args(ap)
    args = ap.parse_args(argv)
    if args.occlusion_s[0] > args.occlusion_s[1]:
        ap.error(f"--occlusion-s {args.occlusion_s[0]:g} {args.occlusion_s[1]:g}: MIN is over MAX")
    return common.finish(NAME, args, argv, run, draw, to_markdown)


if __name__ == "__main__":
    sys.exit(main())
