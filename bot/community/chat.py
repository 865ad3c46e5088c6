"""The GPT relay's domain: who may chat, what the model sees, what is remembered and counted.
It knows nothing of Matrix or HTTP: a LanguageModel is handed in, and the relay in bot/matrix
decides how answers look and when they are edited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.exc import SQLAlchemyError

from bot.community.context_window import rows_to_read, select_recent
from bot.community.identity import IdentityService
from bot.community.reasoning import AnswerStream, split_thinking
from bot.community.roles import Role
from bot.community.tokens import MESSAGE_OVERHEAD, count_tokens, message_tokens
from bot.community.users import Caller, UserService
from bot.config import GptSettings
from bot.keyed_lock import KeyedLock
from bot.store.chat import ChatStore, NewMessage, StoredMessage
from bot.store.chat_usage import DayUsage, Held, UsageStore
from bot.store.database import Database
from bot.store.models import utcnow

if TYPE_CHECKING:
    from bot.community.assistant_media import AssistantMedia

# The shortest answer asked for when the quota leaves less room than a full answer.
LEAST_ANSWER_TOKENS = 16
COMMIT_TRIES = 3

SUMMARY_PROMPT = (
    "Summarise the conversation below for your own later reference: keep facts, names, "
    "decisions and open questions, in at most 150 words. Start with the earlier summary, if any."
)


# -- what the relay and the model exchange -----------------------------------------------------


@dataclass(frozen=True)
class PromptMessage:
    role: str  # "system", "user" or "assistant"
    content: str
    images: tuple[str, ...] = ()  # data URLs of images the message shows (vision models)


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int | None = None  # as the endpoint reported them, when it did
    completion_tokens: int | None = None
    cut_short: bool = False  # the model stopped at the length it was allowed
    # What a reasoning model thought (a provider's `reasoning_content`, or `<think>` text once
    # ChatService.generate split it off): never the answer, never remembered.
    reasoning: str = ""


class ModelError(Exception):
    """The model could not answer. `str()` is a short message meant for the member."""


TextCallback = Callable[[str], None]  # receives the whole answer so far


class LanguageModel(Protocol):
    async def complete(
        self,
        messages: Sequence[PromptMessage],
        *,
        model: str,
        on_text: TextCallback | None,
        max_tokens: int | None = None,
        on_reasoning: TextCallback | None = None,  # a provider's separate reasoning so far
    ) -> Completion: ...


class ChatRefused(Exception):
    """This member may not chat here now; `str()` says why, kindly."""


# -- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatSettings:
    enabled: bool
    model: str
    system_prompt: str
    require_sso: bool
    history_token_budget: int
    summarize: bool
    daily_quota: dict[Role, int]  # 0 means no limit
    command_prefix: str = "!"
    max_tokens: int = 1024  # the longest answer asked for (less when the quota leaves less)
    room_context_messages: int = 0  # default of the room setting (0: answers open threads)
    show_reasoning: bool = False  # default of the room setting

    @classmethod
    def from_config(cls, gpt: GptSettings, *, command_prefix: str) -> ChatSettings:
        """From `[gpt]`: the keys of the same name as they are; the per-role quotas default to
        `daily_token_quota`."""
        same = {f.name: getattr(gpt, f.name) for f in fields(cls) if hasattr(gpt, f.name)}
        quota = {
            Role.USER: gpt.daily_token_quota,
            Role.MODERATOR: gpt.moderator_daily_token_quota,
            Role.ADMIN: gpt.admin_daily_token_quota,
        }
        daily = {r: q if q is not None else gpt.daily_token_quota for r, q in quota.items()}
        return cls(**same, daily_quota=daily, command_prefix=command_prefix)


@dataclass(frozen=True)
class RoomChatSettings:
    enabled: bool
    model: str
    prompt: str
    overridden: frozenset[str] = field(default_factory=frozenset)  # which came from the room
    context_messages: int = 0  # room messages a question in the room sees (0: none, threads)
    show_reasoning: bool = False  # a reasoning model's thinking shown folded above the answer


@dataclass(frozen=True)
class ChatTurn:
    room_id: str
    thread_root: str | None  # None: the sender's own conversation in their DM
    sender: str
    sender_name: str | None  # set in rooms, so the model knows who speaks
    text: str
    event_id: str
    # The room's recent messages the sender could see, as transcript lines (room context).
    room_context: tuple[str, ...] = ()


@dataclass
class Hold:
    """The tokens a turn holds against its sender's quota until it is settled, once."""

    held: Held
    settled: bool = False


