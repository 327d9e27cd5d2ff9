package wsmw_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

// dialGorilla dials url with gorilla and fails the test on error.
func dialGorilla(t *testing.T, url string, h http.Header) *websocket.Conn {
	t.Helper()
	ws, _ := testkit.DialGorilla(t, nil, url, h)
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	return ws
}

// echoOnce reads one message and echoes it.
func echoOnce(c *wsmw.Conn, _ *http.Request) {
	op, p, err := c.Read(context.Background(), nil)
	if err != nil {
		return
	}
	_ = c.Write(context.Background(), op, p)
}

// roundTrip sends msg over ws and checks the echo.
func roundTrip(t *testing.T, ws *websocket.Conn, msg string) {
	t.Helper()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	typ, p, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if typ != websocket.TextMessage || string(p) != msg {
		t.Fatalf("echo = %d %q, want text %q", typ, p, msg)
	}
}

// expectGorillaClose reads until the close frame and checks its code.
func expectGorillaClose(t *testing.T, ws *websocket.Conn, code int, text string) {
	t.Helper()
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("client read error = %v, want a close frame %d", err, code)
		}
		if ce.Code != code || ce.Text != text {
			t.Fatalf("close = %d %q, want %d %q", ce.Code, ce.Text, code, text)
		}
		return
	}
}

// nextHandler is the wrapped handler of the plain-HTTP tests.
func nextHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Next", r.Method+" "+r.URL.Path)
	w.Header().Add("Set-Cookie", "a=1")
	w.Header().Add("Set-Cookie", "b=2")
	w.WriteHeader(http.StatusTeapot)
	body, _ := io.ReadAll(r.Body)
	io.WriteString(w, "next:"+string(body))
}

func TestMiddleware_NonUpgradeRequestsReachNext(t *testing.T) {
	called := make(chan struct{}, 1)
	ws := func(c *wsmw.Conn, r *http.Request) { called <- struct{}{} }
	srv := httptest.NewServer(wsmw.Middleware(ws, nil)(http.HandlerFunc(nextHandler)))
	defer srv.Close()
	tests := []struct {
		name   string
		method string
		header map[string]string
		body   string
	}{
		{name: "PlainGET", method: "GET"},
		{name: "POSTWithBody", method: "POST", body: "payload"},
		{name: "ConnectionUpgradeToOtherProtocol", method: "GET", header: map[string]string{"Connection": "Upgrade", "Upgrade": "h2c"}},
		{name: "WebSocketHeadersWithoutUpgrade", method: "GET", header: map[string]string{"Sec-WebSocket-Key": sampleKey, "Sec-WebSocket-Version": "13"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+"/page", strings.NewReader(tc.body))
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusTeapot {
				t.Errorf("status = %d, want 418", resp.StatusCode)
			}
			if got := string(body); got != "next:"+tc.body {
				t.Errorf("body = %q, want %q", got, "next:"+tc.body)
			}
			if got := resp.Header.Get("X-Next"); got != tc.method+" /page" {
				t.Errorf("X-Next = %q", got)
			}
			if got := resp.Header.Values("Set-Cookie"); len(got) != 2 || got[0] != "a=1" || got[1] != "b=2" {
				t.Errorf("Set-Cookie = %q", got)
			}
		})
	}
	select {
	case <-called:
		t.Fatal("the websocket handler ran for a non-upgrade request")
	default:
	}
}

// An upgrade reaches the Handler with the original request; when the Handler
// returns, the client receives a 1000 close.
func TestMiddleware_UpgradeReachesHandler(t *testing.T) {
	type seen struct {
		path, query, hdr, method string
		sub                      string
	}
	got := make(chan seen, 1)
	h := func(c *wsmw.Conn, r *http.Request) {
		got <- seen{r.URL.Path, r.URL.RawQuery, r.Header.Get("X-Client"), r.Method, c.Subprotocol()}
		echoOnce(c, r)
	}
	nextCalled := make(chan struct{}, 1)
	next := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { nextCalled <- struct{}{} })
	srv := httptest.NewServer(wsmw.Middleware(h, &wsmw.ServerConfig{Subprotocols: []string{"chat"}})(next))
	defer srv.Close()

	ws := dialGorilla(t, testkit.WSURL(srv.URL)+"/room/1?token=abc", http.Header{"X-Client": {"gorilla"}, "Sec-WebSocket-Protocol": {"chat"}})
	if ws.Subprotocol() != "chat" {
		t.Errorf("client subprotocol = %q, want chat", ws.Subprotocol())
	}
	s := <-got
	if s.path != "/room/1" || s.query != "token=abc" || s.hdr != "gorilla" || s.method != "GET" || s.sub != "chat" {
		t.Errorf("handler saw %+v", s)
	}
	roundTrip(t, ws, "hello")
	expectGorillaClose(t, ws, websocket.CloseNormalClosure, "")
	select {
	case <-nextCalled:
		t.Fatal("the wrapped handler ran for an upgrade")
	default:
	}
}

