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

// CheckHandshake validates r as an opening handshake and the origin policy,
// without answering. It returns a *HandshakeError with the status Upgrade
// would answer. A proxy calls it before dialing its upstream. On HTTP/1.1 the
// handshake is an upgrade (RFC 6455 §4.2.1); on HTTP/2 and HTTP/3 it is an
// extended CONNECT (RFC 8441 §4-5, RFC 9220), which has no key.
func CheckHandshake(r *http.Request, cfg *ServerConfig) error {
	if cfg == nil {
		cfg = &ServerConfig{}
	}
	if err := checkRequest(r); err != nil {
		return err
	}
	ok := false
	if cfg.CheckOrigin != nil {
		ok = cfg.CheckOrigin(r)
	} else {
		ok = originAllowed(r, cfg.Origins)
	}
	if !ok {
		return handshakeErr(http.StatusForbidden, ErrBadOrigin, "origin not allowed")
	}
	return nil
}

// checkRequest applies the rules of the handshake request of r's HTTP version.
func checkRequest(r *http.Request) error {
	if r.ProtoMajor >= 2 {
		return checkExtendedConnect(r)
	}
	switch {
	case r.Method != http.MethodGet:
		return handshakeErr(http.StatusMethodNotAllowed, ErrNoHandshake, "websocket handshake must use GET")
	case r.ProtoMajor != 1 || r.ProtoMinor < 1:
		return handshakeErr(http.StatusBadRequest, ErrNoHandshake, "websocket handshake requires HTTP/1.1")
	case !headerHasToken(r.Header, "Connection", "upgrade"):
		return handshakeErr(http.StatusUpgradeRequired, ErrNoHandshake, `"Connection" header must contain "upgrade"`)
	case !headerHasToken(r.Header, "Upgrade", "websocket"):
		return handshakeErr(http.StatusUpgradeRequired, ErrNoHandshake, `"Upgrade" header must be "websocket"`)
	}
	if err := checkVersion(r); err != nil {
		return err
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	if len(keys) != 1 || !validKey(keys[0]) {
		return handshakeErr(http.StatusBadRequest, ErrNoKey, "Sec-WebSocket-Key must be a base64-encoded 16-byte value")
	}
	return nil
}

// checkVersion requires Sec-WebSocket-Version: 13 (RFC 6455 §4.2.1, RFC 8441 §5).
func checkVersion(r *http.Request) error {
	switch v := r.Header.Values("Sec-WebSocket-Version"); {
	case len(v) == 0:
		return handshakeErr(http.StatusUpgradeRequired, ErrNoVersion, "missing Sec-WebSocket-Version (13 is supported)")
	case len(v) != 1 || strings.TrimSpace(v[0]) != "13":
		return handshakeErr(http.StatusUpgradeRequired, ErrUnsupportedVersion, "unsupported Sec-WebSocket-Version (13 is supported)")
	}
	return nil
}

func handshakeErr(status int, cause error, reason string) error {
	return &HandshakeError{Status: status, Reason: reason, Err: cause}
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

// refuseHandshake answers r's refused handshake: the status of err (a
// *HandshakeError, or 400 otherwise) with a short plain-text body, plus the
// headers RFC 6455 asks for (Sec-WebSocket-Version on 426). HTTP/2 and HTTP/3
// have no Upgrade and Connection headers.
func refuseHandshake(w http.ResponseWriter, r *http.Request, err error) {
	status, reason := http.StatusBadRequest, err.Error()
	var he *HandshakeError
	if errors.As(err, &he) {
		status, reason = he.Status, he.Reason
		if status == http.StatusUpgradeRequired {
			w.Header().Set("Sec-WebSocket-Version", "13")
			if r.ProtoMajor == 1 {
				w.Header().Set("Upgrade", "websocket")
				w.Header().Set("Connection", "Upgrade")
			}
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
//
// On HTTP/2 and HTTP/3 (an extended CONNECT) nothing is hijacked: Upgrade
// answers 200 and the Conn runs on the request's stream, which ends when the
// handler returns. The handler must therefore serve the Conn itself and close
// it (Close, or CloseNow) before it returns; see the package documentation.
func Upgrade(w http.ResponseWriter, r *http.Request, cfg *ServerConfig) (*Conn, error) {
	if cfg == nil {
		cfg = &ServerConfig{}
	}
	if err := CheckHandshake(r, cfg); err != nil {
		cfg.logRefusal(r, err)
		refuseHandshake(w, r, err)
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

	if r.ProtoMajor >= 2 {
		return acceptStream(w, r, cfg, cc)
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
