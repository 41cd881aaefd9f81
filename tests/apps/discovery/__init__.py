"""A project laid out as a Celery project is: tasks in the `tasks` module of several packages, an App
module (app.py) that imports none of them. tests/test_discovery.py and tests/test_send_task.py use it."""
