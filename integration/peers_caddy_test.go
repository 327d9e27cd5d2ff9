package integration

// The same third-party peers through Caddy: the `ws` Caddyfile directive
// (caddymodule's http.handlers.ws) in an in-process Caddy on loopback.

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/wsgate/wsgate/caddymodule"
	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/internal/testkit/caddytest"
)

func TestPeersCaddy(t *testing.T) {
	checkLeaks(t)
	gorillaUp := gorillaUpstream(t, 1024)
	coderUp := coderUpstream(t)
	host := func(u *echoUpstream) string {
		return strings.TrimSuffix(strings.TrimPrefix(u.URL, "ws://"), "/")
	}
	port := testkit.FreePort(t)
	caddytest.Load(t, caddytest.Global+fmt.Sprintf(`:%d {
	bind 127.0.0.1
	ws /gorilla/* %s {
		max_message_size 2MiB
	}
	ws /coder/* %s {
		max_message_size 2MiB
	}
	ws /small/* %[3]s {
		max_message_size 1000
	}
	respond "not a WebSocket request" 426
}
`, port, host(gorillaUp), host(coderUp)))
	base := fmt.Sprintf("ws://127.0.0.1:%d", port)

	t.Run("gorilla client to coder upstream", func(t *testing.T) {
		gorillaEchoThrough(t, base+"/coder/room", coderUp, "/coder/room", 4001, "bye")
	})

	t.Run("coder client to gorilla upstream", func(t *testing.T) {
		cc := coderDial(t, base+"/gorilla/room")
		uc := gorillaUp.Next(t)
		for _, tc := range echoCases() {
			cc.write(t, tc.text, tc.p)
			m := cc.read(t)
			if m.err != nil || m.text != tc.text || string(m.p) != string(tc.p) {
				t.Fatalf("%s: echo text=%v, %d bytes, err %v", tc.name, m.text, len(m.p), m.err)
			}
		}
		cc.closeExpect(t, uc, 4001, "bye")
	})

	gorillaCloseSubtests(t, base+"/coder/x", coderUp)

	t.Run("message over max_message_size gives 1009", func(t *testing.T) {
		c := gorillaDial(t, base+"/small/x", 0)
		uc := coderUp.Next(t)
		if err := c.WriteMessage(websocket.TextMessage, testkit.Pattern(1001, true)); err != nil {
			t.Fatal(err)
		}
		gorillaExpectClose(t, c, 1009, reasonTooBig)
		waitClose(t, uc, 1001, reasonClientViolation)
	})

	t.Run("node client to gorilla upstream", func(t *testing.T) {
		nodeReady(t)
		node := startNode(t, "client.js", base+"/gorilla/node")
		if e := node.Expect(t, "open"); e.Extensions != "" {
			t.Errorf("ws negotiated extensions %q through Caddy, want none", e.Extensions)
		}
		uc := gorillaUp.Next(t)
		node.Send(t, map[string]any{"op": "text", "data": utf8Text})
		if e := node.Expect(t, "message"); e.Type != "text" || e.Data != utf8Text {
			t.Errorf("utf-8 echo: %+v", e)
		}
		for _, n := range []int{0, 126, 65536, 1 << 20} {
			node.Send(t, map[string]any{"op": "binary", "size": n})
			expectMessage(t, node.Expect(t, "message"), false, testkit.Pattern(n, false))
		}
		node.Send(t, map[string]any{"op": "ping", "data": "through caddy"})
		if e := node.Expect(t, "pong"); e.Data != "through caddy" {
			t.Errorf("pong %q, want %q", e.Data, "through caddy")
		}
		node.Send(t, map[string]any{"op": "close", "code": 4001, "reason": "bye"})
		waitClose(t, uc, 4001, "bye")
		if e := node.Expect(t, "close"); e.Code != 4001 || e.Reason != "" {
			t.Errorf("node got close %d %q, want 4001 \"\"", e.Code, e.Reason)
		}
	})

	t.Run("node client, upstream killed gives 1014", func(t *testing.T) {
		nodeReady(t)
		node := startNode(t, "client.js", base+"/gorilla/node")
		node.Expect(t, "open")
		gorillaUp.Next(t)
		gorillaUp.Kill()
		if e := node.Expect(t, "close"); e.Code != 1014 || e.Reason != reasonUpstreamGone {
			t.Errorf("node got close %d %q, want 1014 %q", e.Code, e.Reason, reasonUpstreamGone)
		}
	})
}
