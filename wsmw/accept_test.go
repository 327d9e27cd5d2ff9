package wsmw_test

import (
	"bufio"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

// The sample handshake of RFC 6455 §1.3.
const (
	sampleKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	sampleAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

// headerLine is one raw request header line.
type headerLine struct{ k, v string }

// headerEdit changes the header lines of a raw request.
type headerEdit func([]headerLine) []headerLine

// delHeader removes every line of name.
func delHeader(name string) headerEdit {
	return func(h []headerLine) []headerLine {
		return slices.DeleteFunc(h, func(l headerLine) bool { return strings.EqualFold(l.k, name) })
	}
}

// setHeader replaces every line of name with one line k: v.
func setHeader(name, v string) headerEdit {
	return func(h []headerLine) []headerLine { return append(delHeader(name)(h), headerLine{name, v}) }
}

// addHeader appends one more line.
func addHeader(name, v string) headerEdit {
	return func(h []headerLine) []headerLine { return append(h, headerLine{name, v}) }
}

// rawRequest returns the bytes of a valid opening handshake for target, changed by edits.
func rawRequest(method, target, proto string, edits ...headerEdit) []byte {
	h := []headerLine{
		{"Host", "example.com"},
		{"Upgrade", "websocket"},
		{"Connection", "Upgrade"},
		{"Sec-WebSocket-Key", sampleKey},
		{"Sec-WebSocket-Version", "13"},
	}
	for _, e := range edits {
		h = e(h)
	}
	var b strings.Builder
	b.WriteString(method + " " + target + " " + proto + "\r\n")
	for _, l := range h {
		b.WriteString(l.k + ": " + l.v + "\r\n")
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// upgradeServer starts a server whose handler calls wsmw.Upgrade with cfg. Every
// Upgrade result is sent on the returned channel; accepted connections are
// passed to serve (an echo loop if nil) and then closed without a handshake.
func upgradeServer(t *testing.T, cfg *wsmw.ServerConfig, serve wsmw.Handler) (*httptest.Server, <-chan error) {
	t.Helper()
	if serve == nil {
		serve = testkit.EchoHandler
	}
	errs := make(chan error, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := wsmw.Upgrade(w, r, cfg)
		errs <- err
		if err != nil {
			return
		}
		defer c.CloseNow()
		serve(c, r)
	}))
	t.Cleanup(srv.Close)
	return srv, errs
}

// upgradeWith sends srv a valid opening handshake with a name line for each
// of values and fails the test unless it gets a 101 and Upgrade succeeded; it
// returns the response and the connection, positioned after the response.
func upgradeWith(t *testing.T, srv *httptest.Server, errs <-chan error, name string, values ...string) (*http.Response, net.Conn, *bufio.Reader) {
	t.Helper()
	var edits []headerEdit
	for _, v := range values {
		edits = append(edits, addHeader(name, v))
	}
	resp, body, nc, br := doRaw(t, srv, rawRequest("GET", "/", "HTTP/1.1", edits...))
	if resp.StatusCode != 101 {
		t.Fatalf("status = %d (%q), want 101", resp.StatusCode, body)
	}
	if err := upgradeResult(t, errs); err != nil {
		t.Fatal(err)
	}
	return resp, nc, br
}

// wantOneValue checks that h has exactly one name line, want, or none if want is "".
func wantOneValue(t *testing.T, h http.Header, name, want string) {
	t.Helper()
	hdr := h.Values(name)
	switch {
	case want == "" && len(hdr) != 0:
		t.Errorf("%s = %q, want no header", name, hdr)
	case want != "" && (len(hdr) != 1 || hdr[0] != want):
		t.Errorf("%s = %q, want [%q]", name, hdr, want)
	}
}

// dialTCP opens a TCP connection to srv with a 10 s deadline.
func dialTCP(t *testing.T, srv *httptest.Server) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	return nc
}

// doRaw writes raw to a new connection to srv and reads the response (and, unless
// it is 101, its body). The reader is positioned after the response.
func doRaw(t *testing.T, srv *httptest.Server, raw []byte) (*http.Response, string, net.Conn, *bufio.Reader) {
	t.Helper()
	nc := dialTCP(t, srv)
	if _, err := nc.Write(raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	var body string
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reading body: %v", err)
		}
		body = string(b)
	}
	return resp, body, nc, br
}

