"""The event bus: PUB -> broker XSUB -> broker XPUB -> SUB, subscriptions upstream."""
import time

import zmq

import smp


def test_events_pass_through_the_proxy(broker):
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    pub = ctx.socket(zmq.PUB)
    for s in (sub, pub):
        s.setsockopt(zmq.LINGER, 0)
    try:
        sub.setsockopt(zmq.SUBSCRIBE, b"user/1/")
        sub.connect(broker.events_out)
        pub.connect(broker.events_in)
        event = [b"user/1/", smp.PROTO, smp.pack({"type": "clipboard.deleted", "id": 5})]
        other = [b"user/12/", smp.PROTO, smp.pack({"type": "clipboard.deleted", "id": 6})]
        # the subscription travels upstream asynchronously: publish until it lands
        end = time.monotonic() + 10
        got = None
        while got is None and time.monotonic() < end:
            pub.send_multipart(other)
            pub.send_multipart(event)
            if sub.poll(50):
                got = sub.recv_multipart()
        assert got == event
        # user/12/ never matches a user/1/ subscription
        while sub.poll(100):
            assert sub.recv_multipart() == event
    finally:
        sub.close()
        pub.close()
