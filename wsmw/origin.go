package wsmw

import (
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
)

// originAllowed applies the origin policy (RFC 6455 §10.2): a request without
// Origin is a non-browser client and passes; a browser's Origin passes when its
// host equals the request's Host, or when it matches one of patterns. A pattern
// with "://" is matched against the whole origin ("https://*.example.com"),
// otherwise against its host[:port] ("*.example.com", "localhost:*"); "*" is a
// wildcard as in path.Match, and "*" alone allows every origin (even "null").
func originAllowed(r *http.Request, patterns []string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || slices.Contains(patterns, "*") {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	host := strings.ToLower(u.Host)
	if host == strings.ToLower(r.Host) {
		return true
	}
	full := strings.ToLower(u.Scheme) + "://" + host
	for _, p := range patterns {
		p = strings.ToLower(p)
		target := host
		if strings.Contains(p, "://") {
			target = full
		}
		if ok, err := path.Match(p, target); err == nil && ok {
			return true
		}
	}
	return false
}
