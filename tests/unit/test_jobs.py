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
