package integration

// The same third-party peers through Caddy: the `ws` Caddyfile directive
// (caddymodule's http.handlers.ws) in an in-process Caddy on loopback.

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/certmagic"
	"github.com/gorilla/websocket"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/wsgate/wsgate/caddymodule"
)

var peerCaddyOnce sync.Once

// peerStartCaddy runs caddyfile (its global options block is added here) in
// this process. Caddy is one per process: tests that use it must not be parallel.
func peerStartCaddy(t *testing.T, siteBlocks string) {
	t.Helper()
	peerCaddyOnce.Do(func() {
		// Keep Caddy's storage and autosave out of $HOME. The directory lives
		// as long as the test binary: os.TempDir is cleaned by the system.
		dir, err := os.MkdirTemp("", "wsgate-peers-caddy-")
		if err != nil {
			t.Fatal(err)
		}
		caddy.DefaultStorage = &certmagic.FileStorage{Path: filepath.Join(dir, "storage")}
		caddy.ConfigAutosavePath = filepath.Join(dir, "autosave.json")
	})
	for _, k := range []string{"XDG_DATA_HOME", "XDG_CONFIG_HOME"} {
		t.Setenv(k, filepath.Dir(caddy.ConfigAutosavePath))
	}
	const global = `{
	admin off
	auto_https off
	persist_config off
	log {
		output discard
	}
}
`
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(global+siteBlocks), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapting the Caddyfile: %v", err)
	}
	for _, w := range warnings {
		t.Logf("Caddyfile warning: %s", w)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading the Caddy config: %v", err)
	}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping Caddy: %v", err)
		}
	})
}

// peerFreePort returns a port free on 127.0.0.1 at the time of the call.
func peerFreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestPeersCaddy(t *testing.T) {
	leakCheck(t)
	gorillaUp := peerGorillaUpstream(t, 1024)
	coderUp := peerCoderUpstream(t)
	host := func(u *peerUpstream) string {
		return strings.TrimSuffix(strings.TrimPrefix(u.URL, "ws://"), "/")
	}
	port := peerFreePort(t)
	peerStartCaddy(t, fmt.Sprintf(`:%d {
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
		c := peerGorillaDial(t, base+"/coder/room", 0)
		uc := coderUp.Next(t)
		if uc.Path != "/coder/room" {
			t.Errorf("upstream saw path %q, want /coder/room", uc.Path)
		}
		for _, tc := range peerEchoCases() {
			if err := c.WriteMessage(peerGorillaType(tc.text), tc.p); err != nil {
				t.Fatalf("%s: write: %v", tc.name, err)
			}
			mt, p, err := peerGorillaRead(t, c)
			if err != nil {
				t.Fatalf("%s: read: %v", tc.name, err)
			}
			if mt != peerGorillaType(tc.text) || string(p) != string(tc.p) {
				t.Errorf("%s: echo is type %d, %d bytes; want type %d, %d bytes, equal", tc.name, mt, len(p), peerGorillaType(tc.text), len(tc.p))
			}
		}
		peerGorillaClose(t, c, uc, 4001, "bye")
	})

	t.Run("coder client to gorilla upstream", func(t *testing.T) {
		cc := peerCoderDial(t, base+"/gorilla/room")
		uc := gorillaUp.Next(t)
		for _, tc := range peerEchoCases() {
			cc.write(t, tc.text, tc.p)
			m := cc.read(t)
			if m.err != nil || m.text != tc.text || string(m.p) != string(tc.p) {
				t.Fatalf("%s: echo text=%v, %d bytes, err %v", tc.name, m.text, len(m.p), m.err)
			}
		}
		cc.closeExpect(t, uc, 4001, "bye")
	})

	t.Run("upstream closes 4002", func(t *testing.T) {
		c := peerGorillaDial(t, base+"/coder/x", 0)
		uc := coderUp.Next(t)
		done := make(chan error, 1)
		go func() { done <- uc.Close(4002, "upstream bye") }()
		peerGorillaExpectClose(t, c, 4002, "upstream bye")
		if err := peerWaitErr(done); err != nil {
			t.Errorf("upstream Close: %v", err)
		}
	})

	t.Run("upstream killed gives 1014", func(t *testing.T) {
		c := peerGorillaDial(t, base+"/coder/x", 0)
		coderUp.Next(t)
		coderUp.Kill()
		peerGorillaExpect1014(t, c)
	})

	t.Run("client killed gives 1001 upstream", func(t *testing.T) {
		c := peerGorillaDial(t, base+"/coder/x", 0)
		uc := coderUp.Next(t)
		c.NetConn().Close()
		peerWaitClose(t, uc, 1001, peerReasonClientGone)
	})

	t.Run("message over max_message_size gives 1009", func(t *testing.T) {
		c := peerGorillaDial(t, base+"/small/x", 0)
		uc := coderUp.Next(t)
		if err := c.WriteMessage(websocket.TextMessage, peerPattern(1001, true)); err != nil {
			t.Fatal(err)
		}
		peerGorillaExpectClose(t, c, 1009, peerReasonTooBig)
		peerWaitClose(t, uc, 1001, peerReasonViolation)
	})

	t.Run("node client to gorilla upstream", func(t *testing.T) {
		peerNodeReady(t)
		node := peerStartNode(t, "client.js", base+"/gorilla/node")
		if e := node.Expect(t, "open"); e.Extensions != "" {
			t.Errorf("ws negotiated extensions %q through Caddy, want none", e.Extensions)
		}
		uc := gorillaUp.Next(t)
		node.Send(t, map[string]any{"op": "text", "data": peerUTF8})
		if e := node.Expect(t, "message"); e.Type != "text" || e.Data != peerUTF8 {
			t.Errorf("utf-8 echo: %+v", e)
		}
		for _, n := range []int{0, 126, 65536, 1 << 20} {
			node.Send(t, map[string]any{"op": "binary", "size": n})
			peerExpectMessage(t, node.Expect(t, "message"), false, peerPattern(n, false))
		}
		node.Send(t, map[string]any{"op": "ping", "data": "through caddy"})
		if e := node.Expect(t, "pong"); e.Data != "through caddy" {
			t.Errorf("pong %q, want %q", e.Data, "through caddy")
		}
		node.Send(t, map[string]any{"op": "close", "code": 4001, "reason": "bye"})
		peerWaitClose(t, uc, 4001, "bye")
		if e := node.Expect(t, "close"); e.Code != 4001 || e.Reason != "" {
			t.Errorf("node got close %d %q, want 4001 \"\"", e.Code, e.Reason)
		}
	})

	t.Run("node client, upstream killed gives 1014", func(t *testing.T) {
		peerNodeReady(t)
		node := peerStartNode(t, "client.js", base+"/gorilla/node")
		node.Expect(t, "open")
		gorillaUp.Next(t)
		gorillaUp.Kill()
		if e := node.Expect(t, "close"); e.Code != 1014 || e.Reason != peerReasonUpstreamGone {
			t.Errorf("node got close %d %q, want 1014 %q", e.Code, e.Reason, peerReasonUpstreamGone)
		}
	})
}
