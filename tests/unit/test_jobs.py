import asyncio

from bot.jobs import Jobs


async def test_a_failing_job_is_logged_and_runs_again_while_others_go_on(capsys):
    jobs = Jobs()
    calls = {"bad": 0, "good": 0}

    async def bad():
        calls["bad"] += 1
        raise RuntimeError("database away")

    async def good():
        calls["good"] += 1
        return "ok"

    jobs.every("bad", 0.1, bad)
    jobs.every("good", 0.1, good)
    jobs.start()
    try:
        await asyncio.sleep(0.45)
    finally:
        jobs.stop()
    assert calls["bad"] >= 3 and calls["good"] >= 3
    assert jobs.runs["bad"] == calls["bad"]
    out = capsys.readouterr()
    text = out.out + out.err
    assert "job.failed" in text and "database away" in text
    assert "job.start" in text and "job.end" in text


async def test_a_job_first_runs_after_its_delay_then_at_its_interval():
    jobs = Jobs()
    started = asyncio.get_running_loop().time()
    runs: list[float] = []

    async def upkeep():
        runs.append(asyncio.get_running_loop().time() - started)

    jobs.every("upkeep", 0.2, upkeep, first_after=0.5)
    jobs.start()
    try:
        await asyncio.sleep(0.4)
        assert runs == []  # not at the start: the first commands come first
        await asyncio.sleep(0.45)
    finally:
        jobs.stop()
    assert len(runs) >= 2 and runs[0] >= 0.5 and runs[1] - runs[0] >= 0.15


def test_the_upkeep_jobs_wait_for_the_start_to_settle_one_after_the_other():
    from datetime import timedelta
    from types import SimpleNamespace

    from bot.jobs import UPKEEP_AFTER_START_S, schedule_jobs

    jobs = Jobs()
    nothing = SimpleNamespace(
        purge=None, purge_older_than=None, interval=timedelta(hours=1), resync_due=None
    )
    schedule_jobs(
        jobs, announcements=nothing, moderation=nothing, login_links=nothing, welcome=nothing,
        send_login_link=None, reminder_after=timedelta(days=1), chat=nothing, retention_days=30,
        ledger=nothing, outbox=nothing, identity_sync=nothing, announcement_poll_s=5.0,
    )  # fmt: skip
    first = {name: after for name, _, after, _ in jobs._planned}
    assert first.pop("announcements") == 5.0  # due announcements at the first poll
    assert min(first.values()) >= UPKEEP_AFTER_START_S
    assert len(set(first.values())) == len(first)  # never two at once
