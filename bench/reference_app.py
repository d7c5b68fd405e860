"""The reference `make bench` measures DevLab against (side B): hand-written Flask.

It does what DevLab does on GET /notes, POST /notes and GET /me, on the same tables, with the
same tokens, and as little code as Flask, Flask-SQLAlchemy and Flask-JWT-Extended allow: no
marshmallow, no hooks, no audit hook. The work per request is the same: the token's family is
checked against the database with its user's current state, a page of notes comes with its
exact count, and a new note commits with its audit row in one transaction.

    DATABASE_URL=... JWT_SECRET_KEY=... gunicorn -c gunicorn.conf.py bench.reference_app:app
"""

import os
from datetime import UTC, datetime

from flask import Flask, request
from flask_jwt_extended import JWTManager, get_jwt, jwt_required
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import func, insert, select

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
app.config["JWT_SECRET_KEY"] = os.environ["JWT_SECRET_KEY"]
db = SQLAlchemy(app)
JWTManager(app)

with app.app_context():
    db.reflect()
users, notes, families, audit = (
    db.metadata.tables[name] for name in ("users", "notes", "token_families", "audit_logs")
)


def token_user():
    """The token's user as a row, if its family is live and the user active; else None."""
    claims = get_jwt()
    row = db.session.execute(
        select(users, families.c.revoked_at)
        .join(families, families.c.user_id == users.c.id)
        .where(families.c.id == claims["fam"])
    ).first()
    if row is None or row.revoked_at is not None or not row.is_active:
        return None
    return row if str(row.id) == claims["sub"] else None


def note_json(row) -> dict:
    return {
        "id": row.id,
        "text": row.text,
        "owner_id": row.owner_id,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


@app.get("/me")
@jwt_required()
def me():
    user = token_user()
    if user is None:
        return {"message": "Invalid token."}, 401
    return {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "is_admin": user.is_admin,
        "is_active": user.is_active,
        "created_at": user.created_at.isoformat(),
    }


@app.get("/notes")
@jwt_required()
def list_notes():
    user = token_user()
    if user is None:
        return {"message": "Invalid token."}, 401
    page = int(request.args.get("page", 1))
    page_size = int(request.args.get("page_size", 20))
    rows = db.session.execute(
        select(notes, func.count().over().label("total"))
        .where(notes.c.owner_id == user.id)
        .order_by(notes.c.created_at.desc(), notes.c.id.desc())
        .limit(page_size)
        .offset((page - 1) * page_size)
    ).all()
    total = rows[0].total if rows else 0
    return {
        "notes": [note_json(row) for row in rows],
        "total": total,
        "page": page,
        "page_size": page_size,
        "pages": -(-total // page_size),
    }


@app.post("/notes")
@jwt_required()
def write_note():
    user = token_user()
    if user is None:
        return {"message": "Invalid token."}, 401
    body = request.get_json(silent=True)
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not 1 <= len(text) <= 10_000:
        return {"message": "Invalid input."}, 422
    now = datetime.now(UTC)
    note = db.session.execute(
        insert(notes)
        .values(owner_id=user.id, text=text, created_at=now, updated_at=now)
        .returning(notes)
    ).one()
    db.session.execute(
        insert(audit).values(
            action="note_created",
            detail=f"note {note.id}",
            ip=request.remote_addr,
            user_id=user.id,
            method="POST",
            path="/notes",
            status_code=201,
            created_at=now,
        )
    )
    db.session.commit()
    return note_json(note), 201
