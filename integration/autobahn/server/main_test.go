package main

// A smoke test of the echo server and the proxy in front of it, with a
// gorilla/websocket client.

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wsgate/wsgate/internal/testkit"
)

func TestEchoAndProxy(t *testing.T) {
	for _, deflate := range []bool{false, true} {
		t.Run(fmt.Sprint("deflate=", deflate), func(t *testing.T) { testEchoAndProxy(t, deflate) })
	}
}

// testEchoAndProxy echoes messages through the echo server and the proxy, with
// a gorilla client that offers permessage-deflate when deflate is set: the
// extension must then be negotiated through both.
func testEchoAndProxy(t *testing.T, deflate bool) {
	echo := httptest.NewServer(echoHandler(1<<20, deflate))
	defer echo.Close()
	ph, err := proxyHandler(testkit.WSURL(echo.URL), 1<<20, deflate)
	if err != nil {
		t.Fatal(err)
	}
	px := httptest.NewServer(ph)
	defer px.Close()
	dialer := websocket.Dialer{EnableCompression: deflate}
	for _, base := range []string{echo.URL, px.URL} {
		c, resp, err := dialer.Dial(testkit.WSURL(base), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate"); got != deflate {
			t.Fatalf("%s: permessage-deflate negotiated: %v (%q)", base, got, resp.Header.Get("Sec-WebSocket-Extensions"))
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
