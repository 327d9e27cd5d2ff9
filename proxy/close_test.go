package proxy

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

// Close paths of a session: every way a session can end, with the exact close
// code and reason each leg sees.

func TestCloseClientInitiatedForwardsCodeAndUpstreamReply(t *testing.T) {
	testkit.CheckGoroutines(t)
	up, upGot := startReporting(t, func(c *websocket.Conn) error {
		c.SetCloseHandler(func(code int, text string) error {
			// Reply with a different reason: the client must see the upstream's reply, not an echo by the proxy.
			return sendClose(c, 4000, "ack")
		})
		return testkit.GorillaEcho(c)
	})
	e := startSession(t, up.URL, Config{})

	c, _ := mustDial(t, e.URL, nil)
	if err := c.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, p, err := c.ReadMessage(); err != nil || string(p) != "hello" {
		t.Fatalf("echo: %q %v", p, err)
	}
	if err := sendClose(c, 4000, "bye"); err != nil {
		t.Fatal(err)
	}
	wantCloses(t, c, upGot, 4000, "ack", 4000, "bye")
	e.wantEnd(4000, "client")
}

func TestCloseUpstreamInitiated(t *testing.T) {
	testkit.CheckGoroutines(t)
	up, upGot := startReporting(t, func(c *websocket.Conn) error {
		if _, _, err := c.ReadMessage(); err != nil {
			return err
		}
		sendClose(c, 4001, "srv")
		return readErr(c, 3*time.Second)
	})
	e := startSession(t, up.URL, Config{})

	// A coder/websocket client this time: it answers a close with the same code and reason.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := coder.Dial(ctx, e.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, coder.MessageText, []byte("go")); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Read(ctx)
	wantCoderClose(t, "client", err, 4001, "srv")
	// The upstream gets the client's answer: coder echoes the code and reason.
	wantClose(t, "upstream", testkit.Recv(t, upGot, 3*time.Second, "upstream close"), 4001, "srv")
	e.wantEnd(4001, "upstream")
}

// A close without a body means "no status": it is forwarded as a close without
// a body, never as 1005 on the wire.
func TestCloseEmptyBodyForwardedWithoutStatus(t *testing.T) {
	t.Run("raw upstream", func(t *testing.T) {
		testkit.CheckGoroutines(t)
		type result struct {
			f   *testkit.Frame
			err error
		}
		upGot := make(chan result, 1)
		up := startRaw(t, func(c *testkit.Conn) {
			f, _, err := c.ReadUntilClose(3 * time.Second)
			upGot <- result{f, err}
			if err == nil {
				c.Send(testkit.Frame{Fin: true, Op: wsmw.OpClose}) // reply without a body too
			}
			c.WaitEOF(3 * time.Second)
		})
		e := startSession(t, up.URL, Config{})

		raw := testkit.DialRaw(t, e.URL)
		if err := raw.Send(testkit.Frame{Fin: true, Op: wsmw.OpClose}); err != nil {
			t.Fatal(err)
		}
		r := testkit.Recv(t, upGot, 3*time.Second, "upstream close")
		if r.err != nil {
			t.Fatalf("upstream: %v", r.err)
		}
		if len(r.f.Payload) != 0 {
			t.Errorf("upstream saw close payload %x, want empty", r.f.Payload)
		}
		if !r.f.Masked {
			t.Error("close to the upstream is not masked")
		}
		f, _, err := raw.ReadUntilClose(3 * time.Second)
		if err != nil {
			t.Fatalf("client: %v", err)
		}
		if len(f.Payload) != 0 {
			t.Errorf("client saw close payload %x, want empty", f.Payload)
		}
		wantEOF(t, raw)
		e.wantEnd(1005, "client")
	})
	t.Run("gorilla upstream", func(t *testing.T) {
		testkit.CheckGoroutines(t)
		upGot := make(chan error, 1)
		up := startGorilla(t, gorillaEcho(upGot))
		e := startSession(t, up.URL, Config{})
		raw := testkit.DialRaw(t, e.URL)
		if err := raw.Send(testkit.Frame{Fin: true, Op: wsmw.OpClose}); err != nil {
			t.Fatal(err)
		}
		wantClose(t, "upstream", testkit.Recv(t, upGot, 3*time.Second, "upstream close"), websocket.CloseNoStatusReceived, "")
		// gorilla answers 1005 with an empty body as well.
		f, _, err := raw.ReadUntilClose(3 * time.Second)
		if err != nil {
			t.Fatalf("client: %v", err)
		}
		if len(f.Payload) != 0 {
			t.Errorf("client saw close payload %x, want empty", f.Payload)
		}
		e.wantEnd(1005, "client")
	})
}

