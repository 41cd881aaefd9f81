"""WorkerConfig: every worker option validated where the worker is made, with errors naming the option."""

from __future__ import annotations

from typing import Any

import pytest

from pgtasks import App, ConfigurationError, WorkerConfig


@pytest.mark.parametrize(("options", "message"), [
    ({"concurrency": 0}, "concurrency=0: expected an integer >= 1"),
    ({"concurrency": True}, "concurrency=True"),
    ({"pool_size": 1}, "at least 2 connections"),
    ({"poll_interval": 0}, "poll_interval=0"),
    ({"grace": -1}, "grace=-1: must not be negative"),
    ({"queues": []}, "give at least one queue name"),
    ({"queues": ""}, "give at least one queue name"),
    ({"listen": "yes"}, "listen='yes'"),
    ({"listen_dsn": "host=x options='-c a=b'"}, "listen_dsn sets options"),
    ({"heartbeat_interval": 5, "rescue_after": 10}, "must be at least 3x heartbeat_interval"),
])
def test_a_bad_option_names_itself(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        WorkerConfig(**options)


def test_an_unknown_option_lists_the_known_ones() -> None:
    app = App("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(ConfigurationError, match=r"unknown worker option\(s\) \['concurency'\]; .*'concurrency'"):
        app.worker(concurency=4)


def test_queues_from_a_comma_separated_string_and_defaults() -> None:
    config = WorkerConfig(queues="mail,,default")
    assert config.queues == ("mail", "default")
    assert config.maintenance().elect is True
    assert WorkerConfig(burst=True).maintenance().elect is False  # a burst worker drains and exits


def test_a_config_or_options_not_both() -> None:
    app = App("postgresql://nobody@127.0.0.1:1/none")
    worker = app.worker(concurrency=3)
    assert (worker.concurrency, worker.config.concurrency) == (3, 3)
    with pytest.raises(ConfigurationError, match="give a WorkerConfig or options, not both"):
        type(worker)(app, WorkerConfig(), concurrency=2)
