package proxy

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wsgate/wsgate/wsmw"
)

// Forwarding, inspectors, timers, back-pressure, metrics and logging of a session.

var ssSizes = []int{0, 1, 125, 126, 127, 65535, 65536, 3 << 20}

func ssPayload(op int, n int, seed uint64) []byte {
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

// ssTransform is what the upstream answers: a different payload of the same
// size, so each direction is checked on its own.
func ssTransform(op int, p []byte) []byte {
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
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	type rec struct {
		op int
		p  []byte
	}
	upSaw := make(chan rec, 1)
	up := ssNewGorillaServer(t, func(c *websocket.Conn) {
		for {
			op, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			upSaw <- rec{op, p}
			if err := c.WriteMessage(op, ssTransform(op, p)); err != nil {
				return
			}
		}
	})
	defer up.Close()
	e := ssStart(t, up.URL, Config{})
	defer e.Close()
	d := websocket.Dialer{WriteBufferSize: 4 << 20}
	c, _, err := d.Dial(e.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, op := range []int{websocket.TextMessage, websocket.BinaryMessage} {
		for _, n := range ssSizes {
			sent := ssPayload(op, n, 1)
			if err := c.WriteMessage(op, sent); err != nil {
				t.Fatal(err)
			}
			r := ssRecv(t, upSaw, 5*time.Second, "upstream message")
			if r.op != op || !bytes.Equal(r.p, sent) {
				t.Errorf("op %d len %d: upstream got op %d len %d (equal %v)", op, n, r.op, len(r.p), bytes.Equal(r.p, sent))
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			gotOp, got, err := c.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			if gotOp != op || !bytes.Equal(got, ssTransform(op, sent)) {
				t.Errorf("op %d len %d: client got op %d len %d", op, n, gotOp, len(got))
			}
		}
	}
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	ssWantClose(t, "client", ssReadErr(c, 3*time.Second), 1000, "")
}

// Frame by frame between raw peers: each frame arrives alone, with its exact
// length (every header length encoding), op and FIN; client frames are
// re-masked with a new key, upstream frames stay unmasked.
func TestSessionForwardsFramesExactly(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	upSaw := make(chan ssFrame, 1)
	up := ssNewRawServer(t, func(c *ssRaw) {
		for {
			f, err := c.ReadFrame()
			if err != nil {
				return
			}
			if f.Op == ssOpClose {
				c.Send(ssFrame{Fin: true, Op: ssOpClose, Payload: f.Payload})
				return
			}
			upSaw <- f
			back := ssFrame{Fin: f.Fin, Op: f.Op, Payload: bytes.Repeat([]byte{'d'}, len(f.Payload))}
			if err := c.Send(back); err != nil {
				return
			}
		}
	})
	defer up.Close()
	e := ssStart(t, up.URL, Config{})
	defer e.Close()
	raw := ssDialRaw(t, e.URL)
	defer raw.Close()
	for _, n := range ssSizes {
		key := [4]byte{1, 2, 3, byte(n)}
		sent := bytes.Repeat([]byte{'u'}, n)
		if err := raw.Send(ssFrame{Fin: true, Op: ssOpBinary, Key: key, Payload: sent}); err != nil {
			t.Fatal(err)
		}
		f := ssRecv(t, upSaw, 5*time.Second, "upstream frame")
		if f.Op != ssOpBinary || !f.Fin || !bytes.Equal(f.Payload, sent) || !f.Masked {
			t.Errorf("len %d: upstream got %v", n, f)
		}
		if f.Key == key {
			t.Errorf("len %d: upstream frame masked with the client's key", n)
		}
		back, err := raw.ReadFrameTimeout(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if back.Op != ssOpBinary || !back.Fin || back.Masked || len(back.Payload) != n || bytes.Count(back.Payload, []byte{'d'}) != n {
			t.Errorf("len %d: client got %v", n, back)
		}
	}
	raw.SendClose(1000, "")
	f, _, err := raw.ReadUntilClose(3 * time.Second)
	ssCheckRawClose(t, "client", f, err, 1000, "")
}

// A fragmented message keeps its fragmentation in both directions; a ping
// between fragments is forwarded in place (not answered by the proxy) and the
// pong comes from the other end.
func TestSessionPreservesFragmentationAndForwardsPings(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	clientKeys := [][4]byte{{1, 1, 1, 1}, {2, 2, 2, 2}, {3, 3, 3, 3}, {4, 4, 4, 4}}
	upSaw := make(chan []ssFrame, 1)
	upPong := make(chan ssFrame, 1)
	up := ssNewRawServer(t, func(c *ssRaw) {
		var frames []ssFrame
		for len(frames) < 4 {
			f, err := c.ReadFrame()
			if err != nil {
				return
			}
			frames = append(frames, f)
			if f.Op == ssOpPing {
				c.Send(ssFrame{Fin: true, Op: ssOpPong, Payload: []byte("up")})
			}
		}
		upSaw <- frames
		// Now the other way: fragments with a ping in between.
		c.Send(ssFrame{Op: ssOpBinary, Payload: []byte("D1")})
		c.Send(ssFrame{Op: ssOpCont, Payload: []byte("D2")})
		c.Send(ssFrame{Fin: true, Op: ssOpPing, Payload: []byte("uping")})
		c.Send(ssFrame{Fin: true, Op: ssOpCont, Payload: []byte("D3")})
		f, err := c.ReadFrame()
		if err != nil {
			return
		}
		upPong <- f
		c.ReadUntilClose(3 * time.Second)
		c.SendClose(1000, "")
	})
	defer up.Close()
	e := ssStart(t, up.URL, Config{})
	defer e.Close()
	raw := ssDialRaw(t, e.URL)
	defer raw.Close()

	raw.Send(ssFrame{Op: ssOpText, Key: clientKeys[0], Payload: []byte("frag1-")})
	raw.Send(ssFrame{Op: ssOpCont, Key: clientKeys[1], Payload: []byte("frag2-")})
	raw.Send(ssFrame{Fin: true, Op: ssOpPing, Key: clientKeys[2], Payload: []byte("cping")})
	// The pong must come from the upstream, and before the message is complete.
	pong, err := raw.ReadFrameTimeout(3 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if pong.Op != ssOpPong || string(pong.Payload) != "up" || pong.Masked {
		t.Errorf("client got %v %q, want the upstream's unmasked pong \"up\"", pong, pong.Payload)
	}
	raw.Send(ssFrame{Fin: true, Op: ssOpCont, Key: clientKeys[3], Payload: []byte("frag3")})

	frames := ssRecv(t, upSaw, 3*time.Second, "upstream frames")
	want := []struct {
		op  byte
		fin bool
		p   string
	}{{ssOpText, false, "frag1-"}, {ssOpCont, false, "frag2-"}, {ssOpPing, true, "cping"}, {ssOpCont, true, "frag3"}}
	for i, w := range want {
		f := frames[i]
		if f.Op != w.op || f.Fin != w.fin || string(f.Payload) != w.p || !f.Masked || f.Rsv != 0 {
			t.Errorf("upstream frame %d: %v %q, want op %#x fin %v %q masked", i, f, f.Payload, w.op, w.fin, w.p)
		}
		if f.Key == clientKeys[i] {
			t.Errorf("upstream frame %d masked with the client's key %v", i, f.Key)
		}
	}

	var down []ssFrame
	for len(down) < 4 {
		f, err := raw.ReadFrameTimeout(3 * time.Second)
		if err != nil {
			t.Fatalf("client read after %v: %v", down, err)
		}
		down = append(down, f)
		if f.Op == ssOpPing {
			raw.Send(ssFrame{Fin: true, Op: ssOpPong, Payload: []byte("down")})
		}
	}
	wantDown := []struct {
		op  byte
		fin bool
		p   string
	}{{ssOpBinary, false, "D1"}, {ssOpCont, false, "D2"}, {ssOpPing, true, "uping"}, {ssOpCont, true, "D3"}}
	for i, w := range wantDown {
		f := down[i]
		if f.Op != w.op || f.Fin != w.fin || string(f.Payload) != w.p || f.Masked {
			t.Errorf("client frame %d: %v %q, want op %#x fin %v %q unmasked", i, f, f.Payload, w.op, w.fin, w.p)
		}
	}
	if f := ssRecv(t, upPong, 3*time.Second, "upstream pong"); f.Op != ssOpPong || string(f.Payload) != "down" || !f.Masked {
		t.Errorf("upstream got %v %q, want the client's pong \"down\"", f, f.Payload)
	}
	raw.SendClose(1000, "done")
	f, _, err := raw.ReadUntilClose(3 * time.Second)
	ssCheckRawClose(t, "client", f, err, 1000, "")
}

// ssInspector is an inline Inspector for the integration tests.
type ssInspector struct {
	needs   bool
	inspect func(m *Message) Verdict
}

func (i ssInspector) NeedsPayload(dir Direction, op wsmw.OpCode) bool {
	return i.needs && dir == ClientToUpstream
}
func (i ssInspector) Inspect(m *Message) Verdict { return i.inspect(m) }

// ssCollect is a gorilla upstream recording the text of every message, then the
// error that ended the session.
type ssCollect struct {
	mu   sync.Mutex
	msgs []string
	end  chan error
	got  chan string
}

func newSSCollect() *ssCollect {
	return &ssCollect{end: make(chan error, 1), got: make(chan string, 100)}
}

func (s *ssCollect) handle(c *websocket.Conn) {
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
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			col := newSSCollect()
			up := ssNewGorillaServer(t, col.handle)
			defer up.Close()
			var seen atomic.Int32
			in := ssInspector{needs: needs, inspect: func(m *Message) Verdict {
				seen.Add(1)
				if m.Length == 4 && (!needs || string(m.Payload) == "drop") {
					return Verdict{Action: Drop}
				}
				return Verdict{Action: Pass}
			}}
			e := ssStart(t, up.URL, Config{Inspectors: Chain{in}})
			defer e.Close()
			c := ssDial(t, e.URL)
			defer c.Close()
			for _, m := range []string{"one", "drop", "after"} {
				c.WriteMessage(websocket.TextMessage, []byte(m))
			}
			if m := ssRecv(t, col.got, 3*time.Second, "message"); m != "one" {
				t.Errorf("first message %q", m)
			}
			if m := ssRecv(t, col.got, 3*time.Second, "message"); m != "after" {
				t.Errorf("second message %q, want \"after\" (\"drop\" dropped)", m)
			}
			c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"), time.Now().Add(time.Second))
			ssWantClose(t, "client", ssReadErr(c, 3*time.Second), 1000, "")
			ssWantClose(t, "upstream", ssRecv(t, col.end, 3*time.Second, "upstream end"), 1000, "bye")
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
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	upSaw := make(chan []ssFrame, 1)
	up := ssNewRawServer(t, func(c *ssRaw) {
		_, seen, _ := c.ReadUntilClose(3 * time.Second)
		upSaw <- seen
		c.SendClose(1000, "")
	})
	defer up.Close()
	in := ssInspector{inspect: func(m *Message) Verdict {
		if m.Length == 4 && !m.Final {
			return Verdict{Action: Drop}
		}
		return Verdict{Action: Pass}
	}}
	e := ssStart(t, up.URL, Config{Inspectors: Chain{in}})
	defer e.Close()
	raw := ssDialRaw(t, e.URL)
	defer raw.Close()
	raw.Send(ssFrame{Op: ssOpText, Payload: []byte("drop")})
	raw.Send(ssFrame{Op: ssOpCont, Payload: []byte("-more-")})
	raw.Send(ssFrame{Fin: true, Op: ssOpCont, Payload: []byte("-end")})
	raw.Send(ssFrame{Fin: true, Op: ssOpText, Payload: []byte("kept")})
	raw.SendClose(1000, "")
	raw.ReadUntilClose(3 * time.Second)
	seen := ssRecv(t, upSaw, 3*time.Second, "upstream frames")
	if len(seen) != 1 || string(seen[0].Payload) != "kept" || !seen[0].Fin || seen[0].Op != ssOpText {
		t.Errorf("upstream saw %v, want only the frame \"kept\"", seen)
	}
}

func TestSessionInspectorReplace(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	type rec struct {
		op int
		p  string
	}
	upSaw := make(chan rec, 10)
	up := ssNewGorillaServer(t, func(c *websocket.Conn) {
		for {
			op, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			upSaw <- rec{op, string(p)}
		}
	})
	defer up.Close()
	in := ssInspector{needs: true, inspect: func(m *Message) Verdict {
		if bytes.Contains(m.Payload, []byte("secret")) {
			return Verdict{Action: Replace, Payload: bytes.ReplaceAll(m.Payload, []byte("secret"), []byte("[redacted]"))}
		}
		return Verdict{Action: Pass}
	}}
	e := ssStart(t, up.URL, Config{Inspectors: Chain{in}})
	defer e.Close()
	c := ssDial(t, e.URL)
	defer c.Close()
	c.WriteMessage(websocket.TextMessage, []byte("my secret is out"))
	c.WriteMessage(websocket.BinaryMessage, []byte("secret"))
	c.WriteMessage(websocket.TextMessage, []byte("plain"))
	for _, want := range []rec{{websocket.TextMessage, "my [redacted] is out"}, {websocket.BinaryMessage, "[redacted]"}, {websocket.TextMessage, "plain"}} {
		if got := ssRecv(t, upSaw, 3*time.Second, "message"); got != want {
			t.Errorf("upstream got %v, want %v", got, want)
		}
	}
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	ssWantClose(t, "client", ssReadErr(c, 3*time.Second), 1000, "")
}

// A payload inspector that passes a fragmented message: the proxy reassembles it
// for the inspector, then forwards the original fragmentation.
func TestSessionInspectorPassKeepsFragmentation(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	upSaw := make(chan []ssFrame, 1)
	up := ssNewRawServer(t, func(c *ssRaw) {
		_, seen, _ := c.ReadUntilClose(3 * time.Second)
		upSaw <- seen
		c.SendClose(1000, "")
	})
	defer up.Close()
	var mu sync.Mutex
	var inspected []string
	in := ssInspector{needs: true, inspect: func(m *Message) Verdict {
		mu.Lock()
		inspected = append(inspected, fmt.Sprintf("%v:%s:%d:%v", m.OpCode, m.Payload, m.Length, m.Final))
		mu.Unlock()
		return Verdict{Action: Pass}
	}}
	e := ssStart(t, up.URL, Config{Inspectors: Chain{in}})
	defer e.Close()
	raw := ssDialRaw(t, e.URL)
	defer raw.Close()
	raw.Send(ssFrame{Op: ssOpBinary, Payload: []byte("abc")})
	raw.Send(ssFrame{Op: ssOpCont, Payload: []byte("defgh")})
	raw.Send(ssFrame{Fin: true, Op: ssOpCont, Payload: []byte("ijklmno")})
	raw.SendClose(1000, "")
	f, _, err := raw.ReadUntilClose(3 * time.Second)
	ssCheckRawClose(t, "client", f, err, 1000, "")
	seen := ssRecv(t, upSaw, 3*time.Second, "upstream frames")
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
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	upGot := make(chan error, 1)
	up := ssNewGorillaServer(t, ssEcho(upGot))
	defer up.Close()
	e := ssStart(t, up.URL, Config{IdleTimeout: 200 * time.Millisecond})
	defer e.Close()
	start := time.Now()
	c := ssDial(t, e.URL)
	defer c.Close()
	ssWantClose(t, "client", ssReadErr(c, 3*time.Second), 1001, "idle timeout")
	if d := time.Since(start); d < 190*time.Millisecond || d > 600*time.Millisecond {
		t.Errorf("idle close after %v, want 200ms..600ms", d)
	}
	ssWantClose(t, "upstream", ssRecv(t, upGot, 3*time.Second, "upstream close"), 1001, "idle timeout")
	e.wantEnd(1001, "proxy")
}

func TestSessionIdleTimeoutNotWithTraffic(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	upGot := make(chan error, 1)
	up := ssNewGorillaServer(t, ssEcho(upGot))
	defer up.Close()
	e := ssStart(t, up.URL, Config{IdleTimeout: 200 * time.Millisecond})
	defer e.Close()
	c := ssDial(t, e.URL)
	defer c.Close()
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
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "done"), time.Now().Add(time.Second))
	ssWantClose(t, "client", ssReadErr(c, 3*time.Second), 1000, "")
	ssWantClose(t, "upstream", ssRecv(t, upGot, 3*time.Second, "upstream close"), 1000, "done")
}

func TestSessionMaxLifetime(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	upGot := make(chan error, 1)
	up := ssNewGorillaServer(t, ssEcho(upGot))
	defer up.Close()
	e := ssStart(t, up.URL, Config{MaxLifetime: 300 * time.Millisecond})
	defer e.Close()
	start := time.Now()
	c := ssDial(t, e.URL)
	defer c.Close()
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
	ssWantClose(t, "client", ssReadErr(c, 3*time.Second), 1001, "session lifetime exceeded")
	if d := time.Since(start); d < 290*time.Millisecond || d > 800*time.Millisecond {
		t.Errorf("lifetime close after %v, want about 300ms", d)
	}
	ssWantClose(t, "upstream", ssRecv(t, upGot, 3*time.Second, "upstream close"), 1001, "session lifetime exceeded")
	<-wdone
	e.wantEnd(1001, "proxy")
}

// A client that never answers the proxy's pings is dead: the upstream gets 1001.
func TestSessionKeepaliveDeadClient(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	upGot := make(chan error, 1)
	var upPongs atomic.Int32
	up := ssNewGorillaServer(t, func(c *websocket.Conn) {
		c.SetPongHandler(func(string) error { upPongs.Add(1); return nil })
		ssEcho(upGot)(c)
	})
	defer up.Close()
	e := ssStart(t, up.URL, Config{PingInterval: 100 * time.Millisecond, PingTimeout: 50 * time.Millisecond})
	defer e.Close()
	start := time.Now()
	raw := ssDialRaw(t, e.URL)
	defer raw.Close()
	ssWantClose(t, "upstream", ssRecv(t, upGot, 3*time.Second, "upstream close"), 1001, "client went away")
	if d := time.Since(start); d < 140*time.Millisecond || d > time.Second {
		t.Errorf("dead client detected after %v, want about 150ms", d)
	}
	// The raw client saw the proxy's ping, then the connection ended without a close frame.
	var frames []ssFrame
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
		if f.Op != ssOpPing || f.Masked {
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
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	upPings := make(chan int, 1)
	up := ssNewRawServer(t, func(c *ssRaw) {
		n := 0
		for {
			f, err := c.ReadFrameTimeout(3 * time.Second)
			if err != nil {
				break
			}
			if f.Op == ssOpPing {
				n++
			}
		}
		upPings <- n
	})
	defer up.Close()
	e := ssStart(t, up.URL, Config{PingInterval: 100 * time.Millisecond, PingTimeout: 50 * time.Millisecond})
	defer e.Close()
	start := time.Now()
	c, ctx := ssDialCoder(t, e.URL) // coder answers pings while reading, and accepts 1014
	defer c.CloseNow()
	_, _, err := c.Read(ctx)
	ssWantCoderClose(t, "client", err, 1014, "upstream went away")
	if d := time.Since(start); d < 140*time.Millisecond || d > time.Second {
		t.Errorf("dead upstream detected after %v, want about 150ms", d)
	}
	if n := ssRecv(t, upPings, 5*time.Second, "upstream end"); n < 1 {
		t.Errorf("upstream got %d pings", n)
	}
	e.wantEnd(1006, "upstream")
}

// Live peers answer the proxy's pings; those pongs are the proxy's and are not forwarded.
func TestSessionKeepaliveLivePeers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var upPings, upPongs, cPings, cPongs atomic.Int32
	upGot := make(chan error, 1)
	up := ssNewGorillaServer(t, func(c *websocket.Conn) {
		c.SetPingHandler(func(s string) error {
			upPings.Add(1)
			return c.WriteControl(websocket.PongMessage, []byte(s), time.Now().Add(time.Second))
		})
		c.SetPongHandler(func(string) error { upPongs.Add(1); return nil })
		ssEcho(upGot)(c)
	})
	defer up.Close()
	e := ssStart(t, up.URL, Config{PingInterval: 100 * time.Millisecond, PingTimeout: 50 * time.Millisecond})
	defer e.Close()
	c := ssDial(t, e.URL)
	defer c.Close()
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
	if m := ssRecv(t, msgs, 3*time.Second, "echo"); m != "alive" {
		t.Errorf("echo %q", m)
	}
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	ssWantClose(t, "client", ssRecv(t, readErr, 3*time.Second, "client end"), 1000, "")
	ssWantClose(t, "upstream", ssRecv(t, upGot, 3*time.Second, "upstream end"), 1000, "")
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
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const limit = 100 << 20
	var written atomic.Int64
	upGot := make(chan error, 1)
	up := ssNewGorillaServer(t, func(c *websocket.Conn) {
		go func() { upGot <- ssReadErr(c, 10*time.Second) }()
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
	defer up.Close()
	e := ssStart(t, up.URL, Config{WriteTimeout: 300 * time.Millisecond})
	defer e.Close()

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	start := time.Now()
	raw := ssDialRaw(t, e.URL) // reads nothing from now on
	defer raw.Close()
	err := ssRecv(t, upGot, 5*time.Second, "upstream close")
	ssWantClose(t, "upstream", err, 1001, "client went away")
	ssWaitSessions(t, e.p, 5*time.Second)
	d := time.Since(start)
	close(stop)
	<-sampled
	if d > 3*time.Second {
		t.Errorf("slow client dropped after %v", d)
	}
	if w := written.Load(); w >= 32<<20 {
		t.Errorf("upstream wrote %d MiB to a client reading nothing", w>>20)
	}
	if g := int64(peak.Load()) - int64(base); g > 20<<20 {
		t.Errorf("heap in use grew by %d MiB", g>>20)
	}
	e.wantEnd(1006, "client")
	t.Logf("dropped after %v; upstream wrote %d KiB; heap growth %d KiB", d, written.Load()>>10, (int64(peak.Load())-int64(base))>>10)
}

// ssGather returns the value of the metric name with labels from reg (-1 if absent).
func ssGather(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			if len(got) != len(labels) {
				continue
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			return ssValue(m)
		}
	}
	return -1
}

func ssValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return -1
}

func TestSessionMetrics(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, "t")
	if err != nil {
		t.Fatal(err)
	}
	upGot := make(chan error, 1)
	up := ssNewGorillaServer(t, ssEcho(upGot))
	defer up.Close()
	e := ssStart(t, up.URL, Config{Metrics: m})
	defer e.Close()
	c := ssDial(t, e.URL)
	defer c.Close()
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
			"up msgs":    ssGather(t, reg, "t_messages_total", map[string]string{"direction": "up"}),
			"down msgs":  ssGather(t, reg, "t_messages_total", map[string]string{"direction": "down"}),
			"up bytes":   ssGather(t, reg, "t_bytes_total", map[string]string{"direction": "up"}),
			"down bytes": ssGather(t, reg, "t_bytes_total", map[string]string{"direction": "down"}),
			"active":     ssGather(t, reg, "t_sessions_active", nil),
			"sessions":   ssGather(t, reg, "t_sessions_total", map[string]string{"client_proto": "http/1.1"}),
			"closes":     ssGather(t, reg, "t_closes_total", map[string]string{"code": "1000", "initiator": "client", "client_proto": "http/1.1"}),
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
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	ssWantClose(t, "client", ssReadErr(c, 3*time.Second), 1000, "")
	ssWantClose(t, "upstream", ssRecv(t, upGot, 3*time.Second, "upstream close"), 1000, "")
	ssWaitSessions(t, e.p, 3*time.Second)
	check("ended session", map[string]float64{
		"up msgs": 3, "down msgs": 3, "up bytes": float64(total), "down bytes": float64(total),
		"active": 0, "sessions": 1, "closes": 1,
	})
}

func TestSessionLogsOneLinePerSession(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	core, logs := observer.New(zap.InfoLevel)
	up := ssNewGorillaServer(t, func(c *websocket.Conn) {
		for {
			op, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			if string(p) == "close me" {
				c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "srv"), time.Now().Add(time.Second))
				continue
			}
			c.WriteMessage(op, append(p, p...)) // twice the size down
		}
	})
	defer up.Close()
	e := ssStart(t, up.URL, Config{Logger: zap.New(core)})
	defer e.Close()

	// Session 1: 2 messages (5+7 bytes) up, 2 (10+14) down, closed by the client with 1000.
	c := ssDial(t, e.URL)
	for _, m := range []string{"hello", "goodbye"} {
		c.WriteMessage(websocket.TextMessage, []byte(m))
		c.ReadMessage()
	}
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	ssWantClose(t, "client 1", ssReadErr(c, 3*time.Second), 1000, "")
	c.Close()
	ssWaitSessions(t, e.p, 3*time.Second)

	// Session 2: 1 message up, closed by the upstream with 4001.
	c = ssDial(t, e.URL)
	c.WriteMessage(websocket.TextMessage, []byte("close me"))
	ssWantClose(t, "client 2", ssReadErr(c, 3*time.Second), 4001, "srv")
	c.Close()
	ssWaitSessions(t, e.p, 3*time.Second)

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
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	upGot := make(chan error, 1)
	up := ssNewGorillaServer(t, ssSizeReply(upGot))
	defer up.Close()
	// Pings at 150ms, a peer silent 75ms after one is dead: a frame lasting about
	// 500ms sees several pings. (Without the frame, see TestSessionKeepaliveDeadClient.)
	e := ssStart(t, up.URL, Config{PingInterval: 150 * time.Millisecond, PingTimeout: 75 * time.Millisecond})
	defer e.Close()
	raw := ssDialRaw(t, e.URL)
	defer raw.Close()
	const size = 256 << 10
	frame := ssEncodeFrame(ssFrame{Fin: true, Op: ssOpBinary, Masked: true, Key: [4]byte{9, 8, 7, 6}, Payload: make([]byte, size)})
	// 32 chunks 15ms apart: the frame takes about 500ms, bytes arriving all along.
	if err := ssTrickle(raw, frame, 32, 15*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := raw.ReadFrameTimeout(3 * time.Second)
		if err != nil {
			t.Fatalf("client dropped while sending a large frame: %v", err)
		}
		if f.Op == ssOpPing {
			raw.Send(ssFrame{Fin: true, Op: ssOpPong, Payload: f.Payload})
			continue
		}
		if f.Op == ssOpClose {
			c, r := f.closeCode()
			t.Fatalf("client got close %d %q while sending a large frame", c, r)
		}
		if string(f.Payload) != fmt.Sprintf("got %d", size) {
			t.Fatalf("client got %v %q", f, f.Payload)
		}
		break
	}
	raw.SendClose(1000, "")
	f, _, err := raw.ReadUntilClose(3 * time.Second)
	ssCheckRawClose(t, "client", f, err, 1000, "")
	ssWantClose(t, "upstream", ssRecv(t, upGot, 3*time.Second, "upstream end"), 1000, "")
	e.wantEnd(1000, "client")
}

