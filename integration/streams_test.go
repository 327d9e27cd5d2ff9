package integration

// WebSockets on HTTP/2 and HTTP/3 streams (RFC 8441, RFC 9220), end to end:
// Go's clients (x/net's HTTP/2 transport, quic-go's HTTP/3 transport, through
// wsmw.Dial), Node's http2 module and headless Chromium, against the proxy on
// chi, Caddy with the ws directive, and the wsmw echo, with the raw-frame
// conformance suite over streams too.

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/streamtest"
	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/wsmw"
)

// TestStreamsGoClientThroughChi: a wsmw client on each protocol through the
// proxy on chi to a gorilla upstream on HTTP/1.1: every size, fragments
// forwarded frame for frame, pings both ways, and every way a session ends.
func TestStreamsGoClientThroughChi(t *testing.T) {
	checkLeaks(t)
	for _, proto := range streamtest.Protos {
		t.Run(proto, func(t *testing.T) {
			up := gorillaUpstream(t, 0)
			f := startStreamFront(t, proto, proxy.Config{Upstreams: []string{up.URL}, MaxMessageSize: 2 << 20})
			ctx := context.Background()

			t.Run("messages and pings", func(t *testing.T) {
				c := testkit.DialStream(t, f.Server, "/ws", nil)
				uc := up.Next(t)
				for _, n := range sizeClasses {
					for _, text := range []bool{true, false} {
						typ := map[bool]wsmw.MessageType{true: wsmw.MessageText, false: wsmw.MessageBinary}[text]
						msg := testkit.Pattern(n, text)
						c.Write(ctx, typ, msg)
						got, p, err := c.Read(ctx, nil)
						if err != nil || got != typ || sha(p) != sha(msg) {
							t.Fatalf("echo of %d bytes: %v %d bytes %v", n, got, len(p), err)
						}
					}
				}
				before := len(uc.Frames())
				c.WriteFrame(wsmw.Header{OpCode: wsmw.OpText}, []byte("frag"))
				c.WriteFrame(wsmw.Header{OpCode: wsmw.OpContinuation}, []byte("mented "))
				c.WriteFrame(wsmw.Header{Fin: true, OpCode: wsmw.OpContinuation}, []byte("téxt"))
				if _, p, err := c.Read(ctx, nil); err != nil || string(p) != "fragmented téxt" {
					t.Fatalf("fragmented echo %q %v", p, err)
				}
				want := []wireFrame{{Op: 0x1, Len: 4}, {Op: 0x0, Len: 7}, {Op: 0x0, Fin: true, Len: 5}}
				if got := uc.Frames()[before:]; !slices.Equal(got, want) {
					t.Errorf("upstream got frames %+v, want %+v", got, want)
				}
				pings := make(chan string, 1)
				c.SetPingHandler(func(p []byte) error {
					pings <- string(p)
					return c.WriteFrame(wsmw.Header{Fin: true, OpCode: wsmw.OpPong}, p)
				})
				if err := uc.Ping(ctx, "upstream-ping"); err != nil {
					t.Fatal(err)
				}
				go c.Read(ctx, nil) // answers the ping; ends with the close below
				if got := <-pings; got != "upstream-ping" {
					t.Errorf("client got ping %q", got)
				}
				expectPong(t, uc, "upstream-ping")
				c.Close(4001, "bye")
				waitClose(t, uc, 4001, "bye")
			})
			t.Run("upstream dies", func(t *testing.T) {
				c := testkit.DialStream(t, f.Server, "/ws", nil)
				up.Next(t)
				up.Kill()
				if _, _, err := c.Read(ctx, nil); wsmw.CloseStatus(err) != wsmw.StatusBadGateway {
					t.Errorf("client read %v, want 1014", err)
				}
			})
			t.Run("client goes away", func(t *testing.T) {
				c := testkit.DialStream(t, f.Server, "/ws", nil)
				uc := up.Next(t)
				c.CloseNow()
				waitClose(t, uc, 1001, reasonClientGone)
			})
			t.Run("message over the limit", func(t *testing.T) {
				small := startStreamFront(t, proto, proxy.Config{Upstreams: []string{up.URL}, MaxMessageSize: 1000})
				c := testkit.DialStream(t, small.Server, "/ws", nil)
				uc := up.Next(t)
				c.Write(ctx, wsmw.MessageBinary, make([]byte, 1001))
				if _, _, err := c.Read(ctx, nil); wsmw.CloseStatus(err) != wsmw.StatusMessageTooBig {
					t.Errorf("client read %v, want 1009", err)
				}
				if got := <-uc.Closed; got.Code != 1001 {
					t.Errorf("upstream saw close %d %q, want 1001", got.Code, got.Reason)
				}
			})
			f.Proxy.Shutdown(ctx)
			f.wantClientProto(t, streamProtoName(proto))
		})
	}
}

