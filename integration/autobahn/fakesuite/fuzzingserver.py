#!/usr/bin/python3
"""A stand-in for the Autobahn TestSuite's fuzzingserver, compression cases only.

The real suite (wstest -m fuzzingserver) is a Python 2 program that cannot be
installed where this project builds. This server reproduces its permessage-
deflate cases 12.* and 13.* for a WebSocket *client* with Autobahn|Python (the
library the suite is built on; Debian's python3-autobahn) on Twisted:

  * the same case table: 12.1-12.5 (five data sets, default acceptance) and
    13.1-13.7 (seven acceptance functions, one data set), each with the suite's
    18 (message size, auto-fragment size) rows, numbered in the suite's order;
  * the same acceptance functions, so the server answers an offer with the
    parameters the suite answers with (client_no_context_takeover,
    client_max_window_bits=9 or 15, or both), and the same per-case behaviour:
    no permessage-deflate negotiated -> UNIMPLEMENTED; send one message, wait
    for its echo, compare type, length and content, send the next; OK after the
    last echo, then a close 1000 from the server, which must end cleanly;
  * the same protocol endpoints: /getCaseCount, /getCaseInfo?case=N,
    /runCase?case=N&agent=A, /updateReports?agent=A (writes OUTDIR/index.json
    in the shape of the suite's reports/clients/index.json, with extra fields).

What differs: the data sets are generated here (deterministically) instead of
the suite's files (a JSON file, a bitmap, Goethe's Faust, an HTML page, a PDF):
text JSON and HTML with some non-ASCII characters, a grey-scale bitmap, German-
like prose sent as binary, and mostly random bytes that do not compress. With
--budget the number of messages per case is cut to what fits in that many
bytes (at least --min-messages, at most the suite's 1000 or --max-messages) so
that a run takes seconds; without them every case sends its 1000 messages as
the suite does.

The server compresses with zlib and inflates the client's messages with zlib
set to the negotiated client window (decompressobj(-bits)), so a client that
compresses with a larger window than it was given fails the case.

    /usr/bin/python3 fuzzingserver.py --listen 127.0.0.1:9001 --outdir reports

It prints "listening on ws://HOST:PORT" once it accepts connections.
"""

import argparse
import fnmatch
import hashlib
import json
import os
import random
import sys
import time

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from twisted.internet import reactor
from twisted.python import log

# Verdicts, as the suite spells them.
OK = "OK"
FAILED = "FAILED"
UNIMPLEMENTED = "UNIMPLEMENTED"
UNCLEAN = "UNCLEAN"
WRONG_CODE = "WRONG CODE"

CLOSE_NORMAL = 1000

# (payload length, message count, case timeout in seconds, auto-fragment size),
# as MSG_SIZES in the suite's case/case12_x_x.py.
MSG_SIZES = [
    (16, 1000, 60, 0),
    (64, 1000, 60, 0),
    (256, 1000, 120, 0),
    (1024, 1000, 240, 0),
    (4096, 1000, 480, 0),
    (8192, 1000, 480, 0),
    (16384, 1000, 480, 0),
    (32768, 1000, 480, 0),
    (65536, 1000, 480, 0),
    (131072, 1000, 480, 0),
    (8192, 1000, 480, 256),
    (16384, 1000, 480, 256),
    (32768, 1000, 480, 256),
    (65536, 1000, 480, 256),
    (131072, 1000, 480, 256),
    (131072, 1000, 480, 1024),
    (131072, 1000, 480, 4096),
    (131072, 1000, 480, 32768),
]


# ---------------------------------------------------------------- data sets

def gen_json(rng, size):
    """JSON text of about size characters: records with some non-ASCII strings."""
    words = ["alpha", "beta", "gamma", "delta", "Grüße", "naïve", "日本語", "κόσμε", "data", "value", "𝄞clef"]
    out, n, i = ["["], 1, 0
    while n < size:
        rec = json.dumps({
            "id": i,
            "name": "%s-%s" % (rng.choice(words), rng.choice(words)),
            "score": round(rng.random() * 1000, 3),
            "tags": [rng.choice(words) for _ in range(rng.randint(0, 4))],
            "active": rng.random() < 0.5,
        }, ensure_ascii=False)
        out.append(rec + ",\n")
        n += len(rec) + 2
        i += 1
    out.append("{}]")
    return "".join(out)


def gen_html(rng, size):
    """HTML text of about size characters."""
    words = ["lorem", "ipsum", "dolor", "sit", "amet", "Straße", "café", "über", "señor", "niño"]
    out, n = ["<!DOCTYPE html>\n<html><head><title>data</title></head><body>\n"], 0
    while n < size:
        para = " ".join(rng.choice(words) for _ in range(rng.randint(5, 40)))
        tag = rng.choice(["p", "li", "td", "h2", "span"])
        s = '<%s class="c%d">%s</%s>\n' % (tag, rng.randint(0, 9), para, tag)
        out.append(s)
        n += len(s)
    out.append("</body></html>\n")
    return "".join(out)


