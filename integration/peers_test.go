package integration

// End-to-end tests of the proxy (on a chi router, as in examples/chi) between
// WebSocket implementations that nobody here wrote: gorilla/websocket and
// coder/websocket in Go, and the `ws` package in Node.js. Each test pairs a
// client of one library with an upstream of another and checks what arrives,
// byte for byte, and every close code and reason, exactly.

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/proxy"
)

// Close reasons the proxy sends (proxy/session.go, wsmw/read.go).
const (
	reasonUpstreamGone      = "upstream went away"
	reasonClientGone        = "client went away"
	reasonTooBig            = "message too big"
	reasonClientViolation   = "client violated the protocol"
	reasonUpstreamViolation = "upstream violated the protocol"
)

// utf8Text is a text message with 2-, 3- and 4-byte UTF-8 sequences.
const utf8Text = "héllo, wörld ✓ 🎉 ∑"

// ---------------------------------------------------------------------------
// Go clients.

// gorillaDial connects a gorilla/websocket client. A non-zero writeBuf makes
// it send messages larger than that in several frames.
func gorillaDial(t testing.TB, url string, writeBuf int) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{
		HandshakeTimeout: waitTimeout,
		WriteBufferSize:  writeBuf,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &sniffConn{Conn: c}, nil // records what the client receives
		},
	}
	c, resp := testkit.DialGorilla(t, &d, url, nil)
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Errorf("handshake answered extensions %q; the proxy negotiates none", ext)
	}
	c.SetReadLimit(64 << 20)
	return c
}

// gorillaRead reads one message within waitTimeout.
func gorillaRead(t testing.TB, c *websocket.Conn) (int, []byte, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	return c.ReadMessage()
}

// gorillaExpectClose reads until the close and checks its code and reason.
func gorillaExpectClose(t testing.TB, c *websocket.Conn, code int, reason string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	for {
		_, p, err := c.ReadMessage()
		if err == nil {
			t.Errorf("unexpected message of %d bytes while waiting for close %d", len(p), code)
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("read ended with %v, want close %d %q", err, code, reason)
		}
		if ce.Code != code || ce.Text != reason {
			t.Errorf("client got close %d %q, want %d %q", ce.Code, ce.Text, code, reason)
		}
		return
	}
}

// gorillaExpect1014 checks how a gorilla client takes the proxy's 1014:
// gorilla/websocket (v1.5.3) only accepts the close codes it knows, and 1014
// (Bad Gateway, registered after RFC 6455) is not among them, so it reports a
// protocol error instead of a close. The frame on the wire must still be
// 1014 with reason.
func gorillaExpect1014(t testing.TB, c *websocket.Conn, reason string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	_, _, err := c.ReadMessage()
	if err == nil || err.Error() != "websocket: bad close code 1014" {
		t.Errorf("gorilla read ended with %v, want its protocol error for close code 1014", err)
	}
	closes := c.NetConn().(*sniffConn).closes()
	if len(closes) != 1 || closes[0].Code != 1014 || closes[0].Payload != reason {
		t.Errorf("close frames on the wire to the client: %+v, want one: 1014 %q", closes, reason)
	}
}

// coderMsg is one message (or the read error) of a coder client.
type coderMsg struct {
	text bool
	p    []byte
	err  error
}

// coderClient is a coder/websocket client whose reader runs all the time,
// as coder requires for pings and for the close handshake.
type coderClient struct {
	c     *coder.Conn
	msgs  chan coderMsg
	sniff *sniffConn // records the frames the client receives
}

func coderDial(t testing.TB, url string) *coderClient {
	t.Helper()
	cc := &coderClient{msgs: make(chan coderMsg, 64)}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cc.sniff = &sniffConn{Conn: c}
		return cc.sniff, nil
	}}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, resp, err := coder.Dial(ctx, url, &coder.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatalf("coder dial %s: %v", url, err)
	}
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Errorf("handshake answered extensions %q; the proxy negotiates none", ext)
	}
	c.SetReadLimit(64 << 20)
	cc.c = c
	go func() {
		for {
			mt, p, err := c.Read(context.Background())
			cc.msgs <- coderMsg{text: mt == coder.MessageText, p: p, err: err}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		c.CloseNow()
		tr.CloseIdleConnections()
	})
	return cc
}

func (cc *coderClient) write(t testing.TB, text bool, p []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := cc.c.Write(ctx, coderType(text), p); err != nil {
		t.Fatalf("coder write: %v", err)
	}
}