func TestCloseUpstreamDiesWithoutClose(t *testing.T) {
	testkit.CheckGoroutines(t)
	up := startRaw(t, func(c *testkit.Conn) {
		f, err := c.ReadFrame()
		if err != nil {
			return
		}
		c.Send(testkit.Frame{Fin: true, Op: f.Op, Payload: f.Payload})
		// Return: the server closes the TCP connection without a close frame.
	})
	e := startSession(t, up.URL, Config{})
	// gorilla 1.5.3 refuses 1014 as a received close code: a coder/websocket client.
	c, _, ctx := dialCoder(t, e.URL, coder.CompressionDisabled)
	c.Write(ctx, coder.MessageText, []byte("x"))
	if _, p, err := c.Read(ctx); err != nil || string(p) != "x" {
		t.Fatalf("echo: %q %v", p, err)
	}
	_, _, err := c.Read(ctx)
	wantCoderClose(t, "client", err, int(wsmw.StatusBadGateway), "upstream went away")
	e.wantEnd(1006, "upstream")
}

func TestCloseUpstreamDiesInsideFragmentedMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(c *testkit.Conn)
	}{
		{"between fragments", func(c *testkit.Conn) {
			c.Send(fragment(false, wsmw.OpText, "part one"))
		}},
		{"inside a frame", func(c *testkit.Conn) {
			c.Send(fragment(false, wsmw.OpText, "part one"))
			// A continuation announcing 1000 bytes of which 10 arrive.
			b := testkit.AppendFrame(nil, testkit.Frame{Op: wsmw.OpContinuation, Payload: make([]byte, 1000)})
			c.Write(b[:4+10])
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testkit.CheckGoroutines(t)
			up := startRaw(t, func(c *testkit.Conn) {
				if _, err := c.ReadFrame(); err != nil {
					return
				}
				tc.send(c)
				time.Sleep(50 * time.Millisecond)
			})
			e := startSession(t, up.URL, Config{})
			raw := testkit.DialRaw(t, e.URL)
			raw.Send(fragment(true, wsmw.OpText, "go"))
			seen := clientClose(t, raw, 3*time.Second, int(wsmw.StatusBadGateway), "upstream went away")
			if len(seen) != 1 || seen[0].Op != wsmw.OpText || seen[0].Fin || string(seen[0].Payload) != "part one" {
				t.Errorf("client saw %v before the close, want the first fragment only", seen)
			}
			raw.SendClose(int(wsmw.StatusBadGateway), "")
			wantEOF(t, raw)
			e.wantEnd(1006, "upstream")
		})
	}
}

func TestCloseClientVanishes(t *testing.T) {
	testkit.CheckGoroutines(t)
	upGot := make(chan error, 1)
	got := make(chan string, 1)
	up := startGorilla(t, func(c *websocket.Conn) {
		_, p, err := c.ReadMessage()
		if err != nil {
			upGot <- err
			return
		}
		got <- string(p)
		upGot <- readErr(c, 3*time.Second)
	})
	e := startSession(t, up.URL, Config{})
	raw := testkit.DialRaw(t, e.URL)
	raw.Send(fragment(true, wsmw.OpText, "hi"))
	if m := testkit.Recv(t, got, 3*time.Second, "message"); m != "hi" {
		t.Fatalf("upstream got %q", m)
	}
	raw.Close() // TCP close, no close frame
	wantClose(t, "upstream", testkit.Recv(t, upGot, 3*time.Second, "upstream close"), int(wsmw.StatusGoingAway), "client went away")
	e.wantEnd(1006, "client")
}