// The twin case: while the proxy forwards a large frame to the client, its ping
// waits behind the frame; the client cannot answer a ping it has not received yet.
func TestSessionKeepaliveLargeFrameToClientIsAlive(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const size = 256 << 10
	upEnd := make(chan *ssFrame, 1)
	up := ssNewRawServer(t, func(c *ssRaw) {
		frame := ssEncodeFrame(ssFrame{Fin: true, Op: ssOpBinary, Payload: make([]byte, size)})
		if ssTrickle(c, frame, 32, 15*time.Millisecond) != nil {
			upEnd <- nil
			return
		}
		for { // answer pings until the close, then answer it
			f, err := c.ReadFrameTimeout(3 * time.Second)
			if err != nil {
				upEnd <- nil
				return
			}
			switch f.Op {
			case ssOpPing:
				c.Send(ssFrame{Fin: true, Op: ssOpPong, Payload: f.Payload})
			case ssOpClose:
				c.Send(ssFrame{Fin: true, Op: ssOpClose, Payload: f.Payload})
				upEnd <- &f
				return
			}
		}
	})
	defer up.Close()
	e := ssStart(t, up.URL, Config{PingInterval: 150 * time.Millisecond, PingTimeout: 75 * time.Millisecond})
	defer e.Close()
	c := ssDial(t, e.URL) // gorilla answers pings while reading
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, p, err := c.ReadMessage(); err != nil || len(p) != size {
		t.Fatalf("client got %d bytes, %v", len(p), err)
	}
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	ssWantClose(t, "client", ssReadErr(c, 3*time.Second), 1000, "")
	ssCheckRawClose(t, "upstream", ssRecv(t, upEnd, 3*time.Second, "upstream end"), nil, 1000, "")
	e.wantEnd(1000, "client")
}