func (cc *coderClient) read(t testing.TB) coderMsg {
	t.Helper()
	return testkit.Recv(t, cc.msgs, waitTimeout, "a message to the coder client")
}

func (cc *coderClient) expectClose(t testing.TB, code int, reason string) {
	t.Helper()
	for {
		m := cc.read(t)
		if m.err == nil {
			t.Errorf("unexpected message of %d bytes while waiting for close %d", len(m.p), code)
			continue
		}
		got := closeOfCoder(m.err)
		if got.Code != code || got.Reason != reason {
			t.Errorf("client got close %d %q (%v), want %d %q", got.Code, got.Reason, m.err, code, reason)
		}
		return
	}
}

// echoCase is one message of the echo tests.
type echoCase struct {
	name string
	text bool
	p    []byte
}

func echoCases() []echoCase {
	cases := []echoCase{{"text utf-8", true, []byte(utf8Text)}}
	for _, n := range sizeClasses {
		cases = append(cases,
			echoCase{"text " + sizeName(n), true, testkit.Pattern(n, true)},
			echoCase{"binary " + sizeName(n), false, testkit.Pattern(n, false)})
	}
	return cases
}

func sizeName(n int) string {
	if n == 1<<20 {
		return "1MiB"
	}
	return strconv.Itoa(n) + "B"
}

// ---------------------------------------------------------------------------
// gorilla client → proxy → coder upstream.

