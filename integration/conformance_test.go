package integration

// RFC 6455 conformance suite, driven with raw frames. The frames are built and
// parsed by testkit's raw codec, which uses only wsmw's stateless header codec
// (no wsmw.Conn), so that the suite stays independent of the implementation
// it checks. The cases are in
// conformance_cases_test.go, grouped like the Autobahn TestSuite; each runs
// against three targets:
//
//   - wsmw: a wsmw.Middleware echo server (message API) with 64 KiB limits;
//   - proxy: proxy.New (64 KiB limits) behind a chi router, in front of a
//     lenient upstream that echoes frames without checking anything, so every
//     violation must be caught by the proxy itself;
//   - caddy: Caddy with the ws handler in front of the same lenient upstream.
//
// The client sees the same thing from all three. For the two proxies the
// lenient upstream's record is checked too: a violating frame never reaches it,
// it receives 1001 when the client violated the protocol, the client's close
// code otherwise, and in healthy cases exactly the client's messages and pings.

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	_ "github.com/wsgate/wsgate/caddymodule" // the ws directive
	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/internal/testkit/caddytest"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/wsmw"
)

const (
	// emptyClose stands for a close frame with an empty body (1005 is never on the wire).
	emptyClose = 1005
	// noClose stands for a connection that ended without a close frame.
	noClose = 1006

	// frameLimit is MaxFrameSize and MaxMessageSize of every target.
	frameLimit = 64 << 10
)

// appendHeader appends a frame header announcing length payload bytes, masked
// with key when key is non-nil: for frames sent in parts, or never finished.
func appendHeader(b []byte, fin bool, op wsmw.OpCode, length int, key []byte) []byte {
	h := wsmw.Header{Fin: fin, OpCode: op, Masked: key != nil, Length: int64(length)}
	copy(h.Mask[:], key)
	return wsmw.AppendHeader(b, h)
}

// appendFrame appends f, masked with a fresh random key when mask is set.
func appendFrame(b []byte, f testkit.Frame, mask bool) []byte {
	if mask {
		f = f.MaskRandom()
	}
	return testkit.AppendFrame(b, f)
}

// closeCodeOf decodes a close body: emptyClose for an empty body, -1 for a malformed (1-byte) one.
func closeCodeOf(p []byte) int {
	code, _ := testkit.CloseCode(p)
	return code
}

// dialRaw opens a raw client connection to addr for path (testkit.DialRaw)
// that reads frames of up to 1 MiB.
func dialRaw(t testing.TB, addr, path string) *testkit.Conn {
	t.Helper()
	c := testkit.DialRaw(t, "ws://"+addr+path)
	c.MaxFrame = 1 << 20
	return c
}

// waitEOF waits up to d for the server to close the TCP connection, discarding what arrives.
func waitEOF(c *testkit.Conn, d time.Duration) error {
	if !c.WaitEOF(d) {
		return fmt.Errorf("server did not close the TCP connection within %v", d)
	}
	return nil
}

// ---------------------------------------------------------------------------
// The lenient upstream.

// upstreamRecord is what the lenient upstream received on one connection.
type upstreamRecord struct {
	mu        sync.Mutex
	frames    []testkit.Frame
	closeCode int // noClose until a close frame arrives
	done      chan struct{}
}

func (r *upstreamRecord) snapshot() ([]testkit.Frame, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]testkit.Frame(nil), r.frames...), r.closeCode
}

// lenientUpstream is the lenient echo upstream: it echoes every data frame as it
// came (opcode, RSV bits, fragmentation; unmasked), answers pings with pongs,
// ignores pongs, echoes the close frame's body and closes. It checks nothing.
// What each connection received is recorded under its request path.
type lenientUpstream struct {
	*testkit.RawServer
	mu   sync.Mutex
	recs map[string]*upstreamRecord
}

