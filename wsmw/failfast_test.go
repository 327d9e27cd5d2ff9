package wsmw

import (
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// A failed connection (RFC 6455 §7.1.7) reports the failure to its reader at
// once and waits for the peer's close in the background, bounded by the close
// timeout; the connection is closed once the peer answered or the time ran out.

// failWithin is how soon a read must return the *FailError after the
// violation arrives: a fraction of any close timeout used here.
const failWithin = 100 * time.Millisecond

// violate has the raw peer of c send a frame with RSV1 set, which no
// extension allows: c fails with 1002 whichever its role.
func violate(t *testing.T, raw net.Conn, connIsClient bool) {
	t.Helper()
	if _, err := raw.Write(rawFrame(true, RSV1, OpBinary, !connIsClient, []byte("x"))); err != nil {
		t.Fatal(err)
	}
}

// failNow reads c with read while its peer violates the protocol, checks that
// the read returns the *FailError within failWithin and that the peer gets
// the 1002 close; it returns when the violation was sent.
func failNow(t *testing.T, c *Conn, raw net.Conn, client bool, read func(*Conn) error) time.Time {
	t.Helper()
	res := async(func() error { return read(c) })
	start := time.Now()
	violate(t, raw, client)
	err := waitErr(t, res, 3*time.Second, "the read")
	if d := time.Since(start); d > failWithin {
		t.Errorf("the read returned after %v, want within %v", d, failWithin)
	}
	checkFail(t, err, StatusProtocolError, ErrProtocol)
	if c.drained() == nil {
		t.Fatal("a failed connection has no background close handshake")
	}
	return start
}

// eachRoleAndRead runs f as parallel subtests for a server and a client Conn
// over TCP, read with NextFrame and with ReadMessage, and checks that no
// goroutine outlives them.
func eachRoleAndRead(t *testing.T, f func(t *testing.T, client bool, read func(*Conn) error)) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // after every subtest and its cleanups
	for _, client := range []bool{false, true} {
		for _, m := range readModes {
			t.Run(map[bool]string{false: "server/", true: "client/"}[client]+m.name, func(t *testing.T) {
				t.Parallel()
				f(t, client, m.read)
			})
		}
	}
}

// TestFailReturnsAtOnceWithoutThePeersClose: the peer never answers the 1002;
// the reader has its *FailError at once all the same, and the connection is
// closed (clean EOF for the peer) about the close timeout later.
func TestFailReturnsAtOnceWithoutThePeersClose(t *testing.T) {
	eachRoleAndRead(t, func(t *testing.T, client bool, read func(*Conn) error) {
		const timeout = time.Second
		c, raw := tcpPair(t, client, connConfig{closeTimeout: timeout})
		start := failNow(t, c, raw, client, read)
		if code, reason, _ := expectClose(t, raw, failWithin); code != StatusProtocolError || reason != "reserved bits set without a negotiated extension" {
			t.Errorf("peer got close %v %q", code, reason)
		}
		select {
		case <-c.drained():
			t.Fatal("the background close handshake ended before the peer answered or the close timeout")
		default:
		}
		expectEOF(t, raw, timeout+2*time.Second)
		if d := time.Since(start); d < timeout-100*time.Millisecond || d > timeout+1500*time.Millisecond {
			t.Errorf("connection closed %v after the violation, want about the close timeout (%v)", d, timeout)
		}
		select {
		case <-c.drained():
		case <-time.After(time.Second):
			t.Error("the background close handshake did not end with the connection")
		}
	})
}

// TestFailReadsThePeersAnswer: a peer that answers the 1002, late and after
// more frames, has its close read before the connection is closed: it sees a
// clean EOF (no reset), at once, not after the close timeout.
func TestFailReadsThePeersAnswer(t *testing.T) {
	eachRoleAndRead(t, func(t *testing.T, client bool, read func(*Conn) error) {
		const timeout = 5 * time.Second
		c, raw := tcpPair(t, client, connConfig{closeTimeout: timeout})
		failNow(t, c, raw, client, read)
		expectClose(t, raw, time.Second)
		time.Sleep(100 * time.Millisecond) // the answer comes well after the read returned
		answered := time.Now()
		more := rawFrame(true, 0, OpText, !client, []byte("late data"))
		if _, err := raw.Write(concat(more, rawFrame(true, 0, OpPing, !client, nil), closeReply(client, StatusProtocolError))); err != nil {
			t.Fatal(err)
		}
		expectEOF(t, raw, 2*time.Second)
		if d := time.Since(answered); d > time.Second {
			t.Errorf("connection closed %v after the peer's answer, want at once (close timeout %v)", d, timeout)
		}
	})
}

// TestCloseAfterFailWaitsForTheBackgroundHandshake: Close called after a
// failure (as Middleware does when a handler returns) waits for the close
// handshake under way instead of cutting it: the peer's late answer is read
// (clean EOF, no reset), no second close frame is sent, and with a silent
// peer Close returns after the close timeout. The peer's close is recorded,
// so that a stream (HTTP/2, HTTP/3) that failed still ends in order.
func TestCloseAfterFailWaitsForTheBackgroundHandshake(t *testing.T) {
	eachRoleAndRead(t, func(t *testing.T, client bool, read func(*Conn) error) {
		t.Run("peer answers", func(t *testing.T) {
			c, raw := tcpPair(t, client, connConfig{closeTimeout: 5 * time.Second})
			failNow(t, c, raw, client, read)
			closed := async(func() error { return c.Close(StatusNormalClosure, "") })
			if code, _, _ := expectClose(t, raw, time.Second); code != StatusProtocolError {
				t.Errorf("peer got close %v, want 1002", code)
			}
			time.Sleep(150 * time.Millisecond)
			select {
			case err := <-closed:
				t.Fatalf("Close returned (%v) before the peer answered: the close handshake was cut", err)
			default:
			}
			answered := time.Now()
			raw.Write(closeReply(client, StatusProtocolError))
			waitErr(t, closed, 2*time.Second, "Close")
			if d := time.Since(answered); d > time.Second {
				t.Errorf("Close returned %v after the peer's answer", d)
			}
			expectEOF(t, raw, 2*time.Second) // nothing more: no 1000 after the 1002
			if ce := c.closeReceived(); ce == nil || ce.Code != StatusProtocolError {
				t.Errorf("peer's close %v, want its 1002 recorded", ce)
			}
		})
		t.Run("silent peer", func(t *testing.T) {
			const timeout = 300 * time.Millisecond
			c, raw := tcpPair(t, client, connConfig{closeTimeout: timeout})
			start := failNow(t, c, raw, client, read)
			waitErr(t, async(func() error { return c.Close(StatusNormalClosure, "") }), 3*time.Second, "Close")
			if d := time.Since(start); d < timeout-50*time.Millisecond || d > timeout+1500*time.Millisecond {
				t.Errorf("Close returned %v after the violation, want about the close timeout (%v)", d, timeout)
			}
			expectClose(t, raw, time.Second)
			expectEOF(t, raw, 2*time.Second)
		})
	})
}
