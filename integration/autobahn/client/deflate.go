package main

import (
	"fmt"
	"strings"

	"github.com/wsgate/wsgate/wsmw"
)

// deflateMode is the value of -deflate: what the client offers of permessage-deflate.
type deflateMode string

const (
	// deflateOff offers no compression: the suite reports 12.* and 13.* UNIMPLEMENTED.
	deflateOff deflateMode = "off"
	// deflateOn offers permessage-deflate with context takeover in both
	// directions (the offer browsers make); the server may still ask for less.
	deflateOn deflateMode = "on"
	// deflateNoContextTakeover offers server_no_context_takeover and
	// client_no_context_takeover: each message is compressed on its own both ways.
	deflateNoContextTakeover deflateMode = "no-context-takeover"
)

// deflateModes lists the values -deflate takes.
var deflateModes = []deflateMode{deflateOn, deflateNoContextTakeover, deflateOff}

func (m *deflateMode) String() string { return string(*m) }

// Set implements flag.Value.
func (m *deflateMode) Set(s string) error {
	for _, v := range deflateModes {
		if string(v) == s {
			*m = v
			return nil
		}
	}
	return fmt.Errorf("want one of %v", deflateModes)
}

// compression returns the permessage-deflate options for cfg, nil when off.
// Every message is compressed (Threshold -1): the suite's smallest messages
// are 16 bytes, below wsmw's default threshold.
func (cfg config) compression() *wsmw.CompressionOptions {
	if cfg.deflate == deflateOff || cfg.deflate == "" {
		return nil
	}
	nct := cfg.deflate == deflateNoContextTakeover
	return &wsmw.CompressionOptions{
		Threshold:               -1,
		ServerNoContextTakeover: nct,
		ClientNoContextTakeover: nct,
		ServerMaxWindowBits:     cfg.serverBits,
		ClientMaxWindowBits:     cfg.clientBits,
	}
}

// checkWindowBits rejects window sizes RFC 7692 does not have.
func (cfg config) checkWindowBits() error {
	for _, b := range []struct {
		name string
		n    int
	}{{"server-max-window-bits", cfg.serverBits}, {"client-max-window-bits", cfg.clientBits}} {
		if b.n != 0 && (b.n < 8 || b.n > 15) {
			return fmt.Errorf("-%s %d: want 8 to 15, or 0", b.name, b.n)
		}
	}
	return nil
}

// describeDeflate formats the permessage-deflate parameters in force on c for the log.
func describeDeflate(c *wsmw.Conn) string {
	p, ok := c.Compression()
	if !ok {
		return "no compression"
	}
	var b strings.Builder
	b.WriteString("permessage-deflate")
	if p.ServerNoContextTakeover {
		b.WriteString(" server_no_context_takeover")
	}
	if p.ClientNoContextTakeover {
		b.WriteString(" client_no_context_takeover")
	}
	fmt.Fprintf(&b, " server_max_window_bits=%d client_max_window_bits=%d", p.ServerMaxWindowBits, p.ClientMaxWindowBits)
	return b.String()
}