// TestStreamsNodeClient: Node's http2 module as an independent RFC 8441
// client (node/h2client.js frames the stream itself), through the proxy and
// against the wsmw echo, over h2c and h2: messages, fragments, pings, closes
// and how the server ends the stream.
func TestStreamsNodeClient(t *testing.T) {
	checkLeaks(t)
	nodeReady(t)
	for _, proto := range []string{"h2c", "h2"} {
		t.Run(proto, func(t *testing.T) {
			up := gorillaUpstream(t, 0)
			f := startStreamFront(t, proto, proxy.Config{Upstreams: []string{up.URL}, MaxMessageSize: 2 << 20})
			url := f.HTTPURL("/ws")

			t.Run("messages, pings, close 4001", func(t *testing.T) {
				node := startNode(t, "h2client.js", url)
				node.Expect(t, "open")
				uc := up.Next(t)
				nodeConversation(t, node, uc)
				if e := node.Expect(t, "stream-end"); e.Message != "end" {
					t.Errorf("the server ended the stream with %q, want END_STREAM", e.Message)
				}
			})
			t.Run("upstream dies", func(t *testing.T) {
				node := startNode(t, "h2client.js", url)
				node.Expect(t, "open")
				up.Next(t)
				up.Kill()
				if e := node.Expect(t, "close"); e.Code != 1014 || e.Reason != reasonUpstreamGone {
					t.Errorf("node got close %d %q, want 1014 %q", e.Code, e.Reason, reasonUpstreamGone)
				}
				if e := node.Expect(t, "stream-end"); e.Message != "end" {
					t.Errorf("the server ended the stream with %q, want END_STREAM", e.Message)
				}
			})
			t.Run("node resets its stream", func(t *testing.T) {
				node := startNode(t, "h2client.js", url)
				node.Expect(t, "open")
				uc := up.Next(t)
				node.Send(t, map[string]any{"op": "terminate"})
				waitClose(t, uc, 1001, reasonClientGone)
			})
			t.Run("wsmw echo", func(t *testing.T) {
				echo := streamtest.Start(t, proto, wsmw.Middleware(testkit.EchoHandler, nil)(http.NotFoundHandler()))
				node := startNode(t, "h2client.js", echo.HTTPURL("/echo"))
				node.Expect(t, "open")
				node.Send(t, map[string]any{"op": "binary", "size": 70000})
				expectMessage(t, node.Expect(t, "message"), false, testkit.Pattern(70000, false))
				node.Send(t, map[string]any{"op": "close", "code": 4002, "reason": ""})
				if e := node.Expect(t, "close"); e.Code != 4002 {
					t.Errorf("node got close %d", e.Code)
				}
				if e := node.Expect(t, "stream-end"); e.Message != "end" {
					t.Errorf("the server ended the stream with %q, want END_STREAM", e.Message)
				}
			})
		})
	}
}