def gen_prose(rng, size):
    """German-like prose, UTF-8 bytes (the suite sends its Faust text as binary)."""
    words = ["Habe", "nun", "ach", "Philosophie", "Juristerei", "und", "Medizin", "Theologie",
             "durchaus", "studiert", "mit", "heißem", "Bemühn", "Da", "steh", "ich", "armer", "Tor",
             "bin", "so", "klug", "als", "wie", "zuvor", "Faust", "Mephistopheles", "Gretchen"]
    out, n = [], 0
    while n < size:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + ".\n"
        b = line.encode("utf-8")
        out.append(b)
        n += len(b)
    return b"".join(out)


def gen_bitmap(rng, size):
    """An 8-bit grey-scale picture: smooth gradients with noise, behind a BMP-like header."""
    side = 512
    header = b"BM" + bytes(52)
    rows = []
    for y in range(side):
        rows.append(bytes(((x * y) // 256 + (x ^ y) // 8 + rng.getrandbits(2)) & 0xFF for x in range(side)))
    data = header + b"".join(rows)
    return data[:max(size, 2 * 131072)]


def gen_random(rng, size):
    """Mostly incompressible bytes, as a PDF's compressed streams are."""
    chunks, n = [], 0
    while n < size:
        chunks.append(b"\n%d 0 obj << /Length 4096 /Filter /FlateDecode >> stream\n" % n)
        chunks.append(rng.randbytes(4096))
        n += 4096 + 60
    return b"".join(chunks)


DATA_SIZE = 300 * 1024


def make_data_sets():
    """The data sets by key, in the suite's order, with the suite's descriptions."""
    rng = random.Random(7692)
    return [
        ("json_data1", "Large JSON data file (generated)", False, gen_json(rng, DATA_SIZE)),
        ("lena512", "Bitmap 512x512 grey-scale (generated)", True, gen_bitmap(rng, DATA_SIZE)),
        ("gutenberg_faust", "Human readable text, German (generated)", True, gen_prose(rng, DATA_SIZE)),
        ("html_data1", "Large HTML file (generated)", False, gen_html(rng, DATA_SIZE)),
        ("ooms", "A larger PDF-like file (random streams, generated)", True, gen_random(rng, DATA_SIZE)),
    ]


# ---------------------------------------------------------------- acceptance (the suite's)

def accept1(offers):
    """server accept (requestNoContextTakeover, requestMaxWindowBits): [(False, 0)]"""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)


def accept2(offers):
    """server accept (requestNoContextTakeover, requestMaxWindowBits): [(True, 0)]"""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer) and offer.accept_no_context_takeover:
            return PerMessageDeflateOfferAccept(offer, request_no_context_takeover=True)


def accept3(offers):
    """server accept (requestNoContextTakeover, requestMaxWindowBits): [(False, 9)]"""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer) and offer.accept_max_window_bits:
            return PerMessageDeflateOfferAccept(offer, request_max_window_bits=9)


def accept4(offers):
    """server accept (requestNoContextTakeover, requestMaxWindowBits): [(False, 15)]"""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer) and offer.accept_max_window_bits:
            return PerMessageDeflateOfferAccept(offer, request_max_window_bits=15)


def accept5(offers):
    """server accept (requestNoContextTakeover, requestMaxWindowBits): [(True, 9)]"""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer) and offer.accept_no_context_takeover and offer.accept_max_window_bits:
            return PerMessageDeflateOfferAccept(offer, request_max_window_bits=9, request_no_context_takeover=True)


def accept6(offers):
    """server accept (requestNoContextTakeover, requestMaxWindowBits): [(True, 15)]"""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer) and offer.accept_no_context_takeover and offer.accept_max_window_bits:
            return PerMessageDeflateOfferAccept(offer, request_max_window_bits=15, request_no_context_takeover=True)


def accept7(offers):
    """server accept (requestNoContextTakeover, requestMaxWindowBits): [(True, 9), (True, 0), (False, 0)]"""
    return accept5(offers) or accept2(offers) or accept1(offers)


ACCEPTS_13 = [accept1, accept2, accept3, accept4, accept5, accept6, accept7]


class Case(object):
    """One compression case: its id, data set, message size and count, acceptance."""

    def __init__(self, case_id, desc, data, binary, length, count, waitsecs, autofrag, accept):
        self.id = case_id
        self.desc = desc
        self.data = data
        self.binary = binary
        self.length = length
        self.count = count
        self.waitsecs = waitsecs
        self.autofrag = autofrag
        self.accept = accept


