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

// UpgradeHeader is the header of a valid opening handshake to host: Host,
// Upgrade, Connection, a fresh Sec-WebSocket-Key and Sec-WebSocket-Version 13.
func UpgradeHeader(host string) http.Header {
	return http.Header{
		"Host":                  {host},
		"Upgrade":               {"websocket"},
		"Connection":            {"Upgrade"},
		"Sec-Websocket-Key":     {NewKey()},
		"Sec-Websocket-Version": {"13"},
	}
}

// RawHandshake connects to addr and writes the request line (method, target)
// and header's lines (sorted; an entry without values sends nothing) by hand,
// so that any header can be sent: hop-by-hop, Sec-WebSocket-*, bad values. It
// returns the response (its Request holds header) and, after a 101, the
// connection in the client role; otherwise the body, and the connection is closed.
func RawHandshake(addr, method, target string, header http.Header) (*Conn, *http.Response, string, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\n", method, target)
	for _, k := range slices.Sorted(maps.Keys(header)) {
		for _, v := range header[k] {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(nc, b.String()); err != nil {
		nc.Close()
		return nil, nil, "", err
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, &http.Request{Method: method, Header: header})
	if err != nil {
		nc.Close()
		return nil, nil, "", err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		nc.SetDeadline(time.Time{})
		return NewConn(nc, br, true), resp, "", nil
	}
	body, err := io.ReadAll(resp.Body)
	nc.Close()
	return nil, resp, string(body), err
}

// Handshake is RawHandshake of a valid opening handshake for path on addr,
// with header's lines added.
func Handshake(addr, path string, header http.Header) (*Conn, *http.Response, error) {
	h := UpgradeHeader(addr)
	for k, vs := range header {
		h[http.CanonicalHeaderKey(k)] = vs
	}
	c, resp, _, err := RawHandshake(addr, http.MethodGet, path, h)
	return c, resp, err
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
