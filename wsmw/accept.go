package wsmw

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// ServerConfig configures the server side of the handshake and the accepted Conn.
// The zero value is usable: same-host origins, no subprotocol, no extension,
// default limits.
type ServerConfig struct {
	// Subprotocols the server speaks, by preference; the first one the client also
	// offers is chosen. Empty: no subprotocol is selected.
	Subprotocols []string
	// SelectSubprotocol, if set, replaces that choice: it returns one of offered, or "".
	SelectSubprotocol func(r *http.Request, offered []string) string

	// Origins are extra allowed origin patterns (see the origin policy in doc.go);
	// requests without Origin and same-host origins always pass. "*" allows all.
	Origins []string
	// CheckOrigin, if set, replaces the origin policy; false answers 403.
	CheckOrigin func(r *http.Request) bool

	// Extensions negotiates Sec-WebSocket-Extensions. Nil declines every offer.
	Extensions ExtensionNegotiator
	// Compression enables permessage-deflate (RFC 7692); nil leaves it off. Its
	// offers are answered here and never reach Extensions.
	Compression *CompressionOptions

	// ResponseHeader is added to the 101 response (e.g. Set-Cookie), after the
	// headers already set on the ResponseWriter (by middleware, or a proxy's
	// sticky-session cookie); the handshake's own headers are never taken
	// from either.
	ResponseHeader http.Header

	// MaxFrameSize bounds a received frame's payload (default DefaultMaxFrameSize); 1009 beyond.
	MaxFrameSize int64
	// MaxMessageSize bounds a received message's payload (default DefaultMaxMessageSize); 1009 beyond.
	MaxMessageSize int64
	// CloseTimeout bounds the wait for the peer's close frame (default DefaultCloseTimeout).
	CloseTimeout time.Duration

	// Logger receives one debug line per refused handshake. Nil logs nothing.
	Logger *zap.Logger
}

// CheckHandshake validates r as an opening handshake (RFC 6455 §4.2.1) and the
// origin policy, without answering. It returns a *HandshakeError with the status
// Upgrade would answer. A proxy calls it before dialing its upstream.
func CheckHandshake(r *http.Request, cfg *ServerConfig) error {
	if cfg == nil {
		cfg = &ServerConfig{}
	}
	herr := func(status int, cause error, reason string) error {
		return &HandshakeError{Status: status, Reason: reason, Err: cause}
	}
	switch {
	case r.Method != http.MethodGet:
		return herr(http.StatusMethodNotAllowed, ErrNoHandshake, "websocket handshake must use GET")
	case r.ProtoMajor != 1 || r.ProtoMinor < 1:
		return herr(http.StatusBadRequest, ErrNoHandshake, "websocket handshake requires HTTP/1.1")
	case !headerHasToken(r.Header, "Connection", "upgrade"):
		return herr(http.StatusUpgradeRequired, ErrNoHandshake, `"Connection" header must contain "upgrade"`)
	case !headerHasToken(r.Header, "Upgrade", "websocket"):
		return herr(http.StatusUpgradeRequired, ErrNoHandshake, `"Upgrade" header must be "websocket"`)
	}
	switch v := r.Header.Values("Sec-WebSocket-Version"); {
	case len(v) == 0:
		return herr(http.StatusUpgradeRequired, ErrNoVersion, "missing Sec-WebSocket-Version (13 is supported)")
	case len(v) != 1 || strings.TrimSpace(v[0]) != "13":
		return herr(http.StatusUpgradeRequired, ErrUnsupportedVersion, "unsupported Sec-WebSocket-Version (13 is supported)")
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	if len(keys) != 1 || !validKey(keys[0]) {
		return herr(http.StatusBadRequest, ErrNoKey, "Sec-WebSocket-Key must be a base64-encoded 16-byte value")
	}
	ok := false
	if cfg.CheckOrigin != nil {
		ok = cfg.CheckOrigin(r)
	} else {
		ok = originAllowed(r, cfg.Origins)
	}
	if !ok {
		return herr(http.StatusForbidden, ErrBadOrigin, "origin not allowed")
	}
	return nil
}

func validKey(k string) bool {
	k = strings.TrimSpace(k)
	if len(k) != 24 {
		return false
	}
	var b [18]byte
	n, err := base64.StdEncoding.Decode(b[:], []byte(k))
	return err == nil && n == 16
}

// refuseHandshake answers a refused handshake: the status of err (a
// *HandshakeError, or 400 otherwise) with a short plain-text body, plus the
// headers RFC 6455 asks for (Sec-WebSocket-Version on 426).
func refuseHandshake(w http.ResponseWriter, err error) {
	status, reason := http.StatusBadRequest, err.Error()
	var he *HandshakeError
	if errors.As(err, &he) {
		status, reason = he.Status, he.Reason
		if status == http.StatusUpgradeRequired {
			w.Header().Set("Sec-WebSocket-Version", "13")
			w.Header().Set("Upgrade", "websocket")
			w.Header().Set("Connection", "Upgrade")
		}
		if status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", http.MethodGet)
		}
	}
	http.Error(w, reason, status)
}

