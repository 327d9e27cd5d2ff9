package proxy

import "net/http"

// clientProto names the protocol of a session's client leg as ALPN does, for
// the session's log line and metrics: "http/1.1" (an upgrade), "h2" or "h3"
// (an extended CONNECT on a stream, RFC 8441 and RFC 9220).
func clientProto(r *http.Request) string {
	switch r.ProtoMajor {
	case 2:
		return "h2"
	case 3:
		return "h3"
	}
	return "http/1.1"
}
