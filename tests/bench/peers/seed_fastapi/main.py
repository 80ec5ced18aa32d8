"""main.py - the seed applications rebuilt as a benchmark peer for tests/bench/vs-seed.

One FastAPI app serving what the benchmark uses of api.md: users, sessions, clipboard
create/list, /v1/sync/notify (and /sync/notify), chat with an echo provider as SSE,
/health with the pools' status. SEED_MODE=buggy is the code the two post-mortems in
shared/seeds/ describe before their fixes, SEED_MODE=fixed the code after them; the
style (sync SQLAlchemy sessions from Depends(get_db), sync queries inside async
handlers, BackgroundTasks for the notifier, an in-process connection manager) is
the seed's, on purpose: nothing here is improved beyond what the documents say.

Run:  SEED_MODE=buggy SLUICE_DB_PORT=3307 /usr/bin/python3 -m uvicorn main:app \
          --app-dir tests/bench/peers/seed_fastapi --port 8080 [--workers 2]
The tables are Sluice's (workers/db/migrations/001_initial.sql), loaded beforehand.
"""
import asyncio
import datetime
import faulthandler
import json
import logging
import os
import signal
import time
from typing import Optional

from fastapi import (BackgroundTasks, Body, Depends, FastAPI, Header, HTTPException, WebSocket,
                     WebSocketDisconnect)
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import crud
import models
from database import (MODE, DatabaseManager, check_database_health, get_chat_db,
                      get_connection_pool_status, get_db)

logger = logging.getLogger("seed")
faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: every thread's stack, to see a stall
TOKEN_DELAY = float(os.environ.get("SEED_TOKEN_DELAY_MS", "20")) / 1000.0
CHECKPOINT_S = 1.0

app = FastAPI(title="seed (%s)" % MODE)


