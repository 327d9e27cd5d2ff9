package proxy

import (
	"errors"
	"time"

	"github.com/wsgate/wsgate/internal/relay"
	"github.com/wsgate/wsgate/wsmw"
)

// Every way a session ends goes through here. The rule: the side that did
// nothing wrong (the innocent leg) hears at once, whatever the other leg does
// next. A leg that is gone or that offended gets no wait from the other:
//   - a leg that vanished, died (keepalive) or stopped reading (write timeout):
//     the other leg gets 1014 if it was the upstream, 1001 if it was the client;
//   - a leg that broke the protocol or a limit (wsmw failed it with 1002, 1007
//     or 1009, and finishes its close handshake in the background) or whose
//     message an inspector closed on: the same codes, sent concurrently with
//     the offender's own close handshake;
//   - a close frame from either side is forwarded with its code and reason.
// Every remaining close handshake is bounded by CloseTimeout (beginClosing).

// blame is the close the other side gets when leg l is gone or offended,
// with what it did: 1014 (bad gateway) to the client when the upstream did,
// 1001 (going away) to the upstream when the client did.
func (s *session) blame(l *leg, what string) (wsmw.StatusCode, string) {
	if l == &s.up {
		return wsmw.StatusBadGateway, "upstream " + what
	}
	return wsmw.StatusGoingAway, "client " + what
}

// tell sends dst, at once, the close that says what the other leg, l, did
// (see blame); the drain code instead when the proxy was already ending the
// session.
func (s *session) tell(dst, l *leg, what string) {
	code, reason := s.otherCode(s.blame(l, what))
	s.send(dst, code, reason)
}

// send sends a close to l at once and bounds the rest of the session by
// CloseTimeout; a leg that cannot take it is dropped. The close goes out
// before the session is marked closing: a relayer that then finds its leg
// gone and the session closing takes the close as sent.
func (s *session) send(l *leg, code wsmw.StatusCode, reason string) {
	s.armWrite(l)
	if err := relay.SendClose(l.conn, code, reason); err != nil && !errors.Is(err, wsmw.ErrCloseSent) {
		l.conn.CloseNow()
	}
	s.beginClosing()
}

// readFailed handles a read error on src: a protocol violation (wsmw already sent
// the code to src), a vanished peer, or the end of a close handshake.
func (s *session) readFailed(src, dst *leg, err error) {
	var fe *wsmw.FailError
	switch {
	case errors.As(err, &fe):
		// src is closed by wsmw once its close handshake ends, in the background.
		s.end(fe.Code, fe.Reason, initiatorProxy, err)
		s.tell(dst, src, "violated the protocol")
	case s.closing.Load():
		// The close handshake timed out or was completed by the other relayer.
		src.conn.CloseNow()
		if ce := relay.CloseReceived(dst.conn); ce != nil {
			// dst's close went to src, which will not answer it now: answer it here.
			s.armWrite(dst)
			_ = relay.SendClose(dst.conn, ce.Code, ce.Reason)
			dst.conn.CloseNow()
		} else if !relay.CloseSent(dst.conn) {
			dst.conn.CloseNow()
		}
	default:
		// src vanished without a close frame.
		s.end(wsmw.StatusAbnormalClosure, "", src.name, err)
		s.tell(dst, src, "went away")
		src.conn.CloseNow() // after the close to dst, so the relayer reading dst finds it sent
	}
}

// writeFailed handles a failed write to dst. A close already sent to dst only
// means data is no longer forwarded; any other error means dst is gone.
func (s *session) writeFailed(src, dst *leg, err error) {
	if errors.Is(err, wsmw.ErrCloseSent) {
		return
	}
	s.end(wsmw.StatusAbnormalClosure, "", dst.name, err)
	s.tell(src, dst, "went away")
	dst.conn.CloseNow() // after the close to src, so the relayer reading dst finds it sent
}

// legDead handles a leg that stopped answering keepalive pings like one that vanished.
func (s *session) legDead(l *leg, err error) {
	s.end(wsmw.StatusAbnormalClosure, "", l.name, err)
	// The dead leg gets nothing more. Its relayer wakes now: until beginClosing,
	// it takes the vanished-peer path and sends the other leg the same close
	// itself, so the other leg is never dropped without one.
	l.conn.CloseNow()
	s.tell(s.other(l), l, "went away")
}

