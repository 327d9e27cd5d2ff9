package testkit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/wsmw"
)

// GorillaEcho echoes every message on c with its type until a read or a write
// fails, and returns that error (the close the peer sent, say).
func GorillaEcho(c *websocket.Conn) error {
	for {
		mt, p, err := c.ReadMessage()
		if err != nil {
			return err
		}
		if err := c.WriteMessage(mt, p); err != nil {
			return err
		}
	}
}

// GorillaEchoHandler upgrades with u and respHeader and runs GorillaEcho: a
// gorilla/websocket echo upstream, written without wsmw so that a wsmw bug
// cannot hide itself. Any origin is allowed unless u.CheckOrigin is set.
func GorillaEchoHandler(u websocket.Upgrader, respHeader http.Header) http.Handler {
	if u.CheckOrigin == nil {
		u.CheckOrigin = func(*http.Request) bool { return true }
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := u.Upgrade(w, r, respHeader)
		if err != nil {
			return
		}
		defer c.Close()
		GorillaEcho(c)
	})
}

// StartGorillaEcho starts a gorilla/websocket echo upstream (GorillaEchoHandler
// with a default Upgrader); it is closed when the test ends.
func StartGorillaEcho(t testing.TB) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(GorillaEchoHandler(websocket.Upgrader{}, nil))
	t.Cleanup(srv.Close)
	return srv
}

// GorillaServer is a gorilla/websocket upstream running a handler per
// connection (closed when it returns). Close, also run when the test ends,
// closes the server and every upgraded connection and waits for the handlers.
type GorillaServer struct {
	*httptest.Server
	URL string // the ws:// URL

	wg   sync.WaitGroup
	mu   sync.Mutex
	ws   []*websocket.Conn
	once sync.Once
}

// StartGorillaServer starts a GorillaServer upgrading with u and running handle.
func StartGorillaServer(t testing.TB, u websocket.Upgrader, handle func(c *websocket.Conn)) *GorillaServer {
	t.Helper()
	s := &GorillaServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.wg.Add(1)
		defer s.wg.Done()
		c, err := u.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.ws = append(s.ws, c)
		s.mu.Unlock()
		defer c.Close()
		handle(c)
	}))
	s.URL = WSURL(s.Server.URL)
	t.Cleanup(s.Close)
	return s
}

// Close closes the server and every upgraded connection, then waits for the handlers.
func (s *GorillaServer) Close() {
	s.once.Do(func() {
		s.Server.Close()
		s.mu.Lock()
		for _, c := range s.ws {
			c.NetConn().Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

// CoderEcho echoes every message on c with coder/websocket until a read or a
// write fails, and returns that error.
func CoderEcho(ctx context.Context, c *coder.Conn) error {
	for {
		typ, p, err := c.Read(ctx)
		if err == nil {
			err = c.Write(ctx, typ, p)
		}
		if err != nil {
			return err
		}
	}
}

// Echo echoes every message on c with wsmw's message API (text as text,
// binary as binary) until a read or a write fails, and returns that error.
func Echo(c *wsmw.Conn) error {
	for {
		op, p, err := c.Read(context.Background(), nil)
		if err != nil {
			return err
		}
		if err := c.Write(context.Background(), op, p); err != nil {
			return err
		}
	}
}

// EchoHandler is a wsmw.Handler running Echo.
func EchoHandler(c *wsmw.Conn, _ *http.Request) { Echo(c) }

// WSURL turns an http:// (https://) URL into its ws:// (wss://) form.
func WSURL(httpURL string) string { return "ws" + strings.TrimPrefix(httpURL, "http") }

// DialGorilla dials url with d (websocket.DefaultDialer if nil) and header,
// fails the test unless it upgrades, and closes the connection when the test ends.
func DialGorilla(t testing.TB, d *websocket.Dialer, url string, header http.Header) (*websocket.Conn, *http.Response) {
	t.Helper()
	if d == nil {
		d = websocket.DefaultDialer
	}
	c, resp, err := d.Dial(url, header)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", url, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c, resp
}

// Upgrading is a handler that upgrades with wsmw.Upgrade and cfg and runs
// serve, then closes the connection (without a close handshake).
func Upgrading(cfg *wsmw.ServerConfig, serve wsmw.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := wsmw.Upgrade(w, r, cfg)
		if err != nil {
			return
		}
		defer c.CloseNow()
		serve(c, r)
	}
}