// Upgrade performs the server handshake: it validates r (CheckHandshake),
// negotiates subprotocol and extensions, hijacks the connection, writes the 101
// response and returns the Conn. On refusal it answers the HTTP error itself and
// returns a *HandshakeError. Deadlines set by http.Server are cleared after the hijack.
func Upgrade(w http.ResponseWriter, r *http.Request, cfg *ServerConfig) (*Conn, error) {
	if cfg == nil {
		cfg = &ServerConfig{}
	}
	if err := CheckHandshake(r, cfg); err != nil {
		cfg.logRefusal(r, err)
		refuseHandshake(w, err)
		return nil, err
	}

	cc := connConfig{
		maxFrame:     cfg.MaxFrameSize,
		maxMessage:   cfg.MaxMessageSize,
		closeTimeout: cfg.CloseTimeout,
	}
	offered := Subprotocols(r.Header)
	if cfg.SelectSubprotocol != nil {
		// RFC 6455 §4.2.2: the server's choice must be one the client offered.
		if sp := cfg.SelectSubprotocol(r, offered); slices.Contains(offered, sp) {
			cc.subprotocol = sp
		}
	} else {
		cc.subprotocol = selectSubprotocol(cfg.Subprotocols, offered)
	}
	if cfg.Extensions != nil || cfg.Compression != nil {
		if offers := ParseExtensions(r.Header); len(offers) > 0 {
			accepted, rsv, pmd := cfg.negotiateExtensions(r, offers)
			cc.extensions = FormatExtensions(accepted)
			cc.rsvAllowed = rsv & (RSV1 | RSV2 | RSV3)
			cc.pmd = pmd
		}
	}

	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		herr := &HandshakeError{Status: http.StatusInternalServerError, Reason: "connection cannot be hijacked", Err: err}
		cfg.logRefusal(r, herr)
		http.Error(w, herr.Reason, herr.Status)
		return nil, herr
	}
	_ = nc.SetDeadline(time.Time{})

	var b strings.Builder
	b.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ")
	b.WriteString(AcceptKey(strings.TrimSpace(r.Header.Get("Sec-WebSocket-Key"))))
	b.WriteString("\r\n")
	if cc.subprotocol != "" {
		b.WriteString("Sec-WebSocket-Protocol: " + cc.subprotocol + "\r\n")
	}
	if cc.extensions != "" {
		b.WriteString("Sec-WebSocket-Extensions: " + cc.extensions + "\r\n")
	}
	writeHeaderLines(&b, w.Header())
	writeHeaderLines(&b, cfg.ResponseHeader)
	b.WriteString("\r\n")

	var buffered []byte
	if n := brw.Reader.Buffered(); n > 0 {
		buffered, _ = brw.Reader.Peek(n)
	}
	if _, err := nc.Write([]byte(b.String())); err != nil {
		nc.Close()
		return nil, fmt.Errorf("websocket: failed to write handshake response: %w", err)
	}
	return newConn(nc, buffered, false, cc), nil
}

// writeHeaderLines renders h as response header lines, leaving out the
// headers the handshake itself sets and those of a body the 101 does not have.
func writeHeaderLines(b *strings.Builder, h http.Header) {
	for k, vs := range h {
		switch http.CanonicalHeaderKey(k) {
		case "Upgrade", "Connection", "Content-Length", "Transfer-Encoding", "Content-Type":
			continue
		}
		if strings.HasPrefix(http.CanonicalHeaderKey(k), "Sec-Websocket-") {
			continue
		}
		for _, v := range vs {
			b.WriteString(sanitizeHeaderValue(k) + ": " + sanitizeHeaderValue(v) + "\r\n")
		}
	}
}

// sanitizeHeaderValue drops CR and LF so a configured name or value cannot split the response.
func sanitizeHeaderValue(v string) string {
	return strings.NewReplacer("\r", "", "\n", "").Replace(v)
}

func selectSubprotocol(supported, offered []string) string {
	for _, s := range supported {
		for _, o := range offered {
			if o == s {
				return s
			}
		}
	}
	return ""
}

func (cfg *ServerConfig) logRefusal(r *http.Request, err error) {
	if cfg.Logger == nil {
		return
	}
	var he *HandshakeError
	status := 0
	if errors.As(err, &he) {
		status = he.Status
	}
	cfg.Logger.Debug("websocket handshake refused",
		zap.Int("status", status),
		zap.String("remote_addr", r.RemoteAddr),
		zap.String("uri", r.RequestURI),
		zap.Error(err))
}
