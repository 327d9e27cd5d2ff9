package wsmw

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults of the client handshake.
const (
	// DefaultHandshakeTimeout bounds the whole client handshake: TCP, TLS and the HTTP exchange.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultMaxErrorBody bounds the body of a refused handshake kept in the returned response (4 KiB).
	DefaultMaxErrorBody = 4 << 10
)

// ErrBadHeader: DialConfig.Header sets a header the handshake owns, or a name or value HTTP forbids.
var ErrBadHeader = errors.New("websocket: header not allowed in the handshake request")

// DialConfig configures the client handshake and the resulting Conn. The zero
// value (and nil) is usable: no subprotocol, no extension, default limits.
type DialConfig struct {
	// Header holds extra request headers (Origin, Cookie, User-Agent ...); a "Host"
	// entry overrides the Host. Upgrade, Connection and Sec-WebSocket-* belong to
	// the handshake and are refused with ErrBadHeader: use the fields below.
	Header http.Header
	// Subprotocols are offered in Sec-WebSocket-Protocol, in order of preference.
	Subprotocols []string
	// Extensions are offered in Sec-WebSocket-Extensions. Nil offers none.
	Extensions []ExtensionOffer
	// AcceptExtensions validates the server's answer (only names that were offered
	// reach it) and returns the RSV bits those extensions use. Nil: an answer
	// naming any extension fails with ErrBadExtension.
	AcceptExtensions func(accepted []ExtensionOffer) (rsv byte, err error)
	// Compression offers permessage-deflate (RFC 7692) after Extensions and checks
	// the answer itself; nil offers none. Set, it replaces any permessage-deflate entry of Extensions.
	Compression *CompressionOptions
	// TLSConfig is used for wss://; an empty ServerName defaults to the URL's host. h2 is never offered.
	TLSConfig *tls.Config
	// NetDial opens the TCP connection (default: a net.Dialer).
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// HandshakeTimeout bounds the whole handshake including an authentication
	// retry (default DefaultHandshakeTimeout); ctx's deadline also applies.
	HandshakeTimeout time.Duration
	// Credentials authenticate the handshake. Nil: the URL's userinfo, if any, with AuthAny.
	Credentials *Credentials

	// HTTP2, if set, opens the WebSocket as an extended CONNECT (RFC 8441) on
	// a stream of an HTTP/2 connection of this RoundTripper, instead of an
	// HTTP/1.1 upgrade on a connection of its own. It must be
	// golang.org/x/net/http2's *Transport (net/http's Transport refuses the
	// :protocol pseudo-header), with AllowHTTP and a plain TCP DialTLSContext
	// for ws://. WebSockets dialed through one transport share its
	// connections; TLSConfig and NetDial are then the transport's business.
	HTTP2 http.RoundTripper
	// HTTP3 is HTTP2 for HTTP/3 (RFC 9220), with a RoundTripper such as
	// quic-go's *http3.Transport; wss:// only. HTTP2 wins if both are set.
	HTTP3 http.RoundTripper

	// MaxFrameSize bounds a received frame's payload (default DefaultMaxFrameSize); 1009 beyond.
	MaxFrameSize int64
	// MaxMessageSize bounds a received message's payload (default DefaultMaxMessageSize); 1009 beyond.
	MaxMessageSize int64
	// CloseTimeout bounds the wait for the peer's close frame (default DefaultCloseTimeout).
	CloseTimeout time.Duration
	// MaxErrorBody bounds the body of a non-101 response kept in the returned *http.Response (default DefaultMaxErrorBody).
	MaxErrorBody int64
}