// upgradeResult waits for the error Upgrade returned.
func upgradeResult(t *testing.T, errs <-chan error) error {
	t.Helper()
	return testkit.Recv(t, errs, 5*time.Second, "the handler")
}

// maskKey is the key raw test clients mask with.
var maskKey = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// clientFrame encodes one masked client frame.
func clientFrame(fin bool, rsv byte, op wsmw.OpCode, payload []byte) []byte {
	return testkit.AppendFrame(nil, testkit.Frame{Fin: fin, Rsv: rsv, Op: op, Masked: true, Key: maskKey, Payload: payload})
}

// readFrame reads one (unmasked, server) frame.
func readFrame(t *testing.T, br *bufio.Reader) (wsmw.Header, []byte) {
	t.Helper()
	f, err := testkit.ReadFrame(br, testkit.DefaultMaxFrame)
	if err != nil {
		t.Fatalf("reading frame: %v", err)
	}
	if f.Masked {
		t.Fatalf("server frame is masked: %+v", f.Header())
	}
	return f.Header(), f.Payload
}

// expectClose reads one frame and checks that it is a close frame with code.
func expectClose(t *testing.T, br *bufio.Reader, code wsmw.StatusCode) {
	t.Helper()
	h, p := readFrame(t, br)
	if h.OpCode != wsmw.OpClose {
		t.Fatalf("got %v frame %q, want a close frame", h.OpCode, p)
	}
	got, reason, err := wsmw.ParseClosePayload(p)
	if err != nil {
		t.Fatalf("invalid close payload %x: %v", p, err)
	}
	if got != code {
		t.Fatalf("close code = %v (%q), want %v", got, reason, code)
	}
}

