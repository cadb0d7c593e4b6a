"""Alembic environment: runs on the connection that ``Store.migrate`` hands over."""

from alembic import context
from sqlalchemy import create_engine

from clinalign.store import Base

config = context.config
connection = config.attributes.get("connection")

if connection is None:  # `alembic` command line during development: needs sqlalchemy.url
    connection = create_engine(config.get_main_option("sqlalchemy.url")).connect()

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
