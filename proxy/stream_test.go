package proxy

// The client leg on an HTTP/2 or HTTP/3 stream (RFC 8441, RFC 9220), the
// upstream leg an HTTP/1.1 upgrade: forwarding, every close path with how the
// client's stream ends, limits, inspectors, keepalive, drain, logs and metrics.

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wsgate/wsgate/internal/streamtest"
	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

func TestStreamClientLegEcho(t *testing.T) {
	forEachProto(t, func(t *testing.T, proto string) {
		u := startStreamUpstream(t)
		core, logs := observer.New(zap.InfoLevel)
		reg := prometheus.NewRegistry()
		m, err := NewMetrics(reg, "t")
		if err != nil {
			t.Fatal(err)
		}
		var info atomic.Pointer[SessionInfo]
		f := startFront(t, proto, u, Config{
			Logger:  zap.New(core),
			Metrics: m,
			Inspectors: Chain{InspectFunc(nil, func(m *Message) Verdict {
				info.Store(m.Session)
				return Verdict{}
			})},
		})
		c := testkit.DialStream(t, f.Server, "/chat?room=1", nil)
		ctx := context.Background()
		for _, n := range []int{0, 125, 126, 65535, 65536, 1 << 20} {
			for _, typ := range []wsmw.MessageType{wsmw.MessageText, wsmw.MessageBinary} {
				msg := bytes.Repeat([]byte("x"), n)
				if err := c.Write(ctx, typ, msg); err != nil {
					t.Fatal(err)
				}
				got, p, err := c.Read(ctx, nil)
				if err != nil || got != typ || !bytes.Equal(p, msg) {
					t.Fatalf("echo of %d bytes: %v %d bytes %v", n, got, len(p), err)
				}
			}
		}
		// A fragmented message with a ping in between: pings and pongs are forwarded.
		pongs := make(chan string, 1)
		c.SetPongHandler(func(p []byte) error { pongs <- string(p); return nil })
		c.WriteFrame(wsmw.Header{OpCode: wsmw.OpText}, []byte("frag"))
		c.Ping([]byte("through"))
		c.WriteFrame(wsmw.Header{Fin: true, OpCode: wsmw.OpContinuation}, []byte("ments"))
		if _, p, err := c.Read(ctx, nil); err != nil || string(p) != "fragments" {
			t.Fatalf("fragmented echo %q %v", p, err)
		}
		if got := <-pongs; got != "through" {
			t.Errorf("pong %q", got)
		}
		if err := c.Close(4000, "bye"); err != nil {
			t.Fatal(err)
		}
		if code, reason := u.end(t); code != 4000 || reason != "bye" {
			t.Errorf("upstream saw close %d %q, want 4000 bye", code, reason)
		}
		f.waitServed(t)
		if got := info.Load(); got == nil || got.ClientProto != proto[:2] {
			t.Errorf("inspector saw ClientProto %v", got)
		}
		entries := logs.FilterMessage("session closed").All()
		if len(entries) != 1 || entries[0].ContextMap()["client_proto"] != proto[:2] || entries[0].ContextMap()["close_code"] != int64(4000) {
			t.Fatalf("session log %v", entries)
		}
		want := `client_proto="` + proto[:2] + `"`
		got := gather(t, reg)
		if got[`t_sessions_total{`+want+`}`] != 1 || got[`t_closes_total{`+want+`,code="4000",initiator="client"}`] != 1 {
			t.Errorf("metrics %v", got)
		}
	})
}

