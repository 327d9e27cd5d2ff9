package wsmw

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// PermessageDeflate is the extension token of RFC 7692 in Sec-WebSocket-Extensions.
const PermessageDeflate = "permessage-deflate"

// Parameter names of RFC 7692 §7.1.
const (
	pServerNoCT = "server_no_context_takeover"
	pClientNoCT = "client_no_context_takeover"
	pServerBits = "server_max_window_bits"
	pClientBits = "client_max_window_bits"
)

// DefaultCompressionThreshold is the size below which messages are sent uncompressed (128 bytes).
const DefaultCompressionThreshold = 128

// ErrInvalidCompression: a compressed message does not inflate (corrupt DEFLATE data); failed with 1007.
var ErrInvalidCompression = errors.New("websocket: invalid compressed data")

// CompressionOptions enables permessage-deflate (RFC 7692) in ServerConfig or
// DialConfig; nil leaves it off. The zero value compresses messages of 128
// bytes or more at level 1 with context takeover in both directions.
type CompressionOptions struct {
	// Threshold: messages shorter than this are sent uncompressed. 0 means
	// DefaultCompressionThreshold; a negative value compresses every message.
	Threshold int
	// Level is the flate level, 1 (fastest, the default for 0) to 9 (smallest).
	Level int
	// ServerNoContextTakeover: the server compresses each message on its own.
	// A server sets it to hold no compressor between messages (see doc.go); a
	// client sets it to ask the server for that, so it holds no receive window.
	ServerNoContextTakeover bool
	// ClientNoContextTakeover: the client compresses each message on its own.
	// A server sets it to require that of the client; a client sets it to offer it.
	ClientNoContextTakeover bool
	// ServerMaxWindowBits limits the server's LZ77 window to 2^n bytes (8-15; 0 means 15).
	ServerMaxWindowBits int
	// ClientMaxWindowBits limits the client's window (8-15; 0 means 15). A server
	// can ask for it only if the client offered client_max_window_bits.
	ClientMaxWindowBits int
}

// DeflateParams are the negotiated permessage-deflate parameters (RFC 7692 §7.1).
// Window bits are 8 to 15; 15 when the parameter was not negotiated.
type DeflateParams struct {
	ServerNoContextTakeover bool
	ClientNoContextTakeover bool
	ServerMaxWindowBits     int
	ClientMaxWindowBits     int
}

// response formats p as the extension entry of a handshake response; window
// bits of 15 are left out, except server_max_window_bits when serverBits (the
// offer had it, and the server must confirm it).
func (p DeflateParams) response(serverBits bool) ExtensionOffer {
	o := ExtensionOffer{Name: PermessageDeflate}
	if p.ServerNoContextTakeover {
		o.Params = append(o.Params, ExtensionParam{Name: pServerNoCT})
	}
	if p.ClientNoContextTakeover {
		o.Params = append(o.Params, ExtensionParam{Name: pClientNoCT})
	}
	if p.ServerMaxWindowBits < 15 || serverBits {
		o.Params = append(o.Params, ExtensionParam{Name: pServerBits, Value: strconv.Itoa(p.ServerMaxWindowBits)})
	}
	if p.ClientMaxWindowBits < 15 {
		o.Params = append(o.Params, ExtensionParam{Name: pClientBits, Value: strconv.Itoa(p.ClientMaxWindowBits)})
	}
	return o
}

// deflateArgs is one parsed permessage-deflate entry; a window of 0 means the
// parameter is absent, -1 that it is present without a value.
type deflateArgs struct {
	serverNoCT, clientNoCT bool
	serverBits, clientBits int
}

