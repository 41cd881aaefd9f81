"""Tasks declared without an App (pgtasks.Blueprint) and the modules an App imports for its tasks
(include=, autodiscover()), against a real PostgreSQL and worker, with the project under
tests/apps/discovery/; and Celery's worker spellings (-A, -Q, -l) through a `pgtasks` subprocess."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import pgtasks
from pgtasks import App, Blueprint, ConfigurationError, DuplicateTaskError, chain
from pgtasks.cli import main
from pgtasks.client.blueprint import BlueprintTask, TaskOptions
from pgtasks.core.definition import TaskConfig
from tests.apps.discovery.billing import tasks as billing
from tests.conftest import ROOT
from tests.helpers import drain, jobs

PROJECT = "tests.apps.discovery"
MakeApp = Callable[..., App]


@pytest.fixture
def make_app(database_url: str, schema: str) -> Iterator[MakeApp]:
    """Apps on the test's schema (migrated once), closed at the end."""
    made: list[App] = []

    def make(**options: Any) -> App:
        application = App(database_url, schema=schema, **options)
        if not made:
            application.migrate()
        made.append(application)
        return application

    yield make
    for application in made:
        application.close()


LAZY = f"{PROJECT}.lazy.tasks"


@pytest.fixture
def unimported(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/apps/discovery/lazy/tasks.py not imported yet (put back as it was after the test)."""
    monkeypatch.delitem(sys.modules, LAZY, raising=False)


@pytest.mark.usefixtures("unimported")
def test_include_imports_the_module_when_tasks_are_needed_and_adds_its_blueprint(make_app: MakeApp) -> None:
    app = make_app(include=[LAZY])
    assert LAZY not in sys.modules and app.registry.tasks == {}  # nothing imported at App()
    assert "lazy.echo" in app.tasks  # reading app.tasks imports include=
    module = sys.modules[LAZY]
    own = app.tasks["lazy.echo"]
    assert isinstance(own, pgtasks.Task) and own.app is app and own.func is module.echo.func
    assert app.load_tasks() == []  # once


def test_a_module_imported_already_has_its_blueprint_added_at_once(make_app: MakeApp) -> None:
    app = make_app(include=[f"{PROJECT}.billing.tasks"])
    assert app.registry.tasks["billing.charge"].config.queue == "billing"
    other = make_app()
    other.autodiscover([f"{PROJECT}.billing"])
    assert "billing.total" in other.registry.tasks and billing.total.app is other  # the newest App


@pytest.mark.usefixtures("unimported")
def test_load_tasks_returns_what_it_imported_and_autodiscover_skips_packages_without_tasks(
        make_app: MakeApp) -> None:
    app = make_app()
    app.autodiscover([f"{PROJECT}.lazy", f"{PROJECT}.notasks", "json"])  # json: a module, not a package
    assert app.registry.tasks == {}
    assert app.load_tasks() == [LAZY]
    assert sorted(app.registry.tasks) == ["lazy.echo"]
    assert app.load_tasks() == []


def test_autodiscover_takes_a_callable_called_when_the_modules_are_imported(make_app: MakeApp) -> None:
    asked: list[str] = []

    def packages() -> list[str]:
        asked.append("now")
        return [f"{PROJECT}.billing"]

    app = make_app()
    app.autodiscover(packages)
    assert asked == []
    app.load_tasks()
    assert asked == ["now"] and "billing.add_fee" in app.registry.tasks


def test_a_module_that_fails_to_import_is_named_with_its_cause(make_app: MakeApp) -> None:
    app = make_app(include=[f"{PROJECT}.billing.tasks", f"{PROJECT}.broken.tasks"])
    with pytest.raises(ConfigurationError, match=(
            r"App\(include=\.\.\.\): cannot import tasks module 'tests.apps.discovery.broken.tasks': "
            r"ModuleNotFoundError: No module named 'pgtasks_missing_dependency'")) as caught:
        app.load_tasks()
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
    assert "billing.charge" in app.registry.tasks  # the module before it was loaded
    with pytest.raises(ConfigurationError, match=r"broken.tasks"):  # still pending: it fails again, not silently
        app.load_tasks()


def test_autodiscover_names_a_package_that_does_not_exist(make_app: MakeApp) -> None:
    app = make_app()
    app.autodiscover([f"{PROJECT}.billing", f"{PROJECT}.nonexistent"])
    with pytest.raises(ConfigurationError, match=(r"app\.autodiscover\(\.\.\.\): cannot import tasks module "
                                                  r"'tests.apps.discovery.nonexistent': ModuleNotFoundError")):
        app.load_tasks()


def test_bad_arguments_to_include_and_autodiscover_say_what_is_expected(make_app: MakeApp) -> None:
    with pytest.raises(ConfigurationError, match=r"include='pkg.tasks': expected a list of module names"):
        make_app(include="pkg.tasks")
    app = make_app()
    with pytest.raises(ConfigurationError, match=r"related_name='my tasks'"):
        app.autodiscover(["pkg"], related_name="my tasks")
    app.autodiscover("tests.apps")  # a str is an iterable of strings, but not what anyone means
    with pytest.raises(ConfigurationError, match=r"packages='tests.apps': expected a list of package names"):
        app.load_tasks()


def test_a_name_registered_twice_is_a_duplicate_task_error_naming_both(make_app: MakeApp) -> None:
    app = make_app(include=[f"{PROJECT}.billing.tasks", f"{PROJECT}.dupe.tasks"])
    with pytest.raises(DuplicateTaskError, match=(
            r"'billing.charge' is already registered \(function tests.apps.discovery.billing.tasks.charge; "
            r"this one is tests.apps.discovery.dupe.tasks.charge_again\)")):
        app.load_tasks()
    other = make_app()

    @other.task(name="billing.add_fee")
    def mine(x: int) -> int:
        return x

    with pytest.raises(DuplicateTaskError, match=r"'billing.add_fee' is already registered"):
        other.add_blueprint(billing.tasks)


def test_a_blueprints_tasks_enqueue_through_the_app_and_its_worker_runs_them(
        make_app: MakeApp, conn: psycopg.Connection[Any]) -> None:
    app = make_app(include=[f"{PROJECT}.billing.tasks"])

    @app.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    charged = billing.charge.delay(3, cents=250)  # the module-level task finds the App by itself
    urgent = billing.urgent_charge.delay(4, 100)  # made by configure() at import, before any App existed
    workflow = chain(double.s(5), billing.add_fee.s(fee=2), double.s()).delay()
    bulk = app.enqueue_many([billing.add_fee.s(1), double.s(1)])
    rows = {job["id"]: job for job in jobs(conn, app.schema)}
    assert (rows[charged.id]["queue"], rows[urgent.id]["priority"]) == ("billing", 5)
    drain(app, queues=["default", "billing"])
    assert charged.wait(30) == {"customer_id": 3, "cents": 250, "at": None}
    assert urgent.wait(30)["customer_id"] == 4
    assert workflow.wait(30) == 24
    assert [ref.wait(30) for ref in bulk] == [31, 2]
    assert billing.add_fee(1, fee=1) == 2  # calling it runs the function inline


def test_each_app_has_its_own_tasks_and_the_blueprint_enqueues_through_the_last_one(
        make_app: MakeApp, database_url: str, conn: psycopg.Connection[Any]) -> None:
    first = make_app()
    first.add_blueprint(billing.tasks)
    second = App(database_url, schema=f"pgt_{uuid.uuid4().hex[:12]}")
    try:
        second.migrate()
        second.add_blueprint(billing.tasks)
        assert first.tasks["billing.total"] is not second.tasks["billing.total"]
        assert first.tasks["billing.total"].app is first and second.tasks["billing.total"].app is second
        assert billing.total.app is second
        ref = billing.total.delay([1, 2])
        assert jobs(conn, first.schema) == [] and [j["id"] for j in jobs(conn, second.schema)] == [ref.id]
        # Each App enqueues explicitly through itself, whichever added the blueprint last.
        mine = first.send_task("billing.total", args=[[3]])
        first.enqueue_many([first.tasks["billing.total"].s([4])])
        assert [j["id"] for j in jobs(conn, first.schema)][:1] == [mine.id] and len(jobs(conn, first.schema)) == 2
        first.add_blueprint(billing.tasks)  # adding again: nothing registered twice, and it is the last one
        assert billing.total.app is first
    finally:
        second.close()
        conn.execute(f'DROP SCHEMA IF EXISTS "{second.schema}" CASCADE')


def test_an_app_created_later_becomes_the_one_the_blueprint_enqueues_through(make_app: MakeApp) -> None:
    older = make_app()
    older.add_blueprint(billing.tasks)
    newer = make_app(include=[f"{PROJECT}.billing.tasks"])  # imported already: added at App()
    assert billing.add_fee.app is newer


@pytest.mark.usefixtures("unimported")
def test_a_blueprint_task_used_first_asks_the_apps_with_modules_to_import_theirs(
        make_app: MakeApp, conn: psycopg.Connection[Any]) -> None:
    # A web process: the App module names the tasks module; a view imports the module and enqueues.
    app = make_app(include=[LAZY])
    module = importlib.import_module(LAZY)
    assert app.registry.tasks == {}
    ref = module.echo.delay("hello")
    assert "lazy.echo" in app.registry.tasks
    assert [job["id"] for job in jobs(conn, app.schema)] == [ref.id]


def test_a_blueprint_no_app_added_says_how_to_add_it(make_app: MakeApp) -> None:
    bp = Blueprint()

    @bp.task
    def lonely(x: int) -> int:
        return x

    assert lonely.name == f"{__name__}.test_a_blueprint_no_app_added_says_how_to_add_it.<locals>.lonely"
    assert lonely(2) == 2
    assert "lonely" in repr(bp) and isinstance(lonely, BlueprintTask)
    for use in (lambda: lonely.delay(1), lambda: lonely.s(1), lambda: lonely.configure(queue="x").delay(1)):
        with pytest.raises(ConfigurationError, match=r"declared on a Blueprint that no App has added yet.*include="):
            use()
    app = make_app()
    app.add_blueprint(bp)

    @bp.task(name="late", queue="late")
    def late() -> None:
        """Declared after the blueprint was added: registered on that App at once."""

    assert app.registry.tasks["late"].config.queue == "late" and lonely.app is app
    with pytest.raises(ConfigurationError, match=r"expected a pgtasks.Blueprint"):
        app.add_blueprint(object())  # type: ignore[arg-type]


def test_blueprint_task_options_are_validated_at_decoration(make_app: MakeApp) -> None:
    bp = Blueprint()
    with pytest.raises(ConfigurationError, match=r"priority="):
        bp.task(priority=10**9)
    with pytest.raises(ConfigurationError, match=r"already declares a task named 'one'"):
        bp.task(name="one")(lambda: None)
        bp.task(name="one")(lambda: None)
    with pytest.raises(ConfigurationError, match=r"apply @bp.task once"):
        bp.task(bp.tasks["one"])


def test_blueprint_task_options_are_the_same_as_app_tasks() -> None:
    """TaskOptions (the typed options of @bp.task) must follow every option TaskConfig.create takes."""
    created = {name for name, param in inspect.signature(TaskConfig.create).parameters.items()
               if param.kind is inspect.Parameter.KEYWORD_ONLY}
    assert TaskOptions.__required_keys__ | TaskOptions.__optional_keys__ == created
    app_task = {name for name, param in inspect.signature(App.task).parameters.items()
                if param.kind is inspect.Parameter.KEYWORD_ONLY} - {"name"}
    assert app_task == created


def test_a_schedule_of_a_blueprint_task_is_the_apps_own(make_app: MakeApp) -> None:
    app = make_app()
    assert app.periodic(every=60, args=[[1, 2]])(billing.total) is billing.total  # adds the blueprint too
    schedule = app.schedules["billing.total"]
    assert schedule.task is app.registry.tasks["billing.total"]
    assert schedule.task.app is app


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgtasks", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)


def test_a_worker_started_with_celerys_spellings_runs_tasks_its_app_module_does_not_import(
        database_url: str, schema: str, env: dict[str, str], conn: psycopg.Connection[Any]) -> None:
    producer = App(database_url, schema=schema)  # defines no task: it enqueues by name
    try:
        producer.migrate()
        charged = producer.send_task("billing.charge", args=[1, 99], queue="billing")
        shipped = producer.send_task("shipping.ship", args=[5], queue="shipping")
        quiet = run_cli(env, "-A", f"{PROJECT}.app", "worker", "-Q", "billing", "-l", "warning", "--burst",
                        "--poll-interval", "0.05")
        assert quiet.returncode == 0, quiet.stderr
        assert " INFO " not in quiet.stderr  # -l warning took effect
        assert charged.wait(30) == {"customer_id": 1, "cents": 99, "at": None}
        assert shipped.state() == "available"  # -Q billing: shipping is not served
        done = run_cli(env, "-A", f"{PROJECT}.app", "worker", "-Q", "shipping", "-l", "info", "--burst",
                       "--poll-interval", "0.05")
        assert done.returncode == 0, done.stderr
        # The App module imports no tasks module: the worker loaded them, from include= and autodiscover().
        assert ("app.tasks_loaded modules=tests.apps.discovery.shipping.tasks,tests.apps.discovery.billing.tasks "
                "tasks=6") in done.stderr
        assert shipped.wait(30) == "shipped 5"
    finally:
        producer.close()


def test_the_cli_reports_a_tasks_module_that_fails_to_import(env: dict[str, str]) -> None:
    done = run_cli(env, "-A", f"{PROJECT}.broken_app", "worker", "--burst")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: app.autodiscover(...): cannot import tasks module 'tests.apps.discovery.broken.tasks': "
        "ModuleNotFoundError: No module named 'pgtasks_missing_dependency'")


def test_celery_spellings_are_aliases_of_the_long_options() -> None:
    worker = main.commands["worker"]
    params = {param.name: param.opts for param in worker.params}
    assert "-Q" in params["queues"] and "--queues" in params["queues"]
    assert "-l" in params["log_level"]
    assert "-A" in next(param.opts for param in main.params if param.name == "app_path")
    result = CliRunner().invoke(main, ["-A", "tests.apps.no_such_module", "worker", "--burst"])
    assert result.exit_code == 2 and "--app tests.apps.no_such_module: cannot import module" in result.output
    result = CliRunner().invoke(main, ["worker", "-l", "loud"])
    assert result.exit_code == 2 and "'loud' is not one of" in result.output