// verdictInspector closes the session for messages whose first frame is 3 bytes long.
type verdictInspector struct{ v Verdict }

func (verdictInspector) NeedsPayload(Direction, wsmw.OpCode) bool { return false }
func (i verdictInspector) Inspect(m *Message) Verdict {
	if m.Direction == ClientToUpstream && m.Length == 3 {
		return i.v
	}
	return Verdict{Action: Pass}
}

func TestClosePolicyVerdict(t *testing.T) {
	for _, tc := range []struct {
		name       string
		v          Verdict
		wantCode   int
		wantReason string
	}{
		{"default code", Verdict{Action: Close, Reason: "nope"}, 1008, "nope"},
		{"custom code", Verdict{Action: Close, Code: 4403, Reason: "forbidden"}, 4403, "forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testkit.CheckGoroutines(t)
			upGot := make(chan error, 1)
			var upMsgs []string
			up := startGorilla(t, func(c *websocket.Conn) {
				for {
					_, p, err := c.ReadMessage()
					if err != nil {
						upGot <- err
						return
					}
					upMsgs = append(upMsgs, string(p))
				}
			})
			e, c := dialSession(t, up.URL, Config{Inspectors: Chain{verdictInspector{tc.v}}})
			c.WriteMessage(websocket.TextMessage, []byte("fine"))
			c.WriteMessage(websocket.TextMessage, []byte("bad"))
			c.WriteMessage(websocket.TextMessage, []byte("after"))
			wantClose(t, "client", readErr(c, 3*time.Second), tc.wantCode, tc.wantReason)
			wantClose(t, "upstream", testkit.Recv(t, upGot, 3*time.Second, "upstream close"), 1001, "client message refused")
			if strings.Join(upMsgs, ",") != "fine" {
				t.Errorf("upstream received %q, want only \"fine\"", upMsgs)
			}
			e.wantEnd(tc.wantCode, "proxy")
		})
	}
}

func TestCloseMessageTooBig(t *testing.T) {
	testkit.CheckGoroutines(t)
	e, c, upGot := dialEcho(t, Config{MaxMessageSize: 1000})
	c.WriteMessage(websocket.BinaryMessage, make([]byte, 1000)) // at the limit: forwarded
	if _, p, err := c.ReadMessage(); err != nil || len(p) != 1000 {
		t.Fatalf("echo: %d %v", len(p), err)
	}
	c.WriteMessage(websocket.BinaryMessage, make([]byte, 2000))
	wantCloses(t, c, upGot, 1009, "message too big", 1001, "client violated the protocol")
	e.wantEnd(1009, "proxy")
}

// checkProtocolViolation runs a raw client that sends bad, expecting code to the
// client and 1001 to the gorilla upstream, which must not wait for the client's
// answer to its close.
func checkProtocolViolation(t *testing.T, bad func(raw *testkit.Conn), code int, reason string) {
	t.Helper()
	upGot := make(chan error, 1)
	up := startGorilla(t, gorillaEcho(upGot))
	e := startSession(t, up.URL, Config{})
	raw := testkit.DialRaw(t, e.URL)
	raw.Send(fragment(true, wsmw.OpText, "ok"))
	if f, err := raw.ReadFrameTimeout(3 * time.Second); err != nil || string(f.Payload) != "ok" {
		t.Fatalf("echo: %v %v", f, err)
	}
	bad(raw)
	seen := clientClose(t, raw, 3*time.Second, code, reason)
	if len(seen) != 0 {
		t.Errorf("client saw %v before the close", seen)
	}
	wantClose(t, "upstream", testkit.Recv(t, upGot, 3*time.Second, "upstream close"), 1001, "client violated the protocol")
	raw.SendClose(code, "")
	wantEOF(t, raw)
	e.wantEnd(code, "proxy")
}

func TestCloseInvalidUTF8FromClient(t *testing.T) {
	testkit.CheckGoroutines(t)
	checkProtocolViolation(t, func(raw *testkit.Conn) {
		raw.Send(testkit.Frame{Fin: true, Op: wsmw.OpText, Payload: []byte{'a', 0xff, 0xfe}})
	}, 1007, "invalid utf-8 in text message")
}