def make_cases(budget, min_messages, max_messages):
    """The cases 12.1.1-12.5.18 and 13.1.1-13.7.18 in the suite's order."""
    def count(length, suite_count):
        if budget <= 0:
            return min(suite_count, max_messages)
        return min(max(budget // length, min_messages), suite_count, max_messages)

    sets = make_data_sets()
    cases = []
    for j, (key, desc, binary, data) in enumerate(sets, 1):
        for i, (length, n, secs, frag) in enumerate(MSG_SIZES, 1):
            d = "%s: %d messages of %d, auto-fragment %d, default acceptance" % (desc, count(length, n), length, frag)
            cases.append(Case("12.%d.%d" % (j, i), d, data, binary, length, count(length, n), secs, frag, accept1))
    key, desc, binary, data = sets[0]
    for j, accept in enumerate(ACCEPTS_13, 1):
        for i, (length, n, secs, frag) in enumerate(MSG_SIZES, 1):
            d = "%s: %d messages of %d, auto-fragment %d, %s" % (desc, count(length, n), length, frag, accept.__doc__)
            cases.append(Case("13.%d.%d" % (j, i), d, data, binary, length, count(length, n), secs, frag, accept))
    return cases


# ---------------------------------------------------------------- server

class FuzzingProtocol(WebSocketServerProtocol):
    """One connection: a case run, or one of the control endpoints."""

    case = None  # the Case of /runCase
    agent = None
    path = None

    def onConnect(self, request):
        self.path = request.path
        params = request.params
        self.agent = params.get("agent", [None])[0]
        n = params.get("case", [None])[0]
        self.case_index = None
        if n is not None:
            n = int(n)
            if not 1 <= n <= len(self.factory.cases):
                raise Exception("case %d not found" % n)
            self.case_index = n
        if self.path == "/runCase":
            if self.case_index is None or not self.agent:
                raise Exception("need case and agent to run a case")
            self.case = self.factory.cases[self.case_index - 1]
            # The case's acceptance function decides the permessage-deflate answer.
            self.perMessageCompressionAccept = self.case.accept
            self.begin_case()
        # Other endpoints decline compression (the factory's default).
        return None

    def begin_case(self):
        self.rx_ptr = 0
        self.sent = 0
        self.echoes = 0
        self.compressed_echoes = 0
        self.expected = None
        self.started = time.time()
        self.record = {
            "behavior": FAILED,
            "behaviorClose": FAILED,
            "result": "Case did not finish within %d seconds." % self.case.waitsecs,
            "resultClose": "TCP connection was dropped without close handshake",
            "description": self.case.desc,
            "size": self.case.length,
            "autoFragment": self.case.autofrag,
        }

    def onOpen(self):
        if self.path == "/runCase":
            self.open_case()
        elif self.path == "/getCaseCount":
            self.sendMessage(json.dumps(len(self.factory.cases)).encode())
            self.sendClose()
        elif self.path == "/getCaseInfo" and self.case_index is not None:
            c = self.factory.cases[self.case_index - 1]
            self.sendMessage(json.dumps({"id": c.id, "description": c.desc}).encode())
            self.sendClose()
        elif self.path == "/updateReports" and self.agent:
            self.factory.write_reports()
            self.sendClose()
        else:
            self.sendClose(1008, "unknown resource")

    def open_case(self):
        pmce = self._perMessageCompress
        if pmce is None:
            self.record["behavior"] = UNIMPLEMENTED
            self.record["result"] = "Client does not support permessage-deflate, or the offer was declined."
            self.sendClose(CLOSE_NORMAL)
            return
        self.record["negotiated"] = pmce.__json__()
        self.record["messages"] = self.case.count
        self.autoFragmentSize = self.case.autofrag
        self.timeout = reactor.callLater(self.case.waitsecs, self.sendClose, CLOSE_NORMAL)
        self.send_one()

    def connection_ended_early(self):
        """Names what happened when the connection ended before the case did (not by timeout)."""
        return "The connection ended after %d of %d echoes (close code %s, clean: %s); an error the server hit is in its log." % (
            self.echoes, self.case.count, self.remoteCloseCode, self.wasClean)

    def send_one(self):
        c = self.case
        payload = c.data
        i, j = self.rx_ptr, (self.rx_ptr + c.length) % len(payload)
        msg = payload[i:j] if j > i else payload[i:] + payload[:j]
        self.rx_ptr = j
        if not c.binary:
            msg = msg.encode("utf-8")
        self.expected = (len(msg), hashlib.sha1(msg).digest())
        self.sendMessage(msg, c.binary)
        self.sent += 1

    def onMessageBegin(self, isBinary):
        WebSocketServerProtocol.onMessageBegin(self, isBinary)
        if self.case is not None and self._isMessageCompressed:
            self.compressed_echoes += 1

    def onMessage(self, payload, isBinary):
        if self.case is None or self.record["behavior"] != FAILED or self.expected is None:
            return
        self.echoes += 1
        n, digest = self.expected
        if isBinary != self.case.binary:
            self.fail_case("Echo'ed message type differs from what I sent (got binary %s, expected binary %s)." % (isBinary, self.case.binary))
        elif len(payload) != n:
            self.fail_case("Echo'ed message length differs from what I sent (got length %d, expected length %d)." % (len(payload), n))
        elif hashlib.sha1(payload).digest() != digest:
            self.fail_case("Echo'ed message contents differs from what I sent (message %d)." % self.sent)
        elif self.sent < self.case.count:
            self.send_one()
        else:
            self.record["behavior"] = OK
            self.record["result"] = "Ok, received all echo'ed messages in time."
            self.sendClose(CLOSE_NORMAL)

    def fail_case(self, why):
        self.record["behavior"] = FAILED
        self.record["result"] = why
        self.expected = None
        self.sendClose(CLOSE_NORMAL)

    def onClose(self, wasClean, code, reason):
        if self.case is None:
            return
        r = self.record
        if getattr(self, "timeout", None) is not None and self.timeout.active():
            self.timeout.cancel()
            if r["behavior"] == FAILED and self.expected is not None:
                r["result"] = self.connection_ended_early()
        r["duration"] = int((time.time() - self.started) * 1000)
        r["remoteCloseCode"] = self.remoteCloseCode
        r["echoes"] = self.echoes
        r["compressedEchoes"] = self.compressed_echoes
        # As the suite's Case.onConnectionLost, for a case the server closes with 1000.
        if not self.closedByMe:
            r["behaviorClose"] = FAILED
            r["resultClose"] = "The connection was failed by the wrong endpoint"
        elif not wasClean:
            r["behaviorClose"] = UNCLEAN
            r["resultClose"] = "The spec requires the connection to be failed cleanly here"
        elif self.remoteCloseCode is not None and self.remoteCloseCode != CLOSE_NORMAL:
            r["behaviorClose"] = WRONG_CODE
            r["resultClose"] = "The close code should have been 1000 or empty"
        else:
            r["behaviorClose"] = OK
            r["resultClose"] = "Connection was properly closed"
        self.factory.results.setdefault(self.agent, {})[self.case.id] = r
        self.case = None


class FuzzingFactory(WebSocketServerFactory):
    protocol = FuzzingProtocol

    def __init__(self, cases, outdir):
        WebSocketServerFactory.__init__(self)
        self.cases = cases
        self.outdir = outdir
        self.results = {}  # agent -> case id -> record
        # No size limits, as the suite. Echoes are not validated as UTF-8 here
        # (wsaccel's validator takes 30 ms per 128 KiB): each is compared with
        # the valid UTF-8 that was sent, which is stricter.
        self.setProtocolOptions(maxFramePayloadSize=0, maxMessagePayloadSize=0,
                                closeHandshakeTimeout=5, openHandshakeTimeout=10,
                                failByDrop=False, utf8validateIncoming=False)

    def write_reports(self):
        os.makedirs(self.outdir, exist_ok=True)
        path = os.path.join(self.outdir, "index.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.results, f, indent=2, sort_keys=True)
        os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:9001", help="HOST:PORT (port 0: any free port)")
    ap.add_argument("--outdir", default="./reports/clients", help="where /updateReports writes index.json")
    ap.add_argument("--cases", default="*", help="comma-separated case id patterns, e.g. 12.*,13.3.*")
    ap.add_argument("--budget", type=int, default=0,
                    help="bytes per case: fewer than the suite's 1000 messages for large sizes (0: the suite's counts)")
    ap.add_argument("--min-messages", type=int, default=8, help="with --budget, the fewest messages per case")
    ap.add_argument("--max-messages", type=int, default=1000, help="the most messages per case (the suite: 1000)")
    ap.add_argument("--verbose", action="store_true", help="log Twisted's and Autobahn's events")
    args = ap.parse_args()

    if args.verbose:
        log.startLogging(sys.stderr)
    patterns = [p.strip() for p in args.cases.split(",") if p.strip()]
    cases = [c for c in make_cases(args.budget, args.min_messages, args.max_messages)
             if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)]
    host, port = args.listen.rsplit(":", 1)
    factory = FuzzingFactory(cases, args.outdir)
    listener = reactor.listenTCP(int(port), factory, interface=host)
    addr = listener.getHost()
    print("listening on ws://%s:%d (%d cases)" % (addr.host, addr.port, len(cases)), flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
