"""The openai provider through the real libcurl path, against a fake
OpenAI-compatible server (tests/stream/conftest.py FakeOpenAI): a good stream with
the conversation as context, then every way a provider fails - each ends the
message `failed` with the error kept, and the requester gets a clear error."""
import pytest

from conftest import (auth_of, generate, messages, new_conversation, start_streamworker,
                      wait_message, wait_service)

KEY = "sk-test-not-a-real-key"


@pytest.fixture
def openai_chat(chat, fake_openai):
    start_streamworker(chat.stack, provider="openai", base_url=fake_openai.base_url,
                       model="fake-model", api_key_env="SLUICE_TEST_OPENAI_KEY",
                       idle_timeout_ms=800, connect_timeout_ms=2000, checkpoint_ms=50,
                       system_prompt="You are terse.",
                       env={"SLUICE_TEST_OPENAI_KEY": KEY})
    wait_service(chat.client, "chat")
    chat.fake = fake_openai
    return chat


def ask(chat, content):
    c = chat.client
    rid = generate(c, chat.user, chat.conversation, content)
    reply = c.wait_reply(rid, timeout=20)
    assert c.partials and c.partials[0]["data"]["event"] == "message", c.partials
    aid = c.partials[0]["data"]["assistant_message_id"]
    deltas = "".join(p["data"]["text"] for p in c.partials[1:])
    stored = {m["id"]: m for m in messages(c, chat.user, chat.conversation)}[aid]
    return reply, stored, deltas


def test_stream_with_context(openai_chat):
    ch = openai_chat
    reply, stored, deltas = ask(ch, "first question")
    assert reply["status"] == 200, reply
    assert deltas == "Hello, world!"
    assert stored["status"] == "complete" and stored["content"] == "Hello, world!"
    assert reply["data"]["assistant_message"]["content"] == "Hello, world!"
    req = ch.fake.requests[-1]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer " + KEY
    assert req["body"]["stream"] is True and req["body"]["model"] == "fake-model"
    assert req["body"]["messages"] == [{"role": "system", "content": "You are terse."},
                                       {"role": "user", "content": "first question"}]
    # the second answer carries the first exchange as context
    reply, stored, _ = ask(ch, "second question")
    assert reply["status"] == 200
    assert ch.fake.requests[-1]["body"]["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "Hello, world!"},
        {"role": "user", "content": "second question"}]


def test_context_is_the_newest_within_its_budget(openai_chat):
    """A conversation longer than a page (five 900 KB questions): the context is
    taken newest first within max_context_bytes, so the new question is in it and
    the oldest ones are not. (Read oldest first, the page ended before the newest
    messages and the provider never saw the question it answered.)"""
    ch = openai_chat
    c, a = ch.client, auth_of(ch.user)
    ch.conversation = new_conversation(c, ch.user)
    big = ["%d" % i * (900 * 1024) for i in range(5)]
    for text in big:
        r = c.call("chat.message.begin", {"conversation_id": ch.conversation,
                                          "content": text}, auth=a)
        assert r["status"] == 201, r
        r = c.call("chat.message.finish", {"message_id": r["data"]["assistant_message"]["id"],
                                           "content": "ok", "status": "complete"}, auth=a)
        assert r["status"] == 200, r
    reply, _, _ = ask(ch, "the newest question")
    assert reply["status"] == 200, reply
    sent = ch.fake.requests[-1]["body"]["messages"]
    assert sent[-1] == {"role": "user", "content": "the newest question"}
    assert sent[0]["role"] == "system"
    # newest first within the 1 MiB default: back to the last big question and the
    # answer before it; the four older questions do not fit
    assert sent[1:-1] == [{"role": "assistant", "content": "ok"},
                          {"role": "user", "content": big[-1]},
                          {"role": "assistant", "content": "ok"}]


@pytest.mark.parametrize("mode,code,status,kept,in_message", [
    ("stall", "provider_timeout", 504, "partial answer", "sent nothing for 800 ms"),
    ("malformed", "provider_bad_event", 502, "before", "malformed event"),
    ("cut", "provider_broken_stream", 502, "cut", "before [DONE]"),
    ("stream-error", "provider_error", 502, "so far", "model overloaded"),
    ("http500", "provider_http_error", 502, "", "HTTP 500: internal failure of the fake"),
    ("http429", "provider_http_error", 502, "", "HTTP 429: Rate limit reached for requests"),
    ("json200", "provider_bad_event", 502, "", "application/json"),
])
def test_provider_failures_are_kept(openai_chat, mode, code, status, kept, in_message):
    reply, stored, deltas = ask(openai_chat, "mode:%s please" % mode)
    assert reply["status"] == status, reply
    assert reply["error"]["code"] == code and in_message in reply["error"]["message"], reply
    assert stored["status"] == "failed"
    assert stored["content"] == kept == deltas
    assert stored["error"].startswith(code + ": ") and in_message in stored["error"]
    assert reply["data"]["assistant_message"]["status"] == "failed"


def test_unreachable_provider(chat):
    start_streamworker(chat.stack, provider="openai", base_url="http://127.0.0.1:1/v1",
                       model="m", api_key_env="")
    wait_service(chat.client, "chat")
    reply, stored, _ = ask(chat, "anyone there?")
    assert reply["status"] == 502 and reply["error"]["code"] == "provider_unreachable", reply
    assert stored["status"] == "failed" and stored["error"].startswith("provider_unreachable")


def test_cancel_stops_the_provider(openai_chat):
    """A cancel ends the provider's stream too: the fake provider sees libcurl close
    the connection while it still had words to send (it sends 300, 100 ms apart,
    and would otherwise go on for 30 s), and the message keeps what came before."""
    ch = openai_chat
    c = ch.client
    rid = generate(c, ch.user, ch.conversation, "mode:slow go")
    texts = []
    aid = None
    while len(texts) < 3:
        cmd, _, body = c.recv(timeout=10)
        if body["data"]["event"] == "message":
            aid = body["data"]["assistant_message_id"]
        else:
            texts.append(body["data"]["text"])
    assert not ch.fake.hung_up.is_set(), "the provider's stream was closed before the cancel"
    c.cancel(rid)
    assert c.wait_reply(rid, timeout=10)["status"] == 499
    # the provider saw the hang-up; it was not left to generate to the end
    assert ch.fake.hung_up.wait(20), "the provider never saw the client close its stream"
    assert len(ch.fake.hangups) == 1 and 3 <= ch.fake.hangups[0] < ch.fake.SLOW_WORDS, \
        ch.fake.hangups
    m = wait_message(c, ch.user, ch.conversation, aid, lambda m: m["status"] != "streaming")
    assert m["status"] == "cancelled" and m["content"].startswith("".join(texts))
    assert len(m["content"].split()) <= ch.fake.hangups[0]