// Dial connects to rawURL (ws:// or wss://, http:// and https:// as aliases) and
// performs the client handshake of RFC 6455 §4.1, returning the Conn and the
// server's 101 response. A refusal is a *HandshakeError (ErrBadStatus,
// ErrUnauthorized, ErrBadAccept ...) returned with the response, whose Body is
// replaced by a copy of at most MaxErrorBody bytes, so a proxy can relay status,
// headers and body. Redirects are not followed. A 401 is answered once, on a new
// connection, with Basic or Digest credentials (see Credentials). With
// DialConfig.HTTP2 or HTTP3 set, the handshake is an extended CONNECT on a new
// stream (RFC 8441, RFC 9220), answered 200, and the Conn runs on that stream.
func Dial(ctx context.Context, rawURL string, cfg *DialConfig) (*Conn, *http.Response, error) {
	if cfg == nil {
		cfg = &DialConfig{}
	}
	t, err := newDialTarget(rawURL, cfg)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(cfg.HandshakeTimeout, DefaultHandshakeTimeout))
	defer cancel()

	creds := t.creds
	var authz string
	if creds != nil && creds.Scheme == AuthBasic {
		authz = creds.basic()
	}
	c, resp, err := t.handshake(ctx, cfg, authz)
	if creds == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		return c, resp, err
	}
	authz, aerr := creds.answer(resp.Header, authz != "", cfg.method(), t.uri)
	if aerr != nil {
		return nil, resp, &HandshakeError{Status: resp.StatusCode, Reason: aerr.Error(), Err: ErrUnauthorized}
	}
	return t.handshake(ctx, cfg, authz)
}

// dialTarget is what Dial derives from the URL and the config, once for all attempts.
type dialTarget struct {
	u      *url.URL
	secure bool
	addr   string // host:port to connect to
	host   string // Host header
	uri    string // request-target
	header string // validated extra header lines, each ending in CRLF
	creds  *Credentials
}

func newDialTarget(rawURL string, cfg *DialConfig) (*dialTarget, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the URL, password included
		}
		return nil, fmt.Errorf("websocket: dial: invalid URL: %w", err)
	}
	t := &dialTarget{u: u, host: u.Host, uri: u.RequestURI(), creds: cfg.Credentials}
	port := "80"
	switch u.Scheme {
	case "ws", "http":
	case "wss", "https":
		t.secure, port = true, "443"
	default:
		return nil, fmt.Errorf("websocket: dial %s: unsupported scheme %q (want ws or wss)", u.Redacted(), u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("websocket: dial %s: missing host", u.Redacted())
	}
	if p := u.Port(); p != "" {
		port = p
	}
	t.addr = net.JoinHostPort(u.Hostname(), port)
	if t.creds == nil && u.User != nil {
		pw, _ := u.User.Password()
		t.creds = &Credentials{Username: u.User.Username(), Password: pw}
	}
	if err := t.checkConfig(cfg); err != nil {
		return nil, fmt.Errorf("websocket: dial %s: %w", u.Redacted(), err)
	}
	return t, nil
}

// reservedHeaders are set by the handshake itself (RFC 6455 §4.1) and cannot come from DialConfig.Header.
var reservedHeaders = []string{"Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version",
	"Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions"}

// checkConfig validates what goes into the request and renders the extra header lines.
func (t *dialTarget) checkConfig(cfg *DialConfig) error {
	for _, p := range cfg.Subprotocols {
		if !isToken(p) {
			return fmt.Errorf("%w: subprotocol %q is not an HTTP token", ErrBadHeader, p)
		}
	}
	if len(cfg.Extensions) > 0 && !validHeaderValue(FormatExtensions(cfg.Extensions)) {
		return fmt.Errorf("%w: invalid extension offer", ErrBadHeader)
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(cfg.Header)) {
		if !isToken(k) {
			return fmt.Errorf("%w: invalid name %q", ErrBadHeader, k)
		}
		for _, r := range reservedHeaders {
			if strings.EqualFold(k, r) {
				return fmt.Errorf("%w: %s is set by the handshake", ErrBadHeader, r)
			}
		}
		if strings.EqualFold(k, "Authorization") && t.creds != nil {
			return fmt.Errorf("%w: Authorization conflicts with Credentials", ErrBadHeader)
		}
		for _, v := range cfg.Header[k] {
			if !validHeaderValue(v) {
				return fmt.Errorf("%w: invalid value for %s", ErrBadHeader, k)
			}
			if strings.EqualFold(k, "Host") {
				t.host = v
				continue
			}
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	t.header = b.String()
	return nil
}

// handshake runs one attempt on a new connection, bounded by ctx.
func (t *dialTarget) handshake(ctx context.Context, cfg *DialConfig, authz string) (*Conn, *http.Response, error) {
	if cfg.HTTP2 != nil || cfg.HTTP3 != nil {
		return t.streamHandshake(ctx, cfg, authz)
	}
	dial := cfg.NetDial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	nc, err := dial(ctx, "tcp", t.addr)
	if err != nil {
		return nil, nil, t.netErr(ctx, "connect", err)
	}
	deadline, _ := ctx.Deadline()
	_ = nc.SetDeadline(deadline)
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = nc.SetDeadline(aLongTimeAgo)
		close(fired)
	})
	c, resp, err := t.exchange(ctx, nc, cfg, authz)
	if !stop() {
		<-fired // the deadline is in the past: the connection is unusable
		if err == nil {
			c, resp, err = nil, nil, t.netErr(ctx, "handshake", ctx.Err())
		}
	}
	if err != nil {
		nc.Close()
		return nil, resp, err
	}
	_ = nc.SetDeadline(time.Time{})
	return c, resp, nil
}

