"""The web inbox: newest mail first, one page per mail with its links, text and HTML parts.
The HTML part is shown in a sandboxed frame (no scripts, no same-origin access)."""

from __future__ import annotations

import time
from pathlib import Path

from flask import Flask, abort, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from clients.mailbox.store import Store


def create_app(directory: Path) -> Flask:
    app = Flask(__name__)
    store = Store(directory)

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; frame-src 'self'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.template_filter("when")
    def when(ts: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.get("/")
    def inbox() -> str:
        recipient = request.args.get("to", "").strip()
        mails = store.all()
        if recipient:
            mails = [m for m in mails if recipient.lower() in m.to.lower()]
        return render_template("inbox.html", mails=mails, recipient=recipient)

    @app.get("/mail/<mail_id>")
    def read(mail_id: str) -> str:
        mail = store.get(mail_id)
        if mail is None:
            abort(404)
        return render_template("mail.html", mail=mail)

    @app.get("/mail/<mail_id>/html")
    def html_part(mail_id: str) -> Response:
        mail = store.get(mail_id)
        if mail is None or mail.html is None:
            abort(404)
        response = Response(mail.html, mimetype="text/html")
        response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'; " \
            "style-src 'unsafe-inline'; img-src data:"
        return response

    @app.post("/clear")
    def clear() -> Response:
        store.clear()
        return redirect(url_for("inbox"), code=303)  # type: ignore[return-value]

    @app.errorhandler(404)
    def not_found(_error: Exception) -> tuple[str, int]:
        return render_template("missing.html"), 404

    return app
