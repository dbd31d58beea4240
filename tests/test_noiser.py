"""The noiser: person-style requests that keep every fact, seeded, varied."""

from __future__ import annotations

import random
import re

from airflow_net.data.factory import generate
from airflow_net.data.noiser import OP_PROSE, noisy_request

SPECS = [s for s, _ in generate(200, seed=11, airflow3_share=0.7, max_tasks=4)]


def test_every_identifier_is_verbatim_and_every_operator_named():
    for i, s in enumerate(SPECS):
        text = noisy_request(s, random.Random(i))
        assert re.search(rf"(?<![\w.]){re.escape(s.dag_id)}(?![\w])", text), (s.dag_id, text)
        for t in s.tasks:
            local = t.task_id.split(".", 1)[1] if t.group else t.task_id
            assert local in text, (t.task_id, text)
            assert any(p.lower() in text.lower() for p in OP_PROSE[t.operator]), (t.operator, text)
        for g in s.groups:
            assert g in text
        assert "\x00" not in text and "\x01" not in text and "\n" not in text


def test_seeded_and_varied():
    s = SPECS[0]
    assert noisy_request(s, random.Random(3)) == noisy_request(s, random.Random(3))
    texts = {noisy_request(s, random.Random(k)) for k in range(30)}
    assert len(texts) >= 25
    all_texts = [noisy_request(x, random.Random(k)) for k, x in enumerate(SPECS)]
    assert sum(t == t.lower() for t in all_texts) > len(all_texts) // 2  # mostly lower case
    assert sum(" w/ " in t or "pls" in t or " u " in t or "thx" in t for t in all_texts) > 20  # abbreviations


def test_schedules_in_words():
    weekday = [s for s in SPECS if s.schedule and s.schedule.endswith("* * 1-5")]
    assert weekday
    texts = [noisy_request(s, random.Random(0)) for s in weekday]
    assert all(re.search(r"weekday|mon-fri", t) for t in texts)
    assert not any(s.schedule in t for s, t in zip(weekday, texts, strict=True))
