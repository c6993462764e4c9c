"""The system of record: SQLAlchemy 2 models, session factory and Alembic migrations."""

from models.session import make_engine, make_session_factory
from models.tables import Base

__all__ = ["Base", "make_engine", "make_session_factory", "migrate"]


def migrate(url: str, revision: str = "head") -> None:
    """Apply the Alembic migrations to ``url`` (what ``riskctl db upgrade`` runs)."""
    from pathlib import Path

    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, revision)
