"""Side C of `make bench`: the seed's own stack doing DevLab's work, FastAPI on uvicorn.

As the FastAPI service DevLab replaces was built: sync endpoints with a SQLAlchemy session per
request, an HTTPBearer scheme and a PyJWT check, Pydantic models for what goes in and out. It
does the same database work as DevLab and bench/reference_app.py. FastAPI and uvicorn live in
the bench's own environment (bench/requirements.txt), never in requirements.txt.

    DATABASE_URL=... JWT_SECRET_KEY=... uvicorn --workers 2 bench.fastapi_reference:app
"""

import os
from datetime import UTC, datetime

import jwt
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy import MetaData, create_engine, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

engine = create_engine(os.environ["DATABASE_URL"], pool_size=5, max_overflow=10)
metadata = MetaData()
metadata.reflect(engine, only=["users", "notes", "token_families", "audit_logs"])
users, notes, families, audit = (
    metadata.tables[name] for name in ("users", "notes", "token_families", "audit_logs")
)
SessionLocal = sessionmaker(bind=engine)
SECRET = os.environ["JWT_SECRET_KEY"]
bearer = HTTPBearer()
app = FastAPI()


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


class NoteOut(BaseModel):
    id: int
    text: str
    owner_id: int
    created_at: datetime
    updated_at: datetime


class NotePage(BaseModel):
    notes: list[NoteOut]
    total: int
    page: int
    page_size: int
    pages: int


class UserOut(BaseModel):
    id: int
    username: str
    email: str
    is_admin: bool
    is_active: bool
    created_at: datetime


def session():
    with SessionLocal() as db:
        yield db


def token_user(
    credentials: HTTPAuthorizationCredentials = Depends(bearer),  # noqa: B008 (FastAPI's way)
    db: Session = Depends(session),  # noqa: B008
):
    try:
        claims = jwt.decode(credentials.credentials, SECRET, algorithms=["HS256"])
    except jwt.PyJWTError:
        raise HTTPException(401, "Invalid token.") from None
    if claims.get("type") != "access":
        raise HTTPException(401, "Invalid token.")
    row = db.execute(
        select(users, families.c.revoked_at)
        .join(families, families.c.user_id == users.c.id)
        .where(families.c.id == claims["fam"])
    ).first()
    if row is None or row.revoked_at is not None or not row.is_active:
        raise HTTPException(401, "Invalid token.")
    if str(row.id) != claims["sub"]:
        raise HTTPException(401, "Invalid token.")
    return row


@app.get("/me", response_model=UserOut)
def me(user=Depends(token_user)):  # noqa: B008
    return UserOut.model_validate(user._mapping)


@app.get("/notes", response_model=NotePage)
def list_notes(
    page: int = 1,
    page_size: int = 20,
    user=Depends(token_user),  # noqa: B008
    db: Session = Depends(session),  # noqa: B008
):
    rows = db.execute(
        select(notes, func.count().over().label("total"))
        .where(notes.c.owner_id == user.id)
        .order_by(notes.c.created_at.desc(), notes.c.id.desc())
        .limit(page_size)
        .offset((page - 1) * page_size)
    ).all()
    total = rows[0].total if rows else 0
    return NotePage(
        notes=[NoteOut.model_validate(row._mapping) for row in rows],
        total=total,
        page=page,
        page_size=page_size,
        pages=-(-total // page_size),
    )


@app.post("/notes", response_model=NoteOut, status_code=201)
def write_note(
    body: NoteIn,
    request: Request,
    user=Depends(token_user),  # noqa: B008
    db: Session = Depends(session),  # noqa: B008
):
    now = datetime.now(UTC)
    note = db.execute(
        insert(notes)
        .values(owner_id=user.id, text=body.text, created_at=now, updated_at=now)
        .returning(notes)
    ).one()
    db.execute(
        insert(audit).values(
            action="note_created",
            detail=f"note {note.id}",
            ip=request.client.host if request.client else None,
            user_id=user.id,
            method="POST",
            path="/notes",
            status_code=201,
            created_at=now,
        )
    )
    db.commit()
    return NoteOut.model_validate(note._mapping)