@dataclass(frozen=True)
class PreparedTurn:
    turn: ChatTurn
    conversation_id: int | None  # None: the turn starts the conversation (made when stored)
    model: str
    messages: list[PromptMessage]
    oldest_in_window: int | None  # id of the oldest stored message the prompt includes
    hold: Hold
    media_ids: tuple[int, ...] = ()  # images the member sent for this turn (assistant_media.py)
    show_reasoning: bool = False  # the room shows a reasoning model's thinking, folded

    @property
    def max_tokens(self) -> int:
        return self.hold.held.completion


@dataclass(frozen=True)
class Usage:
    used: int
    quota: int  # 0: no limit

    @property
    def exhausted(self) -> bool:
        return self.quota > 0 and self.used >= self.quota


def until_reset(now: datetime) -> timedelta:
    tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
    return tomorrow - now


def describe_wait(delta: timedelta) -> str:
    minutes = max(1, int(delta.total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def answer_allowance(taken: int, quota: int, prompt: int, longest: int) -> int | None:
    """How long an answer may be when the day has `taken` tokens (spent and held): the
    longest allowed, less when the quota (0: none) leaves less room, at least a short
    answer; None once the quota is reached. So questions asked at once cannot together go
    further past the quota than one question alone would."""
    if quota and taken >= quota:
        return None
    room = longest if quota == 0 else quota - taken - prompt
    return max(min(longest, room), min(LEAST_ANSWER_TOKENS, longest))


def _speaker(content: str, author_name: str | None) -> str:
    return f"{author_name}: {content}" if author_name else content


class ChatService:
    def __init__(
        self,
        db: Database,
        settings: ChatSettings,
        model: LanguageModel,
        *,
        identity: IdentityService,
        users: UserService,
        clock: Callable[[], datetime] = utcnow,
        store: ChatStore | None = None,
        usage: UsageStore | None = None,
    ) -> None:
        self._db = db
        self.settings = settings
        self._model = model
        self._identity = identity
        self._users = users
        self._clock = clock
        self._store = store or ChatStore(db)
        self._usage = usage or UsageStore(db)
        self._locks: KeyedLock[tuple[str, str | None]] = KeyedLock()
        # Images in a turn (bot/community/assistant_media.py); None: text only.
        self.media: AssistantMedia | None = None

    def prompt_tokens(self, messages: Sequence[PromptMessage], model: str) -> int:
        """What a prompt costs: its text, and each image at the configured cost."""
        text = sum(message_tokens(m.content, model) for m in messages)
        images = sum(len(m.images) for m in messages)
        return text + (self.media.image_tokens(images) if self.media and images else 0)

    def conversation_lock(self, room_id: str, thread_root: str | None, member: str | None = None):  # type: ignore[no-untyped-def]
        """Turns of one conversation run one after the other; different ones in parallel."""
        return self._locks((room_id, thread_root if thread_root is not None else member))

    # -- settings per room --------------------------------------------------------------------

    async def room_settings(self, room_id: str) -> RoomChatSettings:
        room = await self._store.room_overrides(room_id)
        s = self.settings
        overridden = {
            name
            for name, value in (("enabled", room.enabled), ("model", room.model),
                                ("prompt", room.prompt))
            if value is not None
        }  # fmt: skip
        return RoomChatSettings(
            enabled=s.enabled if room.enabled is None else room.enabled,
            model=room.model or s.model,
            prompt=room.prompt or s.system_prompt,
            overridden=frozenset(overridden),
            context_messages=(
                s.room_context_messages if room.context_messages is None else room.context_messages
            ),
            show_reasoning=s.show_reasoning if room.show_reasoning is None else room.show_reasoning,
        )

    async def change_room_settings(
        self, room_id: str, actor: str, *, reset: bool = False, **changes: object
    ) -> None:
        """Set `enabled`, `model` or `prompt` for one room, or `reset` them all to the config."""
        await self._store.change_room_overrides(room_id, actor, changes, reset=reset)

    # -- quota --------------------------------------------------------------------------------

    def _today(self) -> date:
        return self._clock().date()

    def _quota(self, caller: Caller) -> int:
        if caller.quota_override is not None:
            return caller.quota_override
        return self.settings.daily_quota.get(caller.role, 0)

    async def usage_today(self, mxid: str, role: Role) -> Usage:
        today = await self._usage.today(mxid, self._today())
        override = await self._usage.quota_override(mxid)
        return Usage(today.used, self._quota(Caller(role, True, override)))

    async def release_held_tokens(self) -> int:
        """At start-up: tokens held by requests a crash cut off go back to their members."""
        return await self._usage.release_all()

    async def _hold(
        self, sender: str, caller: Caller, prompt: list[PromptMessage], model: str
    ) -> Hold:
        """Reserve the prompt and the longest answer the quota allows, before asking: parallel
        questions cannot together spend more than the quota. Raises ChatRefused."""
        quota = self._quota(caller)
        needed = self.prompt_tokens(prompt, model)
        result = await self._usage.hold(
            sender, self._today(), needed,
            lambda taken: answer_allowance(taken, quota, needed, self.settings.max_tokens),
        )  # fmt: skip
        if isinstance(result, Held):
            return Hold(result)
        return self._refuse_for_quota(result, quota)

    def _refuse_for_quota(self, today: DayUsage, quota: int) -> Hold:
        if today.reserved and today.used < quota:
            raise ChatRefused(
                "Your other questions are still being answered, and together they may use up "
                "today's quota. Please ask again when they are done."
            )
        raise ChatRefused(self.quota_message(Usage(max(today.used, quota), quota)))

    def shown_answer(self, prepared: PreparedTurn, completion: Completion) -> str:
        """The answer as the member sees it: an answer that hit its length limit says why."""
        if not completion.cut_short:
            return completion.text
        why = (
            "your daily quota is nearly used up"
            if prepared.max_tokens < self.settings.max_tokens
            else "it reached the longest answer I may give"
        )
        return f"{completion.text}\n\n*(Cut short: {why}.)*"

    async def release(self, prepared: PreparedTurn) -> None:
        """A turn that spent nothing the member is charged for gives its reservation back."""
        await self._settle(prepared, None)

    async def _settle(self, prepared: PreparedTurn, spent: tuple[int, int] | None) -> None:
        hold = prepared.hold
        if hold.settled:
            return
        prompt, completion = spent or (0, 0)
        await self._usage.settle(
            hold.held, prompt=prompt, completion=completion, counted=spent is not None
        )
        hold.settled = True

    async def set_quota(self, mxid: str, tokens: int | None, actor: str) -> None:
        await self._store.set_quota_override(mxid, tokens, actor)

    def quota_message(self, usage: Usage) -> str:
        wait = describe_wait(until_reset(self._clock()))
        return (
            f"You have used your {usage.quota:,} tokens for today. "
            f"The quota resets at 00:00 UTC, in {wait}."
        )

    # -- a turn -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Let the model port close its connections, if it holds any."""
        close = getattr(self._model, "close", None)
        if close is not None:
            await close()

    async def check_access(self, sender: str, room_id: str) -> tuple[RoomChatSettings, Caller]:
        """May `sender` chat in this room? Raises ChatRefused. (The quota is checked when the
        turn's tokens are held.)"""
        room = await self.room_settings(room_id)
        if not room.enabled:
            raise ChatRefused("The assistant is switched off in this room.")
        caller = await self._users.caller(sender)
        if not caller.active:
            raise ChatRefused("Your account is deactivated, so you cannot use the assistant.")
        p = self.settings.command_prefix
        if self.settings.require_sso and not await self._identity.bindings_of(sender):
            raise ChatRefused(
                f"To chat with the assistant, link your community account first: send `{p}login`."
            )
        return room, caller

    async def prepare(self, turn: ChatTurn) -> PreparedTurn:
        """Check access, build the prompt and hold its tokens. Raises ChatRefused."""
        room, caller = await self.check_access(turn.sender, turn.room_id)
        model = room.model
        system = [PromptMessage("system", room.prompt)]
        current = PromptMessage("user", _speaker(turn.text, turn.sender_name))
        conversation, newest_first = await self._store.open_conversation(
            turn.room_id, turn.thread_root, turn.sender,
            recent=rows_to_read(self.settings.history_token_budget, MESSAGE_OVERHEAD),
        )  # fmt: skip
        if conversation is not None and conversation.summary:
            summary = f"Summary of the earlier conversation: {conversation.summary}"
            system.append(PromptMessage("system", summary))
        if turn.room_context:
            # The room is the conversation: its recent messages stand in for stored history.
            system.append(PromptMessage("system", "\n".join(turn.room_context)))
            newest_first = []
        pending = (
            await self.media.pending_for(turn.room_id, turn.thread_root, turn.sender, model)
            if self.media is not None
            else []
        )
        fixed = sum(message_tokens(m.content, model) for m in [*system, current])
        if self.media is not None:  # images cost tokens of the budget like text
            fixed += self.media.image_tokens(len(pending))
        budget = max(0, self.settings.history_token_budget - fixed)
        window = select_recent(newest_first, budget)
        history = [
            PromptMessage(
                m.role, _speaker(m.content, m.author_name) if m.role == "user" else m.content
            )
            for m in window
        ]
        media_ids: tuple[int, ...] = ()
        if self.media is not None:
            with_images = await self.media.with_images(
                window, history, current, pending, room_id=turn.room_id, model=model
            )
            history, current, media_ids = (
                with_images.history, with_images.current, with_images.media_ids,
            )  # fmt: skip
        messages = [*system, *history, current]
        return PreparedTurn(
            turn, conversation.id if conversation else None, model, messages,
            oldest_in_window=window[0].id if window else None,
            hold=await self._hold(turn.sender, caller, messages, model), media_ids=media_ids,
            show_reasoning=room.show_reasoning,
        )  # fmt: skip

    async def generate(
        self,
        prepared: PreparedTurn,
        on_text: TextCallback | None,
        on_thinking: TextCallback | None = None,
    ) -> Completion:
        """Ask the model. Raises ModelError with a message for the member (the tokens held for
        the turn are then given back). A reasoning model's thinking is split off the answer:
        `on_text` sees only the answer so far, `on_thinking` the thinking while no answer has
        come yet; the Completion's text is the answer, its `reasoning` the thinking."""
        stream = AnswerStream(on_text, on_thinking)
        try:
            raw = await self._model.complete(
                prepared.messages, model=prepared.model,
                on_text=stream.raw_text if on_text is not None else None,
                max_tokens=prepared.max_tokens, on_reasoning=stream.provider_reasoning,
            )  # fmt: skip
        except ModelError:
            await self.release(prepared)
            raise
        answer, inline = split_thinking(raw.text)
        reasoning = "\n\n".join(r for r in (raw.reasoning.strip(), inline) if r)
        completion = replace(raw, text=answer, reasoning=reasoning)
        if not answer.strip():
            # It thought (and spent the tokens) but said nothing: counted, not shown.
            await self.commit(prepared, completion, reply_event_id=None, delivered=False)
            raise ModelError(
                "The assistant kept thinking and gave no answer"
                + (" before it reached its length limit." if raw.cut_short else ".")
                + " Please ask again, perhaps more simply."
            )
        return completion

    async def answer_once(
        self, sender: str, room_id: str, messages: list[PromptMessage]
    ) -> Completion:
        """One request outside any conversation (a catch-up summary): the same access rules
        and quota hold as a turn, counted, nothing remembered. Raises ChatRefused, ModelError."""
        room, caller = await self.check_access(sender, room_id)
        turn = ChatTurn(room_id, None, sender, None, "", "")
        hold = await self._hold(sender, caller, messages, room.model)
        prepared = PreparedTurn(turn, None, room.model, messages, None, hold)
        completion = await self.generate(prepared, None)
        await self.commit(prepared, completion, reply_event_id=None, delivered=False)
        return completion

    async def commit(
        self,
        prepared: PreparedTurn,
        completion: Completion,
        *,
        reply_event_id: str | None,
        delivered: bool,
    ) -> int:
        """Count the tokens, and remember the turn when its answer reached the member. Returns
        the tokens used."""
        model = prepared.model
        prompt_tokens = completion.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = self.prompt_tokens(prepared.messages, model)
        completion_tokens = completion.completion_tokens
        if completion_tokens is None:  # thinking is written by the model too: it counts
            completion_tokens = count_tokens(completion.text, model) + (
                count_tokens(completion.reasoning, model) if completion.reasoning else 0
            )
        turn = prepared.turn
        # Counted first and on its own: a delivered answer is always counted, whatever happens
        # to the history below. A passing database error is tried again.
        for attempt in range(1, COMMIT_TRIES + 1):
            try:
                await self._settle(prepared, (prompt_tokens, completion_tokens))
                break
            except SQLAlchemyError:
                if attempt == COMMIT_TRIES:
                    raise
                await asyncio.sleep(0.2 * attempt)
        if not delivered:
            return prompt_tokens + completion_tokens
        await self._store.add_turn(
            (turn.room_id, turn.thread_root, turn.sender, prepared.conversation_id),
            NewMessage(
                "user", turn.text, message_tokens(_speaker(turn.text, turn.sender_name), model)
                + (self.media.image_tokens(len(prepared.media_ids)) if self.media else 0),
                author=turn.sender, author_name=turn.sender_name, event_id=turn.event_id,
                media_ids=prepared.media_ids,
            ),
            NewMessage(
                "assistant", completion.text, message_tokens(completion.text, model),
                event_id=reply_event_id,
            ),
        )  # fmt: skip
        return prompt_tokens + completion_tokens

    async def fold_into_summary(self, prepared: PreparedTurn) -> bool:
        """With `summarize`, fold the turns that no longer fit the window into the stored summary
        (one extra request). True when a summary was written."""
        if (
            not self.settings.summarize
            or prepared.oldest_in_window is None
            or prepared.conversation_id is None
        ):
            return False
        earlier, dropped = await self._store.left_the_window(
            prepared.conversation_id, prepared.oldest_in_window
        )
        if not dropped:
            return False
        budget = self.settings.history_token_budget
        transcript, used = [], 0
        for m in dropped:
            line = f"{m.author_name or m.role}: {m.content}"
            used += message_tokens(line, prepared.model)
            if used > budget:
                break
            transcript.append(line)
        body = (f"Earlier summary: {earlier}\n\n" if earlier else "") + "\n".join(transcript)
        completion = await self._model.complete(
            [PromptMessage("system", SUMMARY_PROMPT), PromptMessage("user", body)],
            model=prepared.model, on_text=None,
        )  # fmt: skip
        upto = dropped[len(transcript) - 1].id if transcript else None
        summary = split_thinking(completion.text)[0]  # a reasoning model's thinking is not kept
        await self._store.save_summary(prepared.conversation_id, summary, upto)
        return True

    # -- conversations ------------------------------------------------------------------------

    async def has_conversation(self, room_id: str, thread_root: str) -> bool:
        return await self._store.has_open(room_id, thread_root)

    async def reset(self, room_id: str, thread_root: str | None, member: str | None = None) -> bool:
        """Close the open conversation here; the next message starts a fresh one."""
        return await self._store.close(room_id, thread_root, member)

    async def forget_event(self, event_id: str) -> bool:
        """A member redacted a message: it leaves the history, with the answer it got; a
        redacted image is forgotten, pending or attached (assistant_media.py)."""
        image = await self.media.forget_image(event_id) if self.media is not None else False
        return await self._store.forget_event(event_id) or image

    async def edit_event(
        self, event_id: str, new_text: str, editor: str, model: str | None = None
    ) -> bool:
        """A member edited their message: the history keeps the new text. Only the author's own
        edits count (Matrix lets anyone send an m.replace), and the assistant's answers are never
        changed this way."""
        found = await self._store.message_by_event(event_id)
        if found is None:
            return False
        role, author, author_name = found
        if role != "user" or author != editor:
            return False
        tokens = message_tokens(_speaker(new_text, author_name), model or self.settings.model)
        await self._store.replace_text(event_id, new_text, tokens)
        return True

    async def history(
        self, room_id: str, thread_root: str | None, member: str | None = None
    ) -> list[StoredMessage]:
        """The open conversation's stored messages, oldest first (for `!gpt` and tests)."""
        return await self._store.history(room_id, thread_root, member)

    async def purge_older_than(self, days: int) -> int:
        """Retention: drop conversations untouched for `days` (their messages go with them)."""
        if days <= 0:
            return 0
        return await self._store.purge_untouched_since(utcnow() - timedelta(days=days))