func TestPeersGorillaClientCoderUpstream(t *testing.T) {
	checkLeaks(t)
	up := coderUpstream(t)
	front := startDemoFront(t, proxy.Config{Upstreams: []string{up.URL}, MaxMessageSize: 2 << 20})

	t.Run("echo", func(t *testing.T) {
		gorillaEchoThrough(t, front.WSURL, up, "/ws", 1000, "done")
	})

	t.Run("fragmented with a ping inside", func(t *testing.T) {
		c := gorillaDial(t, front.WSURL, 512) // frames of at most 512 bytes
		uc := up.Next(t)
		pongs := make(chan string, 4)
		c.SetPongHandler(func(s string) error { pongs <- s; return nil })
		before := len(uc.Frames())
		msg := testkit.Pattern(3500, true)
		w, err := c.NextWriter(websocket.TextMessage)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(msg); off += 700 {
			if _, err := w.Write(msg[off : off+700]); err != nil {
				t.Fatal(err)
			}
			if off == 700 { // a control frame between two fragments of the message
				if err := c.WriteControl(websocket.PingMessage, []byte("mid-message"), time.Now().Add(waitTimeout)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		mt, p, err := gorillaRead(t, c)
		if err != nil || mt != websocket.TextMessage || !bytes.Equal(p, msg) {
			t.Fatalf("echo: type %d, %d bytes, err %v; want the 3500-byte text", mt, len(p), err)
		}
		if s, ok := testkit.Ready(pongs); !ok {
			t.Error("no pong came back for the ping sent between fragments")
		} else if s != "mid-message" {
			t.Errorf("pong payload %q, want %q", s, "mid-message")
		}
		// What the upstream received: the message in several frames, the ping among them.
		frames := uc.Frames()[before:]
		var data []wireFrame
		pingAt, total := -1, int64(0)
		for i, f := range frames {
			switch f.Op {
			case 0x9:
				pingAt = len(data)
			case 0x1, 0x0:
				data = append(data, f)
				total += f.Len
			default:
				t.Errorf("frame %d: unexpected opcode %#x", i, f.Op)
			}
		}
		if len(data) < 7 || data[0].Op != 0x1 || data[0].Fin || !data[len(data)-1].Fin || total != 3500 {
			t.Fatalf("upstream got data frames %+v (total %d), want a text frame, continuations, 3500 bytes in 7 or more frames", data, total)
		}
		for _, f := range data[1 : len(data)-1] {
			if f.Op != 0x0 || f.Fin {
				t.Errorf("middle frame %+v, want a non-final continuation", f)
			}
		}
		if pingAt <= 0 || pingAt >= len(data) {
			t.Errorf("the ping came after data frame %d of %d; want it between two fragments", pingAt, len(data))
		}
		gorillaClose(t, c, uc, 1000, "")
	})

	t.Run("ping and pong both ways", func(t *testing.T) {
		c := gorillaDial(t, front.WSURL, 0)
		uc := up.Next(t)
		pongs := make(chan string, 4)
		c.SetPongHandler(func(s string) error { pongs <- s; return nil })
		// client ping → the upstream's pong comes back
		if err := c.WriteControl(websocket.PingMessage, []byte("gorilla-ping"), time.Now().Add(waitTimeout)); err != nil {
			t.Fatal(err)
		}
		c.WriteMessage(websocket.TextMessage, []byte("after ping"))
		readThenPong(t, c, pongs, "after ping", "gorilla-ping")
		// upstream ping (coder waits for the matching pong) → the client answers
		pingErr := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			err := uc.Ping(ctx, "")
			pingErr <- err
			if err == nil {
				uc.Send(true, []byte("pong received"))
			}
		}()
		if _, p, err := gorillaRead(t, c); err != nil || string(p) != "pong received" {
			t.Fatalf("message after the upstream's ping: %q, %v", p, err)
		}
		if err := <-pingErr; err != nil {
			t.Errorf("upstream ping: %v", err)
		}
		gorillaClose(t, c, uc, 1000, "")
	})

	t.Run("close", func(t *testing.T) {
		t.Run("client closes 4001", func(t *testing.T) {
			c := gorillaDial(t, front.WSURL, 0)
			uc := up.Next(t)
			gorillaClose(t, c, uc, 4001, "bye")
		})
		gorillaCloseSubtests(t, front.WSURL, up)
		small := startDemoFront(t, proxy.Config{Upstreams: []string{up.URL}, MaxMessageSize: 1000})
		t.Run("client message over the limit gives 1009", func(t *testing.T) {
			c := gorillaDial(t, small.WSURL, 0)
			uc := up.Next(t)
			if err := c.WriteMessage(websocket.BinaryMessage, testkit.Pattern(1000, false)); err != nil {
				t.Fatal(err)
			}
			if _, p, err := gorillaRead(t, c); err != nil || len(p) != 1000 {
				t.Fatalf("a message of exactly the limit: %d bytes, %v", len(p), err)
			}
			if err := c.WriteMessage(websocket.BinaryMessage, testkit.Pattern(1001, false)); err != nil {
				t.Fatal(err)
			}
			gorillaExpectClose(t, c, 1009, reasonTooBig)
			waitClose(t, uc, 1001, reasonClientViolation)
		})
		t.Run("upstream message over the limit gives 1009 upstream", func(t *testing.T) {
			c := gorillaDial(t, small.WSURL, 0)
			uc := up.Next(t)
			if err := uc.Send(true, testkit.Pattern(5000, true)); err != nil {
				t.Fatal(err)
			}
			gorillaExpect1014(t, c, reasonUpstreamViolation)
			waitClose(t, uc, 1009, reasonTooBig)
		})
	})
}

// readThenPong reads the next message of c, which must be msg, and checks
// that the pong with payload pong came in before it.
func readThenPong(t *testing.T, c *websocket.Conn, pongs <-chan string, msg, pong string) {
	t.Helper()
	if _, p, err := gorillaRead(t, c); err != nil || string(p) != msg {
		t.Fatalf("message %q, %v; want %q", p, err, msg)
	}
	if s, ok := testkit.Ready(pongs); !ok {
		t.Errorf("the pong to %q did not come back before the message", pong)
	} else if s != pong {
		t.Errorf("pong payload %q, want %q", s, pong)
	}
}

// gorillaEchoThrough dials url with gorilla, checks that up's connection saw
// path, echoes every echo case and closes with code and reason.
func gorillaEchoThrough(t *testing.T, url string, up *echoUpstream, path string, code int, reason string) {
	t.Helper()
	c := gorillaDial(t, url, 0)
	uc := up.Next(t)
	if uc.Path != path {
		t.Errorf("upstream saw path %q, want %s", uc.Path, path)
	}
	gorillaEchoAll(t, c, nil)
	gorillaClose(t, c, uc, code, reason)
}

// gorillaEchoAll sends every echo case from the gorilla client c and checks
// that each comes back with its type and bytes; sent, if set, runs after each
// message is sent.
func gorillaEchoAll(t *testing.T, c *websocket.Conn, sent func(tc echoCase)) {
	t.Helper()
	for _, tc := range echoCases() {
		if err := c.WriteMessage(gorillaType(tc.text), tc.p); err != nil {
			t.Fatalf("%s: write: %v", tc.name, err)
		}
		if sent != nil {
			sent(tc)
		}
		mt, p, err := gorillaRead(t, c)
		if err != nil {
			t.Fatalf("%s: read: %v", tc.name, err)
		}
		if mt != gorillaType(tc.text) || !bytes.Equal(p, tc.p) {
			t.Errorf("%s: echo is type %d, %d bytes; want type %d, %d bytes, equal", tc.name, mt, len(p), gorillaType(tc.text), len(tc.p))
		}
	}
}

// gorillaCloseSubtests runs the close subtests common to every front, with a
// gorilla client of url and up's connections: the upstream closes with 4002,
// the upstream is killed (1014), the client is killed (1001 upstream).
func gorillaCloseSubtests(t *testing.T, url string, up *echoUpstream) {
	t.Run("upstream closes 4002", func(t *testing.T) {
		c := gorillaDial(t, url, 0)
		uc := up.Next(t)
		done := make(chan error, 1)
		go func() { done <- uc.Close(4002, "upstream bye") }()
		gorillaExpectClose(t, c, 4002, "upstream bye")
		// gorilla echoes the code without the reason; coder's Close checks the code.
		if err := waitErr(done); err != nil {
			t.Errorf("upstream Close: %v", err)
		}
	})
	t.Run("upstream killed gives 1014", func(t *testing.T) {
		c := gorillaDial(t, url, 0)
		up.Next(t)
		up.Kill()
		gorillaExpect1014(t, c, reasonUpstreamGone)
	})
	t.Run("client killed gives 1001 upstream", func(t *testing.T) {
		c := gorillaDial(t, url, 0)
		uc := up.Next(t)
		c.NetConn().Close()
		waitClose(t, uc, 1001, reasonClientGone)
	})
}

// gorillaClose closes from the gorilla client with code and reason; the
// upstream must see exactly them, and the client the upstream's echo.
func gorillaClose(t testing.TB, c *websocket.Conn, uc *upConn, code int, reason string) {
	t.Helper()
	if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	waitClose(t, uc, code, reason)
	gorillaExpectClose(t, c, code, reason) // coder echoes code and reason
}

func waitErr(ch chan error) error {
	select {
	case err := <-ch:
		return err
	case <-time.After(waitTimeout):
		return errors.New("timed out")
	}
}

// ---------------------------------------------------------------------------
// coder client → proxy → gorilla upstream.

func TestPeersCoderClientGorillaUpstream(t *testing.T) {
	checkLeaks(t)
	up := gorillaUpstream(t, 1024) // echoes in frames of at most 1 KiB
	front := startDemoFront(t, proxy.Config{Upstreams: []string{up.URL}, MaxMessageSize: 2 << 20})

	t.Run("echo", func(t *testing.T) {
		cc := coderDial(t, front.WSURL)
		uc := up.Next(t)
		for _, tc := range echoCases() {
			before := len(cc.sniff.frames())
			cc.write(t, tc.text, tc.p)
			m := cc.read(t)
			if m.err != nil {
				t.Fatalf("%s: read: %v", tc.name, m.err)
			}
			if m.text != tc.text || !bytes.Equal(m.p, tc.p) {
				t.Errorf("%s: echo is text=%v, %d bytes; want text=%v, %d bytes, equal", tc.name, m.text, len(m.p), tc.text, len(tc.p))
			}
			// gorilla's 1 KiB write buffer fragments the echo; the proxy keeps the frames.
			if frames := cc.sniff.frames()[before:]; len(tc.p) > 4096 && len(frames) < len(tc.p)/1024 {
				t.Errorf("%s: the client got the echo in %d frames, want at least %d", tc.name, len(frames), len(tc.p)/1024)
			}
		}
		cc.closeExpect(t, uc, 1000, "done")
	})

	t.Run("ping and pong both ways", func(t *testing.T) {
		cc := coderDial(t, front.WSURL)
		uc := up.Next(t)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := cc.c.Ping(ctx); err != nil { // returns once the upstream's pong came back
			t.Fatalf("client ping: %v", err)
		}
		if err := uc.Ping(ctx, "gorilla-upstream-ping"); err != nil {
			t.Fatal(err)
		}
		select {
		case s := <-uc.Pongs:
			if s != "gorilla-upstream-ping" {
				t.Errorf("upstream got pong %q, want gorilla-upstream-ping", s)
			}
		case <-time.After(waitTimeout):
			t.Error("the client's pong did not reach the upstream")
		}
		cc.closeExpect(t, uc, 1000, "")
	})

	t.Run("close", func(t *testing.T) {
		t.Run("client closes 4001", func(t *testing.T) {
			cc := coderDial(t, front.WSURL)
			uc := up.Next(t)
			cc.closeExpect(t, uc, 4001, "bye")
		})
		t.Run("upstream closes 4002", func(t *testing.T) {
			cc := coderDial(t, front.WSURL)
			uc := up.Next(t)
			done := make(chan error, 1)
			go func() { done <- uc.Close(4002, "upstream bye") }()
			cc.expectClose(t, 4002, "upstream bye")
			if err := waitErr(done); err != nil {
				t.Errorf("upstream Close: %v", err)
			}
			waitClose(t, uc, 4002, "upstream bye") // coder echoes code and reason
		})
		t.Run("upstream killed gives 1014", func(t *testing.T) {
			cc := coderDial(t, front.WSURL)
			up.Next(t)
			up.Kill()
			cc.expectClose(t, 1014, reasonUpstreamGone)
		})
		t.Run("client killed gives 1001 upstream", func(t *testing.T) {
			cc := coderDial(t, front.WSURL)
			uc := up.Next(t)
			cc.c.CloseNow()
			waitClose(t, uc, 1001, reasonClientGone)
		})
		small := startDemoFront(t, proxy.Config{Upstreams: []string{up.URL}, MaxMessageSize: 1000})
		t.Run("client message over the limit gives 1009", func(t *testing.T) {
			cc := coderDial(t, small.WSURL)
			uc := up.Next(t)
			cc.write(t, true, testkit.Pattern(1001, true))
			cc.expectClose(t, 1009, reasonTooBig)
			waitClose(t, uc, 1001, reasonClientViolation)
		})
		t.Run("upstream message over the limit gives 1009 upstream", func(t *testing.T) {
			cc := coderDial(t, small.WSURL)
			uc := up.Next(t)
			if err := uc.Send(false, testkit.Pattern(5000, false)); err != nil {
				t.Fatal(err)
			}
			cc.expectClose(t, 1014, reasonUpstreamViolation)
			waitClose(t, uc, 1009, reasonTooBig)
		})
	})
}

// closeExpect closes from the coder client; coder's Close returns nil only when
// the echoed code matches, and the upstream must see the code and reason.
func (cc *coderClient) closeExpect(t testing.TB, uc *upConn, code int, reason string) {
	t.Helper()
	if err := cc.c.Close(coder.StatusCode(code), reason); err != nil {
		t.Errorf("coder Close(%d): %v", code, err)
	}
	waitClose(t, uc, code, reason)
}

// ---------------------------------------------------------------------------
// Node.js ws client → proxy → gorilla upstream.

func TestPeersNodeClient(t *testing.T) {
	checkLeaks(t)
	nodeReady(t)
	up := gorillaUpstream(t, 0)
	front := startDemoFront(t, proxy.Config{Upstreams: []string{up.URL}, MaxMessageSize: 2 << 20})

	t.Run("messages, pings, close 4001", func(t *testing.T) {
		node := startNode(t, "client.js", front.WSURL)
		open := node.Expect(t, "open")
		if open.Extensions != "" {
			t.Errorf("ws negotiated extensions %q through the proxy, want none", open.Extensions)
		}
		uc := up.Next(t)
		if ua := uc.Header.Get("Sec-WebSocket-Extensions"); ua != "" {
			t.Errorf("the upstream was offered extensions %q, want none", ua)
		}

		nodeConversation(t, node, uc)
	})

	t.Run("upstream closes 4002", func(t *testing.T) {
		node := startNode(t, "client.js", front.WSURL)
		node.Expect(t, "open")
		uc := up.Next(t)
		done := make(chan error, 1)
		go func() { done <- uc.Close(4002, "upstream bye") }()
		if e := node.Expect(t, "close"); e.Code != 4002 || e.Reason != "upstream bye" {
			t.Errorf("node got close %d %q, want 4002 \"upstream bye\"", e.Code, e.Reason)
		}
		if err := waitErr(done); err != nil {
			t.Errorf("upstream Close: %v", err)
		}
		waitClose(t, uc, 4002, "upstream bye") // ws echoes code and reason
	})

	t.Run("upstream killed gives 1014", func(t *testing.T) {
		node := startNode(t, "client.js", front.WSURL)
		node.Expect(t, "open")
		up.Next(t)
		up.Kill()
		if e := node.Expect(t, "close"); e.Code != 1014 || e.Reason != reasonUpstreamGone {
			t.Errorf("node got close %d %q, want 1014 %q", e.Code, e.Reason, reasonUpstreamGone)
		}
	})

	t.Run("client terminated gives 1001 upstream", func(t *testing.T) {
		node := startNode(t, "client.js", front.WSURL)
		node.Expect(t, "open")
		uc := up.Next(t)
		node.Send(t, map[string]any{"op": "terminate"})
		waitClose(t, uc, 1001, reasonClientGone)
		if e := node.Expect(t, "close"); e.Code != 1006 {
			t.Errorf("node reported close %d after terminate, want 1006", e.Code)
		}
	})

	t.Run("message over the limit gives 1009", func(t *testing.T) {
		small := startDemoFront(t, proxy.Config{Upstreams: []string{up.URL}, MaxMessageSize: 1000})
		node := startNode(t, "client.js", small.WSURL)
		node.Expect(t, "open")
		uc := up.Next(t)
		node.Send(t, map[string]any{"op": "text", "size": 100000})
		if e := node.Expect(t, "close"); e.Code != 1009 || e.Reason != reasonTooBig {
			t.Errorf("node got close %d %q, want 1009 %q", e.Code, e.Reason, reasonTooBig)
		}
		waitClose(t, uc, 1001, reasonClientViolation)
	})
}

func expectPong(t testing.TB, uc *upConn, want string) {
	t.Helper()
	select {
	case s := <-uc.Pongs:
		if s != want {
			t.Errorf("upstream got pong %q, want %q", s, want)
		}
	case <-time.After(waitTimeout):
		t.Errorf("upstream got no pong %q", want)
	}
}

// ---------------------------------------------------------------------------
// gorilla client → proxy → Node.js ws upstream.

// nodeServer starts node/server.js and returns it with its ws:// URL.
func nodeServer(t testing.TB) (*nodeProc, string) {
	t.Helper()
	srv := startNode(t, "server.js")
	e := srv.Expect(t, "listening")
	return srv, "ws://127.0.0.1:" + strconv.Itoa(e.Port) + "/"
}

func TestPeersNodeUpstream(t *testing.T) {
	checkLeaks(t)
	nodeReady(t)
	srv, url := nodeServer(t)
	front := startDemoFront(t, proxy.Config{Upstreams: []string{url}, MaxMessageSize: 2 << 20})

	t.Run("messages, pings, node closes 4002", func(t *testing.T) {
		c := gorillaDial(t, front.WSURL, 0)
		if e := srv.Expect(t, "connection"); e.Path != "/ws" {
			t.Errorf("node saw path %q, want /ws", e.Path)
		}
		gorillaEchoAll(t, c, func(tc echoCase) { expectMessage(t, srv.Expect(t, "message"), tc.text, tc.p) })

		pongs := make(chan string, 4)
		c.SetPongHandler(func(s string) error { pongs <- s; return nil })
		if err := c.WriteControl(websocket.PingMessage, []byte("go-ping"), time.Now().Add(waitTimeout)); err != nil {
			t.Fatal(err)
		}
		if e := srv.Expect(t, "ping"); e.Data != "go-ping" {
			t.Errorf("node got ping %q, want go-ping", e.Data)
		}
		srv.Send(t, map[string]any{"op": "ping", "data": "node-ping"})
		srv.Send(t, map[string]any{"op": "text", "data": "after ping"})
		readThenPong(t, c, pongs, "after ping", "go-ping")
		if e := srv.Expect(t, "pong"); e.Data != "node-ping" {
			t.Errorf("node got pong %q, want node-ping", e.Data)
		}

		srv.Send(t, map[string]any{"op": "close", "code": 4002, "reason": "node bye"})
		gorillaExpectClose(t, c, 4002, "node bye")
		// gorilla echoes the code without the reason.
		if e := srv.Expect(t, "close"); e.Code != 4002 || e.Reason != "" {
			t.Errorf("node saw close %d %q, want 4002 \"\"", e.Code, e.Reason)
		}
	})

	t.Run("subprotocol chosen by node", func(t *testing.T) {
		d := websocket.Dialer{HandshakeTimeout: waitTimeout, Subprotocols: []string{"chat.v2", "chat.v1"}}
		c, _, err := d.Dial(front.WSURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if e := srv.Expect(t, "connection"); e.Protocol != "chat.v2" {
			t.Errorf("node chose %q, want chat.v2 (the first offered)", e.Protocol)
		}
		if got := c.Subprotocol(); got != "chat.v2" {
			t.Errorf("client got subprotocol %q, want chat.v2", got)
		}
		if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(waitTimeout)); err != nil {
			t.Fatal(err)
		}
		if e := srv.Expect(t, "close"); e.Code != 1000 || e.Reason != "" {
			t.Errorf("node saw close %d %q, want 1000 \"\"", e.Code, e.Reason)
		}
		gorillaExpectClose(t, c, 1000, "")
	})

	t.Run("client closes 4003", func(t *testing.T) {
		c := gorillaDial(t, front.WSURL, 0)
		srv.Expect(t, "connection")
		if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4003, "go bye"), time.Now().Add(waitTimeout)); err != nil {
			t.Fatal(err)
		}
		if e := srv.Expect(t, "close"); e.Code != 4003 || e.Reason != "go bye" {
			t.Errorf("node saw close %d %q, want 4003 \"go bye\"", e.Code, e.Reason)
		}
		gorillaExpectClose(t, c, 4003, "go bye") // ws echoes code and reason
	})

	t.Run("client killed gives 1001 upstream", func(t *testing.T) {
		c := gorillaDial(t, front.WSURL, 0)
		srv.Expect(t, "connection")
		c.NetConn().Close()
		if e := srv.Expect(t, "close"); e.Code != 1001 || e.Reason != reasonClientGone {
			t.Errorf("node saw close %d %q, want 1001 %q", e.Code, e.Reason, reasonClientGone)
		}
	})

	t.Run("node process killed gives 1014", func(t *testing.T) {
		c := gorillaDial(t, front.WSURL, 0)
		srv.Expect(t, "connection")
		srv.Kill(t)
		gorillaExpect1014(t, c, reasonUpstreamGone)
	})
}