// TestStreamsChromium: headless Chromium loads the demo page over HTTPS with
// HTTP/2 (its self-signed certificate accepted) and opens its WebSocket to
// /ws on the same connection: an extended CONNECT, answered by the proxy.
func TestStreamsChromium(t *testing.T) {
	_, err := os.Stat(chromiumPath)
	testkit.RequirePeer(t, err == nil, "chromium not installed at %s: run integration/setup.sh", chromiumPath)
	up := gorillaUpstream(t, 0)
	f := startStreamFront(t, "h2", proxy.Config{Upstreams: []string{up.URL}, MaxMessageSize: 1000})

	bctx, closeBrowser := startChromium(t.TempDir(), chromedp.Flag("ignore-certificate-errors", true))
	defer closeBrowser()
	page := pageDriver{t, bctx}
	run, poll := page.run, page.poll

	run("loading the page", chromedp.Navigate(f.HTTPURL("/")), chromedp.WaitVisible(chromedp.ID("connect")))
	proto, err := chromedp.Run(bctx, chromedp.Evaluate[string](`performance.getEntriesByType("navigation")[0].nextHopProtocol`))
	if err != nil || proto != "h2" {
		t.Fatalf("the page came over %q (%v), want h2", proto, err)
	}
	run("connecting", chromedp.Click(chromedp.ID("connect")))
	poll("waiting for onopen", `window.wsgate.closed === null && document.getElementById("status").textContent === "connected"`)
	uc := up.Next(t)
	if got := <-f.Requests; got != "CONNECT HTTP/2.0" {
		t.Errorf("the proxy saw the WebSocket as %q, want an HTTP/2 extended CONNECT", got)
	}
	run("sending text", chromedp.SetValue(chromedp.ID("message"), "hello over h2"), chromedp.Click(chromedp.ID("sendText")))
	poll("waiting for the text echo", `window.wsgate.received.length === 1 && window.wsgate.received[0].data === "hello over h2"`)
	run("sending binary", chromedp.Click(chromedp.ID("sendBinary")))
	poll("waiting for the binary echo", `window.wsgate.received.length === 2 && window.wsgate.received[1].type === "binary"`)
	run("closing with 4000", chromedp.SetValue(chromedp.ID("code"), "4000"),
		chromedp.SetValue(chromedp.ID("reason"), "page bye"), chromedp.Click(chromedp.ID("disconnect")))
	waitClose(t, uc, 4000, "page bye")
	if c := page.closed(); c.Code != 4000 || !c.WasClean {
		t.Errorf("the page saw close %+v, want 4000, clean", c)
	}

	// A message over the limit: the page gets 1009 on its HTTP/2 stream.
	run("reconnecting", chromedp.Click(chromedp.ID("connect")))
	poll("waiting for onopen", `window.wsgate.closed === null && document.getElementById("status").textContent === "connected"`)
	up.Next(t)
	run("sending the big text", chromedp.Click(chromedp.ID("sendBig")))
	if c := page.closed(); c.Code != 1009 || !c.WasClean {
		t.Errorf("after #sendBig the page saw close %+v, want 1009, clean", c)
	}
	closeBrowser()
	f.Proxy.Shutdown(context.Background())
	f.wantClientProto(t, "h2")
}

// TestStreamsCaddy: Caddy with the ws directive serving HTTP/1.1, HTTP/2
// (GODEBUG=http2xconnect=1) and HTTP/3 on one port: clients on each reach a
// gorilla upstream through it, with close codes, 1009 and 1007.
func TestStreamsCaddy(t *testing.T) {
	checkLeaks(t)
	up := gorillaUpstream(t, 0)
	addr, h2, h3 := caddyStreams(t, fmt.Sprintf(`	ws /ws* %s {
		max_message_size 64KiB
	}
	respond "not a WebSocket" 200`, up.URL))
	ctx := context.Background()
	for _, s := range []*streamtest.Server{h2, h3} {
		t.Run(s.Proto, func(t *testing.T) {
			c := testkit.DialStream(t, s, "/ws", nil)
			uc := up.Next(t)
			for _, n := range []int{0, 125, 65536} {
				msg := testkit.Pattern(n, true)
				c.Write(ctx, wsmw.MessageText, msg)
				if _, p, err := c.Read(ctx, nil); err != nil || sha(p) != sha(msg) {
					t.Fatalf("echo of %d bytes: %d bytes %v", n, len(p), err)
				}
			}
			c.Close(4000, "from "+s.Proto)
			waitClose(t, uc, 4000, "from "+s.Proto)

			c = testkit.DialStream(t, s, "/ws", nil)
			uc = up.Next(t)
			c.Write(ctx, wsmw.MessageBinary, make([]byte, 65<<10))
			if _, _, err := c.Read(ctx, nil); wsmw.CloseStatus(err) != wsmw.StatusMessageTooBig {
				t.Errorf("over the limit: client read %v, want 1009", err)
			}
			if got := <-uc.Closed; got.Code != 1001 {
				t.Errorf("upstream saw %d %q, want 1001", got.Code, got.Reason)
			}

			st, resp := s.Open(t, "/ws", "websocket", nil)
			if st == nil {
				t.Fatalf("raw stream: status %d", resp.StatusCode)
			}
			up.Next(t)
			r := testkit.NewConn(st, nil, true)
			r.Send(testkit.Text("bad \xff"))
			f, err := r.ReadFrameTimeout(5 * time.Second)
			if code, _ := f.CloseCode(); err != nil || f.Op != wsmw.OpClose || code != 1007 {
				t.Errorf("invalid UTF-8: got %v %v, want close 1007", f, err)
			}
		})
	}
	t.Run("h1", func(t *testing.T) {
		d := websocket.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
		g, _, err := d.Dial("wss://"+addr+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		uc := up.Next(t)
		g.WriteMessage(websocket.TextMessage, []byte("over h1"))
		if _, p, err := g.ReadMessage(); err != nil || string(p) != "over h1" {
			t.Fatalf("echo %q %v", p, err)
		}
		g.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "from h1"))
		waitClose(t, uc, 4000, "from h1")
	})
}

