"""Benchmark: the prompt stays bounded however long a conversation grows.

Target (issue): "Prompt tokens at turn 1,000 no more than at turn 50 (bounded by the budget)".

The chat domain as production runs it, over real HTTP: ChatService with OpenAICompatibleModel
(langchain-openai, streamed) against the project's OpenAI-compatible stub on 127.0.0.1, a SQLite
store in a temporary directory migrated to head, no SSO requirement, no quota, and the default
history budget (3,000 tokens). One DM conversation of 1,000 turns.

Message lengths vary (3 to 120 words) along a fixed cycle of 50 turns, so turn 1,000 sees the same
pattern of recent lengths as turn 50: the only difference between the two prompts is how much
history exists behind them. A bounded prompt gives a ratio of 1.00; a prompt that grows with the
conversation gives about 20. The target allows 1.05 in case the cycle were ever broken (e.g. a
turn failing), since then the current message and the window's edge would differ in length.

Two sizes are recorded for each request: what the stub reports as ``prompt_tokens`` (one token per
word, summed over the messages it received) and the bot's own estimate (bot.community.tokens, the
count the budget is enforced with: bytes / 3 plus 4 per message for a model tiktoken does not
know). The budget applies to the bot's estimate, so "largest prompt vs budget" uses that.

Run alone: ``.venv/bin/python bench/prompt_budget.py``.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Outcome, quiet_logging, report
from bot.community.chat import ChatService, ChatSettings, ChatTurn
from bot.community.identity import IdentityService
from bot.community.roles import Role
from bot.community.tokens import message_tokens
from bot.community.users import UserService
from bot.llm.openai_compatible import OpenAICompatibleModel
from bot.store.database import Database
from bot.store.migrate import upgrade_to_head
from tests.harness.llm_stub import LlmStub, prompt_tokens

NAME = "prompt_budget"
TURNS = 1000
PROBES = (1, 50, 500, 1000)
CYCLE = 50  # message lengths repeat with this period (see the module docstring)
BUDGET = 3000  # [gpt] history_token_budget's default
TOLERANCE = 1.05
MODEL = "stub-model"  # unknown to tiktoken: the bot estimates (no encoding download)
API_KEY = "sk-bench"
ROOM = "!bench-dm:localhost"
SENDER = "@bench-user:localhost"

VOCABULARY = (
    "a an the of to in is it on we you room space server client message thread reply "
    "federation homeserver moderation encryption bridge community welcome question answer "
    "configuration notification synchronisation permissions administrator conversation "
    "why how when which could should would really quickly carefully unexpectedly"
).split()


def cycle_texts(seed: int = 1000) -> list[str]:
    """``CYCLE`` questions of 3 to 120 words (fixed by the seed)."""
    rng = random.Random(seed)
    lengths = [rng.choice((3, 5, 8, 12, 20, 35, 60, 90, 120)) for _ in range(CYCLE)]
    return [" ".join(rng.choice(VOCABULARY) for _ in range(n)) for n in lengths]


def question(turn: int, texts: list[str]) -> str:
    # The turn tag has a fixed width, so it adds the same words and bytes to every turn.
    return f"t{turn:04d} {texts[(turn - 1) % CYCLE]}"


@dataclass
class TurnSize:
    turn: int
    stub_tokens: int  # as the stub reported them (words)
    own_tokens: int  # the bot's estimate, which the budget bounds
    history_messages: int  # stored messages included in the prompt
    question_words: int
    prepare_s: float  # ChatService.prepare: access checks, history read, window


async def measure(turns: int = TURNS) -> tuple[list[TurnSize], float]:
    texts = cycle_texts()
    sizes: list[TurnSize] = []
    with tempfile.TemporaryDirectory(prefix="bench-prompt-") as tmp:
        db = Database(f"sqlite+aiosqlite:///{Path(tmp) / 'bot.db'}")
        try:
            await upgrade_to_head(db)
            settings = ChatSettings(
                enabled=True,
                model=MODEL,
                system_prompt="You are the benchmark's assistant.",
                require_sso=False,
                history_token_budget=BUDGET,
                summarize=False,
                daily_quota={Role.USER: 0, Role.MODERATOR: 0, Role.ADMIN: 0},
            )
            async with LlmStub(api_key=API_KEY, latency=0, chunk_delay=0) as stub:
                model = OpenAICompatibleModel(
                    base_url=stub.base_url,
                    api_key=API_KEY,
                    temperature=0.7,
                    timeout=30,
                    max_retries=0,
                    stream=True,
                )
                chat = ChatService(
                    db, settings, model, identity=IdentityService(db, []), users=UserService(db, [])
                )
                started = time.monotonic()
                for n in range(1, turns + 1):
                    text = question(n, texts)
                    turn = ChatTurn(ROOM, None, SENDER, None, text, f"$bench-q{n}")
                    prepare_started = time.monotonic()
                    prepared = await chat.prepare(turn)
                    prepare_s = time.monotonic() - prepare_started
                    own = sum(message_tokens(m.content, MODEL) for m in prepared.messages)
                    completion = await chat.generate(prepared, lambda _text: None)
                    await chat.commit(
                        prepared, completion, reply_event_id=f"$bench-a{n}", delivered=True
                    )
                    sent = stub.requests[-1]["messages"]
                    counted = prompt_tokens(sent)
                    if completion.prompt_tokens != counted:
                        raise RuntimeError(
                            f"turn {n}: the stub reported {completion.prompt_tokens} prompt "
                            f"tokens but counts {counted} in the request"
                        )
                    if sent[-1]["content"] != text:
                        raise RuntimeError(f"turn {n}: the request does not end with the question")
                    sizes.append(
                        TurnSize(
                            n,
                            counted,
                            own,
                            len(prepared.messages) - 2,
                            len(text.split()),
                            prepare_s,
                        )
                    )
                    stub.requests.clear()  # keep memory flat over 1,000 turns
                elapsed = time.monotonic() - started
        finally:
            await db.close()
    return sizes, elapsed


def _mean_ms(sizes: list[TurnSize]) -> str:
    return f"{sum(s.prepare_s for s in sizes) / max(1, len(sizes)) * 1000:.1f} ms"


def evaluate(sizes: list[TurnSize], elapsed: float) -> Outcome:
    by_turn = {s.turn: s for s in sizes}
    at50, at1000 = by_turn[50], by_turn[TURNS]
    ratio = at1000.stub_tokens / at50.stub_tokens
    own_ratio = at1000.own_tokens / at50.own_tokens
    largest_own = max(sizes, key=lambda s: s.own_tokens)
    largest_stub = max(sizes, key=lambda s: s.stub_tokens)
    truncated = next((s.turn for s in sizes if s.history_messages < 2 * (s.turn - 1)), None)
    details = [
        (
            f"turn {p}: prompt tokens stub / own estimate / history msgs",
            f"{by_turn[p].stub_tokens} / {by_turn[p].own_tokens} / {by_turn[p].history_messages}",
        )
        for p in PROBES
        if p in by_turn
    ]
    details += [
        ("ratio turn 1000 / turn 50 (stub-reported)", f"{ratio:.3f}"),
        ("ratio turn 1000 / turn 50 (own estimate)", f"{own_ratio:.3f}"),
        ("first turn whose history was cut to the budget", str(truncated)),
        (
            "largest prompt, own estimate (turn) vs budget",
            f"{largest_own.own_tokens} (turn {largest_own.turn}) vs {BUDGET}",
        ),
        (
            "largest prompt, stub-reported (turn)",
            f"{largest_stub.stub_tokens} (turn {largest_stub.turn})",
        ),
        (
            "prepare() mean, turns 1-100 / last 100",
            f"{_mean_ms(sizes[:100])} / {_mean_ms(sizes[-100:])}",
        ),
        (
            "turns / wall time",
            f"{len(sizes)} / {elapsed:.1f} s ({elapsed / len(sizes) * 1000:.1f} ms per turn)",
        ),
    ]
    return Outcome(
        name=NAME,
        metric="prompt tokens turn 1000 / turn 50",
        value=ratio,
        limit=TOLERANCE,
        details=details,
        notes=[
            f"tolerance {TOLERANCE:.2f}: message lengths vary (3-120 words) on a {CYCLE}-turn "
            "cycle; an unbounded history would give about 20",
            f"the budget ({BUDGET}) bounds the bot's own estimate, system prompt and question "
            "included; the stub counts words, hence the smaller stub numbers",
        ],
        extra_checks=[
            (
                f"own ratio {own_ratio:.3f} <= {TOLERANCE}",
                own_ratio <= TOLERANCE,
            ),
            (
                f"largest prompt {largest_own.own_tokens} <= budget {BUDGET}",
                largest_own.own_tokens <= BUDGET,
            ),
        ],
    )


def run() -> Outcome:
    quiet_logging()
    try:
        sizes, elapsed = asyncio.run(measure())
    except Exception as problem:
        return Outcome(
            NAME,
            "prompt tokens turn 1000 / turn 50",
            None,
            TOLERANCE,
            error=f"{type(problem).__name__}: {problem}",
        )
    return evaluate(sizes, elapsed)


def main() -> int:
    outcome = run()
    print(report(outcome))
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
