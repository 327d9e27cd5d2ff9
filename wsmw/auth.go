package wsmw

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"net/http"
	"slices"
	"strings"
)

// AuthScheme selects how Credentials authenticate the handshake.
type AuthScheme int

const (
	// AuthAny sends nothing up front and answers a 401 with the strongest scheme it challenges: Digest, else Basic.
	AuthAny AuthScheme = iota
	// AuthBasic sends Basic credentials (RFC 7617) with the first request, and only those.
	AuthBasic
	// AuthDigest answers only a Digest challenge (RFC 7616); the password never crosses the wire.
	AuthDigest
)

// Credentials authenticate the client handshake with HTTP Basic or Digest. A 401
// is answered at most once, on a new connection; a second 401 is ErrUnauthorized.
type Credentials struct {
	Username string
	Password string
	Scheme   AuthScheme
}

// basic returns the Basic Authorization value (RFC 7617 §2).
func (c *Credentials) basic() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(c.Username+":"+c.Password))
}

// answer returns the Authorization value for a 401's challenges: Digest when one
// is usable (unless Scheme is AuthBasic), else Basic if challenged and not sent yet.
func (c *Credentials) answer(h http.Header, sentBasic bool, method, uri string) (string, error) {
	chs := parseChallenges(h.Values("WWW-Authenticate"))
	if c.Scheme != AuthBasic {
		if d, ok := strongestDigest(chs); ok {
			var b [16]byte
			_, _ = rand.Read(b[:])
			return d.authorization(c.Username, c.Password, method, uri, hex.EncodeToString(b[:])), nil
		}
	}
	basicAsked := slices.ContainsFunc(chs, func(ch authChallenge) bool { return ch.scheme == "basic" })
	switch {
	case sentBasic:
		return "", errors.New("server refused the credentials")
	case c.Scheme != AuthDigest && basicAsked:
		return c.basic(), nil
	}
	return "", errors.New("no supported authentication challenge in WWW-Authenticate")
}

// authChallenge is one challenge of a WWW-Authenticate field (RFC 9110 §11.6.1).
type authChallenge struct {
	scheme string            // lower-cased
	params map[string]string // lower-cased names, unquoted values
}

// parseChallenges splits WWW-Authenticate values into challenges. A token followed
// by "=" is a parameter of the current challenge; any other token starts a new one.
// Malformed parts are skipped.
func parseChallenges(values []string) []authChallenge {
	var out []authChallenge
	for _, s := range values {
		for {
			s = strings.TrimLeft(s, " \t,")
			if s == "" {
				break
			}
			i := strings.IndexAny(s, " \t,=")
			if i < 0 {
				i = len(s)
			}
			tok, rest := s[:i], s[i:]
			if tok == "" { // a stray "="
				s = s[1:]
				continue
			}
			after := strings.TrimLeft(rest, " \t")
			if !strings.HasPrefix(after, "=") {
				out = append(out, authChallenge{scheme: strings.ToLower(tok), params: map[string]string{}})
				s = rest
				continue
			}
			var val string
			val, s = parseParamValue(strings.TrimLeft(after[1:], " \t"))
			if len(out) > 0 {
				out[len(out)-1].params[strings.ToLower(tok)] = val
			}
		}
	}
	return out
}

// parseParamValue reads a quoted-string (unescaping it) or a token from the start of s.
func parseParamValue(s string) (val, rest string) {
	if !strings.HasPrefix(s, `"`) {
		i := strings.IndexAny(s, " \t,")
		if i < 0 {
			i = len(s)
		}
		return s[:i], s[i:]
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			}
		case '"':
			return b.String(), s[i+1:]
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String(), "" // unterminated: take what there is
}

// digestHash is a Digest algorithm name and its hash function.
type digestHash struct {
	name string
	new  func() hash.Hash
}

// digestHashes are the algorithms of RFC 7616 §6.1 (plus "-sess" variants), ranked by strength.
var digestHashes = []digestHash{
	{"MD5", md5.New},
	{"SHA-256", sha256.New},
	{"SHA-512-256", sha512.New512_256},
}

// digestChallenge is a Digest challenge this client can answer (RFC 7616 §3.3).
type digestChallenge struct {
	realm, nonce string
	opaque       string
	hasOpaque    bool
	algorithm    string // canonical name to echo ("SHA-256-sess" ...); "" when the server named none (MD5)
	hash         func() hash.Hash
	rank         int
	sess         bool   // A1 includes nonce and cnonce
	qop          string // "auth", "auth-int" or "" (RFC 2069 compatibility)
	userhash     bool   // send H(username ":" realm) instead of the username
}

