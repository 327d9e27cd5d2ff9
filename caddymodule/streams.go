package caddymodule

import (
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// noIdleTimeout stands for no idle timeout: Caddy's idle deadlines are
// always a time from now.
const noIdleTimeout = 100 * 365 * 24 * time.Hour

// liftIdleTimeouts lifts Caddy's idle timeouts of the request body and the
// response (read_body_idle and write_idle, a minute by default) from a
// WebSocket on an HTTP/2 or HTTP/3 stream, and returns the function that
// puts them back. They bound every read and write of an HTTP request, and
// would end a WebSocket quiet for longer; the session's own IdleTimeout
// bounds it instead. A WebSocket on HTTP/1.1 hijacks its connection and is
// not subject to them.
func liftIdleTimeouts(r *http.Request) (restore func()) {
	if r.ProtoMajor < 2 {
		return func() {}
	}
	rd, wr := caddyhttp.IdleTimeoutsFromContext(r.Context())
	var undo []func()
	if rd != nil {
		undo = append(undo, rd.Override(noIdleTimeout, 0))
	}
	if wr != nil {
		undo = append(undo, wr.Override(noIdleTimeout, 0, 0))
	}
	return func() {
		for _, f := range undo {
			f()
		}
	}
}
