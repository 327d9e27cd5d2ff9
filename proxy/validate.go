package proxy

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/wsgate/wsgate/wsmw"
)

// ConfigError is an invalid Config field. Field names it as a Go selector of
// Config ("PingTimeout", "ActiveHealth.Interval"), and Problem says what is
// wrong, naming other fields the same way; adapters such as Caddy's module
// rename the selectors to their own configuration's names.
type ConfigError struct {
	Field   string
	Problem string
}

func (e *ConfigError) Error() string { return "proxy: " + e.Field + " " + e.Problem }

func configErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// Validate reports the first invalid field of c as a *ConfigError, without
// changing c. New calls it, and so does Caddy's module, so that both accept
// the same configurations.
func (c *Config) Validate() error {
	for _, check := range []func() error{
		c.validateUpstreams, c.validateDurations, c.validateLimits,
		c.validatePing, c.validateHeaders, c.validateHealth,
	} {
		if err := check(); err != nil {
			return err
		}
	}
	if c.Compression > CompressionTerminate {
		return configErr("Compression", "is not a known mode (%d)", c.Compression)
	}
	return nil
}

func (c *Config) validateUpstreams() error {
	if c.Source == nil && len(c.Upstreams) == 0 {
		return configErr("Upstreams", "is empty and there is no Source")
	}
	for _, raw := range c.Upstreams {
		if _, err := parseUpstreamURL(raw, c.UpstreamTLS != nil); err != nil {
			return &ConfigError{Field: "Upstreams", Problem: err.Error()}
		}
	}
	return nil
}

func (c *Config) validateDurations() error {
	for _, d := range []struct {
		field string
		d     time.Duration
	}{
		{"TryDuration", c.TryDuration}, {"TryInterval", c.TryInterval}, {"DialTimeout", c.DialTimeout},
		{"IdleTimeout", c.IdleTimeout}, {"MaxLifetime", c.MaxLifetime}, {"WriteTimeout", c.WriteTimeout},
		{"CloseTimeout", c.CloseTimeout}, {"PingInterval", c.PingInterval}, {"PingTimeout", c.PingTimeout},
		{"PassiveHealth.FailDuration", c.PassiveHealth.FailDuration},
	} {
		if d.d < 0 {
			return configErr(d.field, "must not be negative")
		}
	}
	return nil
}

func (c *Config) validateLimits() error {
	for _, n := range []struct {
		field string
		n     int64
	}{
		{"Retries", int64(c.Retries)}, {"MaxSessions", int64(c.MaxSessions)},
		{"MaxFrameSize", c.MaxFrameSize}, {"MaxMessageSize", c.MaxMessageSize},
		{"MaxMessageSizeUp", c.MaxMessageSizeUp}, {"MaxMessageSizeDown", c.MaxMessageSizeDown},
		{"PassiveHealth.MaxFails", int64(c.PassiveHealth.MaxFails)},
		{"MaxHeaderBytes", int64(c.MaxHeaderBytes)}, {"MaxHeaders", int64(c.MaxHeaders)},
	} {
		if n.n < 0 {
			return configErr(n.field, "must not be negative")
		}
	}
	if c.DrainCode != 0 && !c.DrainCode.ValidOnWire() {
		return configErr("DrainCode", "%d cannot be sent in a close frame (use 1012 or 1001)", c.DrainCode)
	}
	return nil
}

func (c *Config) validatePing() error {
	switch {
	case c.PingTimeout > 0 && c.PingInterval == 0:
		return configErr("PingTimeout", "requires PingInterval")
	case c.PingInterval > 0 && c.PingTimeout >= c.PingInterval:
		return configErr("PingTimeout", "(%v) must be shorter than PingInterval (%v)", c.PingTimeout, c.PingInterval)
	}
	return nil
}

func (c *Config) validateHeaders() error {
	for _, set := range []http.Header{c.HeaderUp.Set, c.HeaderUp.Add} {
		for k := range set {
			if handshakeHeader(k) {
				return configErr("HeaderUp", "cannot set %s: it belongs to the handshake", http.CanonicalHeaderKey(k))
			}
		}
	}
	return nil
}

func (c *Config) validateHealth() error {
	a := c.ActiveHealth
	if a == nil {
		return nil
	}
	switch {
	case a.Interval < 0:
		return configErr("ActiveHealth.Interval", "must not be negative")
	case a.Timeout < 0:
		return configErr("ActiveHealth.Timeout", "must not be negative")
	case a.Passes < 0:
		return configErr("ActiveHealth.Passes", "must not be negative")
	case a.Fails < 0:
		return configErr("ActiveHealth.Fails", "must not be negative")
	}
	if _, err := url.Parse(a.Path); err != nil {
		return configErr("ActiveHealth.Path", "does not parse: %v", err)
	}
	return nil
}

// handshakeHeader reports whether a header belongs to the upstream handshake
// itself, and so cannot be set by configuration.
func handshakeHeader(k string) bool {
	k = http.CanonicalHeaderKey(k)
	return k == "Upgrade" || k == "Connection" || strings.HasPrefix(k, "Sec-Websocket-")
}

// withDefaults returns c with the defaults of its zero fields filled in.
func (c Config) withDefaults() Config {
	if c.Balancer == nil {
		c.Balancer = Random()
	}
	setDefault(&c.TryInterval, DefaultTryInterval)
	setDefault(&c.DialTimeout, DefaultDialTimeout)
	setDefault(&c.WriteTimeout, DefaultWriteTimeout)
	setDefault(&c.CloseTimeout, DefaultCloseTimeout)
	if c.PingInterval > 0 && c.PingTimeout == 0 {
		c.PingTimeout = c.PingInterval / 2
	}
	if c.DrainCode == 0 {
		c.DrainCode = DefaultDrainCode
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.MaxHeaders == 0 {
		c.MaxHeaders = DefaultMaxHeaders
	}
	if c.Compression == CompressionTerminate && c.ClientCompression == nil {
		// The proxy holds no compressor between messages (~800 KiB per session
		// with context takeover); clients may still use theirs.
		c.ClientCompression = &wsmw.CompressionOptions{ServerNoContextTakeover: true}
	}
	return c
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}