// TestPeersNodeCompression runs Node's ws on both ends with permessage-deflate
// (context takeover, every message compressed) through the proxy in passthrough
// mode: the extension is negotiated end to end and compressed messages of every
// size arrive intact in both directions.
func TestPeersNodeCompression(t *testing.T) {
	checkLeaks(t)
	nodeReady(t)
	t.Setenv("WSGATE_DEFLATE", "1")
	srv, url := nodeServer(t)
	front := startDemoFront(t, proxy.Config{Upstreams: []string{url}, MaxMessageSize: 2 << 20, Compression: proxy.CompressionPassthrough})
	node := startNode(t, "client.js", front.WSURL)
	open := node.Expect(t, "open")
	if !strings.Contains(open.Extensions, "permessage-deflate") {
		t.Fatalf("the ws client negotiated %q through the proxy, want permessage-deflate", open.Extensions)
	}
	if e := srv.Expect(t, "connection"); !strings.Contains(e.Extensions, "permessage-deflate") {
		t.Fatalf("the ws server negotiated %q, want permessage-deflate", e.Extensions)
	}
	node.Send(t, map[string]any{"op": "text", "data": utf8Text})
	if e := srv.Expect(t, "message"); e.Type != "text" || e.Data != utf8Text {
		t.Errorf("upstream got %+v, want the utf-8 text", e)
	}
	if e := node.Expect(t, "message"); e.Type != "text" || e.Data != utf8Text {
		t.Errorf("utf-8 echo: %+v", e)
	}
	for _, n := range sizeClasses {
		node.Send(t, map[string]any{"op": "text", "size": n})
		expectMessage(t, srv.Expect(t, "message"), true, testkit.Pattern(n, true))
		expectMessage(t, node.Expect(t, "message"), true, testkit.Pattern(n, true))
		node.Send(t, map[string]any{"op": "binary", "size": n})
		expectMessage(t, srv.Expect(t, "message"), false, testkit.Pattern(n, false))
		expectMessage(t, node.Expect(t, "message"), false, testkit.Pattern(n, false))
	}
	node.Send(t, map[string]any{"op": "close", "code": 4001, "reason": "bye"})
	if e := srv.Expect(t, "close"); e.Code != 4001 || e.Reason != "bye" {
		t.Errorf("upstream saw close %d %q, want 4001 bye", e.Code, e.Reason)
	}
}
