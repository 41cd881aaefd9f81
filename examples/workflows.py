"""Workflows: a chord inside a chain, a failure that cancels what waits and runs link_error, a rollback.

Run it with `python examples/workflows.py` (PGTASKS_DATABASE_URL, or the embedded PostgreSQL as in
examples/quickstart.py). It enqueues, drains with an in-process worker (pgtasks.testing.drain) and
prints what each workflow returned.
"""

from __future__ import annotations

from typing import Any

import pgtasks
from pgtasks import chain, chord, group
from pgtasks.testing import drain

app = pgtasks.App()


@app.task(name="workflows.word_count")
def word_count(text: str) -> int:
    return len(text.split())


@app.task(name="workflows.total")
def total(counts: list[int]) -> int:
    return sum(counts)


@app.task(name="workflows.report")
def report(words: int, title: str) -> str:
    return f"{title}: {words} words"


@app.task(name="workflows.parse", max_attempts=2, retry=pgtasks.Fixed(0))
def parse(text: str) -> int:
    return int(text)


@app.task(name="workflows.alert")
def alert(job_id: int, error: dict[str, Any]) -> str:
    print(f"alert: job {job_id} failed with {error['type']}: {error['message']}")
    return "alerted"


def main() -> None:
    app.migrate()
    pages = ["the quick brown fox", "jumps over", "the lazy dog"]
    # Count every page in parallel, add the counts up once all are done, then write the report.
    counted = chain(chord([word_count.s(page) for page in pages], total.s()), report.s(title="pages")).delay()
    # A group's results come back in member order.
    lengths = group(word_count.s(page) for page in pages).delay()
    # parse("x") fails twice and is discarded: the steps after it are cancelled, alert runs once.
    broken = (parse.s("x") | report.s(title="never")).apply_async(link_error=alert.s())
    # A workflow enqueued in a transaction that rolls back leaves no step behind.
    try:
        with app.transaction():
            doomed = chain(word_count.s("a b"), report.s(title="rolled back")).delay()
            raise RuntimeError("undo")
    except RuntimeError:
        print(f"rolled back: workflow {doomed.id} state={doomed.state()}")

    drain(app)
    print(f"chain(chord, report) -> {counted.wait(timeout=30)!r}")
    print(f"group -> {lengths.wait(timeout=30)!r}")
    try:
        broken.wait(timeout=30)
    except pgtasks.JobDiscardedError as exc:
        print(f"broken -> {broken.state()}: {exc.error_type}: {exc.error_message}")
    for step in broken.results():
        print(f"  step {step.step} {step.task:<22} {step.state:<9} {step.error['type'] if step.error else ''}")


if __name__ == "__main__":
    main()
