package proxy

import (
	"net"
	"net/http"
	"net/textproto"
	"strings"
)

// hopHeaders are hop-by-hop headers (RFC 9110 §7.6.1) never forwarded.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// endToEnd returns a copy of h without hop-by-hop headers (including those named
// in Connection), without Sec-WebSocket-* headers, which belong to one leg, and
// without pseudo-headers (net/http keeps HTTP/2's :protocol among the headers).
func endToEnd(h http.Header) http.Header {
	out := h.Clone()
	for _, v := range h.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" {
				out.Del(tok)
			}
		}
	}
	for _, k := range hopHeaders {
		out.Del(k)
	}
	for k := range out {
		if strings.HasPrefix(k, "Sec-Websocket-") || strings.HasPrefix(k, ":") {
			delete(out, k)
		}
	}
	return out
}

// upstreamHeader builds the upstream handshake's headers from the client request.
func (p *Proxy) upstreamHeader(r *http.Request) http.Header {
	h := endToEnd(r.Header)
	if p.cfg.ForwardHeaders != nil {
		all := h // already without hop-by-hop headers, those named in Connection included
		h = make(http.Header, len(p.cfg.ForwardHeaders)+3)
		for _, k := range p.cfg.ForwardHeaders {
			if vs := all.Values(k); len(vs) > 0 {
				h[textproto.CanonicalMIMEHeaderKey(k)] = vs
			}
		}
	}
	h.Set("Host", r.Host)
	if p.cfg.UpstreamCredentials != nil {
		h.Del("Authorization") // the proxy's credentials replace the client's (wsmw.Dial refuses both)
	}

	clientIP := r.RemoteAddr
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		clientIP = host
	}
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	if p.cfg.TrustForwarded {
		if prior := r.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			clientIP = strings.Join(prior, ", ") + ", " + clientIP
		}
		if v := r.Header.Get("X-Forwarded-Proto"); v != "" {
			proto = v
		}
	}
	if !p.cfg.TrustForwarded {
		h.Del("Forwarded") // RFC 7239: a client's own claim is not passed on unless trusted
	}
	h.Set("X-Forwarded-For", clientIP)
	h.Set("X-Forwarded-Proto", proto)
	if p.cfg.TrustForwarded && r.Header.Get("X-Forwarded-Host") != "" {
		h.Set("X-Forwarded-Host", r.Header.Get("X-Forwarded-Host"))
	} else {
		h.Set("X-Forwarded-Host", r.Host)
	}
	var expand func(string) string
	if p.cfg.Replace != nil {
		expand = func(v string) string { return p.cfg.Replace(r, v) }
	}
	p.cfg.HeaderUp.apply(h, expand)
	return h
}

// filterSubprotocols keeps the offered subprotocols the route allows.
func (p *Proxy) filterSubprotocols(offered []string) []string {
	if len(p.cfg.Subprotocols) == 0 {
		return offered
	}
	var out []string
	for _, o := range offered {
		for _, a := range p.cfg.Subprotocols {
			if o == a {
				out = append(out, o)
				break
			}
		}
	}
	return out
}

// validSubprotocols reports whether every offered subprotocol is an HTTP token
// (RFC 6455 §4.1); wsmw.Dial refuses to offer anything else upstream.
func validSubprotocols(offered []string) bool {
	for _, s := range offered {
		for i := 0; i < len(s); i++ {
			if c := s[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
				return false
			}
		}
	}
	return true
}
