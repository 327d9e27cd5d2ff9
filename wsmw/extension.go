package wsmw

import (
	"net/http"
	"strings"
)

// ExtensionParam is one parameter of an extension offer; Value is "" for a bare parameter.
type ExtensionParam struct {
	Name  string
	Value string
}

// ExtensionOffer is one entry of a Sec-WebSocket-Extensions header (RFC 6455 §9.1):
// an extension name with its parameters.
type ExtensionOffer struct {
	Name   string
	Params []ExtensionParam
}

// String formats the offer as it appears in the header.
func (o ExtensionOffer) String() string {
	var b strings.Builder
	b.WriteString(o.Name)
	for _, p := range o.Params {
		b.WriteString("; ")
		b.WriteString(p.Name)
		if p.Value != "" {
			b.WriteByte('=')
			b.WriteString(p.Value)
		}
	}
	return b.String()
}

// FormatExtensions joins offers into one Sec-WebSocket-Extensions value.
func FormatExtensions(offers []ExtensionOffer) string {
	parts := make([]string, len(offers))
	for i, o := range offers {
		parts[i] = o.String()
	}
	return strings.Join(parts, ", ")
}

// ParseExtensions returns the extension offers of every Sec-WebSocket-Extensions
// line in h, in order. Quoted parameter values are unquoted; malformed entries
// (an empty name) are skipped.
func ParseExtensions(h http.Header) []ExtensionOffer {
	var out []ExtensionOffer
	for _, line := range h.Values("Sec-WebSocket-Extensions") {
		for _, entry := range splitOutsideQuotes(line, ',') {
			parts := splitOutsideQuotes(entry, ';')
			name := strings.TrimSpace(parts[0])
			if name == "" {
				continue
			}
			o := ExtensionOffer{Name: name}
			for _, p := range parts[1:] {
				k, v, _ := strings.Cut(p, "=")
				k = strings.TrimSpace(k)
				if k == "" {
					continue
				}
				v = strings.TrimSpace(v)
				if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
					v = v[1 : len(v)-1]
				}
				o.Params = append(o.Params, ExtensionParam{Name: k, Value: v})
			}
			out = append(out, o)
		}
	}
	return out
}

// splitOutsideQuotes splits s at sep, ignoring separators inside double quotes.
func splitOutsideQuotes(s string, sep byte) []string {
	var out []string
	quoted := false
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case '\\':
			if quoted {
				i++
			}
		case sep:
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// ExtensionNegotiator decides which offered extensions a server accepts. It
// returns the accepted entries for the response header and the RSV bits those
// extensions use on frames (RSV1 for permessage-deflate); frames with other RSV
// bits set still fail with 1002.
type ExtensionNegotiator func(r *http.Request, offers []ExtensionOffer) (accepted []ExtensionOffer, rsv byte)