// A client frame that takes longer than WriteTimeout to arrive, bytes flowing all
// along, is forwarded whole: the upstream's write deadline follows the reads
// instead of expiring while the proxy waits for the frame's last bytes.
func TestSessionSlowFrameOutlastsWriteTimeout(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	upGot := make(chan error, 1)
	up := ssNewGorillaServer(t, ssSizeReply(upGot))
	defer up.Close()
	e := ssStart(t, up.URL, Config{WriteTimeout: 150 * time.Millisecond})
	defer e.Close()
	raw := ssDialRaw(t, e.URL)
	defer raw.Close()
	const size = 600 << 10 // more than a batch: written in parts while it arrives
	frame := ssEncodeFrame(ssFrame{Fin: true, Op: ssOpBinary, Masked: true, Key: [4]byte{1, 2, 3, 4}, Payload: make([]byte, size)})
	// 10 chunks 50ms apart: about 500ms, more than three write timeouts.
	if err := ssTrickle(raw, frame, 10, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	f, err := raw.ReadFrameTimeout(3 * time.Second)
	if err != nil || f.Op != ssOpText || string(f.Payload) != fmt.Sprintf("got %d", size) {
		c, r := f.closeCode()
		t.Fatalf("client got %v %q (close %d %q), %v", f.Op, f.Payload, c, r, err)
	}
	raw.SendClose(1000, "")
	cf, _, err := raw.ReadUntilClose(3 * time.Second)
	ssCheckRawClose(t, "client", cf, err, 1000, "")
	ssWantClose(t, "upstream", ssRecv(t, upGot, 3*time.Second, "upstream end"), 1000, "")
	e.wantEnd(1000, "client")
}

// The same toward the client on the spliced path (no keepalive): an upstream
// frame of several splice steps, arriving slower than WriteTimeout, is
// forwarded whole.
func TestSessionSlowSplicedFrameOutlastsWriteTimeout(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const size = 5 << 19 // 2.5 MiB: three splice steps
	upEnd := make(chan *ssFrame, 1)
	up := ssNewRawServer(t, func(c *ssRaw) {
		frame := ssEncodeFrame(ssFrame{Fin: true, Op: ssOpBinary, Payload: make([]byte, size)})
		if ssTrickle(c, frame, 25, 30*time.Millisecond) != nil {
			upEnd <- nil
			return
		}
		f, err := c.ReadFrameTimeout(3 * time.Second)
		if err != nil || f.Op != ssOpClose {
			upEnd <- nil
			return
		}
		c.Send(ssFrame{Fin: true, Op: ssOpClose, Payload: f.Payload})
		upEnd <- &f
	})
	defer up.Close()
	e := ssStart(t, up.URL, Config{WriteTimeout: 150 * time.Millisecond, MaxFrameSize: 4 << 20, MaxMessageSize: 4 << 20})
	defer e.Close()
	c := ssDial(t, e.URL)
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, p, err := c.ReadMessage(); err != nil || len(p) != size {
		t.Fatalf("client got %d bytes, %v", len(p), err)
	}
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	ssWantClose(t, "client", ssReadErr(c, 3*time.Second), 1000, "")
	ssCheckRawClose(t, "upstream", ssRecv(t, upEnd, 3*time.Second, "upstream end"), nil, 1000, "")
	e.wantEnd(1000, "client")
}