// policyClose ends the session for an inspector's Close verdict on a message
// from src: the verdict's code (1008 by default) to src, and at once the
// blame for src to dst.
func (s *session) policyClose(src, dst *leg, v Verdict) {
	code := v.Code
	if code == 0 {
		code = wsmw.StatusPolicyViolation
	}
	s.end(code, v.Reason, initiatorProxy, nil)
	s.send(src, code, v.Reason)
	code, reason := s.blame(src, "message refused")
	s.send(dst, code, reason)
}

// closeReceived forwards src's close to dst with its code and reason, and
// finishes each leg whose close handshake is now complete.
func (s *session) closeReceived(src, dst *leg) {
	ce := relay.CloseReceived(src.conn)
	s.end(ce.Code, ce.Reason, src.name, nil)
	code, reason := ce.Code, ce.Reason
	s.mu.Lock()
	if s.endedBy == initiatorProxy {
		// src answers the proxy's own close: dst gets the proxy's close, which
		// this forward may otherwise overtake.
		code, reason = s.endCode, s.endReason
	}
	s.mu.Unlock()
	s.beginClosing()
	s.armWrite(dst)
	_ = relay.SendClose(dst.conn, code, reason) // 1005 is sent as an empty body
	if relay.CloseSent(src.conn) {
		src.conn.CloseNow()
	}
	if relay.CloseReceived(dst.conn) != nil {
		dst.conn.CloseNow()
	}
}

// closeBoth closes both legs with code (idle timeout, lifetime).
func (s *session) closeBoth(code wsmw.StatusCode, reason, by string) {
	s.end(code, reason, by, nil)
	s.beginClosing()
	for _, l := range []*leg{&s.client, &s.up} {
		_ = relay.SendClose(l.conn, code, reason)
	}
}

// drain ends the session for Shutdown and Drain without losing what the upstream
// already sent: the upstream gets code first, its remaining frames and its close
// answer go on to the client, and then the client gets code too. Messages the
// client sends after the drain began are not forwarded. An upstream still
// working through what the client sent before is read for as long as it keeps
// sending, each frame granting it another CloseTimeout, until deadline (the
// Shutdown context's; none: CloseTimeout from now); one silent for
// CloseTimeout is treated as gone, and the client still gets code.
func (s *session) drain(code wsmw.StatusCode, reason string, deadline time.Time) {
	s.end(code, reason, initiatorProxy, nil)
	if deadline.IsZero() {
		deadline = time.Now().Add(s.p.cfg.CloseTimeout)
	}
	s.drainUntil.Store(deadline.UnixNano())
	s.extendDrain()
	s.armWrite(&s.up)
	if err := relay.SendClose(s.up.conn, code, reason); err != nil && !errors.Is(err, wsmw.ErrCloseSent) {
		s.closeBoth(code, reason, initiatorProxy)
	}
}

// extendDrain gives a drained upstream another CloseTimeout to send what it
// still has, within the drain's deadline.
func (s *session) extendDrain() {
	d := min(time.Now().Add(s.p.cfg.CloseTimeout).UnixNano(), s.drainUntil.Load())
	_ = s.up.conn.SetReadDeadline(time.Unix(0, d))
}

// beginClosing bounds what is left of the session by CloseTimeout: both legs'
// reads (and writes) fail after it, and the relayers end.
func (s *session) beginClosing() {
	if !s.closing.CompareAndSwap(false, true) {
		return
	}
	d := time.Now().Add(s.p.cfg.CloseTimeout)
	for _, l := range []*leg{&s.client, &s.up} {
		_ = l.conn.SetReadDeadline(d)
		l.writeDeadline.Store(d.UnixNano())
		_ = l.conn.SetWriteDeadline(d)
	}
}

// end records, once, how the session ended.
func (s *session) end(code wsmw.StatusCode, reason, by string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.endedBy != "" {
		return
	}
	s.endCode, s.endReason, s.endedBy, s.endErr = code, reason, by, err
}

// otherCode returns the close to send to the remaining leg after one ended:
// if the proxy itself was ending the session (a drain), its code; else code and reason.
func (s *session) otherCode(code wsmw.StatusCode, reason string) (wsmw.StatusCode, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.endedBy == initiatorProxy && s.endErr == nil {
		return s.endCode, s.endReason
	}
	return code, reason
}
