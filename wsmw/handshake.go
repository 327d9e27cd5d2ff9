package wsmw

import (
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strings"
)

// keyGUID is the fixed GUID of RFC 6455 §1.3.
const keyGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AcceptKey computes Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2).
func AcceptKey(key string) string {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte(keyGUID))
	var sum [sha1.Size]byte
	return base64.StdEncoding.EncodeToString(h.Sum(sum[:0]))
}

// headerTokens calls fn for each comma-separated token of every value of header
// name, trimmed; it stops early when fn returns false.
func headerTokens(h http.Header, name string, fn func(tok string) bool) {
	for _, v := range h.Values(name) {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if tok = strings.TrimSpace(tok); tok != "" && !fn(tok) {
				return
			}
		}
	}
}

// headerHasToken reports whether header name lists token (case-insensitive), as
// for Connection: keep-alive, Upgrade.
func headerHasToken(h http.Header, name, token string) bool {
	found := false
	headerTokens(h, name, func(tok string) bool {
		found = strings.EqualFold(tok, token)
		return !found
	})
	return found
}

// Subprotocols returns the subprotocols offered in Sec-WebSocket-Protocol, in order.
func Subprotocols(h http.Header) []string {
	var out []string
	headerTokens(h, "Sec-WebSocket-Protocol", func(tok string) bool {
		out = append(out, tok)
		return true
	})
	return out
}

// IsUpgradeRequest reports whether r asks for a WebSocket: its Upgrade
// header names websocket (HTTP/1.1), or it is an extended CONNECT whose
// :protocol is websocket (HTTP/2, RFC 8441; HTTP/3, RFC 9220). Such requests
// are answered by the handshake, with an error status if they are malformed;
// all others belong to ordinary handlers.
func IsUpgradeRequest(r *http.Request) bool {
	return headerHasToken(r.Header, "Upgrade", "websocket") || isWebSocketConnect(r)
}
