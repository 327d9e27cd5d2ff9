package testkit

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// AcceptKey computes Sec-WebSocket-Accept for key (RFC 6455 §4.2.2) by hand,
// not with wsmw, so that a handshake bug in wsmw cannot hide itself.
func AcceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// NewKey returns a fresh valid Sec-WebSocket-Key.
func NewKey() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

// Handshake connects to addr and sends an opening handshake for path written
// by hand: GET, Host addr, a fresh key and version 13, then header's lines
// (sorted). It returns the response (its Request holds the headers sent) and,
// after a 101, the connection in the client role; otherwise the connection is
// closed and the body left unread.
func Handshake(addr, path string, header http.Header) (*Conn, *http.Response, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	req := &http.Request{Method: http.MethodGet, Header: header.Clone()}
	if req.Header == nil {
		req.Header = http.Header{}
	}
	req.Header.Set("Sec-WebSocket-Key", NewKey())
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n", path, addr)
	for _, k := range slices.Sorted(maps.Keys(req.Header)) {
		for _, v := range req.Header[k] {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(nc, b.String()); err != nil {
		nc.Close()
		return nil, nil, err
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, resp, nil
	}
	nc.SetDeadline(time.Time{})
	return NewConn(nc, br, true), resp, nil
}

// DialRaw performs a hand-written opening handshake with url (ws://host/path)
// and fails the test unless it gets a 101 with the right Sec-WebSocket-Accept.
// The connection is closed when the test ends.
func DialRaw(t testing.TB, url string) *Conn {
	t.Helper()
	host, path, _ := strings.Cut(strings.TrimPrefix(url, "ws://"), "/")
	c, resp, err := Handshake(host, "/"+path, nil)
	if err != nil {
		t.Fatalf("raw dial %s: %v", url, err)
	}
	if c == nil {
		t.Fatalf("raw dial %s: status %s", url, resp.Status)
	}
	t.Cleanup(func() { c.Close() })
	key := resp.Request.Header.Get("Sec-WebSocket-Key")
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != AcceptKey(key) {
		t.Fatalf("raw dial %s: Sec-WebSocket-Accept %q, want %q", url, got, AcceptKey(key))
	}
	return c
}

// acceptHandshake reads an opening handshake from nc within 5 s and answers
// 101, or 400 to a request that is not an upgrade.
func acceptHandshake(nc net.Conn, br *bufio.Reader) (*http.Request, bool) {
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	defer nc.SetDeadline(time.Time{})
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, false
	}
	key := req.Header.Get("Sec-WebSocket-Key")
	if !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") || key == "" {
		io.WriteString(nc, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
		return nil, false
	}
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + AcceptKey(key) + "\r\n\r\n"
	if _, err := io.WriteString(nc, resp); err != nil {
		return nil, false
	}
	return req, true
}