// A malformed upgrade is refused by the middleware and never reaches either handler.
func TestMiddleware_MalformedUpgradeRefused(t *testing.T) {
	reached := make(chan string, 2)
	h := func(*wsmw.Conn, *http.Request) { reached <- "ws" }
	next := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached <- "next" })
	srv := httptest.NewServer(wsmw.Middleware(h, nil)(next))
	defer srv.Close()
	resp, body, _, _ := doRaw(t, srv, rawRequest("GET", "/", "HTTP/1.1", delHeader("Sec-WebSocket-Key")))
	if resp.StatusCode != http.StatusBadRequest || strings.TrimSpace(body) == "" {
		t.Fatalf("status = %d (%q), want 400 with a body", resp.StatusCode, body)
	}
	select {
	case who := <-reached:
		t.Fatalf("the %s handler ran for a refused upgrade", who)
	case <-time.After(50 * time.Millisecond):
	}
}

// Close codes sent by the Handler itself are not replaced by the 1000 of the middleware.
func TestMiddleware_HandlerCloseCodeKept(t *testing.T) {
	h := func(c *wsmw.Conn, _ *http.Request) { c.Close(wsmw.StatusPolicyViolation, "no") }
	srv := httptest.NewServer(wsmw.Middleware(h, nil)(http.NotFoundHandler()))
	defer srv.Close()
	ws := dialGorilla(t, testkit.WSURL(srv.URL)+"/", nil)
	expectGorillaClose(t, ws, websocket.ClosePolicyViolation, "no")
}

func TestMiddleware_ChiUse(t *testing.T) {
	r := chi.NewRouter()
	r.Use(wsmw.Middleware(func(c *wsmw.Conn, r *http.Request) { echoOnce(c, r) }, nil))
	r.Get("/page", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "page") })
	srv := httptest.NewServer(r)
	defer srv.Close()

	for _, path := range []string{"/page", "/unrouted"} {
		ws := dialGorilla(t, testkit.WSURL(srv.URL)+path, nil)
		roundTrip(t, ws, "via r.Use "+path)
		expectGorillaClose(t, ws, websocket.CloseNormalClosure, "")
	}
	get(t, srv.URL+"/page", http.StatusOK, "page")
	get(t, srv.URL+"/unrouted", http.StatusNotFound, "")
}

func TestMiddleware_ChiWith(t *testing.T) {
	r := chi.NewRouter()
	r.With(wsmw.Middleware(func(c *wsmw.Conn, r *http.Request) { echoOnce(c, r) }, nil)).
		Get("/ws", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "fallback") })
	srv := httptest.NewServer(r)
	defer srv.Close()

	ws := dialGorilla(t, testkit.WSURL(srv.URL)+"/ws", nil)
	roundTrip(t, ws, "via r.With")
	expectGorillaClose(t, ws, websocket.CloseNormalClosure, "")
	get(t, srv.URL+"/ws", http.StatusOK, "fallback")
	// The middleware is only on /ws: elsewhere an upgrade is a plain 404.
	if _, resp, err := websocket.DefaultDialer.Dial(testkit.WSURL(srv.URL)+"/other", nil); err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("upgrade on /other: err %v, resp %v; want 404", err, resp)
	}
}

// get checks a plain GET; body "" skips the body check.
func get(t *testing.T, url string, status int, body string) {
	t.Helper()
	gotStatus, b := testkit.Get(t, url)
	if gotStatus != status || (body != "" && b != body) {
		t.Fatalf("GET %s = %d %q, want %d %q", url, gotStatus, b, status, body)
	}
}

// The usual chi stack wraps the ResponseWriter (Logger) and the request
// (RequestID, RealIP, Timeout): the hijack must still work through it, and the
// Handler sees what the middleware put on the request.
func TestMiddleware_ChiStackComposition(t *testing.T) {
	type seen struct{ reqID, remote string }
	got := make(chan seen, 1)
	r := chi.NewRouter()
	r.Use(middleware.RequestID, middleware.RealIP, middleware.Logger, middleware.Recoverer, middleware.Timeout(5*time.Second))
	r.Use(wsmw.Middleware(func(c *wsmw.Conn, r *http.Request) {
		got <- seen{middleware.GetReqID(r.Context()), r.RemoteAddr}
		echoOnce(c, r)
	}, nil))
	r.Get("/panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	r.Get("/ok", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	srv := httptest.NewServer(r)
	defer srv.Close()

	ws := dialGorilla(t, testkit.WSURL(srv.URL)+"/ws", http.Header{"X-Forwarded-For": {"203.0.113.7, 10.0.0.1"}})
	s := <-got
	if s.reqID == "" {
		t.Error("middleware.GetReqID is empty in the websocket handler")
	}
	if s.remote != "203.0.113.7" {
		t.Errorf("r.RemoteAddr = %q, want 203.0.113.7 from X-Forwarded-For", s.remote)
	}
	roundTrip(t, ws, "through the chi stack")
	expectGorillaClose(t, ws, websocket.CloseNormalClosure, "")

	// A panic in an ordinary handler is still recovered (500), and the server lives on.
	get(t, srv.URL+"/panic", http.StatusInternalServerError, "")
	get(t, srv.URL+"/ok", http.StatusOK, "ok")
}
