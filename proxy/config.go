package proxy

import (
	"crypto/tls"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/wsgate/wsgate/wsmw"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultDialTimeout  = 10 * time.Second
	DefaultWriteTimeout = 30 * time.Second
	DefaultCloseTimeout = wsmw.DefaultCloseTimeout
	DefaultTryInterval  = 250 * time.Millisecond
	DefaultDrainCode    = wsmw.StatusServiceRestart
	// DefaultMaxHeaderBytes and DefaultMaxHeaders bound the client's handshake
	// headers, which the proxy forwards: as Envoy's defaults (60 KiB, 100) and
	// nginx's (up to 4 × 8 KiB lines) keep a backend from seeing megabytes of them.
	DefaultMaxHeaderBytes = 32 << 10
	DefaultMaxHeaders     = 100
)

// Config is the proxy's configuration. The zero value of each field means its
// documented default; New validates it.
type Config struct {
	// Upstreams are the static upstream URLs: ws:// or wss:// (http:// and
	// https:// are aliases), or host:port[/path], which is ws://, or wss:// when
	// UpstreamTLS is set. Ignored when Source is set.
	Upstreams []string
	// Source, if set, supplies the upstreams for each request (dynamic upstreams).
	Source UpstreamSource
	// Balancer picks an upstream per session. Default: Random().
	Balancer Balancer
	// Retries is how many more upstreams are tried after a failed dial (default 0).
	Retries int
	// TryDuration keeps retrying failed dials for this long (default 0: no time-based retries).
	TryDuration time.Duration
	// TryInterval is the pause between tries (default 250ms).
	TryInterval time.Duration
	// DialTimeout bounds one upstream dial including its handshake (default 10s); 504 beyond.
	DialTimeout time.Duration

	// UpstreamTLS configures wss:// upstreams (server name, CA pool, client
	// certificate); set, it also makes bare host:port upstreams wss://.
	UpstreamTLS *tls.Config
	// UpstreamCredentials authenticate the proxy to protected upstreams (Basic or Digest).
	UpstreamCredentials *wsmw.Credentials

	// ForwardHeaders, if non-nil, is the allow-list of client request headers sent
	// upstream. Nil forwards every end-to-end header (Origin, Cookie, Authorization,
	// User-Agent and the rest); hop-by-hop and Sec-WebSocket-* headers never pass.
	ForwardHeaders []string
	// TrustForwarded appends to incoming X-Forwarded-* headers instead of replacing them.
	TrustForwarded bool
	// HeaderUp edits the upstream request headers; HeaderDown the client's 101
	// (or relayed refusal). Upgrade, Connection and Sec-WebSocket-* belong to
	// the handshake and cannot be set upstream.
	HeaderUp, HeaderDown HeaderOps
	// Replace, if set, expands the placeholders of HeaderUp values for each
	// request (Caddy's module sets it to Caddy's replacer).
	Replace func(r *http.Request, value string) string

	// MaxHeaderBytes bounds the client's handshake header fields, counted as
	// "Name: value" plus CRLF each, Host included (default 32 KiB), and
	// MaxHeaders their number (default 100). The proxy forwards them, so beyond
	// either the client gets 431 before any upstream is dialed.
	MaxHeaderBytes, MaxHeaders int

	// Subprotocols, if non-empty, restricts the client's offered subprotocols
	// forwarded upstream to these. The upstream's choice is what the client gets.
	Subprotocols []string
	// Origins are the allowed browser origins beyond the request's own host (see wsmw.ServerConfig).
	Origins []string
	// CheckOrigin replaces the origin policy when set.
	CheckOrigin func(r *http.Request) bool

	// MaxFrameSize and MaxMessageSize bound frames and messages in both directions
	// (defaults as in wsmw); 1009 to the sender beyond. The Up/Down variants, when
	// set, override them for one direction.
	MaxFrameSize, MaxMessageSize         int64
	MaxMessageSizeUp, MaxMessageSizeDown int64

	// Inspectors are called per message in each direction.
	Inspectors Chain

	// Compression is the permessage-deflate (RFC 7692) mode: CompressionOff
	// (default: the client's offer is stripped), CompressionPassthrough or
	// CompressionTerminate; see CompressionMode.
	Compression CompressionMode
	// ClientCompression and UpstreamCompression are the options of each leg in
	// terminate mode (ignored otherwise). Defaults: the client leg negotiates
	// with wsmw's defaults except that the proxy compresses without context
	// takeover (&wsmw.CompressionOptions{ServerNoContextTakeover: true}: no
	// compressor, ~800 KiB, is kept per session), the upstream leg is
	// uncompressed (nil). With context takeover on the proxy's sending side
	// (ServerNoContextTakeover false here, ClientNoContextTakeover false in
	// UpstreamCompression) each session keeps a compressor of its own.
	ClientCompression, UpstreamCompression *wsmw.CompressionOptions

	// IdleTimeout closes a session (1001) when no data frame started in either direction for this
	// long (0: none). It is checked by a timer every IdleTimeout, so an idle session is closed
	// between one and two IdleTimeouts after its last data frame.
	IdleTimeout time.Duration
	// MaxLifetime closes a session (1001) this long after it started (0: none).
	MaxLifetime time.Duration
	// WriteTimeout bounds a write to either leg (default 30s): a reader slower than that is dropped.
	WriteTimeout time.Duration
	// CloseTimeout bounds the close handshake on each leg (default 5s).
	CloseTimeout time.Duration
	// PingInterval, if set, makes the proxy ping each leg this often; a leg that
	// sends nothing within PingTimeout (default PingInterval/2) after a ping is dead.
	PingInterval, PingTimeout time.Duration

	// MaxSessions limits concurrent sessions; beyond it upgrades get 503 (0: no limit).
	MaxSessions int
	// DrainCode is sent to both legs on Shutdown (default 1012 Service Restart;
	// 1001 also sensible; any code valid on the wire).
	DrainCode wsmw.StatusCode

	// PassiveHealth marks an upstream down after MaxFails failed dials within FailDuration.
	PassiveHealth PassiveHealth
	// ActiveHealth, if set, probes every upstream with a WebSocket handshake.
	ActiveHealth *ActiveHealth

	// Logger receives one line per session and debug lines for handshakes (default: no logging).
	Logger *zap.Logger
	// LogFields adds fields to the session's log lines (a request ID from chi, say).
	LogFields func(r *http.Request) []zap.Field
	// Metrics, if set, is updated by the proxy (see NewMetrics).
	Metrics *Metrics
}

// PassiveHealth configures passive health checks: an upstream with MaxFails
// failed dials or handshakes within FailDuration is not selected until they expire.
type PassiveHealth struct {
	MaxFails     int
	FailDuration time.Duration
}

// HeaderOps edits a header set: Delete first, then Set, then Add.
type HeaderOps struct {
	Add    http.Header
	Set    http.Header
	Delete []string
}

// apply edits h; expand, if set, turns each value into the one to use.
func (o *HeaderOps) apply(h http.Header, expand func(string) string) {
	if expand == nil {
		expand = func(v string) string { return v }
	}
	for _, k := range o.Delete {
		h.Del(k)
	}
	for k, vs := range o.Set {
		h.Del(k)
		for _, v := range vs {
			h.Add(k, expand(v))
		}
	}
	for k, vs := range o.Add {
		for _, v := range vs {
			h.Add(k, expand(v))
		}
	}
}
