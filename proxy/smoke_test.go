package proxy

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wsgate/wsgate/internal/testkit"
)

func TestSmokeProxyEcho(t *testing.T) {
	up := httptest.NewServer(testkit.GorillaEchoHandler(websocket.Upgrader{Subprotocols: []string{"chat"}}, nil))
	defer up.Close()
	p, err := New(Config{Upstreams: []string{up.URL}})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(p)
	defer front.Close()
	d := websocket.Dialer{Subprotocols: []string{"chat"}}
	c, _, err := d.Dial(testkit.WSURL(front.URL), nil)
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
	if !idle(p, 2*time.Second) {
		t.Fatal("session not ended")
	}
}
