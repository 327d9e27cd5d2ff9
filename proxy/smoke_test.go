package proxy

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestSmokeProxyEcho(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := websocket.Upgrader{Subprotocols: []string{"chat"}}
		c, err := u.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			c.WriteMessage(mt, p)
		}
	}))
	defer up.Close()
	p, err := New(Config{Upstreams: []string{up.URL}})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(p)
	defer front.Close()
	d := websocket.Dialer{Subprotocols: []string{"chat"}}
	c, _, err := d.Dial("ws"+strings.TrimPrefix(front.URL, "http"), nil)
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
	deadline := time.Now().Add(2 * time.Second)
	for p.ActiveSessions() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if p.ActiveSessions() != 0 {
		t.Fatal("session not ended")
	}
}
