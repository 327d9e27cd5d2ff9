package wsmw

import (
	"errors"
	"time"
)

// lingerBudget bounds the bytes a failed connection reads and drops while it
// waits for the peer's close frame.
const lingerBudget = 1 << 20

// fail is _Fail the WebSocket Connection_ (RFC 6455 §7.1.7): it sends a close
// frame with code and returns the *FailError at once, so that the caller (a
// proxy telling the other side, a handler) does not wait for the peer. The
// peer's close is awaited in the background, so that it is not lost to a TCP
// reset, until it arrives, the close timeout passes or 1 MiB has been dropped;
// then the connection is closed. The caller holds r.mu; the background wait
// takes it once the caller's read returns, so it never outlives the
// connection's last read and never holds a buffer past the close.
func (r *reader) fail(code StatusCode, cause error) error {
	if r.err != nil {
		return r.err
	}
	fe := &FailError{Code: code, Reason: failReason(cause), Err: cause}
	r.err = fe
	c := r.c
	c.lingering = make(chan struct{})
	c.failed.Store(fe) // publishes lingering to other goroutines
	if err := c.writeClose(code, fe.Reason); err != nil {
		c.CloseNow()
		r.release()
		close(c.lingering)
		return fe
	}
	go r.linger()
	return fe
}

// failReason is the close reason sent for cause.
func failReason(cause error) string {
	var pe *protoErr
	switch {
	case errors.As(cause, &pe):
		return pe.reason
	case errors.Is(cause, ErrInvalidUTF8):
		return "invalid utf-8 in text message"
	case errors.Is(cause, ErrPayloadTooBig):
		return "message too big"
	case errors.Is(cause, ErrInvalidCompression):
		return "invalid compressed data"
	}
	return "invalid frame"
}

// linger waits for the peer's close after a failure (see fail), then closes
// the connection and signals lingering.
func (r *reader) linger() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drainUntilClose()
	r.c.CloseNow()
	r.release()
	close(r.c.lingering)
}

// drainUntilClose discards incoming frames, without applying any rule, until the
// peer's close frame arrives, the close timeout passes, or lingerBudget bytes
// have been dropped.
func (r *reader) drainUntilClose() {
	_ = r.c.SetReadDeadline(time.Now().Add(r.c.closeTimeout))
	budget := int64(lingerBudget)
	skip := r.remaining
	for budget > 0 {
		for skip > 0 {
			if budget <= 0 {
				return
			}
			if err := r.fill(1); err != nil {
				return
			}
			k := min(int64(r.buffered()), skip)
			r.r += int(k)
			skip -= k
			budget -= k
		}
		if r.fill(2) != nil {
			return
		}
		n := headerSize(r.bp[r.r], r.bp[r.r+1])
		if r.fill(n) != nil {
			return
		}
		h, err := parseHeader(r.bp[r.r : r.r+n])
		r.r += n
		if err != nil {
			return
		}
		if h.OpCode == OpClose {
			r.recordClose(h)
			return
		}
		skip = h.Length
	}
}

// recordClose records the close frame whose header h the drain just read:
// the close handshake of the failed connection is complete.
func (r *reader) recordClose(h Header) {
	n := int(min(h.Length, maxControlPayload))
	if r.fill(n) != nil {
		return
	}
	p := r.ctrl[:copy(r.ctrl[:n], r.bp[r.r:r.r+n])]
	r.r += n
	if h.Masked {
		Mask(h.Mask, 0, p)
	}
	code, reason, err := ParseClosePayload(p)
	if err != nil {
		code, reason = StatusNoStatusRcvd, ""
	}
	r.c.closeRecv.CompareAndSwap(nil, &CloseError{Code: code, Reason: reason})
}

// drained returns a channel closed when the background wait of a failed
// connection (see fail) has ended and the connection is closed; nil when c
// has not failed.
func (c *Conn) drained() <-chan struct{} {
	if c.failed.Load() == nil {
		return nil
	}
	return c.lingering
}
