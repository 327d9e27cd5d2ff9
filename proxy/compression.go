package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/wsgate/wsgate/internal/relay"
	"github.com/wsgate/wsgate/wsmw"
)

// CompressionMode selects how a proxy handles permessage-deflate (RFC 7692).
//
// Off strips the client's offer: both legs are uncompressed, as without the
// extension.
//
// Passthrough negotiates end to end: the client's permessage-deflate offers go
// upstream, the upstream's answer comes back to the client, and compressed
// frames are forwarded untouched. The proxy inflates a shadow copy of a
// compressed message only when an inspector needs its payload (see
// Inspector.NeedsPayload); Pass then forwards the original compressed frames,
// Replace sends the new payload uncompressed. Inspection needs each compressed
// message to be inflatable on its own, so in a direction where an inspector of
// Config.Inspectors needs payloads the proxy forces no context takeover on the
// sender: client_no_context_takeover in the offer sent upstream and in the
// answer relayed to the client (client→upstream), server_no_context_takeover in
// the offer sent upstream, which the upstream must confirm or the dial fails
// (upstream→client). MaxMessageSize then bounds a message's compressed size on
// the wire and, separately, the size the shadow copy inflates to (1009 beyond,
// 1007 for corrupt data or invalid UTF-8 in text). Inspectors that do not need
// the payload see the compressed length of the first frame in Message.Length.
// Where the sender kept context takeover (no inspector needs payloads in that
// direction), a compressed message cannot be dropped without breaking the
// receiver's window: a Drop verdict given at its first frame closes the
// session with 1011 instead, as does a payload an inspector asks for only in
// some sessions (rather than being inspected wrongly).
//
// Terminate negotiates each leg on its own: ClientCompression with the client,
// UpstreamCompression with the upstream (nil: uncompressed). A message that
// arrives compressed, or goes to a leg that negotiated compression, is
// reassembled whole (bounded by MaxMessageSize on the wire), inflated if it
// was compressed (bounded by MaxMessageSize: 1009 beyond, 1007 for corrupt
// data or invalid UTF-8 in text), handed to the inspectors whole (Payload set
// even for inspectors that did not ask), and written to the other leg as one
// message with that leg's compression, if any (messages under its Threshold go
// uncompressed): the fragmentation is not kept. Only messages between two
// uncompressed ends are forwarded frame by frame as usual. Each leg that
// negotiated compression costs the proxy a receive window and, with context
// takeover, a compressor per session.
type CompressionMode uint8

// Compression modes.
const (
	CompressionOff         CompressionMode = iota // strip the offer (default)
	CompressionPassthrough                        // negotiate end to end, forward compressed frames
	CompressionTerminate                          // negotiate each leg, inflate and recompress
)

var compressionNames = [...]string{"off", "passthrough", "terminate"}

func (m CompressionMode) String() string {
	if int(m) < len(compressionNames) {
		return compressionNames[m]
	}
	return fmt.Sprintf("CompressionMode(%d)", m)
}

// ParseCompressionMode parses "off", "passthrough" or "terminate"; "" is off.
func ParseCompressionMode(s string) (CompressionMode, error) {
	if s == "" {
		return CompressionOff, nil
	}
	for i, n := range compressionNames {
		if s == n {
			return CompressionMode(i), nil
		}
	}
	return 0, fmt.Errorf("proxy: unknown compression mode %q (valid: off, passthrough, terminate)", s)
}

// Extension parameters the proxy adds in passthrough mode.
const (
	clientNoCT = "client_no_context_takeover"
	serverNoCT = "server_no_context_takeover"
)

// deflateOffers returns, in passthrough mode, the client's well-formed
// permessage-deflate offers to send upstream, with no context takeover asked
// for in each direction whose messages an inspector inflates.
func (p *Proxy) deflateOffers(r *http.Request) []wsmw.ExtensionOffer {
	if p.cfg.Compression != CompressionPassthrough {
		return nil
	}
	var out []wsmw.ExtensionOffer
	for _, o := range wsmw.ParseExtensions(r.Header) {
		if !strings.EqualFold(o.Name, wsmw.PermessageDeflate) || relay.CheckDeflateOffer(o) != nil {
			continue
		}
		o.Name = wsmw.PermessageDeflate
		o.Params = slices.Clone(o.Params)
		if p.inflates[ClientToUpstream] {
			o = withFlag(o, clientNoCT)
		}
		if p.inflates[UpstreamToClient] {
			o = withFlag(o, serverNoCT)
		}
		out = append(out, o)
	}
	return out
}