func TestCloseUnmaskedClientFrame(t *testing.T) {
	testkit.CheckGoroutines(t)
	checkProtocolViolation(t, func(raw *testkit.Conn) {
		raw.SendRaw(fragment(true, wsmw.OpBinary, "x"))
	}, 1002, "unmasked frame from client")
}

func TestCloseShutdown(t *testing.T) {
	for _, tc := range []struct {
		name string
		code wsmw.StatusCode
		want int
	}{
		{"default 1012", 0, 1012},
		{"drain code 1001", wsmw.StatusGoingAway, 1001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testkit.CheckGoroutines(t)
			e, c, upGot := dialEcho(t, Config{DrainCode: tc.code})
			c.WriteMessage(websocket.TextMessage, []byte("x"))
			if _, _, err := c.ReadMessage(); err != nil {
				t.Fatal(err)
			}
			shut := make(chan error, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			go func() { shut <- e.p.Shutdown(ctx) }()
			wantCloses(t, c, upGot, tc.want, "server shutting down", tc.want, "server shutting down")
			if err := testkit.Recv(t, shut, 3*time.Second, "Shutdown"); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			if n := e.p.ActiveSessions(); n != 0 {
				t.Errorf("Shutdown returned with %d active sessions", n)
			}
			_, resp, err := websocket.DefaultDialer.Dial(e.URL, nil)
			if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				t.Errorf("upgrade after Shutdown: status %d, err %v; want 503", status, err)
			}
			if resp != nil && resp.Body != nil {
				resp.Body.Close()
			}
			e.wantEnd(tc.want, "proxy")
		})
	}
}

// Shutdown with no session returns at once; with a session that never answers
// the close it still returns once the close timeout ended it.
func TestCloseShutdownUnresponsivePeers(t *testing.T) {
	testkit.CheckGoroutines(t)
	up := startRaw(t, func(c *testkit.Conn) { c.WaitEOF(5 * time.Second) }) // reads, never answers
	e := startSession(t, up.URL, Config{CloseTimeout: 300 * time.Millisecond})
	raw := testkit.DialRaw(t, e.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.p.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("Shutdown took %v, want about the close timeout (300ms)", d)
	}
	clientClose(t, raw, time.Second, 1012, "server shutting down")
	e.wantEnd(1012, "proxy")
}

// RFC 6455 §5.5.1: a close that was received must be answered. When the other
// leg cannot answer it (it vanished, or never answers within CloseTimeout), the
// proxy completes the handshake itself by echoing the close.
func TestCloseUpstreamVanishesDuringCloseHandshake(t *testing.T) {
	testkit.CheckGoroutines(t)
	upGot := make(chan *testkit.Frame, 1)
	up := startRaw(t, func(c *testkit.Conn) {
		f, _, _ := c.ReadUntilClose(3 * time.Second)
		upGot <- f
		// Return: TCP close without answering the close.
	})
	e := startSession(t, up.URL, Config{})
	raw := testkit.DialRaw(t, e.URL)
	raw.SendClose(4000, "bye")
	f := testkit.Recv(t, upGot, 3*time.Second, "upstream close")
	wantRawClose(t, "upstream", f, nil, 4000, "bye")
	clientClose(t, raw, 3*time.Second, 4000, "bye")
	wantEOF(t, raw)
	e.wantEnd(4000, "client")
}

func TestCloseClientNeverAnswersUpstreamClose(t *testing.T) {
	testkit.CheckGoroutines(t)
	up, upGot := startReporting(t, func(c *websocket.Conn) error {
		sendClose(c, 4001, "srv")
		return readErr(c, 3*time.Second)
	})
	e := startSession(t, up.URL, Config{CloseTimeout: 300 * time.Millisecond})
	raw := testkit.DialRaw(t, e.URL)
	start := time.Now()
	clientClose(t, raw, 3*time.Second, 4001, "srv") // and never answer it
	wantClose(t, "upstream", testkit.Recv(t, upGot, 3*time.Second, "upstream close"), 4001, "srv")
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("upstream's close answered after %v, want about the close timeout (300ms)", d)
	}
	wantEOF(t, raw)
	e.wantEnd(4001, "upstream")
}

