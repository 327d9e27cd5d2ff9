package main

// A smoke test of the echo server and the proxy in front of it, with a
// gorilla/websocket client.

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestEchoAndProxy(t *testing.T) {
	echo := httptest.NewServer(echoHandler(1 << 20))
	defer echo.Close()
	ph, err := proxyHandler("ws"+strings.TrimPrefix(echo.URL, "http"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	px := httptest.NewServer(ph)
	defer px.Close()
	for _, base := range []string{echo.URL, px.URL} {
		c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http"), nil)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for _, m := range []struct {
			typ  int
			data string
		}{{websocket.TextMessage, "κόσμε"}, {websocket.BinaryMessage, "\x00\xff"}, {websocket.TextMessage, strings.Repeat("x", 70000)}} {
			if err := c.WriteMessage(m.typ, []byte(m.data)); err != nil {
				t.Fatal(err)
			}
			typ, got, err := c.ReadMessage()
			if err != nil || typ != m.typ || string(got) != m.data {
				t.Fatalf("%s: echo type %d, %d bytes, %v; want type %d, %d bytes", base, typ, len(got), err, m.typ, len(m.data))
			}
		}
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
		if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, 1000) {
			t.Errorf("%s: close: %v", base, err)
		}
		c.Close()
	}
}
