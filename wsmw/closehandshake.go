package wsmw

import (
	"errors"
	"time"
)

// writeClose sends a close frame with code and reason (an empty body for codes
// that are not valid on the wire, such as 1005). Only one close frame is ever sent.
func (c *Conn) writeClose(code StatusCode, reason string) error {
	var a [maxControlPayload]byte
	return c.writeControl(OpClose, AppendClosePayload(a[:0], code, reason))
}

// sendClose sends a close frame without waiting for the answer; a proxy
// forwarding a close completes the handshake with Close later. Codes 1005,
// 1006 and 1015 are sent as an empty body; other invalid codes are refused.
func (c *Conn) sendClose(code StatusCode, reason string) error {
	if !code.ValidOnWire() && code != StatusNoStatusRcvd && code != StatusAbnormalClosure && code != StatusTLSHandshake {
		return ErrBadWrite
	}
	return c.writeClose(code, reason)
}

// Close performs the closing handshake (RFC 6455 §7.1.2): it sends a close frame
// with code and reason unless one was sent already, waits up to the close timeout
// for the peer's close frame, and closes the connection. If a reader is active, its
// read returns the peer's close; otherwise Close reads (and drops) incoming frames
// itself until the close arrives. Calling Close after the peer's close is received
// answers it and closes at once.
func (c *Conn) Close(code StatusCode, reason string) error {
	err := c.sendClose(code, reason)
	if errors.Is(err, ErrCloseSent) {
		err = nil
	}
	if err == nil && c.closeRecv.Load() == nil {
		c.waitPeerClose()
	}
	if cerr := c.CloseNow(); err == nil {
		err = cerr
	}
	return err
}

// waitPeerClose waits, bounded by the close timeout, for the peer's close frame.
// A connection that failed waits for it in the background already (see fail).
func (c *Conn) waitPeerClose() {
	deadline := time.Now().Add(c.closeTimeout)
	if ch := c.drained(); ch != nil {
		t := time.NewTimer(c.closeTimeout)
		defer t.Stop()
		select {
		case <-ch:
		case <-t.C:
		}
		return
	}
	if c.rd.mu.TryLock() {
		// No read in progress: read ourselves until the close (or an error) arrives.
		defer c.rd.mu.Unlock()
		_ = c.SetReadDeadline(deadline)
		for {
			if _, err := c.rd.nextFrame(); err != nil {
				return
			}
		}
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-c.peerDone:
	case <-t.C:
	}
}