// TestStreamClientLegCloses: every way a session ends, seen from a raw client
// on a stream: its close code, how its stream ends, what the upstream got.
func TestStreamClientLegCloses(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		// run drives the session; it returns the close the client must get
		// (0: none) and the one the upstream must get (0: not checked).
		run        func(t *testing.T, r *raw, u *streamUpstream) (client, up wsmw.StatusCode)
		clientSide string // reason the client gets, "" for any
		answered   bool   // the client sent its close already
		end        streamtest.Ending
	}{
		{
			name: "client closes",
			run: func(t *testing.T, r *raw, u *streamUpstream) (wsmw.StatusCode, wsmw.StatusCode) {
				r.sendClose(t, 4001, "done")
				return 4001, 4001
			},
			answered: true,
			end:      streamtest.EndStream,
		},
		{
			name: "upstream closes",
			run: func(t *testing.T, r *raw, u *streamUpstream) (wsmw.StatusCode, wsmw.StatusCode) {
				c := <-u.conns
				c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4002, "up"))
				return 4002, 0
			},
			end: streamtest.EndStream,
		},
		{
			name: "upstream dies",
			run: func(t *testing.T, r *raw, u *streamUpstream) (wsmw.StatusCode, wsmw.StatusCode) {
				(<-u.conns).NetConn().Close()
				return wsmw.StatusBadGateway, 0
			},
			clientSide: "upstream went away",
			end:        streamtest.EndStream,
		},
		{
			name: "message over the limit",
			cfg:  Config{MaxMessageSize: 1024},
			run: func(t *testing.T, r *raw, u *streamUpstream) (wsmw.StatusCode, wsmw.StatusCode) {
				r.send(t, true, wsmw.OpBinary, make([]byte, 2048))
				return wsmw.StatusMessageTooBig, wsmw.StatusGoingAway
			},
			end: streamtest.EndStream,
		},
		{
			name: "invalid UTF-8",
			run: func(t *testing.T, r *raw, u *streamUpstream) (wsmw.StatusCode, wsmw.StatusCode) {
				r.send(t, true, wsmw.OpText, []byte("bad \xc3"))
				return wsmw.StatusInvalidPayload, wsmw.StatusGoingAway
			},
			end: streamtest.EndStream,
		},
		{
			name: "inspector closes",
			cfg:  Config{Inspectors: Chain{ValidateJSON{}}},
			run: func(t *testing.T, r *raw, u *streamUpstream) (wsmw.StatusCode, wsmw.StatusCode) {
				r.send(t, true, wsmw.OpText, []byte("{not json"))
				return wsmw.StatusInvalidPayload, wsmw.StatusGoingAway
			},
			end: streamtest.EndStream,
		},
		{
			name: "idle timeout",
			cfg:  Config{IdleTimeout: 100 * time.Millisecond},
			run: func(t *testing.T, r *raw, u *streamUpstream) (wsmw.StatusCode, wsmw.StatusCode) {
				return wsmw.StatusGoingAway, wsmw.StatusGoingAway
			},
			clientSide: "idle timeout",
			end:        streamtest.EndStream,
		},
		{
			name: "client never answers the close",
			cfg:  Config{IdleTimeout: 100 * time.Millisecond, CloseTimeout: 200 * time.Millisecond},
			run: func(t *testing.T, r *raw, u *streamUpstream) (wsmw.StatusCode, wsmw.StatusCode) {
				return wsmw.StatusGoingAway, wsmw.StatusGoingAway
			},
			end: streamtest.EndReset,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachProto(t, func(t *testing.T, proto string) {
				u := startStreamUpstream(t)
				f := startFront(t, proto, u, tc.cfg)
				r := f.openRaw(t, "/")
				wantClient, wantUp := tc.run(t, r, u)
				code, reason := r.readClose(t)
				if code != wantClient || tc.clientSide != "" && reason != tc.clientSide {
					t.Errorf("client got close %v %q, want %v %q", code, reason, wantClient, tc.clientSide)
				}
				if tc.end == streamtest.EndStream && !tc.answered {
					r.sendClose(t, code, "")
				}
				if got := r.ending(t); got != tc.end {
					t.Errorf("client's stream ended with %s, want %s", got, tc.end)
				}
				if wantUp != 0 {
					if got, reason := u.end(t); got != int(wantUp) {
						t.Errorf("upstream got close %d %q, want %v", got, reason, wantUp)
					}
				}
				f.waitServed(t)
			})
		})
	}
}

// TestStreamClientLegGoesAway: the client resets its stream; the upstream
// gets 1001 and ServeHTTP returns.
func TestStreamClientLegGoesAway(t *testing.T) {
	forEachProto(t, func(t *testing.T, proto string) {
		u, f, c := startEchoedSession(t, proto)
		c.CloseNow()
		if code, reason := u.end(t); code != int(wsmw.StatusGoingAway) || reason != "client went away" {
			t.Errorf("upstream got %d %q, want 1001 client went away", code, reason)
		}
		f.waitServed(t)
	})
}

// TestStreamClientLegKeepalive: the proxy's pings reach a client on a stream
// and its pongs keep the session up.
func TestStreamClientLegKeepalive(t *testing.T) {
	forEachProto(t, func(t *testing.T, proto string) {
		u := startStreamUpstream(t)
		f := startFront(t, proto, u, Config{PingInterval: 200 * time.Millisecond, PingTimeout: 150 * time.Millisecond})
		c := testkit.DialStream(t, f.Server, "/", nil)
		var pings atomic.Int64
		c.SetPingHandler(func(p []byte) error {
			pings.Add(1)
			return c.WriteFrame(wsmw.Header{Fin: true, OpCode: wsmw.OpPong}, p)
		})
		read := make(chan error, 1)
		go func() {
			_, _, err := c.Read(context.Background(), nil)
			read <- err
		}()
		for deadline := time.Now().Add(5 * time.Second); pings.Load() < 3; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d pings arrived", pings.Load())
			}
		}
		c.Write(context.Background(), wsmw.MessageText, []byte("alive"))
		if err := <-read; err != nil {
			t.Fatalf("after the pings: %v", err)
		}
		c.Close(wsmw.StatusNormalClosure, "")
	})
}

// TestStreamClientLegShutdown: Shutdown drains a session on a stream with
// 1012; its ServeHTTP returns.
func TestStreamClientLegShutdown(t *testing.T) {
	forEachProto(t, func(t *testing.T, proto string) {
		_, f, c := startEchoedSession(t, proto)
		read := make(chan error, 1)
		go func() {
			_, _, err := c.Read(context.Background(), nil)
			read <- err
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := f.p.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-read; wsmw.CloseStatus(err) != wsmw.StatusServiceRestart {
			t.Errorf("client read %v, want 1012", err)
		}
		f.waitServed(t)
	})
}

// TestStreamClientLegCompression: permessage-deflate negotiated end to end
// (passthrough) with a client on a stream.
func TestStreamClientLegCompression(t *testing.T) {
	forEachProto(t, func(t *testing.T, proto string) {
		ws := startDeflateEcho(t)
		f := startFront(t, proto, nil, Config{Upstreams: []string{ws}, Compression: CompressionPassthrough})
		c := testkit.DialStream(t, f.Server, "/", &wsmw.DialConfig{Compression: &wsmw.CompressionOptions{Threshold: 1}})
		if _, ok := c.Compression(); !ok {
			t.Fatalf("not negotiated: %q", c.Extensions())
		}
		msg := []byte(strings.Repeat("squeeze ", 4000))
		for range 3 {
			c.Write(context.Background(), wsmw.MessageText, msg)
			if _, p, err := c.Read(context.Background(), nil); err != nil || !bytes.Equal(p, msg) {
				t.Fatalf("echo %d bytes %v", len(p), err)
			}
		}
		c.Close(wsmw.StatusNormalClosure, "")
	})
}