func TestUpgrade_HandshakeRules(t *testing.T) {
	key15 := base64.StdEncoding.EncodeToString(make([]byte, 15))
	key17 := base64.StdEncoding.EncodeToString(make([]byte, 17))
	tests := []struct {
		name       string
		method     string // default GET
		proto      string // default HTTP/1.1
		edits      []headerEdit
		wantStatus int
		wantErr    error             // sentinel, nil for 101
		wantHeader map[string]string // exact single values on the response
	}{
		{name: "RFC6455_1.3_SampleKey", wantStatus: 101},
		{name: "MethodMustBeGET_POST", method: "POST", wantStatus: 405, wantErr: wsmw.ErrNoHandshake,
			wantHeader: map[string]string{"Allow": "GET"}},
		{name: "MethodMustBeGET_PUT", method: "PUT", wantStatus: 405, wantErr: wsmw.ErrNoHandshake,
			wantHeader: map[string]string{"Allow": "GET"}},
		{name: "HTTP11Required_HTTP10", proto: "HTTP/1.0", wantStatus: 400, wantErr: wsmw.ErrNoHandshake},
		{name: "ConnectionMustListUpgrade_KeepAlive", edits: []headerEdit{setHeader("Connection", "keep-alive")},
			wantStatus: 426, wantErr: wsmw.ErrNoHandshake, wantHeader: map[string]string{"Sec-WebSocket-Version": "13"}},
		{name: "ConnectionMustListUpgrade_Missing", edits: []headerEdit{delHeader("Connection")},
			wantStatus: 426, wantErr: wsmw.ErrNoHandshake},
		{name: "ConnectionTokenList_MixedCase", edits: []headerEdit{setHeader("Connection", "keep-alive, Upgrade")}, wantStatus: 101},
		{name: "ConnectionTokenList_NoSpaceLowercase", edits: []headerEdit{setHeader("Connection", "keep-alive,upgrade")}, wantStatus: 101},
		{name: "ConnectionTokenList_UpperCase", edits: []headerEdit{setHeader("Connection", "UPGRADE")}, wantStatus: 101},
		{name: "ConnectionTokenList_TwoLines", edits: []headerEdit{setHeader("Connection", "keep-alive"), addHeader("Connection", "Upgrade")}, wantStatus: 101},
		{name: "ConnectionToken_NotSubstring", edits: []headerEdit{setHeader("Connection", "upgraded")},
			wantStatus: 426, wantErr: wsmw.ErrNoHandshake},
		{name: "UpgradeTokenCaseInsensitive_WebSocket", edits: []headerEdit{setHeader("Upgrade", "WebSocket")}, wantStatus: 101},
		{name: "UpgradeTokenCaseInsensitive_WEBSOCKET", edits: []headerEdit{setHeader("Upgrade", "WEBSOCKET")}, wantStatus: 101},
		{name: "UpgradeTokenList", edits: []headerEdit{setHeader("Upgrade", "h2c, websocket")}, wantStatus: 101},
		{name: "UpgradeMustBeWebsocket_Missing", edits: []headerEdit{delHeader("Upgrade")},
			wantStatus: 426, wantErr: wsmw.ErrNoHandshake},
		{name: "UpgradeMustBeWebsocket_H2C", edits: []headerEdit{setHeader("Upgrade", "h2c")},
			wantStatus: 426, wantErr: wsmw.ErrNoHandshake},
		{name: "VersionRequired_Missing", edits: []headerEdit{delHeader("Sec-WebSocket-Version")},
			wantStatus: 426, wantErr: wsmw.ErrNoVersion, wantHeader: map[string]string{"Sec-WebSocket-Version": "13"}},
		{name: "Version13Only_8", edits: []headerEdit{setHeader("Sec-WebSocket-Version", "8")},
			wantStatus: 426, wantErr: wsmw.ErrUnsupportedVersion, wantHeader: map[string]string{"Sec-WebSocket-Version": "13"}},
		{name: "Version13Only_14", edits: []headerEdit{setHeader("Sec-WebSocket-Version", "14")},
			wantStatus: 426, wantErr: wsmw.ErrUnsupportedVersion, wantHeader: map[string]string{"Sec-WebSocket-Version": "13"}},
		{name: "KeyRequired_Missing", edits: []headerEdit{delHeader("Sec-WebSocket-Key")}, wantStatus: 400, wantErr: wsmw.ErrNoKey},
		{name: "KeyRequired_Empty", edits: []headerEdit{setHeader("Sec-WebSocket-Key", "")}, wantStatus: 400, wantErr: wsmw.ErrNoKey},
		{name: "KeyMustDecodeTo16Bytes_15", edits: []headerEdit{setHeader("Sec-WebSocket-Key", key15)}, wantStatus: 400, wantErr: wsmw.ErrNoKey},
		{name: "KeyMustDecodeTo16Bytes_17", edits: []headerEdit{setHeader("Sec-WebSocket-Key", key17)}, wantStatus: 400, wantErr: wsmw.ErrNoKey},
		{name: "KeyMustBeBase64_Unpadded", edits: []headerEdit{setHeader("Sec-WebSocket-Key", strings.TrimRight(sampleKey, "="))},
			wantStatus: 400, wantErr: wsmw.ErrNoKey},
		{name: "KeyMustBeBase64_Garbage", edits: []headerEdit{setHeader("Sec-WebSocket-Key", "!!!!!!!!!!!!!!!!!!!!!!==")},
			wantStatus: 400, wantErr: wsmw.ErrNoKey},
		{name: "KeyExactlyOnce_Two", edits: []headerEdit{addHeader("Sec-WebSocket-Key", sampleKey)}, wantStatus: 400, wantErr: wsmw.ErrNoKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, errs := upgradeServer(t, nil, nil)
			method, proto := tc.method, tc.proto
			if method == "" {
				method = "GET"
			}
			if proto == "" {
				proto = "HTTP/1.1"
			}
			resp, body, _, _ := doRaw(t, srv, rawRequest(method, "/chat", proto, tc.edits...))
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status = %d, want %d (body %q)", resp.StatusCode, tc.wantStatus, body)
			}
			for k, v := range tc.wantHeader {
				if got := resp.Header.Values(k); len(got) != 1 || got[0] != v {
					t.Errorf("header %s = %q, want [%q]", k, got, v)
				}
			}
			err := upgradeResult(t, errs)
			if tc.wantStatus == http.StatusSwitchingProtocols {
				if err != nil {
					t.Fatalf("Upgrade error = %v, want nil", err)
				}
				if got := resp.Header.Get("Sec-WebSocket-Accept"); got != sampleAccept {
					t.Errorf("Sec-WebSocket-Accept = %q, want %q", got, sampleAccept)
				}
				if got := resp.Header.Get("Upgrade"); !strings.EqualFold(got, "websocket") {
					t.Errorf("Upgrade = %q, want websocket", got)
				}
				if got := resp.Header.Get("Connection"); !strings.EqualFold(got, "upgrade") {
					t.Errorf("Connection = %q, want Upgrade", got)
				}
				return
			}
			var he *wsmw.HandshakeError
			if !errors.As(err, &he) {
				t.Fatalf("Upgrade error = %#v, want *HandshakeError", err)
			}
			if he.Status != resp.StatusCode {
				t.Errorf("HandshakeError.Status = %d, response status %d", he.Status, resp.StatusCode)
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("Upgrade error = %v, want errors.Is %v", err, tc.wantErr)
			}
			if strings.TrimSpace(body) == "" || len(body) > 200 {
				t.Errorf("refusal body = %q, want a short non-empty text", body)
			}
			if strings.TrimSpace(body) != he.Reason {
				t.Errorf("body = %q, want the reason %q", body, he.Reason)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type = %q, want text/plain", ct)
			}
			if resp.Header.Get("Sec-WebSocket-Accept") != "" {
				t.Error("refusal carries Sec-WebSocket-Accept")
			}
		})
	}
}

