package proxy_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/wsmw"
)

// echoUpstream is a WebSocket echo server standing in for a backend.
func echoUpstream() *httptest.Server {
	return httptest.NewServer(wsmw.Middleware(func(c *wsmw.Conn, r *http.Request) {
		for {
			op, p, err := c.Read(context.Background(), nil)
			if err != nil {
				return
			}
			c.Write(context.Background(), op, p)
		}
	}, nil)(http.NotFoundHandler()))
}

// A proxy on a chi route: upgrades are forwarded to the upstreams, plain GETs
// reach the route's own handler. Oversized messages are refused with 1009.
func ExampleProxy_Middleware() {
	upstream := echoUpstream()
	defer upstream.Close()

	p, err := proxy.New(proxy.Config{
		Upstreams:      []string{upstream.URL},
		Balancer:       proxy.LeastConn(),
		MaxMessageSize: 1 << 10,
	})
	if err != nil {
		panic(err)
	}
	r := chi.NewRouter()
	r.Use(middleware.RequestID, middleware.RealIP)
	r.With(p.Middleware).Get("/ws", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "connect with a WebSocket client")
	})
	front := httptest.NewServer(r)
	defer front.Close()

	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(front.URL, "http")+"/ws", nil)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	c.WriteMessage(websocket.TextMessage, []byte("hello through the proxy"))
	_, msg, _ := c.ReadMessage()
	fmt.Println(string(msg))

	c.WriteMessage(websocket.BinaryMessage, make([]byte, 2000))
	_, _, err = c.ReadMessage()
	fmt.Println(websocket.IsCloseError(err, websocket.CloseMessageTooBig))

	ctx, cancel := contextWithTimeout(2 * time.Second)
	defer cancel()
	p.Shutdown(ctx)
	// Output:
	// hello through the proxy
	// true
}

// An inspector that refuses text messages containing a word, with a policy close.
func ExampleInspectFunc() {
	noSecrets := proxy.InspectFunc(
		func(dir proxy.Direction, op wsmw.OpCode) bool { return op == wsmw.OpText },
		func(m *proxy.Message) proxy.Verdict {
			if strings.Contains(string(m.Payload), "password") {
				return proxy.Verdict{Action: proxy.Close, Code: 4403, Reason: "no secrets"}
			}
			return proxy.Verdict{Action: proxy.Pass}
		})
	upstream := echoUpstream()
	defer upstream.Close()
	p, _ := proxy.New(proxy.Config{Upstreams: []string{upstream.URL}, Inspectors: proxy.Chain{noSecrets}})
	front := httptest.NewServer(p)
	defer front.Close()

	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(front.URL, "http"), nil)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	c.WriteMessage(websocket.TextMessage, []byte("my password is hunter2"))
	_, _, err = c.ReadMessage()
	fmt.Println(err)
	// Output: websocket: close 4403: no secrets
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
