"""crud.py - the seed's data access functions (plain SQLAlchemy ORM on a Session)."""
import datetime
import hashlib
import os
import secrets

import models


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    dk = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 1000)
    return "pbkdf2$" + salt.hex() + "$" + dk.hex()


def verify_password(password: str, stored: str) -> bool:
    try:
        _, salt, dk = stored.split("$")
    except ValueError:
        return False
    return hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), 1000).hex() == dk


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def get_user_by_username(db, username):
    return db.query(models.User).filter(models.User.username == username).first()


def create_user(db, username, password):
    user = models.User(username=username, password_hash=hash_password(password), clip_seq=0)
    db.add(user)
    db.commit()
    db.refresh(user)
    return user


def create_device(db, user_id, name):
    token = secrets.token_urlsafe(32)
    device = models.Device(user_id=user_id, name=name, token_hash=token_hash(token), is_active=0)
    db.add(device)
    db.commit()
    db.refresh(device)
    return device, token


def get_device_by_token(db, token):
    return db.query(models.Device).filter(models.Device.token_hash == token_hash(token),
                                          models.Device.revoked_at.is_(None)).first()


def activate_device(db, device_id):
    device = db.query(models.Device).filter(models.Device.id == device_id).first()
    if device:
        device.is_active = 1
        db.commit()
    return device


def create_clipboard_item(db, user_id, device_id, content, content_type):
    user = db.query(models.User).filter(models.User.id == user_id).with_for_update().first()
    user.clip_seq = user.clip_seq + 1
    item = models.ClipboardItem(user_id=user_id, seq=user.clip_seq, content=content,
                                content_type=content_type, source_device_id=device_id)
    db.add(item)
    db.commit()
    db.refresh(item)
    return item


def get_clipboard_items(db, user_id, after=0, limit=100):
    return (db.query(models.ClipboardItem)
            .filter(models.ClipboardItem.user_id == user_id, models.ClipboardItem.seq > after)
            .order_by(models.ClipboardItem.seq).limit(limit).all())


def latest_seq(db, user_id):
    item = (db.query(models.ClipboardItem).filter(models.ClipboardItem.user_id == user_id)
            .order_by(models.ClipboardItem.seq.desc()).first())
    return item.seq if item else 0


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000) if t else None


def item_dict(item):
    return {"id": str(item.id), "seq": item.seq, "content": item.content,
            "content_type": item.content_type,
            "source_device_id": str(item.source_device_id) if item.source_device_id else None,
            "created_at": iso(item.created_at)}


def message_dict(m):
    return {"id": str(m.id), "role": m.role, "content": m.content, "status": m.status,
            "created_at": iso(m.created_at)}
