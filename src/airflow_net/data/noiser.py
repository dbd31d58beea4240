"""The noiser: a person-style request carrying exactly a spec's facts, the way people actually write.

Lower case, greetings and filler, the schedule in words ("every weekday at 7am"), tasks named in prose with
what they are ("a bash step", "a sql query"), dependencies in prose ("these two in parallel, then ..."),
typos and abbreviations in the filler, parts reordered. What a reader needs to rebuild the canonical request
is always there: the dag id and every task id verbatim (a person copies `invoices_sync` as it is; typos never
touch an identifier), each task's operator in a recognisable phrase, each TaskGroup by name, and the
dependency order as the describer's ``DepPlan`` (whose edges are exactly the spec's, tested there).

Seeded: the same spec and ``random.Random`` state give the same text.
"""

from __future__ import annotations

import random
import re

from airflow_net.data.describer import DAYS, dependency_plan
from airflow_net.data.spec import DagSpec

OP_PROSE: dict[str, list[str]] = {
    "BashOperator": ["a bash step", "bash", "a BashOperator", "a shell cmd"],
    "PythonOperator": ["a python operator", "a PythonOperator", "a python callable"],
    "EmptyOperator": ["an empty operator", "a dummy/empty op", "an EmptyOperator"],
    "SQLExecuteQueryOperator": ["a sql query", "an SQLExecuteQueryOperator", "sql execute"],
    "SQLCheckOperator": ["a sql check", "an SQLCheckOperator"],
    "FileSensor": ["a file sensor", "a FileSensor"],
    "TimeDeltaSensor": ["a timedelta sensor", "a TimeDeltaSensor", "a time delta sensor"],
    "DateTimeSensor": ["a datetime sensor", "a DateTimeSensor"],
    "ExternalTaskSensor": ["an external task sensor", "an ExternalTaskSensor"],
    "@task": ["a @task", "a taskflow function", "a @task func"],
    "@task.bash": ["a @task.bash", "a taskflow bash task"],
}

GREETINGS = ["hi", "hey", "hello", "hey there", "hi team", "yo", "morning", "hi all", ""]
ASKS = ["can you make me a dag called {d}", "i need a dag {d}", "pls build {d}", "need an airflow dag named {d}",
        "could you write the dag {d} for me", "make a dag, id {d}", "want a new dag {d}", "dag {d} please"]
THANKS = ["thanks!", "thx", "ty", "cheers", "thanks a lot", "appreciate it", "", "thank u"]
FILLER = ["basically", "so", "ok so", "i think", "like", "anyway", "btw", "just"]
# (word, abbreviation): applied to the filler and glue words only
ABBREV = [("please", "pls"), ("thanks", "thx"), ("with", "w/"), ("before", "b4"), ("and then", "n then"),
          ("you", "u"), ("because", "bc"), ("should", "shld")]


def _time(h: int, m: int, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"{h:02d}:{m:02d}"
    suffix = "am" if h < 12 else "pm"
    h12 = h % 12 or 12
    return f"{h12}{suffix}" if m == 0 else f"{h12}:{m:02d}{suffix}"


def schedule_prose(schedule: str | None, rng: random.Random) -> str:
    """The schedule as a person says it; the cron itself when there is no plain way to say it."""
    if schedule is None:
        return rng.choice(["no schedule, manual trigger only", "dont schedule it, we trigger by hand",
                           "schedule none (manual)"])
    presets = {"@once": ["just once", "run once (@once)"], "@hourly": ["every hour", "hourly"],
               "@daily": ["daily at midnight", "every day at midnight", "daily"],
               "@weekly": ["weekly", "once a week"], "@monthly": ["monthly", "once a month"],
               "@yearly": ["yearly", "once a year"]}
    if schedule in presets:
        return rng.choice(presets[schedule])
    f = schedule.split()
    if len(f) == 5:
        mi, ho, dom, mon, dow = f
        if mi.isdigit() and ho.isdigit() and dom == mon == "*":
            t = _time(int(ho), int(mi), rng)
            if dow == "*":
                return rng.choice([f"every day at {t}", f"daily at {t}", f"each day {t}"])
            if dow == "1-5":
                return rng.choice([f"every weekday at {t}", f"mon-fri at {t}", f"weekdays {t}"])
            if dow.isdigit():
                d = DAYS[int(dow) % 7]
                return rng.choice([f"every {d.lower()} at {t}", f"{d.lower()}s at {t}", f"weekly on {d[:3].lower()} {t}"])
        if mi.isdigit() and ho.isdigit() and dom.isdigit() and mon == dow == "*":
            d = int(dom)
            suf = "th" if 10 <= d % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")
            return rng.choice([f"on the {d}{suf} of each month at {_time(int(ho), int(mi), rng)}",
                               f"monthly, day {d}, {_time(int(ho), int(mi), rng)}"])
        if mi.isdigit() and ho == dom == mon == dow == "*":
            return rng.choice([f"every hour at :{int(mi):02d}", f"hourly at minute {int(mi)}"])
        if mi == "0" and ho.startswith("*/") and dom == mon == dow == "*":
            return rng.choice([f"every {ho[2:]} hours", f"every {ho[2:]}h"])
        if mi.startswith("*/") and ho == dom == mon == dow == "*":
            return rng.choice([f"every {mi[2:]} minutes", f"every {mi[2:]} min", f"every {mi[2:]}m"])
    return rng.choice([f"cron {schedule}", f"on cron '{schedule}'", f"schedule {schedule}"])


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 4 or not word.isalpha():
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0:  # swap two letters
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:  # drop one
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]  # double one