// TestStreamsCaddyIdle: Caddy's idle timeouts of request bodies and
// responses (read_body_idle, write_idle; one minute by default) bound each
// read and write of an HTTP request, and would end a WebSocket on a stream
// that is quiet for longer: the ws directive lifts them for its sessions,
// whose IdleTimeout is their own.
func TestStreamsCaddyIdle(t *testing.T) {
	up := gorillaUpstream(t, 0)
	_, h2, h3 := caddyStreamsWith(t, "\t\ttimeouts {\n\t\t\tread_body_idle 200ms\n\t\t\twrite_idle 200ms\n\t\t}",
		fmt.Sprintf("\tws /ws* %s", up.URL))
	ctx := context.Background()
	for _, s := range []*streamtest.Server{h2, h3} {
		t.Run(s.Proto, func(t *testing.T) {
			c := testkit.DialStream(t, s, "/ws", nil)
			uc := up.Next(t)
			time.Sleep(700 * time.Millisecond) // quiet for over three idle timeouts
			c.Write(ctx, wsmw.MessageText, []byte("still here"))
			if _, p, err := c.Read(ctx, nil); err != nil || string(p) != "still here" {
				t.Fatalf("echo after a quiet spell: %q %v", p, err)
			}
			c.Close(4000, "")
			waitClose(t, uc, 4000, "")
		})
	}
}

// TestConformanceStreams runs the raw-frame conformance suite over HTTP/2
// (h2c) and HTTP/3 streams, against the wsmw echo and the proxy (in front of
// the lenient upstream, which must see no violation).
func TestConformanceStreams(t *testing.T) {
	checkLeaks(t)
	cases := conformanceCases()
	for _, proto := range []string{"h2c", "h3"} {
		t.Run(proto, func(t *testing.T) {
			streamtest.RequireXConnect(t)
			cfg := &wsmw.ServerConfig{MaxFrameSize: frameLimit, MaxMessageSize: frameLimit, CloseTimeout: 2 * time.Second}
			echo := streamtest.Start(t, proto, wsmw.Middleware(testkit.EchoHandler, cfg)(http.NotFoundHandler()))

			p, up := conformanceProxy(t)
			front := streamtest.Start(t, proto, p.Middleware(http.NotFoundHandler()))
			for _, tg := range []target{
				{name: "wsmw", dial: confStreamDial(echo)},
				{name: "proxy", up: up, dial: confStreamDial(front)},
			} {
				t.Run(tg.name, func(t *testing.T) {
					for i := range cases {
						cs := &cases[i]
						t.Run(cs.group+"/"+cs.name, func(t *testing.T) {
							runCase(t, tg, cs, fmt.Sprintf("/conf/%s/%s/%d", proto, tg.name, i))
						})
					}
				})
			}
		})
	}
}
