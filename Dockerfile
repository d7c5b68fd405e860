# syntax=docker/dockerfile:1
# Two stages: wheels are built (or fetched) in the builder, which has what a build needs;
# the runtime stage installs them without a compiler, a cache or the builder's layers.
FROM python:3.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /build
COPY requirements.txt ./
RUN pip wheel --wheel-dir /wheels -r requirements.txt


FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# The app runs unprivileged: the code stays root-owned, and devlab can write only instance/
# (Flask's instance folder) and its home. A numeric id, so `USER` needs no name lookup.
RUN groupadd --system --gid 10001 devlab \
    && useradd --system --uid 10001 --gid devlab --no-log-init --create-home \
        --home-dir /home/devlab --shell /usr/sbin/nologin devlab \
    && mkdir /app/instance \
    && chown devlab:devlab /app/instance

# Dependencies first, so a code change doesn't reinstall them; only the builder's wheels.
COPY requirements.txt ./
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels -r requirements.txt

COPY config.py wsgi.py gunicorn.conf.py docker-entrypoint.sh ./
COPY devlab/ devlab/
COPY migrations/ migrations/

USER 10001:10001

# HOME set here too: Docker derives it from a numeric USER only when passwd resolves it.
ENV HOME=/home/devlab \
    DEVLAB_ENV=production \
    HOST=0.0.0.0 \
    PORT=8005 \
    FLASK_APP=wsgi \
    LOG_FORMAT=json

EXPOSE 8005

# Slim images have no curl; urlopen raises (exit 1) on a refused connection or a non-2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8005')}/health\", timeout=4)"]

# Run through sh so the script works even where a checkout lost its executable bit.
ENTRYPOINT ["/bin/sh", "/app/docker-entrypoint.sh"]
CMD ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
