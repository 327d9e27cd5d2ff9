//go:build !unix

package wsmw

import (
	"net"
	"time"
)

// tlsIdle is the idle waiting of TLS connections on unix systems; elsewhere
// a TLS connection waits inside crypto/tls.
type tlsIdle struct{ waitSocket bool }

func newTLSIdle(net.Conn) *tlsIdle { return nil }

func (t *tlsIdle) setDeadline(nc net.Conn, d time.Time) error { return nc.SetReadDeadline(d) }

func (r *reader) probe(*tlsIdle) bool { return true }

func (t *tlsIdle) wait() error { return nil }
