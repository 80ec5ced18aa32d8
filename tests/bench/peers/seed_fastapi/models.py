"""models.py - the seed's models, mapped onto Sluice's schema
(workers/db/migrations/001_initial.sql) so that both systems run on the same tables."""
import datetime

from sqlalchemy import (BigInteger, Column, DateTime, ForeignKey, Integer, LargeBinary,
                        String, Text)
from sqlalchemy.orm import declarative_base

Base = declarative_base()


def utcnow():
    return datetime.datetime.utcnow()


class User(Base):
    __tablename__ = "users"
    id = Column(BigInteger, primary_key=True, autoincrement=True)
    username = Column(String(64), unique=True, nullable=False)
    password_hash = Column(String(255), nullable=False)
    clip_seq = Column(BigInteger, nullable=False, default=0)
    created_at = Column(DateTime, nullable=False, default=utcnow)


class Device(Base):
    __tablename__ = "devices"
    id = Column(BigInteger, primary_key=True, autoincrement=True)
    user_id = Column(BigInteger, ForeignKey("users.id"), nullable=False)
    name = Column(String(128), nullable=False)
    token_hash = Column(LargeBinary(32), nullable=False, unique=True)
    is_active = Column(Integer, nullable=False, default=0)
    last_seen_at = Column(DateTime, nullable=True)
    revoked_at = Column(DateTime, nullable=True)
    created_at = Column(DateTime, nullable=False, default=utcnow)


class ClipboardItem(Base):
    __tablename__ = "clipboard_items"
    id = Column(BigInteger, primary_key=True, autoincrement=True)
    user_id = Column(BigInteger, ForeignKey("users.id"), nullable=False)
    seq = Column(BigInteger, nullable=False)
    content = Column(Text, nullable=False)
    content_type = Column(String(255), nullable=False, default="text/plain")
    source_device_id = Column(BigInteger, nullable=True)
    created_at = Column(DateTime, nullable=False, default=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"
    id = Column(BigInteger, primary_key=True, autoincrement=True)
    user_id = Column(BigInteger, ForeignKey("users.id"), nullable=False)
    title = Column(String(255), nullable=True)
    created_at = Column(DateTime, nullable=False, default=utcnow)


class Message(Base):
    __tablename__ = "messages"
    id = Column(BigInteger, primary_key=True, autoincrement=True)
    conversation_id = Column(BigInteger, ForeignKey("conversations.id"), nullable=False)
    user_id = Column(BigInteger, nullable=False)
    role = Column(String(16), nullable=False)
    content = Column(Text, nullable=False)
    status = Column(String(16), nullable=False)
    error = Column(Text, nullable=True)
    created_at = Column(DateTime, nullable=False, default=utcnow)
    updated_at = Column(DateTime, nullable=False, default=utcnow, onupdate=utcnow)
