"""Reading members' messages for the protections in time linear in their length, whatever they
contain: words by Aho-Corasick (one pass over the text for the whole list), link hosts by one
scan of whitespace-separated tokens with a set lookup per host and parent domain, glob patterns
(`*`, `?`) by leftmost search of their literal segments, mentions by token scan. No regular
expression with backtracking ever runs over a member's text."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from bot.community.policy_glob import Glob

_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")
_TRIM_LEFT = "<([{\"'*_`"
_TRIM_RIGHT = ">)]}\"'.,;:!?*_`"
MAX_HOSTS = 100  # per message: a message of 10,000 links is judged by its first hundred


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


class WordMatcher:
    """Whole words and phrases (case-insensitive) found in one pass (Aho-Corasick)."""

    def __init__(self, words: Iterable[str]) -> None:
        self._goto: list[dict[str, int]] = [{}]
        self._fail: list[int] = [0]
        self._out: list[list[str]] = [[]]
        for word in words:
            word = word.strip().lower()
            if word:
                self._add(word)
        self._link()

    def __bool__(self) -> bool:
        return len(self._goto) > 1

    def _add(self, word: str) -> None:
        state = 0
        for char in word:
            nxt = self._goto[state].get(char)
            if nxt is None:
                nxt = len(self._goto)
                self._goto[state][char] = nxt
                self._goto.append({})
                self._fail.append(0)
                self._out.append([])
            state = nxt
        self._out[state].append(word)

    def _link(self) -> None:
        queue = deque(self._goto[0].values())
        while queue:
            state = queue.popleft()
            for char, nxt in self._goto[state].items():
                queue.append(nxt)
                fail = self._fail[state]
                while fail and char not in self._goto[fail]:
                    fail = self._fail[fail]
                candidate = self._goto[fail].get(char, 0)
                self._fail[nxt] = candidate if candidate != nxt else 0
                self._out[nxt] = self._out[nxt] + self._out[self._fail[nxt]]

    def find(self, text: str) -> str | None:
        """The first listed word standing as a whole word in `text`, or None."""
        if not self:
            return None
        lowered = text.lower()
        goto, fail, out = self._goto, self._fail, self._out
        state = 0
        for end, char in enumerate(lowered):
            while state and char not in goto[state]:
                state = fail[state]
            state = goto[state].get(char, 0)
            for word in out[state]:
                start = end - len(word) + 1
                before = lowered[start - 1] if start > 0 else " "
                after = lowered[end + 1] if end + 1 < len(lowered) else " "
                if not (_is_word_char(before) and _is_word_char(word[0])) and not (
                    _is_word_char(after) and _is_word_char(word[-1])
                ):
                    return word
        return None


def _host_of(token: str) -> str | None:
    """The host a token links to (`https://x.org/a`, `www.x.org`, `x.org/path`), or None."""
    token = token.strip(_TRIM_LEFT).rstrip(_TRIM_RIGHT).lower()
    scheme = token.find("://")
    explicit = scheme > 0
    if explicit:
        token = token[scheme + 3 :]
    for stop in "/?#":
        cut = token.find(stop)
        if cut >= 0:
            token = token[:cut]
    at = token.rfind("@")
    if at >= 0:
        if not explicit:
            return None  # an email address or a Matrix id, not a link
        token = token[at + 1 :]
    colon = token.find(":")
    if colon >= 0:
        if not explicit and not token[colon + 1 :].isdigit():
            return None
        token = token[:colon]
    token = token.rstrip(".")
    if "." not in token or not set(token) <= _HOST_CHARS:
        return None
    labels = token.split(".")
    if any(not label or len(label) > 63 for label in labels):
        return None
    tld = labels[-1]
    if not (tld.isalpha() and len(tld) >= 2) and not (explicit and tld.isdigit()):
        return None
    return token


def link_hosts(body: str, formatted: str | None = None) -> list[str]:
    """The hosts of the links in a message (its text, and the hrefs of its HTML), in order,
    without repeats; at most MAX_HOSTS."""
    found: dict[str, None] = {}
    for token in body.split():
        if "." in token and (host := _host_of(token)) is not None:
            found[host] = None
            if len(found) >= MAX_HOSTS:
                return list(found)
    if formatted:
        pos = 0
        lowered = formatted.lower()
        while len(found) < MAX_HOSTS and (pos := lowered.find("href=", pos)) >= 0:
            pos += 5
            quote = lowered[pos : pos + 1]
            if quote in ("'", '"'):
                end = lowered.find(quote, pos + 1)
                value = lowered[pos + 1 : end if end >= 0 else len(lowered)]
                pos = end if end >= 0 else len(lowered)
            else:
                end = pos
                while end < len(lowered) and not lowered[end].isspace() and lowered[end] != ">":
                    end += 1
                value, pos = lowered[pos:end], end
            if (host := _host_of(value)) is not None and not host.startswith("matrix.to"):
                found[host] = None
    return list(found)


class DomainMatcher:
    """Listed domains, their subdomains included (`evil.org` also catches `a.evil.org`)."""

    def __init__(self, domains: Iterable[str]) -> None:
        self._domains = frozenset(
            d.strip().lower().lstrip("*.").rstrip(".") for d in domains if d.strip()
        )

    def __bool__(self) -> bool:
        return bool(self._domains)

    def find(self, hosts: Iterable[str]) -> str | None:
        for host in hosts:
            labels = host.split(".")
            for i in range(len(labels) - 1):
                candidate = ".".join(labels[i:])
                if candidate in self._domains:
                    return candidate
        return None


class GlobMatcher:
    """Glob patterns found anywhere in a message (`free*nitro`, `bit.ly/?????`): each is the
    ban lists' linear glob (policy_glob.py) with a star at either end, matched on lower case."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self._globs = [
            (lowered, Glob.compile(f"*{lowered}*"))
            for p in patterns
            if (lowered := p.strip().lower()).strip("*")
        ]

    def __bool__(self) -> bool:
        return bool(self._globs)

    def find(self, text: str) -> str | None:
        lowered = text.lower()
        return next((pattern for pattern, glob in self._globs if glob.matches(lowered)), None)