def _roughen(text: str, rng: random.Random, typo_p: float) -> str:
    """Abbreviations and typos in plain words; identifiers (marked by \x00...\x01) are left untouched."""
    parts = re.split(r"(\x00[^\x01]*\x01)", text)
    for i in range(0, len(parts), 2):
        t = parts[i]
        for full, short in ABBREV:
            if full in t and rng.random() < 0.5:
                t = t.replace(full, short)
        t = re.sub(r"[A-Za-z]+", lambda m: _typo(m.group(0), rng) if rng.random() < typo_p else m.group(0), t)
        parts[i] = t
    return "".join(p.strip("\x00\x01") if p.startswith("\x00") else p for p in parts)


def noisy_request(spec: DagSpec, rng: random.Random, typo_p: float = 0.04) -> str:
    """A person-style request for ``spec``; ``typo_p`` is the chance that a plain word gets a typo."""
    def ident(x: str) -> str:
        return f"\x00{x}\x01"

    by_id = {t.task_id: t for t in spec.tasks}

    def name(tid: str, with_op: bool) -> str:
        t = by_id[tid]
        if t.group and rng.random() < 0.5:
            s = ident(tid)  # group.task, as the UI shows it
        elif t.group:
            s = f"{ident(tid.split('.', 1)[1])} (in group {ident(t.group)})"
        else:
            s = ident(tid)
        if with_op:
            op = ident(rng.choice(OP_PROSE.get(t.operator, [t.operator])))  # no typo may hide the operator
            s = rng.choice([f"{s} ({op})", f"{s} which is {op}", f"{s} as {op}"])
        return s

    def names(tids: list[str], with_op: bool) -> str:
        xs = [name(t, with_op) for t in tids]
        return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + rng.choice([" and ", " & ", ", "]) + xs[-1]

    plan = dependency_plan(spec)
    deps: list[str] = []
    mentioned: set[str] = set()

    def nm(tids: list[str]) -> str:
        out = names(tids, with_op=not all(t in mentioned for t in tids))
        mentioned.update(tids)
        return out

    if plan.layered:
        for i, stage in enumerate(plan.stages):
            par = "" if len(stage) == 1 else rng.choice([" in parallel", " at the same time", " side by side"])
            if i == 0:
                deps.append(rng.choice(["first ", "start with ", ""]) + nm(stage) + par)
            else:
                link = plan.links[i - 1]
                if link == "pairwise":
                    deps.append(rng.choice(["then each one feeds its own: ", "then pairwise: "]) + nm(stage)
                                + " (in that order)")
                else:
                    joint = "" if len(plan.stages[i - 1]) == 1 else rng.choice(["after all of those ", "once those finish "])
                    deps.append(rng.choice(["then ", "after that ", "n then "]) + joint + nm(stage) + par)
        text_deps = rng.choice([", ", ". ", " -> "]).join(deps)
    else:
        for t, ups in plan.after:
            if not ups:
                deps.append(nm([t]) + rng.choice([" runs first", " has no upstream", " starts it off"]))
            else:
                deps.append(nm([t]) + rng.choice([" waits for ", " runs after ", " needs "]) + nm(ups))
        text_deps = ". ".join(deps)
    # tasks not reached by the plan (none expected; guard so no fact is lost)
    rest = [t.task_id for t in spec.tasks if t.task_id not in mentioned]
    if rest:
        text_deps += ". also " + nm(rest)

    groups = ""
    if spec.groups and rng.random() < 0.5:
        groups = rng.choice([" put them in taskgroups ", " use taskgroups: "]) + ", ".join(ident(g) for g in spec.groups)

    ask = rng.choice(ASKS).format(d=ident(spec.dag_id))
    when = rng.choice(["should run ", "run it ", "schedule: ", "it runs ", ""]) + ident(schedule_prose(spec.schedule, rng))
    body = [ask, when, text_deps + groups]
    if rng.random() < 0.4:  # reordering: the schedule last
        body = [ask, text_deps + groups, when]
    greet = rng.choice(GREETINGS)
    filler = rng.choice(FILLER) + " " if rng.random() < 0.5 else ""
    out = (greet + (", " if greet else "") + filler + rng.choice([", ", ". ", " - "]).join(body)
           + rng.choice([". ", " ", "! "]) + rng.choice(THANKS))
    out = out.lower() if rng.random() < 0.8 else out
    # lower-casing must not change identifiers: restore them (ids are case-sensitive)
    out = re.sub(r"\x00([^\x01]*)\x01", lambda m: "\x00" + _orig(m.group(1), spec) + "\x01", out)
    return " ".join(_roughen(out, rng, typo_p).split())


def _orig(lowered: str, spec: DagSpec) -> str:
    ids = [spec.dag_id, *spec.groups] + [p for t in spec.tasks for p in (t.task_id, *t.task_id.split("."))]
    return next((x for x in ids if x.lower() == lowered), lowered)
