package proxy

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

// Forwarding, inspectors, timers, back-pressure, metrics and logging of a session.

var sizes = []int{0, 1, 125, 126, 127, 65535, 65536, 3 << 20}

func randomPayload(op int, n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	p := make([]byte, n)
	for i := range p {
		if op == websocket.TextMessage {
			p[i] = byte('a' + r.IntN(26))
		} else {
			p[i] = byte(r.Uint32())
		}
	}
	return p
}

// transform is what the upstream answers: a different payload of the same
// size, so each direction is checked on its own.
func transform(op int, p []byte) []byte {
	out := make([]byte, len(p))
	for i, b := range p {
		if op == websocket.TextMessage {
			out[i] = b - 'a' + 'A'
		} else {
			out[i] = b ^ 0x5a
		}
	}
	return out
}

// Whole messages of every length class, both types, both ways, between gorilla
// peers (the client sends each message as one frame; the upstream fragments at
// its 4 KiB write buffer). Frame-exact forwarding is TestSessionForwardsFramesExactly.
func TestSessionForwardsMessagesBothWays(t *testing.T) {
	testkit.CheckGoroutines(t)
	up, upSaw := startRecording(t, 1, transform)
	e := startSession(t, up.URL, Config{})
	d := websocket.Dialer{WriteBufferSize: 4 << 20}
	c, _, err := d.Dial(e.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, op := range []int{websocket.TextMessage, websocket.BinaryMessage} {
		for _, n := range sizes {
			sent := randomPayload(op, n, 1)
			if err := c.WriteMessage(op, sent); err != nil {
				t.Fatal(err)
			}
			r := testkit.Recv(t, upSaw, 5*time.Second, "upstream message")
			if r.op != op || !bytes.Equal(r.p, sent) {
				t.Errorf("op %d len %d: upstream got op %d len %d (equal %v)", op, n, r.op, len(r.p), bytes.Equal(r.p, sent))
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			gotOp, got, err := c.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			if gotOp != op || !bytes.Equal(got, transform(op, sent)) {
				t.Errorf("op %d len %d: client got op %d len %d", op, n, gotOp, len(got))
			}
		}
	}
	sendClose(c, 1000, "")
	wantClose(t, "client", readErr(c, 3*time.Second), 1000, "")
}

// Frame by frame between raw peers: each frame arrives alone, with its exact
// length (every header length encoding), op and FIN; client frames are
// re-masked with a new key, upstream frames stay unmasked.
func TestSessionForwardsFramesExactly(t *testing.T) {
	testkit.CheckGoroutines(t)
	upSaw := make(chan testkit.Frame, 1)
	up := startRaw(t, func(c *testkit.Conn) {
		for {
			f, err := c.ReadFrame()
			if err != nil {
				return
			}
			if f.Op == wsmw.OpClose {
				c.Send(testkit.Frame{Fin: true, Op: wsmw.OpClose, Payload: f.Payload})
				return
			}
			upSaw <- f
			back := testkit.Frame{Fin: f.Fin, Op: f.Op, Payload: bytes.Repeat([]byte{'d'}, len(f.Payload))}
			if err := c.Send(back); err != nil {
				return
			}
		}
	})
	e := startSession(t, up.URL, Config{})
	raw := testkit.DialRaw(t, e.URL)
	for _, n := range sizes {
		key := [4]byte{1, 2, 3, byte(n)}
		sent := bytes.Repeat([]byte{'u'}, n)
		if err := raw.Send(testkit.Frame{Fin: true, Op: wsmw.OpBinary, Key: key, Payload: sent}); err != nil {
			t.Fatal(err)
		}
		f := testkit.Recv(t, upSaw, 5*time.Second, "upstream frame")
		if f.Op != wsmw.OpBinary || !f.Fin || !bytes.Equal(f.Payload, sent) || !f.Masked {
			t.Errorf("len %d: upstream got %v", n, f)
		}
		if f.Key == key {
			t.Errorf("len %d: upstream frame masked with the client's key", n)
		}
		back, err := raw.ReadFrameTimeout(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if back.Op != wsmw.OpBinary || !back.Fin || back.Masked || len(back.Payload) != n || bytes.Count(back.Payload, []byte{'d'}) != n {
			t.Errorf("len %d: client got %v", n, back)
		}
	}
	closeRaw(t, raw, "")
}

// A fragmented message keeps its fragmentation in both directions; a ping
// between fragments is forwarded in place (not answered by the proxy) and the
// pong comes from the other end.
func TestSessionPreservesFragmentationAndForwardsPings(t *testing.T) {
	testkit.CheckGoroutines(t)
	clientKeys := [][4]byte{{1, 1, 1, 1}, {2, 2, 2, 2}, {3, 3, 3, 3}, {4, 4, 4, 4}}
	upSaw := make(chan []testkit.Frame, 1)
	upPong := make(chan testkit.Frame, 1)
	up := startRaw(t, func(c *testkit.Conn) {
		var frames []testkit.Frame
		for len(frames) < 4 {
			f, err := c.ReadFrame()
			if err != nil {
				return
			}
			frames = append(frames, f)
			if f.Op == wsmw.OpPing {
				c.Send(fragment(true, wsmw.OpPong, "up"))
			}
		}
		upSaw <- frames
		// Now the other way: fragments with a ping in between.
		c.Send(fragment(false, wsmw.OpBinary, "D1"))
		c.Send(fragment(false, wsmw.OpContinuation, "D2"))
		c.Send(fragment(true, wsmw.OpPing, "uping"))
		c.Send(fragment(true, wsmw.OpContinuation, "D3"))
		f, err := c.ReadFrame()
		if err != nil {
			return
		}
		upPong <- f
		c.ReadUntilClose(3 * time.Second)
		c.SendClose(1000, "")
	})
	e := startSession(t, up.URL, Config{})
	raw := testkit.DialRaw(t, e.URL)

	raw.Send(testkit.Frame{Op: wsmw.OpText, Key: clientKeys[0], Payload: []byte("frag1-")})
	raw.Send(testkit.Frame{Op: wsmw.OpContinuation, Key: clientKeys[1], Payload: []byte("frag2-")})
	raw.Send(testkit.Frame{Fin: true, Op: wsmw.OpPing, Key: clientKeys[2], Payload: []byte("cping")})
	// The pong must come from the upstream, and before the message is complete.
	pong, err := raw.ReadFrameTimeout(3 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if pong.Op != wsmw.OpPong || string(pong.Payload) != "up" || pong.Masked {
		t.Errorf("client got %v %q, want the upstream's unmasked pong \"up\"", pong, pong.Payload)
	}
	raw.Send(testkit.Frame{Fin: true, Op: wsmw.OpContinuation, Key: clientKeys[3], Payload: []byte("frag3")})

	// Upstream frames are masked (with keys of the proxy's) and have no RSV bits;
	// client frames are unmasked.
	frames := testkit.Recv(t, upSaw, 3*time.Second, "upstream frames")
	for i, w := range []testkit.Frame{fragment(false, wsmw.OpText, "frag1-"), fragment(false, wsmw.OpContinuation, "frag2-"),
		fragment(true, wsmw.OpPing, "cping"), fragment(true, wsmw.OpContinuation, "frag3")} {
		if f := frames[i]; !sameFrame(f, w) || !f.Masked || f.Rsv != 0 {
			t.Errorf("upstream frame %d: %v, want %v masked", i, f, w)
		}
		if frames[i].Key == clientKeys[i] {
			t.Errorf("upstream frame %d masked with the client's key %v", i, frames[i].Key)
		}
	}

	var down []testkit.Frame
	for len(down) < 4 {
		f, err := raw.ReadFrameTimeout(3 * time.Second)
		if err != nil {
			t.Fatalf("client read after %v: %v", down, err)
		}
		down = append(down, f)
		if f.Op == wsmw.OpPing {
			raw.Send(testkit.Pong("down"))
		}
	}
	for i, w := range []testkit.Frame{fragment(false, wsmw.OpBinary, "D1"), fragment(false, wsmw.OpContinuation, "D2"),
		fragment(true, wsmw.OpPing, "uping"), fragment(true, wsmw.OpContinuation, "D3")} {
		if f := down[i]; !sameFrame(f, w) || f.Masked {
			t.Errorf("client frame %d: %v, want %v unmasked", i, f, w)
		}
	}
	if f := testkit.Recv(t, upPong, 3*time.Second, "upstream pong"); f.Op != wsmw.OpPong || string(f.Payload) != "down" || !f.Masked {
		t.Errorf("upstream got %v %q, want the client's pong \"down\"", f, f.Payload)
	}
	closeRaw(t, raw, "done")
}

// testInspector is an inline Inspector for the integration tests.
type testInspector struct {
	needs   bool
	inspect func(m *Message) Verdict
}

func (i testInspector) NeedsPayload(dir Direction, op wsmw.OpCode) bool {
	return i.needs && dir == ClientToUpstream
}
func (i testInspector) Inspect(m *Message) Verdict { return i.inspect(m) }

// collector is a gorilla upstream recording the text of every message, then the
// error that ended the session.
type collector struct {
	mu   sync.Mutex
	msgs []string
	end  chan error
	got  chan string
}

func newCollector() *collector {
	return &collector{end: make(chan error, 1), got: make(chan string, 100)}
}

func (s *collector) handle(c *websocket.Conn) {
	for {
		_, p, err := c.ReadMessage()
		if err != nil {
			s.end <- err
			return
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, string(p))
		s.mu.Unlock()
		s.got <- string(p)
	}
}

func TestSessionInspectorDrop(t *testing.T) {
	for _, needs := range []bool{false, true} {
		t.Run(fmt.Sprintf("needsPayload=%v", needs), func(t *testing.T) {
			testkit.CheckGoroutines(t)
			col := newCollector()
			up := startGorilla(t, col.handle)
			var seen atomic.Int32
			in := testInspector{needs: needs, inspect: func(m *Message) Verdict {
				seen.Add(1)
				if m.Length == 4 && (!needs || string(m.Payload) == "drop") {
					return Verdict{Action: Drop}
				}
				return Verdict{Action: Pass}
			}}
			_, c := dialSession(t, up.URL, Config{Inspectors: Chain{in}})
			for _, m := range []string{"one", "drop", "after"} {
				c.WriteMessage(websocket.TextMessage, []byte(m))
			}
			if m := testkit.Recv(t, col.got, 3*time.Second, "message"); m != "one" {
				t.Errorf("first message %q", m)
			}
			if m := testkit.Recv(t, col.got, 3*time.Second, "message"); m != "after" {
				t.Errorf("second message %q, want \"after\" (\"drop\" dropped)", m)
			}
			sendClose(c, 1000, "bye")
			wantCloses(t, c, col.end, 1000, "", 1000, "bye")
			if n := seen.Load(); n != 3 {
				t.Errorf("inspector saw %d messages, want 3", n)
			}
			if len(col.msgs) != 2 {
				t.Errorf("upstream got %q", col.msgs)
			}
		})
	}
}

// A streamed Drop drops every fragment of the message.
func TestSessionInspectorDropFragmented(t *testing.T) {
	testkit.CheckGoroutines(t)
	in := testInspector{inspect: func(m *Message) Verdict {
		if m.Length == 4 && !m.Final {
			return Verdict{Action: Drop}
		}
		return Verdict{Action: Pass}
	}}
	seen, _, _ := sendThrough(t, in, fragment(false, wsmw.OpText, "drop"), fragment(false, wsmw.OpContinuation, "-more-"),
		fragment(true, wsmw.OpContinuation, "-end"), fragment(true, wsmw.OpText, "kept"))
	if len(seen) != 1 || string(seen[0].Payload) != "kept" || !seen[0].Fin || seen[0].Op != wsmw.OpText {
		t.Errorf("upstream saw %v, want only the frame \"kept\"", seen)
	}
}

func TestSessionInspectorReplace(t *testing.T) {
	testkit.CheckGoroutines(t)
	up, upSaw := startRecording(t, 10, nil)
	in := testInspector{needs: true, inspect: func(m *Message) Verdict {
		if bytes.Contains(m.Payload, []byte("secret")) {
			return Verdict{Action: Replace, Payload: bytes.ReplaceAll(m.Payload, []byte("secret"), []byte("[redacted]"))}
		}
		return Verdict{Action: Pass}
	}}
	_, c := dialSession(t, up.URL, Config{Inspectors: Chain{in}})
	c.WriteMessage(websocket.TextMessage, []byte("my secret is out"))
	c.WriteMessage(websocket.BinaryMessage, []byte("secret"))
	c.WriteMessage(websocket.TextMessage, []byte("plain"))
	for _, want := range []gorillaMessage{{websocket.TextMessage, []byte("my [redacted] is out")}, {websocket.BinaryMessage, []byte("[redacted]")}, {websocket.TextMessage, []byte("plain")}} {
		if got := testkit.Recv(t, upSaw, 3*time.Second, "message"); got.op != want.op || !bytes.Equal(got.p, want.p) {
			t.Errorf("upstream got %v, want %v", got, want)
		}
	}
	sendClose(c, 1000, "")
	wantClose(t, "client", readErr(c, 3*time.Second), 1000, "")
}

// A payload inspector that passes a fragmented message: the proxy reassembles it
// for the inspector, then forwards the original fragmentation.
func TestSessionInspectorPassKeepsFragmentation(t *testing.T) {
	testkit.CheckGoroutines(t)
	var mu sync.Mutex
	var inspected []string
	in := testInspector{needs: true, inspect: func(m *Message) Verdict {
		mu.Lock()
		inspected = append(inspected, fmt.Sprintf("%v:%s:%d:%v", m.OpCode, m.Payload, m.Length, m.Final))
		mu.Unlock()
		return Verdict{Action: Pass}
	}}
	seen, f, err := sendThrough(t, in, fragment(false, wsmw.OpBinary, "abc"), fragment(false, wsmw.OpContinuation, "defgh"),
		fragment(true, wsmw.OpContinuation, "ijklmno"))
	wantRawClose(t, "client", f, err, 1000, "")
	var got []string
	for _, f := range seen {
		got = append(got, fmt.Sprintf("%d:%v:%s", f.Op, f.Fin, f.Payload))
	}
	if want := "2:false:abc 0:false:defgh 0:true:ijklmno"; strings.Join(got, " ") != want {
		t.Errorf("upstream frames %q, want %q", strings.Join(got, " "), want)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "binary:abcdefghijklmno:15:true"; len(inspected) != 1 || inspected[0] != want {
		t.Errorf("inspector saw %q, want [%q]", inspected, want)
	}
}

func TestSessionIdleTimeout(t *testing.T) {
	testkit.CheckGoroutines(t)
	start := time.Now() // (a little before the session starts)
	e, c, upGot := dialEcho(t, Config{IdleTimeout: 200 * time.Millisecond})
	wantClose(t, "client", readErr(c, 3*time.Second), 1001, "idle timeout")
	if d := time.Since(start); d < 190*time.Millisecond || d > 600*time.Millisecond {
		t.Errorf("idle close after %v, want 200ms..600ms", d)
	}
	wantClose(t, "upstream", testkit.Recv(t, upGot, 3*time.Second, "upstream close"), 1001, "idle timeout")
	e.wantEnd(1001, "proxy")
}

func TestSessionIdleTimeoutNotWithTraffic(t *testing.T) {
	testkit.CheckGoroutines(t)
	_, c, upGot := dialEcho(t, Config{IdleTimeout: 200 * time.Millisecond})
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
		if err := c.WriteMessage(websocket.TextMessage, []byte("tick")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := c.ReadMessage(); err != nil {
			t.Fatalf("session ended despite traffic: %v", err)
		}
	}
	closeAndWant(t, c, upGot, 1000, "done")
}

func TestSessionMaxLifetime(t *testing.T) {
	testkit.CheckGoroutines(t)
	start := time.Now() // (a little before the session starts)
	e, c, upGot := dialEcho(t, Config{MaxLifetime: 300 * time.Millisecond})
	wdone := make(chan struct{})
	go func() { // traffic does not extend the lifetime
		defer close(wdone)
		for i := 0; i < 20; i++ {
			if c.WriteMessage(websocket.TextMessage, []byte("tick")) != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	wantClose(t, "client", readErr(c, 3*time.Second), 1001, "session lifetime exceeded")
	if d := time.Since(start); d < 290*time.Millisecond || d > 800*time.Millisecond {
		t.Errorf("lifetime close after %v, want about 300ms", d)
	}
	wantClose(t, "upstream", testkit.Recv(t, upGot, 3*time.Second, "upstream close"), 1001, "session lifetime exceeded")
	<-wdone
	e.wantEnd(1001, "proxy")
}

// A client that never answers the proxy's pings is dead: the upstream gets 1001.
func TestSessionKeepaliveDeadClient(t *testing.T) {
	testkit.CheckGoroutines(t)
	upGot := make(chan error, 1)
	var upPongs atomic.Int32
	up := startGorilla(t, func(c *websocket.Conn) {
		c.SetPongHandler(func(string) error { upPongs.Add(1); return nil })
		gorillaEcho(upGot)(c)
	})
	e := startSession(t, up.URL, Config{PingInterval: 100 * time.Millisecond, PingTimeout: 50 * time.Millisecond})
	start := time.Now()
	raw := testkit.DialRaw(t, e.URL)
	wantClose(t, "upstream", testkit.Recv(t, upGot, 3*time.Second, "upstream close"), 1001, "client went away")
	if d := time.Since(start); d < 140*time.Millisecond || d > time.Second {
		t.Errorf("dead client detected after %v, want about 150ms", d)
	}
	// The raw client saw the proxy's ping, then the connection ended without a close frame.
	var frames []testkit.Frame
	for {
		f, err := raw.ReadFrameTimeout(3 * time.Second)
		if err != nil {
			break
		}
		frames = append(frames, f)
	}
	if len(frames) == 0 {
		t.Error("client got no ping")
	}
	for _, f := range frames {
		if f.Op != wsmw.OpPing || f.Masked {
			t.Errorf("client got %v, want only unmasked pings", f)
		}
	}
	if n := upPongs.Load(); n != 0 {
		t.Errorf("upstream got %d pongs", n)
	}
	e.wantEnd(1006, "client")
}

// An upstream that never answers the proxy's pings is dead: the client gets 1014.
func TestSessionKeepaliveDeadUpstream(t *testing.T) {
	testkit.CheckGoroutines(t)
	upPings := make(chan int, 1)
	up := startRaw(t, func(c *testkit.Conn) {
		n := 0
		for {
			f, err := c.ReadFrameTimeout(3 * time.Second)
			if err != nil {
				break
			}
			if f.Op == wsmw.OpPing {
				n++
			}
		}
		upPings <- n
	})
	e := startSession(t, up.URL, Config{PingInterval: 100 * time.Millisecond, PingTimeout: 50 * time.Millisecond})
	start := time.Now()
	c, _, ctx := dialCoder(t, e.URL, coder.CompressionDisabled) // coder answers pings while reading, and accepts 1014
	_, _, err := c.Read(ctx)
	wantCoderClose(t, "client", err, 1014, "upstream went away")
	if d := time.Since(start); d < 140*time.Millisecond || d > time.Second {
		t.Errorf("dead upstream detected after %v, want about 150ms", d)
	}
	if n := testkit.Recv(t, upPings, 5*time.Second, "upstream end"); n < 1 {
		t.Errorf("upstream got %d pings", n)
	}
	e.wantEnd(1006, "upstream")
}

// Live peers answer the proxy's pings; those pongs are the proxy's and are not forwarded.
func TestSessionKeepaliveLivePeers(t *testing.T) {
	testkit.CheckGoroutines(t)
	var upPings, upPongs, cPings, cPongs atomic.Int32
	up, upGot := startReporting(t, func(c *websocket.Conn) error {
		c.SetPingHandler(func(s string) error {
			upPings.Add(1)
			return c.WriteControl(websocket.PongMessage, []byte(s), time.Now().Add(time.Second))
		})
		c.SetPongHandler(func(string) error { upPongs.Add(1); return nil })
		return testkit.GorillaEcho(c)
	})
	_, c := dialSession(t, up.URL, Config{PingInterval: 100 * time.Millisecond, PingTimeout: 50 * time.Millisecond})
	c.SetPingHandler(func(s string) error {
		cPings.Add(1)
		return c.WriteControl(websocket.PongMessage, []byte(s), time.Now().Add(time.Second))
	})
	c.SetPongHandler(func(string) error { cPongs.Add(1); return nil })
	msgs := make(chan string, 10)
	readErr := make(chan error, 1)
	go func() {
		for {
			_, p, err := c.ReadMessage()
			if err != nil {
				readErr <- err
				return
			}
			msgs <- string(p)
		}
	}()
	select {
	case err := <-readErr:
		t.Fatalf("session ended: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	c.WriteMessage(websocket.TextMessage, []byte("alive"))
	if m := testkit.Recv(t, msgs, 3*time.Second, "echo"); m != "alive" {
		t.Errorf("echo %q", m)
	}
	sendClose(c, 1000, "")
	wantClose(t, "client", testkit.Recv(t, readErr, 3*time.Second, "client end"), 1000, "")
	wantClose(t, "upstream", testkit.Recv(t, upGot, 3*time.Second, "upstream end"), 1000, "")
	if upPings.Load() < 3 || cPings.Load() < 3 {
		t.Errorf("pings: upstream %d, client %d; want at least 3 each in 500ms", upPings.Load(), cPings.Load())
	}
	if upPongs.Load() != 0 || cPongs.Load() != 0 {
		t.Errorf("pongs forwarded: upstream got %d, client got %d; want none", upPongs.Load(), cPongs.Load())
	}
}

// A client that reads nothing is dropped after WriteTimeout; what the upstream
// can push meanwhile is bounded by socket buffers, and the proxy's heap does not grow.
func TestSessionSlowClientIsDropped(t *testing.T) {
	testkit.CheckGoroutines(t)
	const limit = 100 << 20
	var written atomic.Int64
	upGot := make(chan error, 1)
	up := startGorilla(t, func(c *websocket.Conn) {
		go func() { upGot <- readErr(c, 10*time.Second) }()
		msg := make([]byte, 64<<10)
		for written.Load() < limit {
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				break
			}
			written.Add(int64(len(msg)))
		}
		<-time.After(100 * time.Millisecond)
	})
	e := startSession(t, up.URL, Config{WriteTimeout: 300 * time.Millisecond})

	heapGrowth := testkit.HeapGrowth()
	start := time.Now()
	testkit.DialRaw(t, e.URL) // reads nothing from now on
	err := testkit.Recv(t, upGot, 5*time.Second, "upstream close")
	wantClose(t, "upstream", err, 1001, "client went away")
	waitSessions(t, e.p, 5*time.Second)
	d := time.Since(start)
	growth := heapGrowth()
	if d > 3*time.Second {
		t.Errorf("slow client dropped after %v", d)
	}
	if w := written.Load(); w >= 32<<20 {
		t.Errorf("upstream wrote %d MiB to a client reading nothing", w>>20)
	}
	if growth > 20<<20 {
		t.Errorf("heap in use grew by %d MiB", growth>>20)
	}
	e.wantEnd(1006, "client")
	t.Logf("dropped after %v; upstream wrote %d KiB; heap growth %d KiB", d, written.Load()>>10, growth>>10)
}

func TestSessionMetrics(t *testing.T) {
	testkit.CheckGoroutines(t)
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, "t")
	if err != nil {
		t.Fatal(err)
	}
	e, c, upGot := dialEcho(t, Config{Metrics: m})
	sizes := []int{10, 200, 70000}
	total := 0
	for _, n := range sizes {
		total += n
		c.WriteMessage(websocket.BinaryMessage, make([]byte, n))
		if _, p, err := c.ReadMessage(); err != nil || len(p) != n {
			t.Fatalf("echo: %d %v", len(p), err)
		}
	}
	check := func(when string, want map[string]float64) {
		t.Helper()
		got := map[string]float64{
			"up msgs":    metric(t, reg, "t_messages_total", map[string]string{"direction": "up"}),
			"down msgs":  metric(t, reg, "t_messages_total", map[string]string{"direction": "down"}),
			"up bytes":   metric(t, reg, "t_bytes_total", map[string]string{"direction": "up"}),
			"down bytes": metric(t, reg, "t_bytes_total", map[string]string{"direction": "down"}),
			"active":     metric(t, reg, "t_sessions_active", nil),
			"sessions":   metric(t, reg, "t_sessions_total", map[string]string{"client_proto": "http/1.1"}),
			"closes":     metric(t, reg, "t_closes_total", map[string]string{"code": "1000", "initiator": "client", "client_proto": "http/1.1"}),
		}
		var keys []string
		for k := range want {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if got[k] != want[k] {
				t.Errorf("%s: %s = %v, want %v", when, k, got[k], want[k])
			}
		}
	}
	check("open session", map[string]float64{
		"up msgs": 3, "down msgs": 3, "up bytes": float64(total), "down bytes": float64(total),
		"active": 1, "sessions": 1, "closes": -1,
	})
	closeAndWant(t, c, upGot, 1000, "")
	waitSessions(t, e.p, 3*time.Second)
	check("ended session", map[string]float64{
		"up msgs": 3, "down msgs": 3, "up bytes": float64(total), "down bytes": float64(total),
		"active": 0, "sessions": 1, "closes": 1,
	})
}

func TestSessionLogsOneLinePerSession(t *testing.T) {
	testkit.CheckGoroutines(t)
	core, logs := observer.New(zap.InfoLevel)
	up := startGorilla(t, func(c *websocket.Conn) {
		for {
			op, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			if string(p) == "close me" {
				sendClose(c, 4001, "srv")
				continue
			}
			c.WriteMessage(op, append(p, p...)) // twice the size down
		}
	})
	e := startSession(t, up.URL, Config{Logger: zap.New(core)})

	// Session 1: 2 messages (5+7 bytes) up, 2 (10+14) down, closed by the client with 1000.
	c, _ := mustDial(t, e.URL, nil)
	for _, m := range []string{"hello", "goodbye"} {
		c.WriteMessage(websocket.TextMessage, []byte(m))
		c.ReadMessage()
	}
	sendClose(c, 1000, "")
	wantClose(t, "client 1", readErr(c, 3*time.Second), 1000, "")
	c.Close()
	waitSessions(t, e.p, 3*time.Second)

	// Session 2: 1 message up, closed by the upstream with 4001.
	c, _ = mustDial(t, e.URL, nil)
	c.WriteMessage(websocket.TextMessage, []byte("close me"))
	wantClose(t, "client 2", readErr(c, 3*time.Second), 4001, "srv")
	c.Close()
	waitSessions(t, e.p, 3*time.Second)

	entries := logs.FilterMessage("session closed").All()
	if len(entries) != 2 {
		t.Fatalf("%d \"session closed\" entries, want 2: %v", len(entries), entries)
	}
	want := []map[string]any{
		{"close_code": int64(1000), "closed_by": "client", "msgs_up": int64(2), "bytes_up": int64(12), "msgs_down": int64(2), "bytes_down": int64(24), "upstream": up.URL},
		{"close_code": int64(4001), "closed_by": "upstream", "msgs_up": int64(1), "bytes_up": int64(8), "msgs_down": int64(0), "bytes_down": int64(0), "upstream": up.URL},
	}
	for i, en := range entries {
		if en.Level != zap.InfoLevel {
			t.Errorf("entry %d level %v", i, en.Level)
		}
		fields := en.ContextMap()
		for k, v := range want[i] {
			if fields[k] != v {
				t.Errorf("session %d: %s = %v (%T), want %v", i+1, k, fields[k], fields[k], v)
			}
		}
	}
}

// A peer busy sending one large frame cannot answer a ping before the frame
// ends (a pong cannot go inside a frame); as long as its bytes keep arriving it
// is alive and must not be dropped by the keepalive.
func TestSessionKeepaliveLargeFrameInProgressIsAlive(t *testing.T) {
	// Pings at 150ms, a peer silent 75ms after one is dead: a frame lasting about
	// 500ms sees several pings. (Without the frame, see TestSessionKeepaliveDeadClient.)
	// 32 chunks 15ms apart: the frame takes about 500ms, bytes arriving all along.
	trickleFromClient(t, Config{PingInterval: 150 * time.Millisecond, PingTimeout: 75 * time.Millisecond},
		[4]byte{9, 8, 7, 6}, 256<<10, 32, 15*time.Millisecond, true)
}

// The twin case: while the proxy forwards a large frame to the client, its ping
// waits behind the frame; the client cannot answer a ping it has not received yet.
func TestSessionKeepaliveLargeFrameToClientIsAlive(t *testing.T) {
	trickleToClient(t, Config{PingInterval: 150 * time.Millisecond, PingTimeout: 75 * time.Millisecond},
		256<<10, 32, 15*time.Millisecond, true)
}

// A client frame that takes longer than WriteTimeout to arrive, bytes flowing all
// along, is forwarded whole: the upstream's write deadline follows the reads
// instead of expiring while the proxy waits for the frame's last bytes.
func TestSessionSlowFrameOutlastsWriteTimeout(t *testing.T) {
	// 600 KiB, more than a batch: written in parts while it arrives; 10 chunks
	// 50ms apart: about 500ms, more than three write timeouts.
	trickleFromClient(t, Config{WriteTimeout: 150 * time.Millisecond}, [4]byte{1, 2, 3, 4}, 600<<10, 10, 50*time.Millisecond, false)
}

// The same toward the client on the spliced path (no keepalive): an upstream
// frame of several splice steps, arriving slower than WriteTimeout, is
// forwarded whole.
func TestSessionSlowSplicedFrameOutlastsWriteTimeout(t *testing.T) {
	// 2.5 MiB: three splice steps.
	trickleToClient(t, Config{WriteTimeout: 150 * time.Millisecond, MaxFrameSize: 4 << 20, MaxMessageSize: 4 << 20},
		5<<19, 25, 30*time.Millisecond, false)
}

// trickleFromClient has a raw client send one binary frame of size bytes
// (masked with key) in pieces parts gap apart to an upstream answering "got
// size"; the answer must come (with pings answered on the way if pings is set,
// else as the very next frame, a text frame), then a clean close.
func trickleFromClient(t *testing.T, cfg Config, key [4]byte, size, pieces int, gap time.Duration, pings bool) {
	testkit.CheckGoroutines(t)
	upGot := make(chan error, 1)
	up := startGorilla(t, sizeReply(upGot))
	e := startSession(t, up.URL, cfg)
	raw := testkit.DialRaw(t, e.URL)
	frame := testkit.AppendFrame(nil, testkit.Frame{Fin: true, Op: wsmw.OpBinary, Masked: true, Key: key, Payload: make([]byte, size)})
	if err := trickle(raw, frame, pieces, gap); err != nil {
		t.Fatal(err)
	}
	for pings {
		f, err := raw.ReadFrameTimeout(3 * time.Second)
		if err != nil {
			t.Fatalf("client dropped while sending a large frame: %v", err)
		}
		if f.Op == wsmw.OpPing {
			raw.Send(testkit.Frame{Fin: true, Op: wsmw.OpPong, Payload: f.Payload})
			continue
		}
		if f.Op == wsmw.OpClose {
			c, r := f.CloseCode()
			t.Fatalf("client got close %d %q while sending a large frame", c, r)
		}
		if string(f.Payload) != fmt.Sprintf("got %d", size) {
			t.Fatalf("client got %v %q", f, f.Payload)
		}
		break
	}
	if !pings {
		f, err := raw.ReadFrameTimeout(3 * time.Second)
		if err != nil || f.Op != wsmw.OpText || string(f.Payload) != fmt.Sprintf("got %d", size) {
			c, r := f.CloseCode()
			t.Fatalf("client got %v %q (close %d %q), %v", f.Op, f.Payload, c, r, err)
		}
	}
	closeRaw(t, raw, "")
	wantClose(t, "upstream", testkit.Recv(t, upGot, 3*time.Second, "upstream end"), 1000, "")
	e.wantEnd(1000, "client")
}

// trickleToClient has a raw upstream send one binary frame of size bytes in
// pieces parts gap apart to a gorilla client, which must get it whole and
// close cleanly. The upstream then answers the close: if pings is set, after
// answering the pings that come first, else as the very next frame.
func trickleToClient(t *testing.T, cfg Config, size, pieces int, gap time.Duration, pings bool) {
	testkit.CheckGoroutines(t)
	upEnd := make(chan *testkit.Frame, 1)
	up := startRaw(t, func(c *testkit.Conn) {
		frame := testkit.AppendFrame(nil, testkit.Frame{Fin: true, Op: wsmw.OpBinary, Payload: make([]byte, size)})
		if trickle(c, frame, pieces, gap) != nil {
			upEnd <- nil
			return
		}
		for { // answer pings until the close, then answer it
			f, err := c.ReadFrameTimeout(3 * time.Second)
			if err != nil || (!pings && f.Op != wsmw.OpClose) {
				upEnd <- nil
				return
			}
			switch f.Op {
			case wsmw.OpPing:
				c.Send(testkit.Frame{Fin: true, Op: wsmw.OpPong, Payload: f.Payload})
			case wsmw.OpClose:
				c.Send(testkit.Frame{Fin: true, Op: wsmw.OpClose, Payload: f.Payload})
				upEnd <- &f
				return
			}
		}
	})
	e := startSession(t, up.URL, cfg)
	c, _ := mustDial(t, e.URL, nil) // gorilla answers pings while reading
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, p, err := c.ReadMessage(); err != nil || len(p) != size {
		t.Fatalf("client got %d bytes, %v", len(p), err)
	}
	sendClose(c, 1000, "")
	wantClose(t, "client", readErr(c, 3*time.Second), 1000, "")
	wantRawClose(t, "upstream", testkit.Recv(t, upEnd, 3*time.Second, "upstream end"), nil, 1000, "")
	e.wantEnd(1000, "client")
}

// TestSessionEchoThroughGorilla: gorilla on both sides, a subprotocol
// negotiated end to end, messages from empty to 2 MiB and a client close.
func TestSessionEchoThroughGorilla(t *testing.T) {
	up := httptest.NewServer(testkit.GorillaEchoHandler(websocket.Upgrader{Subprotocols: []string{"chat"}}, nil))
	defer up.Close()
	p, err := New(Config{Upstreams: []string{up.URL}})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(p)
	defer front.Close()
	d := websocket.Dialer{Subprotocols: []string{"chat"}}
	c, _, err := d.Dial(testkit.WSURL(front.URL), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subprotocol() != "chat" {
		t.Fatalf("subprotocol %q", c.Subprotocol())
	}
	for _, n := range []int{0, 5, 126, 70000, 2 << 20} {
		msg := []byte(strings.Repeat("a", n))
		c.WriteMessage(websocket.BinaryMessage, msg)
		_, got, err := c.ReadMessage()
		if err != nil || len(got) != n {
			t.Fatalf("n=%d got %d %v", n, len(got), err)
		}
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4005, "bye"))
	_, _, err = c.ReadMessage()
	if !websocket.IsCloseError(err, 4005) {
		t.Fatalf("got %v", err)
	}
	if !idle(p, 2*time.Second) {
		t.Fatal("session not ended")
	}
}