func startLenient(t testing.TB) *lenientUpstream {
	l := &lenientUpstream{recs: make(map[string]*upstreamRecord)}
	l.RawServer = testkit.StartRawServer(t, l.serve)
	return l
}

func (l *lenientUpstream) record(path string) *upstreamRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.recs[path]
	if !ok {
		r = &upstreamRecord{closeCode: noClose, done: make(chan struct{})}
		l.recs[path] = r
	}
	return r
}

func (l *lenientUpstream) serve(c *testkit.Conn) {
	rec := l.record(c.Req.URL.Path)
	defer close(rec.done)
	for {
		f, err := c.ReadFrame()
		if err != nil {
			return
		}
		rec.mu.Lock()
		rec.frames = append(rec.frames, f)
		rec.mu.Unlock()
		var out testkit.Frame
		switch f.Op {
		case wsmw.OpPong:
			continue
		case wsmw.OpPing:
			out = testkit.Pong(string(f.Payload))
		default:
			out = testkit.Frame{Fin: f.Fin, Rsv: f.Rsv, Op: f.Op, Payload: f.Payload}
		}
		if err := c.Send(out); err != nil {
			return
		}
		if f.Op == wsmw.OpClose {
			rec.mu.Lock()
			rec.closeCode = closeCodeOf(f.Payload)
			rec.mu.Unlock()
			return
		}
	}
}

// ---------------------------------------------------------------------------
// Targets.

// target is a server the suite runs against.
type target struct {
	name string
	addr string
	up   *lenientUpstream // nil when the target is the echo server itself
	// dial, if set, opens the client's connection instead of dialRaw (a
	// WebSocket on an HTTP/2 or HTTP/3 stream: streams_test.go).
	dial func(path string) (*testkit.Conn, error)
}

// wsmwTarget is a wsmw echo server with 64 KiB limits.
func wsmwTarget(t testing.TB) target {
	cfg := &wsmw.ServerConfig{MaxFrameSize: frameLimit, MaxMessageSize: frameLimit, CloseTimeout: 2 * time.Second}
	h := wsmw.Middleware(testkit.EchoHandler, cfg)(http.NotFoundHandler())
	return target{name: "wsmw", addr: testkit.Serve(t, h, nil)}
}

// proxyTarget is the proxy (64 KiB limits) on a chi router in front of a lenient upstream.
func proxyTarget(t testing.TB) target {
	p, up := conformanceProxy(t)
	r := chi.NewRouter()
	r.Use(p.Middleware)
	r.Get("/*", http.NotFound)
	addr := testkit.Serve(t, r, nil)
	return target{name: "proxy", addr: addr, up: up}
}

