package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"

	"github.com/wsgate/wsgate/wsmw"
)

// Errors of a refused handshake, usable with errors.Is; the *wsmw.HandshakeError
// that wraps them carries the status the client got.
var (
	// ErrNoUpstream: no upstream is configured or healthy (503).
	ErrNoUpstream = errors.New("proxy: no upstream available")
	// ErrUpstreamUnreachable: every try to connect to an upstream failed (502):
	// DNS, TCP, TLS, or the connection closed before the upstream answered.
	ErrUpstreamUnreachable = errors.New("proxy: upstream unreachable")
	// ErrUpstreamTimeout: the last try timed out (504).
	ErrUpstreamTimeout = errors.New("proxy: upstream timed out")
	// ErrUpstreamHandshake: the upstream answered, but not with a valid
	// WebSocket handshake (502): a wrong Sec-WebSocket-Accept, a missing
	// Upgrade, a 2xx instead of 101, a subprotocol or extension not offered.
	ErrUpstreamHandshake = errors.New("proxy: invalid upstream handshake")
	// ErrClientGone: the client left while the upstream was being dialed.
	ErrClientGone = errors.New("proxy: client went away during the upstream dial")
	// ErrHeadersTooLarge: the client's handshake headers exceed MaxHeaderBytes
	// or MaxHeaders (431); the proxy would have forwarded them.
	ErrHeadersTooLarge = errors.New("proxy: request header fields too large")
)

// refusal is a handshake the proxy refuses: what the client is answered
// (Status, and Reason as the body, naming the cause without addresses), the
// reason label of handshake_failures_total, and the full error for the log.
type refusal struct {
	*wsmw.HandshakeError
	metric string
}

// dialRefusal explains why no upstream could be dialed, from the last try's
// error (and response, when the upstream answered without a valid handshake).
func dialRefusal(ctx context.Context, err error, resp *http.Response) refusal {
	refuse := func(status int, sentinel error, metric, reason string) refusal {
		return refusal{&wsmw.HandshakeError{Status: status, Reason: reason, Err: errors.Join(sentinel, err)}, metric}
	}
	var de *wsmw.DialError
	var he *wsmw.HandshakeError
	switch {
	case ctx.Err() != nil:
		return refuse(http.StatusBadGateway, ErrClientGone, "client_gone", "client went away")
	case isTimeout(err):
		return refuse(http.StatusGatewayTimeout, ErrUpstreamTimeout, "upstream_timeout", "upstream timed out")
	case errors.As(err, &de):
		return connectRefusal(de, refuse)
	case resp != nil && resp.StatusCode != http.StatusSwitchingProtocols:
		return refuse(http.StatusBadGateway, ErrUpstreamHandshake, "upstream_bad_handshake",
			fmt.Sprintf("upstream answered %q instead of 101 Switching Protocols", resp.Status))
	case errors.As(err, &he):
		return refuse(http.StatusBadGateway, ErrUpstreamHandshake, "upstream_bad_handshake",
			"upstream sent an invalid handshake: "+he.Reason)
	}
	return refuse(http.StatusBadGateway, ErrUpstreamUnreachable, "upstream_unreachable", "upstream unreachable")
}

// connectRefusal names a dial that failed before the upstream answered.
func connectRefusal(de *wsmw.DialError, refuse func(int, error, string, string) refusal) refusal {
	var dns *net.DNSError
	switch {
	case de.Op == "TLS handshake":
		return refuse(http.StatusBadGateway, ErrUpstreamUnreachable, "upstream_tls", "upstream TLS handshake failed")
	case de.Op != "connect":
		return refuse(http.StatusBadGateway, ErrUpstreamUnreachable, "upstream_closed", "upstream closed the connection before answering")
	case errors.As(de, &dns):
		return refuse(http.StatusBadGateway, ErrUpstreamUnreachable, "upstream_unreachable", "upstream host not found")
	case errors.Is(de, syscall.ECONNREFUSED):
		return refuse(http.StatusBadGateway, ErrUpstreamUnreachable, "upstream_unreachable", "upstream refused the connection")
	}
	return refuse(http.StatusBadGateway, ErrUpstreamUnreachable, "upstream_unreachable", "upstream unreachable")
}

func isTimeout(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// headerRefusal refuses a handshake whose headers exceed MaxHeaderBytes or
// MaxHeaders, counted as the proxy would forward them: every field, Host
// included, as "Name: value" plus CRLF.
func (p *Proxy) headerRefusal(r *http.Request) (refusal, bool) {
	n, size := 1, len("Host: \r\n")+len(r.Host)
	for k, vs := range r.Header {
		for _, v := range vs {
			n++
			size += len(k) + len(v) + 4
		}
	}
	var why string
	switch {
	case n > p.cfg.MaxHeaders:
		why = fmt.Sprintf("%d header fields, over the limit of %d", n, p.cfg.MaxHeaders)
	case size > p.cfg.MaxHeaderBytes:
		why = fmt.Sprintf("%d bytes of header fields, over the limit of %d", size, p.cfg.MaxHeaderBytes)
	default:
		return refusal{}, false
	}
	return refusal{&wsmw.HandshakeError{
		Status: http.StatusRequestHeaderFieldsTooLarge,
		Reason: "request header fields too large: " + why,
		Err:    ErrHeadersTooLarge,
	}, "headers_too_large"}, true
}
