package wsmw

import (
	"errors"
	"fmt"
	"strings"
)

// Checks of permessage-deflate entries for code that relays the negotiation
// itself (a proxy forwarding a client's offers upstream and the upstream's
// answer back) instead of using CompressionOptions.

// checkDeflateOffer validates o as a permessage-deflate offer of a client
// handshake (RFC 7692 §7.1): the extension name, known parameters, each at most
// once, no value on the no_context_takeover flags, window bits 8-15
// (client_max_window_bits may also be bare).
func checkDeflateOffer(o ExtensionOffer) error {
	if !strings.EqualFold(o.Name, PermessageDeflate) {
		return fmt.Errorf("extension %q is not %s", o.Name, PermessageDeflate)
	}
	_, err := parseDeflateArgs(o, true)
	return err
}

// checkDeflateAnswer validates answer, a server's permessage-deflate response
// entry, as the acceptance of offer (RFC 7692 §7.1), and returns the parameters
// then in force: server_no_context_takeover must be confirmed when offered, and
// server_max_window_bits when offered below 15; no window may exceed the one
// offered; client_max_window_bits may only be answered when offered.
func checkDeflateAnswer(offer, answer ExtensionOffer) (DeflateParams, error) {
	if !strings.EqualFold(offer.Name, PermessageDeflate) || !strings.EqualFold(answer.Name, PermessageDeflate) {
		return DeflateParams{}, fmt.Errorf("not a %s entry", PermessageDeflate)
	}
	o, err := parseDeflateArgs(offer, true)
	if err != nil {
		return DeflateParams{}, fmt.Errorf("offer: %w", err)
	}
	a, err := parseDeflateArgs(answer, false)
	if err != nil {
		return DeflateParams{}, err
	}
	wantServer, wantClient := bitsOr(o.serverBits, 15), bitsOr(o.clientBits, 15)
	switch {
	case o.serverNoCT && !a.serverNoCT:
		return DeflateParams{}, errors.New("server_no_context_takeover was offered but not confirmed")
	case wantServer < 15 && a.serverBits == 0:
		return DeflateParams{}, errors.New("server_max_window_bits was offered but not confirmed")
	case a.serverBits > wantServer:
		return DeflateParams{}, fmt.Errorf("server_max_window_bits=%d exceeds the %d offered", a.serverBits, wantServer)
	case a.clientBits != 0 && o.clientBits == 0:
		return DeflateParams{}, errors.New("client_max_window_bits was answered but not offered")
	case a.clientBits > wantClient:
		return DeflateParams{}, fmt.Errorf("client_max_window_bits=%d exceeds the %d offered", a.clientBits, wantClient)
	}
	return DeflateParams{
		ServerNoContextTakeover: a.serverNoCT,
		ClientNoContextTakeover: a.clientNoCT || o.clientNoCT,
		ServerMaxWindowBits:     bitsOr(a.serverBits, 15),
		ClientMaxWindowBits:     min(bitsOr(a.clientBits, 15), wantClient),
	}, nil
}