// conformanceProxy starts the proxy the conformance suite runs against (64 KiB
// limits, a 2 s close timeout) in front of a lenient upstream; it shuts down
// at cleanup.
func conformanceProxy(t testing.TB) (*proxy.Proxy, *lenientUpstream) {
	t.Helper()
	up := startLenient(t)
	p, err := proxy.New(proxy.Config{
		Upstreams:      []string{up.URL},
		MaxFrameSize:   frameLimit,
		MaxMessageSize: frameLimit,
		CloseTimeout:   2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return p, up
}

// ---------------------------------------------------------------------------
// Cases.

// step is one thing the client sends.
type step struct {
	f testkit.Frame
	// raw, if set, is sent instead of f (masked frames built by hand, partial frames).
	raw []byte
	// chop sends the bytes in pieces of this size with a pause in between.
	chop int
	// bad marks the frame that violates the protocol: from it on, nothing the
	// client sends may reach the upstream.
	bad bool
	// dropped marks a frame that is not a violation but must be ignored (data
	// after the client's close): it must not reach the upstream either.
	dropped bool
	// waitClose: the server's close must have arrived before this step is sent
	// (fail fast); the step is then sent after it, to complete a partial frame.
	waitClose bool
	// pause before sending.
	pause time.Duration
}

// message is an expected data message.
type message struct {
	Op      wsmw.OpCode
	Payload []byte
}

// conformanceCase is one conformance case.
type conformanceCase struct {
	group, name string
	steps       []step
	// msgs and pongs are the echoed messages and the pongs expected, each in order.
	// When the server closes (close != 0) they may be cut short by the close.
	msgs  []message
	pongs [][]byte
	// close is the code of the server's close frame (emptyClose: empty body);
	// 0: the connection stays healthy, which the suite checks with a 1000 close handshake.
	close int
	// clientClosed: the client started the close handshake in its steps.
	clientClosed bool
	// abandon: the client is in the middle of a frame when the close arrives, so
	// it cannot answer with a close frame; it closes the TCP connection instead.
	abandon bool
	// upClose is the close code the upstream must receive (0: 1000 when healthy,
	// 1001 after a violation, close when the client closed).
	upClose int
}

// violation reports whether the case has a frame that violates the protocol.
func (c *conformanceCase) violation() bool {
	for _, s := range c.steps {
		if s.bad {
			return true
		}
	}
	return false
}

// runCase runs one case against a target.
func runCase(t *testing.T, tg target, cs *conformanceCase, path string) {
	var c *testkit.Conn
	if tg.dial == nil {
		c = dialRaw(t, tg.addr, path)
	} else {
		var err error
		if c, err = tg.dial(path); err != nil {
			t.Fatalf("dial: %v", err)
		}
		c.MaxFrame = 1 << 20
		defer c.Close()
	}

	var (
		msgs      []message
		pongs     [][]byte
		partial   *message // message being reassembled
		closeCode int      // 0 until the server's close arrives
	)
	// next reads one frame and files it; it reports the server's close.
	next := func(d time.Duration) error {
		f, err := c.ReadFrameTimeout(d)
		if err != nil {
			return err
		}
		if f.Masked {
			return fmt.Errorf("server sent a masked frame %v", f)
		}
		if f.Rsv != 0 {
			return fmt.Errorf("server sent RSV bits %v", f)
		}
		switch f.Op {
		case wsmw.OpText, wsmw.OpBinary:
			if partial != nil {
				return fmt.Errorf("server started a message inside another: %v", f)
			}
			partial = &message{Op: f.Op, Payload: f.Payload}
		case wsmw.OpContinuation:
			if partial == nil {
				return fmt.Errorf("server sent a continuation without a message: %v", f)
			}
			partial.Payload = append(partial.Payload, f.Payload...)
		case wsmw.OpPong:
			pongs = append(pongs, f.Payload)
			return nil
		case wsmw.OpPing:
			return fmt.Errorf("server sent an unexpected ping %v", f)
		case wsmw.OpClose:
			closeCode = closeCodeOf(f.Payload)
			if closeCode == -1 {
				return fmt.Errorf("server sent a 1-byte close body")
			}
			return nil
		default:
			return fmt.Errorf("server sent opcode %d", f.Op)
		}
		if f.Fin {
			msgs = append(msgs, *partial)
			partial = nil
		}
		return nil
	}

	// Send the steps.
	for i, s := range cs.steps {
		if s.waitClose {
			deadline := time.Now().Add(3 * time.Second)
			for closeCode == 0 {
				if err := next(time.Until(deadline)); err != nil {
					t.Fatalf("no close before step %d was sent (fail fast): %v", i, err)
				}
			}
		}
		if s.pause > 0 {
			time.Sleep(s.pause)
		}
		b := s.raw
		if b == nil {
			b = appendFrame(nil, s.f, true)
		}
		if err := c.WriteChopped(b, s.chop); err != nil {
			if cs.close != 0 && closeCode == 0 {
				// The server may fail the connection while the step is in flight.
				break
			}
			t.Fatalf("step %d: %v", i, err)
		}
	}

	wantMsgs, wantPongs := cs.msgs, cs.pongs
	deadline := time.Now().Add(5 * time.Second)
	if cs.close == 0 {
		// Healthy: everything expected arrives, then a clean close handshake.
		for closeCode == 0 && (len(msgs) < len(wantMsgs) || len(pongs) < len(wantPongs)) {
			if err := next(time.Until(deadline)); err != nil {
				t.Fatalf("waiting for %d messages and %d pongs (have %d, %d): %v", len(wantMsgs), len(wantPongs), len(msgs), len(pongs), err)
			}
		}
		if closeCode != 0 {
			t.Fatalf("server closed with %d; want no close", closeCode)
		}
		compareMessages(t, msgs, pongs, wantMsgs, wantPongs, false)
		if err := c.SendClose(1000, "done"); err != nil {
			t.Fatalf("sending close: %v", err)
		}
		for closeCode == 0 {
			if err := next(time.Until(deadline)); err != nil {
				t.Fatalf("waiting for the close reply: %v", err)
			}
		}
		if closeCode != 1000 {
			t.Errorf("close reply: code %d, want 1000", closeCode)
		}
		compareMessages(t, msgs, pongs, wantMsgs, wantPongs, false) // nothing extra before the close
	} else {
		for closeCode == 0 {
			if err := next(time.Until(deadline)); err != nil {
				t.Fatalf("waiting for close %d (got %d messages, %d pongs): %v", cs.close, len(msgs), len(pongs), err)
			}
		}
		if closeCode != cs.close {
			t.Errorf("server closed with %d, want %d", closeCode, cs.close)
		}
		compareMessages(t, msgs, pongs, wantMsgs, wantPongs, cs.violation())
		if cs.abandon {
			c.Close()
			if tg.up != nil {
				checkUpstream(t, tg.up, cs, path)
			}
			return
		}
		if !cs.clientClosed {
			// Complete the close handshake.
			body := []byte{}
			if closeCode != emptyClose {
				body = binary.BigEndian.AppendUint16(body, uint16(closeCode))
			}
			c.Send(testkit.Frame{Fin: true, Op: wsmw.OpClose, Payload: body})
		}
	}
	if err := waitEOF(c, 3*time.Second); err != nil {
		t.Error(err)
	}

	if tg.up != nil {
		checkUpstream(t, tg.up, cs, path)
	}
}

// compareMessages checks the received messages and pongs. With prefix set (the
// connection was failed) they may be a prefix of what is expected.
func compareMessages(t *testing.T, msgs []message, pongs [][]byte, wantMsgs []message, wantPongs [][]byte, prefix bool) {
	t.Helper()
	if prefix {
		if len(msgs) > len(wantMsgs) {
			t.Errorf("got %d messages, want at most %d: %s", len(msgs), len(wantMsgs), messagesString(msgs))
		}
		if len(pongs) > len(wantPongs) {
			t.Errorf("got %d pongs, want at most %d", len(pongs), len(wantPongs))
		}
		wantMsgs = wantMsgs[:min(len(msgs), len(wantMsgs))]
		wantPongs = wantPongs[:min(len(pongs), len(wantPongs))]
		msgs = msgs[:len(wantMsgs)]
		pongs = pongs[:len(wantPongs)]
	}
	if len(msgs) != len(wantMsgs) {
		t.Errorf("got %d messages %s, want %d %s", len(msgs), messagesString(msgs), len(wantMsgs), messagesString(wantMsgs))
	} else {
		for i := range msgs {
			if msgs[i].Op != wantMsgs[i].Op || string(msgs[i].Payload) != string(wantMsgs[i].Payload) {
				t.Errorf("message %d: got %s, want %s", i, messagesString(msgs[i:i+1]), messagesString(wantMsgs[i:i+1]))
			}
		}
	}
	if len(pongs) != len(wantPongs) {
		t.Errorf("got %d pongs %q, want %d %q", len(pongs), pongs, len(wantPongs), wantPongs)
	} else {
		for i := range pongs {
			if string(pongs[i]) != string(wantPongs[i]) {
				t.Errorf("pong %d: got %q, want %q", i, pongs[i], wantPongs[i])
			}
		}
	}
}

func messagesString(ms []message) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		p, suffix := m.Payload, ""
		if len(p) > 24 {
			p, suffix = p[:24], fmt.Sprintf("...(%d bytes)", len(m.Payload))
		}
		parts[i] = fmt.Sprintf("op%d:%q%s", m.Op, p, suffix)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// checkUpstream checks what the lenient upstream received for the case.
func checkUpstream(t *testing.T, up *lenientUpstream, cs *conformanceCase, path string) {
	t.Helper()
	rec := up.record(path)
	select {
	case <-rec.done:
	case <-time.After(5 * time.Second):
		t.Errorf("upstream connection for %s did not end", path)
		return
	}
	frames, code := rec.snapshot()

	// Nothing from the violating frame on may have reached the upstream.
	// (Frames are matched by opcode and Payload: the cases give them unique payloads.)
	var badFrom = -1
	for i, s := range cs.steps {
		if s.bad || s.dropped {
			badFrom = i
			break
		}
	}
	if badFrom >= 0 {
		for _, s := range cs.steps[badFrom:] {
			if s.raw != nil || s.f.Op == wsmw.OpClose {
				continue
			}
			for _, f := range frames {
				if f.Op == s.f.Op && string(f.Payload) == string(s.f.Payload) {
					t.Errorf("upstream received the violating, ignored or a later frame %v", f)
				}
			}
		}
	}

	want := cs.upClose
	if want == 0 {
		switch {
		case cs.violation():
			want = 1001
		case cs.clientClosed:
			want = cs.close
		default:
			want = 1000
		}
	}
	if code != want {
		t.Errorf("upstream received close %d, want %d (frames: %v)", code, want, frames)
	}

	if cs.violation() {
		return
	}
	// Healthy: the upstream got exactly the client's messages and pings.
	var msgs []message
	var pings [][]byte
	var partial *message
	for _, f := range frames {
		switch f.Op {
		case wsmw.OpText, wsmw.OpBinary:
			partial = &message{Op: f.Op, Payload: f.Payload}
		case wsmw.OpContinuation:
			if partial == nil {
				t.Errorf("upstream received a stray continuation %v", f)
				continue
			}
			partial.Payload = append(partial.Payload, f.Payload...)
		case wsmw.OpPing:
			pings = append(pings, f.Payload)
			continue
		default:
			continue
		}
		if f.Fin {
			msgs = append(msgs, *partial)
			partial = nil
		}
	}
	if cs.close != 0 {
		// The client closed: the upstream has what came before the close.
		compareMessages(t, msgs, pings, cs.msgs, cs.pongs, true)
		return
	}
	compareMessages(t, msgs, pings, cs.msgs, cs.pongs, false)
}

// TestConformance runs every case against every target.
func TestConformance(t *testing.T) {
	checkLeaks(t)
	cases := conformanceCases()
	targets := []target{wsmwTarget(t), proxyTarget(t)}
	if tg, ok := caddyTarget(t); ok {
		targets = append(targets, tg)
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			for i := range cases {
				cs := &cases[i]
				t.Run(cs.group+"/"+cs.name, func(t *testing.T) {
					runCase(t, tg, cs, fmt.Sprintf("/conf/%s/%d", tg.name, i))
				})
			}
		})
	}
}

// caddyTarget is Caddy with the ws directive (64 KiB limits) in front of a lenient upstream.
func caddyTarget(t testing.TB) (target, bool) {
	up := startLenient(t)
	addr := testkit.FreeAddr(t)
	caddytest.Load(t, caddytest.Global+fmt.Sprintf(`http://%s {
	ws %s {
		max_frame_size 64KiB
		max_message_size 64KiB
		close_timeout 2s
	}
}
`, addr, up.Addr()))
	return target{name: "caddy", addr: addr, up: up}, true
}