// AcceptKey reproduces the worked example of RFC 6455 §1.3.
func TestAcceptKey_RFC6455Sample(t *testing.T) {
	if got := wsmw.AcceptKey(sampleKey); got != sampleAccept {
		t.Fatalf("AcceptKey(%q) = %q, want %q", sampleKey, got, sampleAccept)
	}
}

func TestUpgrade_SubprotocolNegotiation(t *testing.T) {
	var hookOffered []string
	var hookReq bool
	tests := []struct {
		name   string
		cfg    *wsmw.ServerConfig
		offers []string // Sec-WebSocket-Protocol lines
		want   string   // "" means no header
	}{
		{name: "ServerPreferenceWins", cfg: &wsmw.ServerConfig{Subprotocols: []string{"b", "a"}}, offers: []string{"a, b"}, want: "b"},
		{name: "ServerPreferenceWins_TwoLines", cfg: &wsmw.ServerConfig{Subprotocols: []string{"b", "a"}}, offers: []string{"a", "b"}, want: "b"},
		{name: "OnlyOfferedOneChosen", cfg: &wsmw.ServerConfig{Subprotocols: []string{"b", "a"}}, offers: []string{"c, a"}, want: "a"},
		{name: "NoOffer_NoHeader", cfg: &wsmw.ServerConfig{Subprotocols: []string{"b", "a"}}},
		{name: "NoOverlap_NoHeader", cfg: &wsmw.ServerConfig{Subprotocols: []string{"b", "a"}}, offers: []string{"c"}},
		{name: "ServerSpeaksNone_NoHeader", cfg: &wsmw.ServerConfig{}, offers: []string{"a"}},
		{name: "CaseSensitive", cfg: &wsmw.ServerConfig{Subprotocols: []string{"chat"}}, offers: []string{"Chat"}},
		{name: "SelectHookOverrides", cfg: &wsmw.ServerConfig{
			Subprotocols: []string{"b", "a"},
			SelectSubprotocol: func(r *http.Request, offered []string) string {
				hookOffered, hookReq = offered, r != nil
				return offered[0]
			},
		}, offers: []string{"a, b"}, want: "a"},
		{name: "SelectHookDeclines", cfg: &wsmw.ServerConfig{
			Subprotocols:      []string{"b", "a"},
			SelectSubprotocol: func(*http.Request, []string) string { return "" },
		}, offers: []string{"a, b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan string, 1)
			srv, errs := upgradeServer(t, tc.cfg, func(c *wsmw.Conn, _ *http.Request) { got <- c.Subprotocol() })
			resp, _, _ := upgradeWith(t, srv, errs, "Sec-WebSocket-Protocol", tc.offers...)
			wantOneValue(t, resp.Header, "Sec-WebSocket-Protocol", tc.want)
			if s := <-got; s != tc.want {
				t.Errorf("Conn.Subprotocol() = %q, want %q", s, tc.want)
			}
		})
	}
	if !slices.Equal(hookOffered, []string{"a", "b"}) || !hookReq {
		t.Errorf("SelectSubprotocol saw offered=%q request=%v, want [a b] and the request", hookOffered, hookReq)
	}
}

