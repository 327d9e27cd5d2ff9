package wsmw_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/wsmw"
)

// An echo server mounted on a chi router: upgrade requests on any route go to
// the websocket handler, everything else to the routes.
func ExampleMiddleware() {
	echo := func(c *wsmw.Conn, r *http.Request) {
		for {
			op, p, err := c.Read(context.Background(), nil)
			if err != nil {
				return // the peer closed (a *wsmw.CloseError) or broke a rule (a *wsmw.FailError)
			}
			if err := c.Write(context.Background(), op, p); err != nil {
				return
			}
		}
	}

	r := chi.NewRouter()
	r.Use(wsmw.Middleware(echo, &wsmw.ServerConfig{Subprotocols: []string{"echo"}}))
	r.Get("/", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "plain HTTP\n") })

	srv := httptest.NewServer(r)
	defer srv.Close()

	// Any WebSocket client will do; this one is gorilla/websocket.
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws",
		http.Header{"Sec-WebSocket-Protocol": {"echo"}})
	if err != nil {
		log.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte("hello, websocket")); err != nil {
		log.Fatal(err)
	}
	_, msg, err := ws.ReadMessage()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (subprotocol %q)\n", msg, ws.Subprotocol())

	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	io.Copy(os.Stdout, resp.Body)
	// Output:
	// hello, websocket (subprotocol "echo")
	// plain HTTP
}

// Upgrade in a plain net/http handler, with an origin policy: a refused
// handshake has already been answered (403 here) when Upgrade returns its error.
func ExampleUpgrade() {
	handler := func(w http.ResponseWriter, r *http.Request) {
		c, err := wsmw.Upgrade(w, r, &wsmw.ServerConfig{Origins: []string{"https://*.example.com"}})
		if err != nil {
			var he *wsmw.HandshakeError
			if errors.As(err, &he) {
				fmt.Println("refused:", he.Status, errors.Is(err, wsmw.ErrBadOrigin))
			}
			return
		}
		defer c.Close(wsmw.StatusNormalClosure, "bye")
		_, p, err := c.Read(context.Background(), nil)
		if err != nil {
			return
		}
		c.Write(context.Background(), wsmw.MessageText, []byte(strings.ToUpper(string(p))))
	}
	srv := httptest.NewServer(http.HandlerFunc(handler))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")

	// A page on an allowed origin.
	ws, _, err := websocket.DefaultDialer.Dial(url, http.Header{"Origin": {"https://app.example.com"}})
	if err != nil {
		log.Fatal(err)
	}
	defer ws.Close()
	ws.WriteMessage(websocket.TextMessage, []byte("shout"))
	_, msg, _ := ws.ReadMessage()
	fmt.Println(string(msg))
	_, _, err = ws.ReadMessage()
	fmt.Println(err)

	// A page elsewhere.
	_, resp, _ := websocket.DefaultDialer.Dial(url, http.Header{"Origin": {"https://evil.test"}})
	fmt.Println(resp.StatusCode)
	// Output:
	// SHOUT
	// websocket: close 1000 (normal): bye
	// refused: 403 true
	// 403
}

// A frame-level relay: each frame of src is forwarded to dst as it arrives,
// fragments and RSV bits kept. NextFrame has already answered pings; the
// peer's close ends the loop and is forwarded, and the handshake is completed
// on both sides.
func ExampleConn_NextFrame() {
	var src, dst *wsmw.Conn // e.g. from wsmw.Upgrade and a client dial

	for {
		h, payload, err := src.NextFrame()
		if err != nil {
			var fe *wsmw.FailError
			if errors.As(err, &fe) {
				// src broke a rule and was failed with fe.Code; tell dst.
				dst.Close(wsmw.StatusBadGateway, fe.Reason)
			} else {
				dst.CloseNow()
			}
			return
		}
		switch h.OpCode {
		case wsmw.OpPing, wsmw.OpPong:
			continue // answered (pings) or ignored by src itself
		case wsmw.OpClose:
			body, _ := io.ReadAll(payload)
			code, reason, _ := wsmw.ParseClosePayload(body) // NextFrame checked it
			dst.Close(code, reason)                         // forward, wait for dst's answer
			src.Close(code, "")                             // answer src
			return
		}
		// Data frame: keep Fin, RSV and opcode; dst sets the length and masking.
		p, err := io.ReadAll(payload) // bounded by MaxFrameSize
		if err != nil {
			dst.CloseNow()
			return
		}
		if err := dst.WriteFrame(wsmw.Header{Fin: h.Fin, Rsv: h.Rsv, OpCode: h.OpCode}, p); err != nil {
			src.Close(wsmw.StatusGoingAway, "")
			return
		}
	}
}

// A client: Dial, then one message each way with Write and Read (a reused
// buffer keeps steady-state reads allocation-free), and the close handshake.
func ExampleDial() {
	srv := httptest.NewServer(wsmw.Middleware(func(c *wsmw.Conn, r *http.Request) {
		typ, p, err := c.Read(r.Context(), nil)
		if err == nil {
			c.Write(r.Context(), typ, []byte(strings.ToUpper(string(p))))
		}
		c.Read(r.Context(), nil) // until the client's close, which Read answers
	}, nil)(http.NotFoundHandler()))
	defer srv.Close()

	ctx := context.Background()
	c, _, err := wsmw.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Write(ctx, wsmw.MessageText, []byte("hello")); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 0, 512)
	typ, p, err := c.Read(ctx, buf[:0])
	fmt.Println(typ, string(p), err)
	fmt.Println(c.Close(wsmw.StatusNormalClosure, "bye"))
	// Output:
	// text HELLO <nil>
	// <nil>
}

// Graceful shutdown of plain handlers: a Group tracks the connections of the
// handlers it wraps; Shutdown closes them with a code (1001 here) and waits
// for the handlers to return, as http.Server.Shutdown does for HTTP.
func ExampleGroup() {
	var conns wsmw.Group
	chat := func(c *wsmw.Conn, r *http.Request) {
		for {
			if _, _, err := c.Read(r.Context(), nil); err != nil {
				return // Shutdown's close arrived: *wsmw.CloseError after the client's answer
			}
		}
	}
	srv := httptest.NewServer(wsmw.Middleware(conns.Handler(chat), nil)(http.NotFoundHandler()))
	defer srv.Close()

	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer ws.Close()
	closed := make(chan error, 1)
	go func() { _, _, err := ws.ReadMessage(); closed <- err }() // answers the close

	for conns.Len() == 0 { // the handler runs once the upgrade is done
		runtime.Gosched()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println(conns.Shutdown(ctx, wsmw.StatusGoingAway, "server shutting down"), conns.Len())
	fmt.Println(<-closed)
	// Output:
	// <nil> 0
	// websocket: close 1001 (going away): server shutting down
}
