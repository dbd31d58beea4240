"""What we ask Claude for each DAG, the content hash that keys the ledger, and the checks on its answer.

One request asks for ``per_request`` instructions in different styles, as JSON (structured output), so
the DAG's code is paid for once as input instead of once per instruction.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from airflow_net.params import InstructParams
from airflow_net.utils import sha256_text

# (variant name, what the style asks for). Requests cycle through these in order.
STYLES: tuple[tuple[str, str], ...] = (
    ("terse", "one or two short sentences, the way a busy engineer types a request"),
    (
        "detailed",
        "every task with what it runs, the order between tasks, the schedule, the start date, catchup,"
        " retries, tags and the Airflow version, in full sentences",
    ),
    ("business", "what the pipeline is for, in the words of someone on the business side, plus the technical must-haves"),
    ("steps", "a short numbered list of steps in plain words"),
    ("question", "a question or a request for help, as if asking a colleague"),
    ("constraints", "the constraints first (schedule, retries, owner, tags), then what the DAG does"),
)

SYSTEM = (
    "You write the requests that data engineers send to an assistant that writes Apache Airflow DAG files."
    " Given a DAG file, you write requests that would lead an expert to write exactly that DAG: what it does,"
    " its tasks and their order, its schedule and settings. Write as a user would, in plain language. Never"
    " include code, code blocks, import lines or Python syntax; names the user would naturally mention (the"
    " DAG id, task ids, commands, connection ids, table names) are fine."
)

USER_TEMPLATE = """Here is an Airflow {airflow} DAG file:

<dag>
{source}
</dag>

Write exactly {n} different requests that a user could send to get this DAG written, in this order:
{styles}
Each request must stand on its own, must not contain code, and must differ from the others.
Answer with a JSON object of this form: {{"instructions": ["<request 1>", ...]}} with exactly {n} strings."""

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"instructions": {"type": "array", "items": {"type": "string"}}},
    "required": ["instructions"],
    "additionalProperties": False,
}

# The template's identity: a change to the wording gives new keys, so old answers are not reused for it.
PROMPT_VERSION = sha256_text(json.dumps([SYSTEM, USER_TEMPLATE, STYLES, SCHEMA]))[:16]


def styles_for(n: int) -> list[tuple[str, str]]:
    out = []
    for i in range(n):
        name, desc = STYLES[i % len(STYLES)]
        out.append((name if i < len(STYLES) else f"{name}_{i // len(STYLES) + 1}", desc))
    return out


def user_message(source: str, airflow: int, styles: list[tuple[str, str]]) -> str:
    lines = "\n".join(f"{i}. {name}: {desc}." for i, (name, desc) in enumerate(styles, 1))
    return USER_TEMPLATE.format(airflow=airflow, source=source.strip(), n=len(styles), styles=lines)


def message_params(source: str, airflow: int, params: InstructParams, styles: list[tuple[str, str]]) -> dict[str, Any]:
    """The Messages API body for one DAG (also the ``params`` of a batch request).

    No temperature: the Messages API of SDK 2.x (API version 2026-10-21) has no sampling parameters; the
    variety comes from asking for different styles in one answer.
    """
    body: dict[str, Any] = {
        "model": params.model,
        "max_tokens": params.max_tokens,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": user_message(source, airflow, styles)}],
    }
    if params.structured_output:
        body["output_config"] = {"format": {"type": "json_schema", "schema": SCHEMA}}
    return body


def request_key(source: str, airflow: int, params: InstructParams) -> str:
    """Content hash of everything that shapes the answer: model, prompt template, DAG, generation params
    (``max_tokens``, the answer format; the API has no temperature any more).

    Used as the ledger key and as the batch ``custom_id`` (64 hex characters, the API's limit).
    """
    ident = {
        "model": params.model,
        "prompt": PROMPT_VERSION,
        "source": source.strip(),
        "airflow": airflow,
        "n": params.per_request,
        "max_tokens": params.max_tokens,
        "structured": params.structured_output,
    }
    return sha256_text(json.dumps(ident, sort_keys=True))


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """A generous input-token estimate for the budget guard: 1 token per 3 characters (code and JSON run
    about 3.5-4 characters per token) plus the structured-output overhead."""
    chars = len(body["system"]) + sum(len(m["content"]) for m in body["messages"])
    if "output_config" in body:
        # the API adds its own instructions for the format, around the body's own schema
        chars += len(json.dumps(body["output_config"]["format"].get("schema", {}))) + 1200
    return math.ceil(chars / 3) + 16


# --- checks on the answer -------------------------------------------------------------------------

_CODE_LINE = re.compile(
    r"^\s*(from\s+[\w.]+\s+import\b|import\s+[\w.]+|def\s+\w+\s*\(|class\s+\w+\s*[(:]|@(task|dag)\b|with\s+DAG\s*\()",
    re.M,
)
_BITSHIFT = re.compile(r"\b\w+\s*>>\s*\[?\w+")


def looks_like_code(text: str, source: str) -> bool:
    """Code pasted into an instruction: a fence, Python statements, ``a >> b`` chains, or a long line of the
    DAG copied verbatim."""
    if "```" in text or _CODE_LINE.search(text) or _BITSHIFT.search(text):
        return True
    for line in source.splitlines():
        line = line.strip()
        if len(line) >= 40 and line in text:
            return True
    return False


def _norm(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def _json_object(text: str) -> Any:
    t = text.strip()
    if t.startswith("```"):
        t = re.sub(r"^```\w*\s*|\s*```$", "", t)
    try:
        return json.loads(t)
    except json.JSONDecodeError:
        start = t.find("{")
        if start < 0:
            raise
        return json.JSONDecoder().raw_decode(t[start:])[0]


@dataclass
class Verdict:
    instructions: list[str] | None
    reason: str | None = None  # bad_json | wrong_count | empty | repeated | code | truncated | refusal


def check_answer(text: str, n: int, source: str, stop_reason: str | None = None) -> Verdict:
    """Parse and validate an answer: exactly ``n`` non-empty, distinct instructions without code."""
    if stop_reason == "refusal":
        return Verdict(None, "refusal")
    try:
        obj = _json_object(text)
    except (json.JSONDecodeError, ValueError):
        return Verdict(None, "truncated" if stop_reason == "max_tokens" else "bad_json")
    items = obj.get("instructions") if isinstance(obj, dict) else None
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        return Verdict(None, "bad_json")
    items = [" ".join(x.split()) if "\n" not in x.strip() else x.strip() for x in items]
    if len(items) != n:
        return Verdict(None, "wrong_count")
    if any(len(x.split()) < 3 for x in items):
        return Verdict(None, "empty")
    if len({_norm(x) for x in items}) != n:
        return Verdict(None, "repeated")
    if any(looks_like_code(x, source) for x in items):
        return Verdict(None, "code")
    return Verdict(items)