// A policy close for an upstream message: the verdict's code to the upstream,
// 1014 (bad gateway) to the client. A coder client: gorilla 1.5.3 refuses 1014.
func TestClosePolicyVerdictDownstream(t *testing.T) {
	testkit.CheckGoroutines(t)
	up, upGot := startReporting(t, func(c *websocket.Conn) error {
		c.WriteMessage(websocket.TextMessage, []byte("fine"))
		c.WriteMessage(websocket.TextMessage, []byte("bad"))
		return readErr(c, 3*time.Second)
	})
	in := testInspector{inspect: func(m *Message) Verdict {
		if m.Direction == UpstreamToClient && m.Length == 3 {
			return Verdict{Action: Close, Reason: "no"}
		}
		return Verdict{Action: Pass}
	}}
	e := startSession(t, up.URL, Config{Inspectors: Chain{in}})
	c, _, ctx := dialCoder(t, e.URL, coder.CompressionDisabled)
	if _, p, err := c.Read(ctx); err != nil || string(p) != "fine" {
		t.Fatalf("first message %q %v", p, err)
	}
	_, _, err := c.Read(ctx)
	wantCoderClose(t, "client", err, 1014, "upstream message refused")
	wantClose(t, "upstream", testkit.Recv(t, upGot, 3*time.Second, "upstream close"), 1008, "no")
	e.wantEnd(1008, "proxy")
}

func TestCloseMessageTooBigFromUpstream(t *testing.T) {
	testkit.CheckGoroutines(t)
	up, upGot := startReporting(t, func(c *websocket.Conn) error {
		c.WriteMessage(websocket.BinaryMessage, make([]byte, 1000))
		c.WriteMessage(websocket.BinaryMessage, make([]byte, 2000))
		return readErr(c, 3*time.Second)
	})
	e := startSession(t, up.URL, Config{MaxMessageSize: 1000})
	c, _, ctx := dialCoder(t, e.URL, coder.CompressionDisabled)
	if _, p, err := c.Read(ctx); err != nil || len(p) != 1000 {
		t.Fatalf("first message: %d %v", len(p), err)
	}
	_, _, err := c.Read(ctx)
	wantCoderClose(t, "client", err, 1014, "upstream violated the protocol")
	wantClose(t, "upstream", testkit.Recv(t, upGot, 3*time.Second, "upstream close"), 1009, "message too big")
	e.wantEnd(1009, "proxy")
}

// An upstream that reads nothing is dropped after WriteTimeout: the client gets 1014.
func TestCloseSlowUpstreamIsDropped(t *testing.T) {
	testkit.CheckGoroutines(t)
	stop := make(chan struct{})
	up := startRaw(t, func(c *testkit.Conn) { <-stop }) // never reads
	defer close(stop)
	e := startSession(t, up.URL, Config{WriteTimeout: 300 * time.Millisecond})
	raw := testkit.DialRaw(t, e.URL)
	var written atomic.Int64
	var halt atomic.Bool
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		msg := make([]byte, 64<<10)
		for !halt.Load() && written.Load() < 100<<20 {
			if raw.Send(testkit.Frame{Fin: true, Op: wsmw.OpBinary, Payload: msg}) != nil {
				return
			}
			written.Add(int64(len(msg)))
		}
	}()
	start := time.Now()
	f, seen, err := raw.ReadUntilClose(5 * time.Second)
	halt.Store(true)
	<-wdone
	wantRawClose(t, "client", f, err, 1014, "upstream went away")
	if len(seen) != 0 {
		t.Errorf("client got %d frames before the close", len(seen))
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("slow upstream dropped after %v", d)
	}
	raw.SendClose(1014, "")
	wantEOF(t, raw)
	e.wantEnd(1006, "upstream")
	t.Logf("client wrote %d KiB before the upstream was dropped", written.Load()>>10)
}