// exchange does TLS, writes the request and reads and checks the response (RFC 6455 §4.1).
func (t *dialTarget) exchange(ctx context.Context, nc net.Conn, cfg *DialConfig, authz string) (*Conn, *http.Response, error) {
	if t.secure {
		tc := tls.Client(nc, t.tlsConfig(cfg))
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, nil, t.netErr(ctx, "TLS handshake", err)
		}
		nc = tc
	}
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	if _, err := io.WriteString(nc, t.request(cfg, key, authz)); err != nil {
		return nil, nil, t.netErr(ctx, "write request", err)
	}

	br := bufio.NewReaderSize(nc, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		var ne net.Error
		if ctx.Err() != nil || errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, t.netErr(ctx, "read response", err)
		}
		return nil, nil, &HandshakeError{Reason: "malformed HTTP response: " + err.Error(), Err: ErrNoHandshake}
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, resp, refused(resp, orDefault(cfg.MaxErrorBody, DefaultMaxErrorBody))
	}
	cc, err := checkResponse(resp, key, cfg)
	if err != nil {
		return nil, resp, err
	}
	var buffered []byte
	if n := br.Buffered(); n > 0 {
		p, _ := br.Peek(n)
		buffered = bytes.Clone(p)
	}
	return newConn(nc, buffered, true, cc), resp, nil
}

// request renders the opening handshake (RFC 6455 §4.1).
func (t *dialTarget) request(cfg *DialConfig, key, authz string) string {
	var b strings.Builder
	b.WriteString("GET " + t.uri + " HTTP/1.1\r\nHost: " + t.host + "\r\n")
	b.WriteString("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n")
	if len(cfg.Subprotocols) > 0 {
		b.WriteString("Sec-WebSocket-Protocol: " + strings.Join(cfg.Subprotocols, ", ") + "\r\n")
	}
	if offers := cfg.extensionOffers(); len(offers) > 0 {
		b.WriteString("Sec-WebSocket-Extensions: " + FormatExtensions(offers) + "\r\n")
	}
	if authz != "" {
		b.WriteString("Authorization: " + authz + "\r\n")
	}
	b.WriteString(t.header)
	b.WriteString("\r\n")
	return b.String()
}

// refused keeps at most max bytes of a non-101 response's body and returns the
// *HandshakeError for its status. ContentLength (and a Content-Length header) then
// describe the kept copy. The original body is not closed: that would drain it.
func refused(resp *http.Response, max int64) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, max))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.TransferEncoding = nil
	if resp.Header.Get("Content-Length") != "" {
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusProxyAuthRequired {
		return &HandshakeError{Status: resp.StatusCode, Reason: "server requires authentication: " + resp.Status, Err: ErrUnauthorized}
	}
	return &HandshakeError{Status: resp.StatusCode, Reason: "server refused the handshake: " + resp.Status, Err: ErrBadStatus}
}