// withFlag adds a parameter without value to e unless it is there.
func withFlag(e wsmw.ExtensionOffer, name string) wsmw.ExtensionOffer {
	for _, prm := range e.Params {
		if strings.EqualFold(prm.Name, name) {
			return e
		}
	}
	e.Params = append(e.Params, wsmw.ExtensionParam{Name: name})
	return e
}

// dialCompression sets the extension fields of the upstream dial: the
// client's offers and a check of the answer (passthrough), or the upstream
// options (terminate). Off leaves them unset: nothing is offered.
func (p *Proxy) dialCompression(cfg *wsmw.DialConfig, offers []wsmw.ExtensionOffer) {
	switch p.cfg.Compression {
	case CompressionPassthrough:
		if len(offers) == 0 {
			return
		}
		cfg.Extensions = offers
		cfg.AcceptExtensions = func(accepted []wsmw.ExtensionOffer) (byte, error) {
			return wsmw.RSV1, checkRelayedAnswer(offers, accepted)
		}
	case CompressionTerminate:
		cfg.Compression = p.cfg.UpstreamCompression
	}
}

// checkRelayedAnswer accepts an upstream answer that is a single
// permessage-deflate entry valid for one of the offers sent (only names that
// were offered reach it).
func checkRelayedAnswer(offers, accepted []wsmw.ExtensionOffer) error {
	if len(accepted) != 1 {
		return errors.New("permessage-deflate accepted more than once")
	}
	var first error
	for _, o := range offers {
		_, err := relay.CheckDeflateAnswer(o, accepted[0])
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return fmt.Errorf("permessage-deflate: %w", first)
}

// clientCompression sets the extension fields of the client's handshake: the
// upstream's answer relayed (passthrough, when the upstream accepted), or the
// client options (terminate).
func (p *Proxy) clientCompression(sc *wsmw.ServerConfig, up *wsmw.Conn) {
	switch p.cfg.Compression {
	case CompressionPassthrough:
		if !compressed(up) {
			return
		}
		var answer wsmw.ExtensionOffer
		for _, e := range wsmw.ParseExtensions(http.Header{"Sec-Websocket-Extensions": {up.Extensions()}}) {
			if strings.EqualFold(e.Name, wsmw.PermessageDeflate) {
				answer = e
				break
			}
		}
		if answer.Name == "" {
			return
		}
		if p.inflates[ClientToUpstream] {
			// RFC 7692 §7.1.1.2: a server may include client_no_context_takeover in
			// its response whether or not it was offered; the client must honour it.
			answer = withFlag(answer, clientNoCT)
		}
		sc.Extensions = func(_ *http.Request, offers []wsmw.ExtensionOffer) ([]wsmw.ExtensionOffer, byte) {
			for _, o := range offers {
				if strings.EqualFold(o.Name, wsmw.PermessageDeflate) {
					return []wsmw.ExtensionOffer{answer}, wsmw.RSV1
				}
			}
			return nil, 0
		}
	case CompressionTerminate:
		sc.Compression = p.cfg.ClientCompression
	}
}

// senderTakeover reports whether the peer sending on src compresses with
// context takeover (so a message can only be inflated after all before it).
func senderTakeover(dir Direction, src *wsmw.Conn) bool {
	prm, ok := src.Compression()
	if !ok {
		return false
	}
	if dir == ClientToUpstream {
		return !prm.ClientNoContextTakeover
	}
	return !prm.ServerNoContextTakeover
}

// inflateVerdict is the close for a compressed message that could not be
// inflated: 1009 over the size limit, 1007 for corrupt data.
func inflateVerdict(err error) Verdict {
	if errors.Is(err, wsmw.ErrPayloadTooBig) {
		return Verdict{Action: Close, Code: wsmw.StatusMessageTooBig, Reason: "message too big"}
	}
	return Verdict{Action: Close, Code: wsmw.StatusInvalidPayload, Reason: "invalid compressed data"}
}
