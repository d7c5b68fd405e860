"""Swagger UI on /docs, used as a person would in a real browser: Authorize with a username and
a password, then "Try it out" on the notes, reading the answers off the page."""

import json

from playwright.sync_api import Locator, Page, expect

from tests.conftest import PASSWORD


def open_authorize_dialog(page: Page) -> Locator:
    page.locator(".auth-wrapper").get_by_role("button", name="Authorize").click()
    return page.locator(".auth-container").filter(has_text="passwordLogin")


def log_in(login_form: Locator, username: str) -> None:
    login_form.get_by_label("username:").fill(username)
    login_form.get_by_label("password:").fill(PASSWORD)
    login_form.get_by_role("button", name="Apply given OAuth2 credentials").click()
    expect(login_form.get_by_role("heading", name="Authorized")).to_be_visible()


def close_authorize_dialog(page: Page) -> None:
    page.get_by_role("button", name="Close").last.click()
    expect(page.locator(".dialog-ux")).to_have_count(0)


def try_it_out(page: Page, operation_id: str, body: dict | None = None) -> Locator:
    """Open an operation, run it with `body` as its JSON, and return its answer's table row."""
    operation = page.locator(f"#operations-{operation_id}")
    operation.locator(".opblock-summary-control").click()
    operation.get_by_role("button", name="Try it out").click()
    if body is not None:
        operation.locator("textarea.body-param__text").fill(json.dumps(body))
    operation.get_by_role("button", name="Execute").click()
    return operation.locator(".live-responses-table .response")


def answer_body(answer: Locator) -> dict:
    return json.loads(answer.locator(".response-col_description pre code").first.inner_text())


def test_authorize_then_write_and_list_notes_in_swagger_ui_without_leaving_the_machine(
    docs, accounts
):
    page, traffic = docs
    accounts.signup("alice")

    login_form = open_authorize_dialog(page)
    for name in ("clientId", "clientSecret", "passwordType"):
        field = login_form.locator(f'[data-name="{name}"]')
        expect(field).to_have_count(1)
        expect(field).to_be_hidden()
    log_in(login_form, "alice")
    shown_secret = login_form.locator("label", has_text="client_secret:")
    expect(shown_secret).to_have_count(1)
    expect(shown_secret).to_be_hidden()
    close_authorize_dialog(page)
    written = try_it_out(page, "notes-post_notes", {"text": "Written in Swagger UI"})
    expect(written.locator(".response-col_status")).to_have_text("201")
    note = answer_body(written)
    listed = try_it_out(page, "notes-get_notes")
    expect(listed.locator(".response-col_status")).to_have_text("200")
    notes = answer_body(listed)["notes"]

    assert note["text"] == "Written in Swagger UI"
    assert [(n["id"], n["text"]) for n in notes] == [(note["id"], "Written in Swagger UI")]
    assert traffic.elsewhere == []
    assert {
        "GET /docs",
        "GET /docs/assets/swagger-ui-bundle.js",
        "GET /openapi.json",
        "POST /login",
        "POST /notes",
        "GET /notes",
    } <= set(traffic.to_devlab)
    assert traffic.console_problems == []


def test_the_authorization_outlives_a_reload_of_the_docs(docs, accounts):
    page, traffic = docs
    accounts.signup("alice")
    log_in(open_authorize_dialog(page), "alice")

    page.reload()
    login_form = open_authorize_dialog(page)
    expect(login_form.get_by_role("heading", name="Authorized")).to_be_visible()
    expect(login_form.locator("code").filter(has_text="alice")).to_be_visible()
    close_authorize_dialog(page)
    listed = try_it_out(page, "notes-get_notes")

    expect(listed.locator(".response-col_status")).to_have_text("200")
    assert answer_body(listed)["notes"] == []
    assert traffic.to_devlab.count("POST /login") == 1
    assert traffic.elsewhere == []
    assert traffic.console_problems == []


def test_a_refused_authorize_shows_devlabs_message_in_the_dialog(docs, accounts):
    page, traffic = docs
    accounts.signup("alice")
    login_form = open_authorize_dialog(page)
    login_form.get_by_label("username:").fill("alice")
    login_form.get_by_label("password:").fill("not the password")

    login_form.get_by_role("button", name="Apply given OAuth2 credentials").click()

    expect(login_form.locator(".errors")).to_contain_text(
        "error: invalid_grant, description: Incorrect username or password."
    )
    expect(login_form.get_by_label("password:")).to_be_editable()
    expect(login_form.get_by_role("heading", name="Authorized")).to_have_count(0)
    assert traffic.elsewhere == []
    # Chromium's own line for any 4xx answer to a fetch; nothing else.
    assert len(traffic.console_problems) == 1, traffic.console_problems
    assert "status of 401" in traffic.console_problems[0]
    assert "/login" in traffic.console_problems[0]