// parseDeflateArgs validates the parameters of one entry: known names, each at
// most once, no value on the no_context_takeover flags, window bits 8-15
// (client_max_window_bits may be bare in an offer).
func parseDeflateArgs(o ExtensionOffer, offer bool) (deflateArgs, error) {
	var a deflateArgs
	seen := map[string]bool{}
	for _, p := range o.Params {
		name := strings.ToLower(p.Name)
		if seen[name] {
			return a, fmt.Errorf("duplicate parameter %s", name)
		}
		seen[name] = true
		var err error
		switch name {
		case pServerNoCT, pClientNoCT:
			if p.Value != "" {
				return a, fmt.Errorf("%s takes no value", name)
			}
			if name == pServerNoCT {
				a.serverNoCT = true
			} else {
				a.clientNoCT = true
			}
		case pServerBits:
			a.serverBits, err = windowBits(p.Value, false)
		case pClientBits:
			a.clientBits, err = windowBits(p.Value, offer)
		default:
			return a, fmt.Errorf("unknown parameter %q", p.Name)
		}
		if err != nil {
			return a, fmt.Errorf("%s: %w", name, err)
		}
	}
	return a, nil
}

// windowBits parses a window-bits value: a decimal 8-15 without leading zeros,
// or -1 for a bare parameter when bareOK.
func windowBits(v string, bareOK bool) (int, error) {
	if v == "" {
		if bareOK {
			return -1, nil
		}
		return 0, errors.New("value required")
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 8 || n > 15 || strconv.Itoa(n) != v {
		return 0, fmt.Errorf("invalid value %q (want 8-15)", v)
	}
	return n, nil
}

// bitsOr returns n when it is a window size (8-15), else d.
func bitsOr(n, d int) int {
	if n >= 8 && n <= 15 {
		return n
	}
	return d
}

// level returns the flate level to use.
func (o *CompressionOptions) level() int {
	if o.Level >= 1 && o.Level <= 9 {
		return o.Level
	}
	return 1
}

// threshold returns the smallest message size that is compressed.
func (o *CompressionOptions) threshold() int {
	switch {
	case o.Threshold < 0:
		return 0
	case o.Threshold == 0:
		return DefaultCompressionThreshold
	}
	return o.Threshold
}

// accept answers one client offer (RFC 7692 §7.1) with the parameters and the
// response entry, or reports why the server declines it.
func (o *CompressionOptions) accept(offer ExtensionOffer) (DeflateParams, ExtensionOffer, error) {
	a, err := parseDeflateArgs(offer, true)
	if err != nil {
		return DeflateParams{}, ExtensionOffer{}, err
	}
	p := DeflateParams{
		ServerNoContextTakeover: a.serverNoCT || o.ServerNoContextTakeover,
		// A client offering client_no_context_takeover is echoed: the server then keeps no receive window.
		ClientNoContextTakeover: a.clientNoCT || o.ClientNoContextTakeover,
		ServerMaxWindowBits:     min(bitsOr(o.ServerMaxWindowBits, 15), bitsOr(a.serverBits, 15)),
		ClientMaxWindowBits:     15,
	}
	if a.clientBits != 0 { // the client can be told its window size
		p.ClientMaxWindowBits = min(bitsOr(o.ClientMaxWindowBits, 15), bitsOr(a.clientBits, 15))
	}
	return p, p.response(a.serverBits != 0), nil
}

// negotiateExtensions is the server side of Sec-WebSocket-Extensions: permessage-deflate
// by cfg.Compression (the first acceptable offer wins), the other offers by cfg.Extensions.
func (cfg *ServerConfig) negotiateExtensions(r *http.Request, offers []ExtensionOffer) (accepted []ExtensionOffer, rsv byte, pmd *deflateState) {
	rest := offers
	if o := cfg.Compression; o != nil {
		rest = nil
		for _, offer := range offers {
			if !strings.EqualFold(offer.Name, PermessageDeflate) {
				rest = append(rest, offer)
				continue
			}
			if pmd != nil {
				continue
			}
			if p, resp, err := o.accept(offer); err == nil {
				pmd = newDeflateState(p, false, o)
				accepted = append(accepted, resp)
				rsv = RSV1
			}
		}
	}
	if cfg.Extensions != nil && len(rest) > 0 {
		more, bits := cfg.Extensions(r, rest)
		accepted = append(accepted, more...)
		rsv |= bits
	}
	return accepted, rsv, pmd
}

// offer is the client's permessage-deflate offer for o.
func (o *CompressionOptions) offer() ExtensionOffer {
	e := ExtensionOffer{Name: PermessageDeflate}
	if o.ServerNoContextTakeover {
		e.Params = append(e.Params, ExtensionParam{Name: pServerNoCT})
	}
	if o.ClientNoContextTakeover {
		e.Params = append(e.Params, ExtensionParam{Name: pClientNoCT})
	}
	if b := bitsOr(o.ServerMaxWindowBits, 15); b < 15 {
		e.Params = append(e.Params, ExtensionParam{Name: pServerBits, Value: strconv.Itoa(b)})
	}
	// Always offered: this side can compress with any window the server asks for.
	cb := ExtensionParam{Name: pClientBits}
	if b := bitsOr(o.ClientMaxWindowBits, 15); b < 15 {
		cb.Value = strconv.Itoa(b)
	}
	e.Params = append(e.Params, cb)
	return e
}

// check validates the server's answer to o.offer() (RFC 7692 §7.1) and returns
// the parameters in force.
func (o *CompressionOptions) check(answer ExtensionOffer) (DeflateParams, error) {
	return checkDeflateAnswer(o.offer(), answer)
}

// extensionOffers is what the client offers: cfg.Extensions, then permessage-deflate for cfg.Compression.
func (cfg *DialConfig) extensionOffers() []ExtensionOffer {
	if cfg.Compression == nil {
		return cfg.Extensions
	}
	var offers []ExtensionOffer
	for _, e := range cfg.Extensions {
		if !strings.EqualFold(e.Name, PermessageDeflate) {
			offers = append(offers, e)
		}
	}
	return append(offers, cfg.Compression.offer())
}

// checkDeflateAnswer takes the permessage-deflate entry out of the server's answer
// when cfg.Compression made the offer, validates it, and returns the other entries.
func (cfg *DialConfig) checkDeflateAnswer(exts []ExtensionOffer) (rest []ExtensionOffer, pmd *deflateState, err error) {
	o := cfg.Compression
	if o == nil {
		return exts, nil, nil
	}
	for _, e := range exts {
		if !strings.EqualFold(e.Name, PermessageDeflate) {
			rest = append(rest, e)
			continue
		}
		if pmd != nil {
			return nil, nil, errors.New("permessage-deflate accepted twice")
		}
		p, err := o.check(e)
		if err != nil {
			return nil, nil, fmt.Errorf("permessage-deflate: %w", err)
		}
		pmd = newDeflateState(p, true, o)
	}
	return rest, pmd, nil
}

// inspectDeflate returns the receive-only state of a Conn whose permessage-deflate
// was negotiated by the caller's own hooks (a proxy relaying the peer's answer): the
// message level leaves its payloads compressed, relay.Inflate decodes them.
func inspectDeflate(extensions string, rsv byte, client bool) *deflateState {
	if rsv&RSV1 == 0 || !strings.Contains(strings.ToLower(extensions), PermessageDeflate) {
		return nil
	}
	for _, e := range ParseExtensions(http.Header{"Sec-Websocket-Extensions": {extensions}}) {
		if !strings.EqualFold(e.Name, PermessageDeflate) {
			continue
		}
		a, err := parseDeflateArgs(e, false)
		if err != nil {
			return nil
		}
		p := DeflateParams{
			ServerNoContextTakeover: a.serverNoCT,
			ClientNoContextTakeover: a.clientNoCT,
			ServerMaxWindowBits:     bitsOr(a.serverBits, 15),
			ClientMaxWindowBits:     bitsOr(a.clientBits, 15),
		}
		return newDeflateState(p, client, nil)
	}
	return nil
}

// Compression returns the negotiated permessage-deflate parameters and whether
// the extension is in effect: a data message whose first frame has RSV1 set is
// then compressed. Frames pass such payloads untouched; Read and Write inflate
// and compress them when the extension came from the Compression option.
func (c *Conn) Compression() (DeflateParams, bool) {
	if c.pmd == nil {
		return DeflateParams{}, false
	}
	return c.pmd.params, true
}

// deflate returns the permessage-deflate state of a new Conn: the one negotiated
// from CompressionOptions, or a receive-only one when the caller's own hooks
// accepted permessage-deflate.
func (cfg *connConfig) deflate(client bool) *deflateState {
	if cfg.pmd != nil {
		return cfg.pmd
	}
	return inspectDeflate(cfg.extensions, cfg.rsvAllowed, client)
}
