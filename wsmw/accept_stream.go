package wsmw

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// connectProtocol returns the :protocol of an extended CONNECT request (RFC
// 8441 §4, RFC 9220 §3), and whether r is one. net/http's HTTP/2 server keeps
// the pseudo-header in r.Header; quic-go's HTTP/3 server puts it in r.Proto.
func connectProtocol(r *http.Request) (string, bool) {
	if r.Method != http.MethodConnect {
		return "", false
	}
	switch r.ProtoMajor {
	case 2:
		p := r.Header.Get(":protocol")
		return p, p != ""
	case 3:
		if r.Proto != "" && !strings.HasPrefix(r.Proto, "HTTP/") {
			return r.Proto, true
		}
	}
	return "", false
}

// isWebSocketConnect reports whether r is an extended CONNECT for a WebSocket.
func isWebSocketConnect(r *http.Request) bool {
	p, ok := connectProtocol(r)
	return ok && strings.EqualFold(p, "websocket")
}

// checkExtendedConnect applies the rules of RFC 8441 §5 (RFC 9220 §3 for
// HTTP/3) to an HTTP/2 or HTTP/3 handshake request: an extended CONNECT whose
// :protocol is websocket, with Sec-WebSocket-Version 13. There is no
// Sec-WebSocket-Key: the stream is the proof that the peer speaks WebSocket.
func checkExtendedConnect(r *http.Request) error {
	if !isWebSocketConnect(r) {
		return handshakeErr(http.StatusBadRequest, ErrNoHandshake,
			"on HTTP/2 and HTTP/3 a websocket handshake is an extended CONNECT with :protocol websocket")
	}
	return checkVersion(r)
}

// acceptStream completes an extended CONNECT handshake that CheckHandshake
// accepted and whose subprotocol and extensions cc holds: it answers 200 with
// them (RFC 8441 §5: no Sec-WebSocket-Accept) and returns the Conn running on
// the request's stream. The deadlines an http.Server sets on the stream are
// cleared.
func acceptStream(w http.ResponseWriter, r *http.Request, cfg *ServerConfig, cc connConfig) (*Conn, error) {
	h := w.Header()
	for k, vs := range cfg.ResponseHeader {
		if notOnStream(k) {
			continue
		}
		for _, v := range vs {
			h.Add(sanitizeHeaderValue(k), sanitizeHeaderValue(v))
		}
	}
	if cc.subprotocol != "" {
		h.Set("Sec-WebSocket-Protocol", cc.subprotocol)
	}
	if cc.extensions != "" {
		h.Set("Sec-WebSocket-Extensions", cc.extensions)
	}
	// The 200 goes through the handler's wrappers, like any response; the frames will not.
	w.WriteHeader(http.StatusOK)
	if err := http.NewResponseController(w).Flush(); err != nil {
		return nil, fmt.Errorf("websocket: failed to send the handshake response: %w", err)
	}
	s := newStreamConn(w, r)
	_ = s.rrc.SetReadDeadline(time.Time{})
	_ = s.wrc.SetWriteDeadline(time.Time{})
	return newConn(s, nil, false, cc), nil
}

// notOnStream reports whether response header k has no place in the answer
// to an extended CONNECT: connection-specific headers, which HTTP/2 and HTTP/3
// forbid (RFC 9113 §8.2.2, RFC 9114 §4.2), and Sec-WebSocket-Accept, which
// RFC 8441 §5 leaves out.
func notOnStream(k string) bool {
	switch http.CanonicalHeaderKey(k) {
	case "Connection", "Upgrade", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Sec-Websocket-Accept":
		return true
	}
	return false
}