@dataclass(frozen=True)
class Filters:
    """A room's word, domain and pattern lists, compiled once per change of settings."""

    words: WordMatcher
    domains: DomainMatcher
    patterns: GlobMatcher

    @classmethod
    def build(
        cls, words: Iterable[str], domains: Iterable[str], patterns: Iterable[str]
    ) -> Filters:
        return cls(WordMatcher(words), DomainMatcher(domains), GlobMatcher(patterns))

    def find(self, body: str, hosts: list[str]) -> str | None:
        """What in the message is listed (`word "x"`, `domain x.org`, `pattern x*y`), or None."""
        if self.words and (word := self.words.find(body)) is not None:
            return f"the word “{word}”"
        if self.domains and (domain := self.domains.find(hosts)) is not None:
            return f"a link to {domain}"
        if self.patterns and (pattern := self.patterns.find(body)) is not None:
            return f"the pattern “{pattern}”"
        return None


def plain_mentions(body: str, limit: int = 1000) -> set[str]:
    """Matrix ids written out in a message's text (`@name:server`), up to `limit`."""
    found: set[str] = set()
    for token in body.split():
        if token.startswith("@") and ":" in token:
            mxid = token.rstrip(_TRIM_RIGHT)
            if len(mxid) <= 255 and mxid.find(":") > 1:
                found.add(mxid)
                if len(found) >= limit:
                    break
    return found


def pill_mentions(formatted: str | None, limit: int = 1000) -> set[str]:
    """Users linked as pills in a message's HTML (`https://matrix.to/#/@name:server`)."""
    found: set[str] = set()
    if not formatted:
        return found
    marker = "matrix.to/#/@"
    pos = 0
    while len(found) < limit and (pos := formatted.find(marker, pos)) >= 0:
        start = pos + len(marker) - 1
        end = start
        while end < len(formatted) and end - start < 256 and formatted[end] not in "\"'?> <":
            end += 1
        found.add(formatted[start:end].replace("%3A", ":").replace("%3a", ":"))
        pos = end
    return found