class JsonWithoutContentType:
    """Compatibility shim, not the seed's: api.md does not check the request's
    Content-Type (the load generators send none, curl -d a form type), while FastAPI reads a JSON body
    only when it is declared. A plain ASGI wrapper, so that nothing else changes
    (BaseHTTPMiddleware would alter how background tasks and streams run)."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            scope = dict(scope)
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope["headers"].append((b"content-type", b"application/json"))
        await self.inner(scope, receive, send)


def J(obj):
    return json.dumps(obj, separators=(",", ":"))


# ---- connection manager: the sockets of this process ---------------------------------
class ConnectionManager:
    def __init__(self):
        self.active_connections = {}  # device_id -> [WebSocket]

    async def connect(self, websocket: WebSocket, device_id: int):
        await websocket.accept()
        self.active_connections.setdefault(device_id, []).append(websocket)

    def disconnect(self, websocket: WebSocket, device_id: int):
        conns = self.active_connections.get(device_id, [])
        if websocket in conns:
            conns.remove(websocket)
        if not conns:
            self.active_connections.pop(device_id, None)

    async def send_to_device(self, device_id: int, message: str):
        for ws in list(self.active_connections.get(device_id, [])):
            try:
                await ws.send_text(message)
            except Exception as e:
                logger.warning("send to device %s failed: %s", device_id, e)


manager = ConnectionManager()


# ---- schemas and auth -------------------------------------------------------------------
class UserCreate(BaseModel):
    username: str
    password: str


class SessionCreate(BaseModel):
    username: str
    password: str
    device_name: str


class ClipboardCreate(BaseModel):
    content: str
    content_type: str = "text/plain"


class ConversationCreate(BaseModel):
    title: Optional[str] = None


class MessageCreate(BaseModel):
    content: str
    stream: bool = True


def _bearer(authorization):
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(status_code=401, detail="unauthorized")
    return authorization[7:]


def get_current_device(authorization: str = Header(None), db: Session = Depends(get_db)):
    device = crud.get_device_by_token(db, _bearer(authorization))
    if device is None:
        raise HTTPException(status_code=401, detail="unauthorized")
    return device


def get_current_chat_device(authorization: str = Header(None),
                            db: Session = Depends(get_chat_db)):
    device = crud.get_device_by_token(db, _bearer(authorization))
    if device is None:
        raise HTTPException(status_code=401, detail="unauthorized")
    return device


# ---- accounts ---------------------------------------------------------------------------
@app.post("/v1/users", status_code=201)
def create_user(body: UserCreate, db: Session = Depends(get_db)):
    if crud.get_user_by_username(db, body.username):
        raise HTTPException(status_code=409, detail="username taken")
    try:
        user = crud.create_user(db, body.username, body.password)
    except IntegrityError:
        raise HTTPException(status_code=409, detail="username taken")
    return {"id": str(user.id), "username": user.username, "created_at": crud.iso(user.created_at)}


@app.post("/v1/sessions", status_code=201)
def create_session(body: SessionCreate, db: Session = Depends(get_db)):
    user = crud.get_user_by_username(db, body.username)
    if not user or not crud.verify_password(body.password, user.password_hash):
        raise HTTPException(status_code=401, detail="unauthorized")
    device, token = crud.create_device(db, user.id, body.device_name)
    return {"user_id": str(device.user_id), "device_id": str(device.id), "token": token}


# ---- clipboard --------------------------------------------------------------------------
async def notify_devices_of_update(user_id: int, source_device_id: int,
                                   item: models.ClipboardItem, db: Session = None):
    if MODE == "buggy":
        # ❌ the request's session, passed in by the endpoint
        devices = db.query(models.Device).filter(models.Device.user_id == user_id,
                                                 models.Device.id != source_device_id,
                                                 models.Device.is_active == 1).all()
    else:
        # ✅ a session of its own
        db = next(get_db())
        try:
            devices = db.query(models.Device).filter(models.Device.user_id == user_id,
                                                     models.Device.id != source_device_id,
                                                     models.Device.is_active == 1).all()
        finally:
            db.close()
    message = J({"type": "clipboard.item", "item": crud.item_dict(item)})
    for device in devices:
        await manager.send_to_device(device.id, message)


@app.post("/v1/clipboard", status_code=201)
def create_clipboard_item(body: ClipboardCreate, background_tasks: BackgroundTasks,
                          current_device: models.Device = Depends(get_current_device),
                          db: Session = Depends(get_db)):
    user_id, device_id = current_device.user_id, current_device.id
    db_item = crud.create_clipboard_item(db, user_id, device_id, body.content, body.content_type)
    if MODE == "buggy":
        background_tasks.add_task(notify_devices_of_update, user_id, device_id, db_item, db)
    else:
        background_tasks.add_task(notify_devices_of_update, user_id, device_id, db_item)
    return crud.item_dict(db_item)


@app.get("/v1/clipboard")
def list_clipboard(after: int = 0, limit: int = 100,
                   current_device: models.Device = Depends(get_current_device),
                   db: Session = Depends(get_db)):
    items = crud.get_clipboard_items(db, current_device.user_id, after, min(max(limit, 1), 500))
    return {"items": [crud.item_dict(i) for i in items],
            "next_after": items[-1].seq if items else after}


# ---- live sync ----------------------------------------------------------------------------
async def _ws_loop(websocket: WebSocket):
    while True:
        data = await websocket.receive_text()
        try:
            msg = json.loads(data)
        except ValueError:
            msg = None
        if isinstance(msg, dict) and msg.get("type") == "ping":
            await websocket.send_text(J({"type": "pong"}))
        else:
            await websocket.send_text(J({"type": "error", "error": {
                "code": "bad_request", "message": "unknown message"}}))


if MODE == "buggy":
    @app.websocket("/v1/sync/notify")
    @app.websocket("/sync/notify")
    async def websocket_endpoint(
            websocket: WebSocket,
            token: str,
            db: Session = Depends(get_db)  # ❌ 整个连接期间持有会话
    ):
        device = crud.get_device_by_token(db, token)
        if device is None:
            await websocket.close(code=4001)
            return
        device_id = device.id
        crud.activate_device(db, device_id)
        await manager.connect(websocket, device_id)
        await websocket.send_text(J({"type": "hello", "user_id": str(device.user_id),
                                     "device_id": str(device_id),
                                     "seq": crud.latest_seq(db, device.user_id)}))
        try:
            await _ws_loop(websocket)
        except WebSocketDisconnect:
            manager.disconnect(websocket, device_id)
            device = db.query(models.Device).filter(models.Device.id == device_id).first()
            if device:
                device.is_active = 0
                device.last_seen_at = datetime.datetime.utcnow()
                db.commit()
else:
    @app.websocket("/v1/sync/notify")
    @app.websocket("/sync/notify")
    async def websocket_endpoint(
            websocket: WebSocket,
            token: str  # ✅ 不再注入数据库会话
    ):
        db = next(get_db())
        try:
            device = crud.get_device_by_token(db, token)
            if device is None:
                await websocket.close(code=4001)
                return
            device_id, user_id = device.id, device.user_id
            crud.activate_device(db, device_id)
            seq = crud.latest_seq(db, user_id)
        finally:
            db.close()  # ✅ 立即关闭会话
        await manager.connect(websocket, device_id)
        await websocket.send_text(J({"type": "hello", "user_id": str(user_id),
                                     "device_id": str(device_id), "seq": seq}))
        try:
            await _ws_loop(websocket)
        except WebSocketDisconnect:
            manager.disconnect(websocket, device_id)
            db = next(get_db())
            try:
                device = db.query(models.Device).filter(models.Device.id == device_id).first()
                if device:
                    device.is_active = 0
                    device.last_seen_at = datetime.datetime.utcnow()
                    db.commit()
            finally:
                db.close()


# ---- chat (the second seed application) ------------------------------------------------
class StreamTask:
    """One streamed answer from the echo provider (the user's words back, one delta per
    word, TOKEN_DELAY apart), checkpointed every second, finished with its status."""

    def __init__(self, conversation_id, user_message, assistant_message_id, content,
                 db: Session = None):
        self.conversation_id = conversation_id
        self.user_message = user_message  # a dict
        self.assistant_message_id = assistant_message_id
        self.content = content
        self.db = db  # buggy: 长时间持有会话; fixed: None

    def _save(self, text, status=None):
        if self.db is not None:
            m = self.db.query(models.Message).get(self.assistant_message_id)
            m.content = text
            if status:
                m.status = status
            self.db.commit()
            self.db.refresh(m)
            return crud.message_dict(m)
        with DatabaseManager() as db:
            m = db.query(models.Message).get(self.assistant_message_id)
            m.content = text
            if status:
                m.status = status
            db.flush()
            return crud.message_dict(m)

    async def run(self):
        text, last = "", time.monotonic()
        for i, word in enumerate(self.content.split()):
            await asyncio.sleep(TOKEN_DELAY)
            piece = word if i == 0 else " " + word
            text += piece
            yield "delta", {"text": piece}
            if time.monotonic() - last >= CHECKPOINT_S:
                self._save(text)
                last = time.monotonic()
        yield "done", {"message": self._save(text, "complete")}

    async def sse(self):
        yield "event: message\ndata: %s\n\n" % J({"user_message": self.user_message,
                                                  "assistant_message_id": str(self.assistant_message_id)})
        try:
            async for event, data in self.run():
                yield "event: %s\ndata: %s\n\n" % (event, J(data))
        except Exception as e:
            logger.error("stream failed: %s", e)
            yield "event: error\ndata: %s\n\n" % J({"error": {"code": "internal", "message": str(e)}})


def _new_messages(db, conversation_id, user_id, content):
    user_msg = models.Message(conversation_id=conversation_id, user_id=user_id, role="user",
                              content=content, status="complete")
    asst = models.Message(conversation_id=conversation_id, user_id=user_id, role="assistant",
                          content="", status="streaming")
    db.add(user_msg)
    db.add(asst)
    db.commit()
    db.refresh(user_msg)
    db.refresh(asst)
    return user_msg, asst


@app.post("/v1/chat/conversations", status_code=201)
async def create_conversation(body: ConversationCreate = Body(None),
                              device: models.Device = Depends(get_current_chat_device),
                              db: Session = Depends(get_chat_db)):
    conv = models.Conversation(user_id=device.user_id, title=body.title if body else None)
    db.add(conv)
    db.commit()
    db.refresh(conv)
    return {"id": str(conv.id), "title": conv.title, "created_at": crud.iso(conv.created_at)}


@app.post("/v1/chat/conversations/{conversation_id}/messages")
async def send_message(conversation_id: int, body: MessageCreate,
                       device: models.Device = Depends(get_current_chat_device),
                       db: Session = Depends(get_chat_db)):
    user_id = device.user_id
    if MODE == "buggy":
        conv = db.query(models.Conversation).filter(models.Conversation.id == conversation_id,
                                                    models.Conversation.user_id == user_id).first()
        if conv is None:
            raise HTTPException(status_code=404, detail="not found")
        user_msg, asst = _new_messages(db, conversation_id, user_id, body.content)
        task = StreamTask(conversation_id, crud.message_dict(user_msg), asst.id, body.content,
                          db=db)  # ❌ the request's session, for the whole answer
    else:
        with DatabaseManager() as s:  # ✅ 临时会话
            conv = s.query(models.Conversation).filter(
                models.Conversation.id == conversation_id,
                models.Conversation.user_id == user_id).first()
            if conv is None:
                raise HTTPException(status_code=404, detail="not found")
            user_msg, asst = _new_messages(s, conversation_id, user_id, body.content)
            user_dict, asst_id = crud.message_dict(user_msg), asst.id
        task = StreamTask(conversation_id, user_dict, asst_id, body.content)
    if not body.stream:
        final = None
        async for event, data in task.run():
            if event == "done":
                final = data["message"]
        return JSONResponse({"user_message": task.user_message, "assistant_message": final},
                            status_code=201)
    return StreamingResponse(task.sse(), media_type="text/event-stream")


# ---- operations ---------------------------------------------------------------------------
@app.get("/health")
def health():
    ok = check_database_health()
    body = {"status": "ok" if ok else "down", "mode": MODE, "pid": os.getpid(),
            "pools": get_connection_pool_status(),
            "gateway": {"websockets": sum(len(v) for v in manager.active_connections.values())}}
    return JSONResponse(body, status_code=200 if ok else 503)


fastapi_app = app
app = JsonWithoutContentType(fastapi_app)