// checkResponse validates a 101 response (RFC 6455 §4.1, client steps 1-6) and
// returns the Conn configuration it negotiates.
func checkResponse(resp *http.Response, key string, cfg *DialConfig) (connConfig, error) {
	cc := connConfig{maxFrame: cfg.MaxFrameSize, maxMessage: cfg.MaxMessageSize, closeTimeout: cfg.CloseTimeout}
	herr := func(cause error, reason string) error {
		return &HandshakeError{Status: resp.StatusCode, Reason: reason, Err: cause}
	}
	switch {
	case !resp.ProtoAtLeast(1, 1):
		return cc, herr(ErrNoHandshake, "101 response is not HTTP/1.1")
	case !headerHasToken(resp.Header, "Upgrade", "websocket"):
		return cc, herr(ErrNoHandshake, `"Upgrade" header must be "websocket"`)
	case !headerHasToken(resp.Header, "Connection", "upgrade"):
		return cc, herr(ErrNoHandshake, `"Connection" header must contain "upgrade"`)
	}
	if a := resp.Header.Values("Sec-WebSocket-Accept"); len(a) != 1 || strings.TrimSpace(a[0]) != AcceptKey(key) {
		return cc, herr(ErrBadAccept, "Sec-WebSocket-Accept does not match the key")
	}
	return checkNegotiation(resp, cfg, cc)
}

// checkNegotiation validates the subprotocol and extensions a server accepted
// (RFC 6455 §4.1, client steps 5-6) and adds them to cc.
func checkNegotiation(resp *http.Response, cfg *DialConfig, cc connConfig) (connConfig, error) {
	herr := func(cause error, reason string) error {
		return &HandshakeError{Status: resp.StatusCode, Reason: reason, Err: cause}
	}
	switch p := resp.Header.Values("Sec-WebSocket-Protocol"); {
	case len(p) > 1:
		return cc, herr(ErrBadSubprotocol, "more than one Sec-WebSocket-Protocol")
	case len(p) == 1 && strings.TrimSpace(p[0]) != "":
		cc.subprotocol = strings.TrimSpace(p[0])
		if !slices.Contains(cfg.Subprotocols, cc.subprotocol) {
			return cc, herr(ErrBadSubprotocol, fmt.Sprintf("server chose subprotocol %q that was not offered", cc.subprotocol))
		}
	}
	exts := ParseExtensions(resp.Header)
	if len(exts) == 0 {
		return cc, nil
	}
	offered := cfg.extensionOffers()
	for _, e := range exts {
		if !slices.ContainsFunc(offered, func(o ExtensionOffer) bool { return strings.EqualFold(o.Name, e.Name) }) {
			return cc, herr(ErrBadExtension, fmt.Sprintf("server accepted extension %q that was not offered", e.Name))
		}
	}
	rest, pmd, err := cfg.checkDeflateAnswer(exts)
	var rsv byte
	if err == nil && len(rest) > 0 {
		if cfg.AcceptExtensions == nil {
			return cc, herr(ErrBadExtension, "server accepted extensions but DialConfig.AcceptExtensions is nil")
		}
		rsv, err = cfg.AcceptExtensions(rest)
	}
	if err != nil {
		return cc, &HandshakeError{Status: resp.StatusCode, Reason: "extension answer refused: " + err.Error(), Err: fmt.Errorf("%w: %w", ErrBadExtension, err)}
	}
	if pmd != nil {
		rsv |= RSV1
	}
	cc.extensions = FormatExtensions(exts)
	cc.rsvAllowed = rsv & (RSV1 | RSV2 | RSV3)
	cc.pmd = pmd
	return cc, nil
}

// tlsConfig clones cfg.TLSConfig with ServerName defaulted and h2 removed from ALPN.
func (t *dialTarget) tlsConfig(cfg *DialConfig) *tls.Config {
	tc := &tls.Config{}
	if cfg.TLSConfig != nil {
		tc = cfg.TLSConfig.Clone()
	}
	if tc.ServerName == "" {
		tc.ServerName = t.u.Hostname()
	}
	tc.NextProtos = slices.DeleteFunc(slices.Clone(tc.NextProtos), func(p string) bool { return p == "h2" })
	return tc
}

// netErr wraps a network failure with the URL and step, adding ctx's error (or
// context.DeadlineExceeded for a deadline that expired first) so errors.Is finds both.
func (t *dialTarget) netErr(ctx context.Context, op string, err error) error {
	cerr := ctx.Err()
	if cerr == nil && errors.Is(err, os.ErrDeadlineExceeded) {
		cerr = context.DeadlineExceeded
	}
	if cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w: %w", cerr, err)
	}
	return &DialError{URL: t.u.Redacted(), Op: op, Err: err}
}

// isToken reports whether s is an HTTP token (RFC 9110 §5.6.2).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether v can be sent as a field value: no control
// characters other than tab, so no CR or LF that would split the request.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
