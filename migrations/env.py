import logging
import time
from logging.config import fileConfig

from alembic import context
from flask import current_app
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from devlab.adoption import adopting_fastapi_tables

# The advisory lock that serializes upgrades (the audit chain's is 7262836001).
MIGRATION_LOCK = 7262836002

# this is the Alembic Config object, which provides
# access to the values within the .ini file in use.
config = context.config

# Interpret the config file for Python logging, unless the app writes JSON lines
# (LOG_FORMAT=json, devlab/logs.py): then alembic's records are JSON lines too.
if current_app.config["LOG_FORMAT"] != "json":
    fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")


def get_engine():
    """The app's engine, or one of the owner's when MIGRATION_DATABASE_URL names another."""
    owner_url = current_app.config["MIGRATION_DATABASE_URL"]
    if not owner_url:
        return current_app.extensions["migrate"].db.engine
    return create_engine(owner_url, poolclass=NullPool)


def get_engine_url():
    try:
        return get_engine().url.render_as_string(hide_password=False).replace("%", "%%")
    except AttributeError:
        return str(get_engine().url).replace("%", "%%")


# add your model's MetaData object here
# for 'autogenerate' support
# from myapp import mymodel
# target_metadata = mymodel.Base.metadata
config.set_main_option("sqlalchemy.url", get_engine_url())
target_db = current_app.extensions["migrate"].db

# other values from the config, defined by the needs of env.py,
# can be acquired:
# my_important_option = config.get_main_option("my_important_option")
# ... etc.


def get_metadata():
    if hasattr(target_db, "metadatas"):
        return target_db.metadatas[None]
    return target_db.metadata


def run_migrations_offline():
    """Run migrations in 'offline' mode.

    This configures the context with just a URL
    and not an Engine, though an Engine is acceptable
    here as well.  By skipping the Engine creation
    we don't even need a DBAPI to be available.

    Calls to context.execute() here emit the given string to the
    script output.

    """
    url = config.get_main_option("sqlalchemy.url")
    context.configure(url=url, target_metadata=get_metadata(), literal_binds=True)

    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    """Run migrations in 'online' mode.

    In this scenario we need to create an Engine
    and associate a connection with the context.

    """

    # this callback is used to prevent an auto-migration from being generated
    # when there are no changes to the schema
    # reference: http://alembic.zzzcomputing.com/en/latest/cookbook.html
    def process_revision_directives(context, revision, directives):
        if getattr(config.cmd_opts, "autogenerate", False):
            script = directives[0]
            if script.upgrade_ops.is_empty():
                directives[:] = []
                logger.info("No changes in schema detected.")

    conf_args = current_app.extensions["migrate"].configure_args
    if conf_args.get("process_revision_directives") is None:
        conf_args["process_revision_directives"] = process_revision_directives

    connectable = get_engine()

    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=get_metadata(), **conf_args)
        # Each Alembic command hands its work to env.py as `fn`. Wrapped, an upgrade that would
        # build revision 0001 where the FastAPI DevLab's tables are adopts them instead, in the
        # upgrade's one transaction (devlab/adoption.py); other commands pass through.
        work = context.get_context().opts["fn"]
        context.configure(
            connection=connection,
            target_metadata=get_metadata(),
            fn=adopting_fastapi_tables(work),
            **conf_args,
        )

        # Instances that start together (replicas, a deploy) migrate one at a time: whoever
        # waited for the lock then reads the revision the first one left, and finds nothing to
        # do. A session's lock, not a transaction's: a revision that builds indexes
        # CONCURRENTLY (0005) commits midway. Migrations connect straight to PostgreSQL
        # (MIGRATION_DATABASE_URL), never through PgBouncer, so the session is theirs.
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            _take_the_migration_lock(connection)
        try:
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if postgres:
                connection.rollback()  # a failed upgrade's transaction, if any is left
                connection.execute(text(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
                connection.commit()


def _take_the_migration_lock(connection) -> None:
    """Wait for the migration lock without holding a transaction open meanwhile: a waiting
    statement keeps a snapshot, which the holder's CREATE INDEX CONCURRENTLY would wait for
    in turn (a deadlock). So try, and between tries hold nothing."""
    while True:
        taken = connection.execute(text(f"SELECT pg_try_advisory_lock({MIGRATION_LOCK})")).scalar()
        connection.commit()
        if taken:
            return
        logger.info("Another instance is migrating; waiting for it.")
        time.sleep(0.5)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
