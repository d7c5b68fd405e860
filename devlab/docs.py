"""Swagger UI's files, served from the installed package so /docs works offline."""

from flask import Flask, send_from_directory
from swagger_ui_bundle import swagger_ui_path


def swagger_ui_asset(filename: str):
    return send_from_directory(swagger_ui_path, filename, max_age=86400)


def favicon():
    return send_from_directory(swagger_ui_path, "favicon-32x32.png", max_age=86400)


def init_app(app: Flask) -> None:
    app.add_url_rule("/docs/assets/<path:filename>", "swagger_ui_asset", swagger_ui_asset)
    # Browsers ask for it on every page of the docs; a 404 there is noise in their console.
    app.add_url_rule("/favicon.ico", "favicon", favicon)
