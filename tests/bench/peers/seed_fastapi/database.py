"""database.py - engines, sessions and pool status, as the two seed applications had
them (see ../../../../../shared/seeds/: the clipboard app's database.py and the chat
app's server/models/database.py), before and after their fixes.

SEED_MODE=buggy  the code before the fixes
SEED_MODE=fixed  the code after them
Database settings come from the same SLUICE_DB_* variables the DB workers read.
"""
import logging
import os

from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

MODE = os.environ.get("SEED_MODE", "fixed")
if MODE not in ("buggy", "fixed"):
    raise SystemExit("SEED_MODE must be buggy or fixed")

SQLALCHEMY_DATABASE_URL = "mysql+pymysql://%s:%s@%s:%s/%s?charset=utf8mb4" % (
    os.environ.get("SLUICE_DB_USER", "sluice"),
    os.environ.get("SLUICE_DB_PASSWORD", "sluice"),
    os.environ.get("SLUICE_DB_HOST", "127.0.0.1"),
    os.environ.get("SLUICE_DB_PORT", "3307"),
    os.environ.get("SLUICE_DB_NAME", "sluice"),
)

# ---- the clipboard/sync application (post-mortem 000) -------------------------------
if MODE == "buggy":
    engine = create_engine(SQLALCHEMY_DATABASE_URL,
                           pool_recycle=1800,      # 30分钟
                           pool_pre_ping=True,
                           pool_size=20,
                           max_overflow=5,
                           pool_timeout=3,
                           pool_reset_on_return=True,
                           pool_use_lifo=True)
    SessionLocal = sessionmaker(autocommit=False, autoflush=False, bind=engine)
else:
    engine = create_engine(SQLALCHEMY_DATABASE_URL,
                           pool_recycle=3600,
                           pool_pre_ping=True,
                           pool_size=20,
                           max_overflow=10,
                           pool_timeout=30,
                           pool_reset_on_return='rollback',
                           pool_use_lifo=True)
    SessionLocal = sessionmaker(autocommit=False, autoflush=False,
                                bind=engine, expire_on_commit=False)


def get_db():
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()


# ---- the chat application (post-mortem 003: server/models/database.py) ---------------
# Before its fix the chat app used create_engine's defaults: pool_size 5, max_overflow
# 10, pool_timeout 30 (the error it quotes: "QueuePool limit of size 5 overflow 10
# reached, connection timed out, timeout 30.00").
if MODE == "buggy":
    chat_engine = create_engine(SQLALCHEMY_DATABASE_URL, echo=False)
else:
    chat_engine = create_engine(
        SQLALCHEMY_DATABASE_URL,
        echo=False,
        pool_size=20,
        max_overflow=30,
        pool_timeout=60,
        pool_recycle=3600,
        pool_pre_ping=True,
    )
ChatSessionLocal = sessionmaker(autocommit=False, autoflush=False, bind=chat_engine)


def get_chat_db():
    db = ChatSessionLocal()
    try:
        yield db
    finally:
        db.close()


class DatabaseManager:
    """数据库管理器，提供上下文管理器支持 (the chat app's fix)"""

    def __init__(self):
        self.db = None

    def __enter__(self):
        self.db = ChatSessionLocal()
        return self.db

    def __exit__(self, exc_type, exc_val, exc_tb):
        if self.db:
            try:
                if exc_type is not None:
                    self.db.rollback()
                else:
                    self.db.commit()
            except Exception as e:
                logging.error(f"Error in database transaction: {e}")
                self.db.rollback()
            finally:
                self.db.close()


def check_database_health():
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception as e:
        logging.error(f"database health check failed: {e}")
        return False


def get_connection_pool_status():
    out = []
    for name, eng in (("clipboard", engine), ("chat", chat_engine)):
        pool = eng.pool
        out.append({
            "worker": name,
            "pool_size": pool.size(),
            "max_overflow": pool._max_overflow,
            "checked_out": pool.checkedout(),
            "overflow": pool.overflow(),
            "idle": pool.checkedin(),
            "invalid": 0,
            "timeout": pool.timeout(),
        })
    return out