// parseDigest checks that ch is a Digest challenge with a known algorithm and qop.
func parseDigest(ch authChallenge) (digestChallenge, bool) {
	p := ch.params
	d := digestChallenge{realm: p["realm"], nonce: p["nonce"]}
	d.opaque, d.hasOpaque = p["opaque"]
	if ch.scheme != "digest" || d.nonce == "" {
		return d, false
	}
	alg := p["algorithm"]
	base, sess := strings.CutSuffix(strings.ToUpper(alg), "-SESS")
	if alg == "" {
		base = "MD5"
	}
	d.rank = slices.IndexFunc(digestHashes, func(h digestHash) bool { return h.name == base })
	if d.rank < 0 {
		return d, false
	}
	d.hash, d.sess = digestHashes[d.rank].new, sess
	if alg != "" {
		d.algorithm = base
		if sess {
			d.algorithm += "-sess"
		}
	}
	if q, ok := p["qop"]; ok {
		var opts []string
		for _, o := range strings.Split(q, ",") {
			opts = append(opts, strings.ToLower(strings.TrimSpace(o)))
		}
		switch {
		case slices.Contains(opts, "auth"):
			d.qop = "auth"
		case slices.Contains(opts, "auth-int"):
			d.qop = "auth-int" // the handshake has no body: its hash is H("")
		default:
			return d, false
		}
	} else if sess {
		return d, false // -sess needs a cnonce, which only qop carries
	}
	d.userhash = strings.EqualFold(p["userhash"], "true")
	return d, true
}

// strongestDigest returns the usable Digest challenge with the strongest algorithm, the first on ties.
func strongestDigest(chs []authChallenge) (digestChallenge, bool) {
	var best digestChallenge
	found := false
	for _, ch := range chs {
		if d, ok := parseDigest(ch); ok && (!found || d.rank > best.rank) {
			best, found = d, true
		}
	}
	return best, found
}

// h returns the lower-case hex digest of s (H in RFC 7616 §3.4).
func (d *digestChallenge) h(s string) string {
	hh := d.hash()
	_, _ = io.WriteString(hh, s)
	return hex.EncodeToString(hh.Sum(nil))
}

// response computes the request-digest of RFC 7616 §3.4.1, or of RFC 2069 when qop is "".
func (d *digestChallenge) response(username, password, method, uri, cnonce, nc string) string {
	ha1 := d.h(username + ":" + d.realm + ":" + password)
	if d.sess {
		ha1 = d.h(ha1 + ":" + d.nonce + ":" + cnonce)
	}
	a2 := method + ":" + uri
	if d.qop == "auth-int" {
		a2 += ":" + d.h("")
	}
	if d.qop == "" {
		return d.h(ha1 + ":" + d.nonce + ":" + d.h(a2))
	}
	return d.h(ha1 + ":" + d.nonce + ":" + nc + ":" + cnonce + ":" + d.qop + ":" + d.h(a2))
}

// authorization renders the Digest Authorization value (RFC 7616 §3.4) for the
// first use of the nonce (nc=00000001). It is deterministic given cnonce.
func (d *digestChallenge) authorization(username, password, method, uri, cnonce string) string {
	const nc = "00000001"
	var b strings.Builder
	b.WriteString("Digest ")
	switch {
	case d.userhash:
		b.WriteString("username=" + quote(d.h(username+":"+d.realm)))
	case needsExtValue(username):
		b.WriteString("username*=UTF-8''" + extValue(username)) // RFC 7616 §3.4.4
	default:
		b.WriteString("username=" + quote(username))
	}
	b.WriteString(", realm=" + quote(d.realm) + ", uri=" + quote(uri))
	if d.algorithm != "" {
		b.WriteString(", algorithm=" + d.algorithm)
	}
	b.WriteString(", nonce=" + quote(d.nonce))
	if d.qop != "" {
		b.WriteString(", nc=" + nc + ", cnonce=" + quote(cnonce) + ", qop=" + d.qop)
	}
	b.WriteString(", response=" + quote(d.response(username, password, method, uri, cnonce, nc)))
	if d.hasOpaque {
		b.WriteString(", opaque=" + quote(d.opaque))
	}
	if d.userhash {
		b.WriteString(", userhash=true")
	}
	return b.String()
}

// quote renders s as a quoted-string (RFC 9110 §5.6.4).
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// needsExtValue reports whether s cannot go in a quoted-string (non-ASCII or control bytes).
func needsExtValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c >= 0x7f {
			return true
		}
	}
	return false
}

// extValue percent-encodes s as the value-chars of an RFC 8187 ext-value.
func extValue(s string) string {
	const attrChar = "!#$&+-.^_`|~"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(attrChar, c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteString("%" + strings.ToUpper(hex.EncodeToString([]byte{c})))
	}
	return b.String()
}
