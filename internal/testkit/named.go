package testkit

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Named is an upstream that says which one it is, to check where a balancer
// sent a request: a plain HTTP request gets its Name as the body and in an
// X-Upstream header; a WebSocket upgrade gets a 101 with X-Upstream: Name,
// then Name as the first text message, then an echo (gorilla/websocket). It
// records what it saw of every request. Close, also run when the test ends,
// closes the server and the upgraded connections and waits for the handlers.
type Named struct {
	*httptest.Server
	Name string
	Addr string // host:port
	WS   string // the ws:// (wss://) URL

	wg   sync.WaitGroup
	mu   sync.Mutex
	seen []Seen
	ws   []*websocket.Conn
	once sync.Once
}

// Seen is what a Named upstream saw of one request.
type Seen struct {
	Method, Host, URI, Body string
	Upgrade                 bool
	Header                  http.Header
	TLS                     bool
}

// StartNamed starts a Named upstream; with tlsCfg it serves TLS (tlsCfg's
// certificates, or httptest's if it has none; its ClientAuth applies).
func StartNamed(t testing.TB, name string, tlsCfg *tls.Config) *Named {
	t.Helper()
	n := &Named{Name: name}
	n.Server = httptest.NewUnstartedServer(http.HandlerFunc(n.serve))
	n.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS handshakes refused on purpose
	if tlsCfg != nil {
		n.TLS = tlsCfg
		n.StartTLS()
	} else {
		n.Start()
	}
	n.Addr = n.Listener.Addr().String()
	n.WS = WSURL(n.URL)
	t.Cleanup(n.Close)
	return n
}

// StartNamedSet starts n plain Named upstreams called u0, u1, ...
func StartNamedSet(t testing.TB, n int) []*Named {
	t.Helper()
	out := make([]*Named, n)
	for i := range out {
		out[i] = StartNamed(t, fmt.Sprintf("u%d", i), nil)
	}
	return out
}

func (n *Named) serve(w http.ResponseWriter, r *http.Request) {
	n.wg.Add(1)
	defer n.wg.Done()
	body, _ := io.ReadAll(r.Body)
	upgrade := websocket.IsWebSocketUpgrade(r)
	n.mu.Lock()
	n.seen = append(n.seen, Seen{Method: r.Method, Host: r.Host, URI: r.RequestURI, Body: string(body), Upgrade: upgrade, Header: r.Header.Clone(), TLS: r.TLS != nil})
	n.mu.Unlock()
	if !upgrade {
		w.Header().Set("X-Upstream", n.Name)
		io.WriteString(w, n.Name)
		return
	}
	u := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	c, err := u.Upgrade(w, r, http.Header{"X-Upstream": {n.Name}})
	if err != nil {
		return
	}
	n.mu.Lock()
	n.ws = append(n.ws, c)
	n.mu.Unlock()
	defer c.Close()
	if c.WriteMessage(websocket.TextMessage, []byte(n.Name)) == nil {
		GorillaEcho(c)
	}
}

// Seen returns what the upstream saw of the requests it got, in order.
func (n *Named) Seen() []Seen {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Seen(nil), n.seen...)
}

// Close closes the server and every upgraded connection, then waits for the handlers.
func (n *Named) Close() {
	n.once.Do(func() {
		n.Server.Close()
		n.mu.Lock()
		for _, c := range n.ws {
			c.NetConn().Close()
		}
		n.mu.Unlock()
		n.wg.Wait()
	})
}

// NamedWS upgrades to url with d (a dialer with a 5 s handshake timeout if
// nil) and header, and returns the name of the Named upstream that answered
// (its first message, which must match the 101's X-Upstream when that reached
// the client) and the 101; the session is closed with 1000 before it returns.
// A refused upgrade returns "" and the response (nil if there was none).
func NamedWS(t testing.TB, d *websocket.Dialer, url string, header http.Header) (string, *http.Response) {
	t.Helper()
	if d == nil {
		d = &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	}
	c, resp, err := d.Dial(url, header)
	if err != nil {
		return "", resp
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, p, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("%s: no first message from the upstream: %v", url, err)
	}
	if h := resp.Header.Get("X-Upstream"); h != "" && h != string(p) {
		t.Fatalf("%s: 101 from %s, first message from %s", url, h, p)
	}
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			break
		}
	}
	return string(p), resp
}

// NamedHTTP sends req with client (http.DefaultClient if nil) and returns the
// name of the Named upstream that answered (the X-Upstream header; "" if the
// answer did not come from one), the response and its body.
func NamedHTTP(t testing.TB, client *http.Client, req *http.Request) (string, *http.Response, string) {
	t.Helper()
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	name := resp.Header.Get("X-Upstream")
	if name != "" && string(body) != name {
		t.Fatalf("%s %s: X-Upstream %s, body %q", req.Method, req.URL, name, body)
	}
	return name, resp, string(body)
}

// LBCookie is the value of Caddy's cookie policy (and proxy.StickyCookie)
// for the upstream at hostPort: the hex HMAC-SHA256 of hostPort keyed by secret.
func LBCookie(secret, hostPort string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(hostPort))
	return hex.EncodeToString(m.Sum(nil))
}
