"""DevLab.ensure_sync keeps Flask's answer per function (devlab/__init__.py)."""

import gc

import pytest
from flask import Flask


def test_a_sync_function_or_method_is_called_as_it_is_and_its_answer_kept(app):
    def view():
        return "answered"

    class Handler:
        def method(self):
            return "answered"

    assert app.ensure_sync(view) is view
    bound = Handler().method
    assert app.ensure_sync(bound) is bound
    assert Handler.method in app._coroutine_functions
    assert app.ensure_sync(Handler().method)() == "answered"


def test_a_coroutine_function_gets_what_flask_gives_it(app):
    async def view():
        return "answered"

    with pytest.raises(RuntimeError) as ours:
        app.ensure_sync(view)
    with pytest.raises(RuntimeError) as flasks:
        Flask(__name__).ensure_sync(view)
    assert str(ours.value) == str(flasks.value)


def test_a_function_made_for_one_request_is_not_kept(app):
    def made_for_one_request():
        return "answered"

    def kept() -> list[str]:
        return [function.__name__ for function in app._coroutine_functions]

    app.ensure_sync(made_for_one_request)
    assert "made_for_one_request" in kept()
    del made_for_one_request
    gc.collect()
    assert "made_for_one_request" not in kept()
