package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"time"
)

// StickyCookie is Caddy's cookie policy as a Balancer: a client without the
// cookie gets an upstream from Fallback and a cookie naming it (the hex
// HMAC-SHA256 of its host:port keyed by Secret) on the response: the 101, a
// refusal, or, through HTTPHandler, a plain HTTP response. Later requests that
// carry the cookie go to that upstream while it is available. A framework
// whose first requests are plain HTTP and whose next one is the WebSocket
// upgrade (Socket.IO, SockJS) thus keeps one client on one backend, and the
// cookie is the one Caddy's reverse_proxy sets, so both agree.
type StickyCookie struct {
	Name     string        // cookie name; default "lb"
	Secret   string        // HMAC key; the cookie can name an upstream only to a holder of the key
	MaxAge   time.Duration // 0: a session cookie
	Fallback Balancer      // for clients without a valid cookie; default Random()
}

// Select returns the upstream the request's cookie names, or the fallback's
// choice, setting the cookie.
func (c *StickyCookie) Select(pool []*Upstream, r *http.Request, w http.ResponseWriter) *Upstream {
	if ck, err := r.Cookie(c.name()); err == nil {
		for _, u := range pool {
			if hmac.Equal([]byte(c.value(u)), []byte(ck.Value)) {
				return u
			}
		}
	}
	fallback := c.Fallback
	if fallback == nil {
		fallback = Random()
	}
	u := fallback.Select(pool, r, w)
	if u != nil && w != nil {
		http.SetCookie(w, c.cookie(u, r))
	}
	return u
}

func (c *StickyCookie) name() string {
	if c.Name == "" {
		return "lb"
	}
	return c.Name
}

// value is the cookie value that names u.
func (c *StickyCookie) value(u *Upstream) string {
	m := hmac.New(sha256.New, []byte(c.Secret))
	m.Write([]byte(u.HostPort()))
	return hex.EncodeToString(m.Sum(nil))
}

// cookie is the cookie naming u, with Caddy's attributes: HttpOnly and
// SameSite=Lax, or Secure and SameSite=None when the client came over TLS.
func (c *StickyCookie) cookie(u *Upstream, r *http.Request) *http.Cookie {
	ck := &http.Cookie{Name: c.name(), Value: c.value(u), Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode}
	if r.TLS != nil {
		ck.Secure, ck.SameSite = true, http.SameSiteNoneMode
	}
	if c.MaxAge > 0 {
		ck.MaxAge = int(c.MaxAge.Seconds())
	}
	return ck
}