func TestUpgrade_ResponseHeaderInSwitchingProtocols(t *testing.T) {
	cfg := &wsmw.ServerConfig{ResponseHeader: http.Header{
		"Set-Cookie": {"a=1; Path=/", "b=2"},
		"X-Trace":    {"t-123"},
		"X-Split":    {"v\r\nInjected: yes"},
	}}
	srv, errs := upgradeServer(t, cfg, nil)
	resp, body, _, _ := doRaw(t, srv, rawRequest("GET", "/", "HTTP/1.1"))
	if resp.StatusCode != 101 {
		t.Fatalf("status = %d (%q), want 101", resp.StatusCode, body)
	}
	if err := upgradeResult(t, errs); err != nil {
		t.Fatal(err)
	}
	if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"a=1; Path=/", "b=2"}) {
		t.Errorf("Set-Cookie = %q", got)
	}
	if got := resp.Header.Values("X-Trace"); !slices.Equal(got, []string{"t-123"}) {
		t.Errorf("X-Trace = %q", got)
	}
	if got := resp.Header.Get("Injected"); got != "" {
		t.Errorf("a CR/LF in a ResponseHeader value split the response: Injected = %q", got)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != sampleAccept {
		t.Errorf("Sec-WebSocket-Accept = %q, want %q", got, sampleAccept)
	}
}

// http.Server's ReadTimeout and WriteTimeout apply to the HTTP request only: after
// the upgrade the connection lives on with no deadline.
func TestUpgrade_ServerDeadlinesClearedAfterHijack(t *testing.T) {
	srv := httptest.NewUnstartedServer(testkit.Upgrading(nil, testkit.EchoHandler))
	srv.Config.ReadTimeout = 200 * time.Millisecond
	srv.Config.WriteTimeout = 200 * time.Millisecond
	srv.Start()
	defer srv.Close()

	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	start := time.Now()
	for i := 0; time.Since(start) < time.Second; i++ {
		time.Sleep(250 * time.Millisecond) // each gap is longer than both timeouts
		msg := strings.Repeat("x", i+1)
		if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatalf("write %d after %v: %v", i, time.Since(start), err)
		}
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, p, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("read %d after %v: %v", i, time.Since(start), err)
		}
		if string(p) != msg {
			t.Fatalf("echo %d = %q, want %q", i, p, msg)
		}
	}
}

// Frames the client sends in the same write as its handshake are already in the
// server's HTTP read buffer at hijack time; they must be the start of the stream.
func TestUpgrade_BytesAfterRequestAreNotLost(t *testing.T) {
	srv, errs := upgradeServer(t, nil, nil)
	bin := make([]byte, 300)
	for i := range bin {
		bin[i] = byte(i)
	}
	raw := rawRequest("GET", "/", "HTTP/1.1")
	raw = append(raw, clientFrame(true, 0, wsmw.OpText, []byte("early"))...)
	raw = append(raw, clientFrame(true, 0, wsmw.OpBinary, bin)...)
	resp, body, _, br := doRaw(t, srv, raw)
	if resp.StatusCode != 101 {
		t.Fatalf("status = %d (%q), want 101", resp.StatusCode, body)
	}
	if err := upgradeResult(t, errs); err != nil {
		t.Fatal(err)
	}
	h, p := readFrame(t, br)
	if h.OpCode != wsmw.OpText || !h.Fin || string(p) != "early" {
		t.Fatalf("first echo = %v fin=%v %q, want text \"early\"", h.OpCode, h.Fin, p)
	}
	h, p = readFrame(t, br)
	if h.OpCode != wsmw.OpBinary || !slices.Equal(p, bin) {
		t.Fatalf("second echo = %v %d bytes, want the 300-byte binary message", h.OpCode, len(p))
	}
}
