"""The leader lease's statements (PostgreSQL only: with SQLite there is one process and no lease).
Every comparison uses the database's clock (`clock_timestamp()`), never a host's, so the hosts'
clocks need not agree. A row is never deleted: its `epoch` only grows, which makes it a fencing
token."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.store.database import Database

_ACQUIRE = text("""
    INSERT INTO leader_lease (name, holder, epoch, acquired_at, expires_at)
    VALUES (:name, :holder, 1, clock_timestamp(),
            clock_timestamp() + make_interval(secs => CAST(:seconds AS double precision)))
    ON CONFLICT (name) DO UPDATE
       SET holder = EXCLUDED.holder, epoch = leader_lease.epoch + 1,
           -- read the clock again: this may have waited on a (frozen) leader's lock
           acquired_at = clock_timestamp(),
           expires_at = clock_timestamp() + make_interval(secs => CAST(:seconds AS double precision))
     WHERE leader_lease.expires_at <= clock_timestamp()
    RETURNING epoch
""")  # fmt: skip
_RENEW = text("""
    UPDATE leader_lease
       SET expires_at = clock_timestamp() + make_interval(secs => CAST(:seconds AS double precision))
     WHERE name = :name AND holder = :holder AND epoch = :epoch
       AND expires_at > clock_timestamp()
    RETURNING epoch
""")  # fmt: skip
_RELEASE = text("""
    UPDATE leader_lease SET expires_at = clock_timestamp()
     WHERE name = :name AND holder = :holder AND epoch = :epoch
""")  # fmt: skip
_CURRENT = text("""
    SELECT holder, epoch, EXTRACT(EPOCH FROM (expires_at - clock_timestamp())) AS remaining
      FROM leader_lease WHERE name = :name
""")  # fmt: skip
# FOR SHARE: a standby's take-over (an UPDATE of this row) waits until the fenced write commits,
# and a write after a take-over sees the new epoch, so the two never interleave.
_FENCE = text("""
    SELECT epoch FROM leader_lease
     WHERE name = :name AND holder = :holder AND epoch = :epoch
       AND expires_at > clock_timestamp()
       FOR SHARE
""")  # fmt: skip


@dataclass(frozen=True)
class LeaseHolder:
    holder: str
    epoch: int
    remaining_s: float  # negative once expired


class LeaseStore:
    def __init__(self, db: Database, name: str) -> None:
        self._db = db
        self._name = name

    async def try_acquire(self, holder: str, seconds: float) -> int | None:
        """The new epoch when the lease was free (never held, expired or released), else None."""
        async with self._db.engine.begin() as conn:
            return await conn.scalar(
                _ACQUIRE, {"name": self._name, "holder": holder, "seconds": seconds}
            )

    async def renew(self, holder: str, epoch: int, seconds: float) -> bool:
        """False when the lease is no longer ours (expired, or taken over)."""
        async with self._db.engine.begin() as conn:
            renewed = await conn.scalar(
                _RENEW, {"name": self._name, "holder": holder, "epoch": epoch, "seconds": seconds}
            )
        return renewed is not None

    async def release(self, holder: str, epoch: int) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(_RELEASE, {"name": self._name, "holder": holder, "epoch": epoch})

    async def current(self) -> LeaseHolder | None:
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(_CURRENT, {"name": self._name})).first()
        return None if row is None else LeaseHolder(row[0], row[1], float(row[2]))

    async def still_held(self, conn: AsyncConnection, holder: str, epoch: int) -> bool:
        """Inside the caller's transaction: whether `epoch` is still the live lease."""
        held = await conn.scalar(_FENCE, {"name": self._name, "holder": holder, "epoch": epoch})
        return held is not None
