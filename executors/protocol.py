"""Length-prefixed JSON frames over pipes, with an optional MAC for the child's result channel.

The child reports over a dedicated pipe (never stdout), and every frame carries a MAC over a
sequence number and the payload, keyed by a secret the worker hands the child through a second
pipe after fork. Text the program prints goes elsewhere; bytes it writes blindly into the pipe,
or frames replayed out of order, fail verification and count as a corrupted (failed) run.

Stdlib only: this module is imported inside the sandbox.
"""
import hashlib
import hmac
import json
import os
import select
import struct
import time

_LEN = struct.Struct(">I")
MAC_SIZE = 32
MAX_FRAME = 64 * 1024 * 1024
_READ = 1 << 16


class ChannelError(Exception):
    """The peer closed the pipe, sent garbage, or a frame failed authentication."""


class FrameTooLarge(ChannelError):
    """The peer announced a frame over the reader's limit. Unlike other ChannelErrors this is
    not a broken peer but an oversized message: what it carries cannot be accepted, and sending
    it again would only give the same. The stream is left mid-frame, so the channel is done."""

    def __init__(self, size, limit):
        super().__init__(f"frame of {size:,} bytes exceeds the limit of {limit:,} bytes")
        self.size = size
        self.limit = limit


class Timeout(Exception):
    """No complete frame before the deadline."""


class Interrupted(Exception):
    """Input arrived on the `interrupt` reader before a complete frame on this one."""


def write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def encode_frame(obj, signer=None, seq=0):
    """A frame around `obj` as JSON, or around `obj` as it is when it is bytes already (JSON
    text, or a relayed payload)."""
    payload = obj if type(obj) is bytes else dumps(obj)
    if signer is None:
        return _LEN.pack(len(payload)) + payload
    mac = signer(seq, payload)
    return _LEN.pack(len(payload) + MAC_SIZE) + payload + mac


def relayed(head, body):
    """The payload of a frame a middle process relays without reading its body: a line of JSON
    it reads (`head`, a dict), then `body`, JSON text as bytes, which it passes on as is. (JSON
    text holds no raw newline.) The worker relays requests to the child and answers back to
    the judge this way: it never parses what a program returned."""
    return dumps(head) + b"\n" + body


def split_relayed(payload):
    """(head, body bytes) of a relayed payload; (the parsed payload, None) of a plain one."""
    head, newline, body = payload.partition(b"\n")
    try:
        head = json.loads(head)
    except (ValueError, RecursionError) as e:
        raise ChannelError(f"malformed frame: {e}") from None
    if not isinstance(head, dict):
        raise ChannelError("malformed frame: not an object")
    return head, (body if newline else None)


def make_signer(key):
    """A function (seq, payload) -> MAC (keyed BLAKE2b, cheap to set up in every child); the
    raw key is not kept in any Python-visible object."""
    base = hashlib.blake2b(key=key, digest_size=MAC_SIZE)
    pack = struct.Struct(">Q").pack

    def sign(seq, payload, _base=base, _pack=pack):
        h = _base.copy()
        h.update(_pack(seq))
        h.update(payload)
        return h.digest()

    return sign


class FrameReader:
    """Incremental reader of frames from a non-blocking-friendly fd, with deadlines."""

    def __init__(self, fd, key=None, max_frame=MAX_FRAME):
        self.fd = fd
        self.buf = bytearray()
        self.eof = False
        self.max_frame = max_frame
        self.seq = 0
        self._sign = make_signer(key) if key is not None else None

    def read(self, deadline=None, interrupt=None, raw=False):
        """Next frame as a Python object (`raw`: its payload bytes, unparsed); Timeout if
        `deadline` (time.monotonic) passes first, Interrupted if the FrameReader `interrupt`
        has input (buffered or on its fd) while this one has no complete frame yet."""
        while True:
            frame = self._pop(raw)
            if frame is not None:
                return frame
            if self.eof:
                raise ChannelError("closed" if not self.buf else "truncated frame")
            if interrupt is not None and interrupt.buf:
                raise Interrupted()
            if deadline is not None or interrupt is not None:  # (a past deadline polls once)
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                fds = [self.fd] if interrupt is None else [self.fd, interrupt.fd]
                ready, _, _ = select.select(fds, [], [], left)
                if not ready:
                    raise Timeout()
                if interrupt is not None and interrupt.fd in ready:
                    raise Interrupted()  # (first: a child that keeps sending cannot delay it)
            # (a small read: os.read allocates its whole size up front, every call)
            need = _LEN.size + _LEN.unpack_from(self.buf)[0] - len(self.buf) if len(self.buf) >= _LEN.size else 0
            chunk = os.read(self.fd, min(max(need, _READ), self.max_frame + _LEN.size))
            if not chunk:
                self.eof = True
            self.buf += chunk

    def _pop(self, raw=False):
        if len(self.buf) < _LEN.size:
            return None
        (n,) = _LEN.unpack_from(self.buf)
        if n > self.max_frame:
            raise FrameTooLarge(n, self.max_frame)
        if len(self.buf) < _LEN.size + n:
            return None
        body = bytes(self.buf[_LEN.size:_LEN.size + n])
        del self.buf[:_LEN.size + n]
        if self._sign is not None:
            if n < MAC_SIZE:
                raise ChannelError("frame too short")
            payload, mac = body[:-MAC_SIZE], body[-MAC_SIZE:]
            if not hmac.compare_digest(mac, self._sign(self.seq, payload)):
                raise ChannelError("frame failed authentication")
            self.seq += 1
            body = payload
        if raw:
            return body
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as e:
            raise ChannelError(f"malformed frame: {e}") from None
