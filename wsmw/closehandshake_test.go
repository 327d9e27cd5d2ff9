package wsmw

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// expectEOF asserts that the raw peer reads nothing more and then a clean EOF:
// the Conn closed the TCP connection.
func expectEOF(t testing.TB, raw net.Conn, timeout time.Duration) {
	t.Helper()
	_ = raw.SetReadDeadline(time.Now().Add(timeout))
	n, err := io.Copy(io.Discard, raw)
	if err != nil || n != 0 {
		t.Errorf("peer: %d more bytes, err %v; want the connection closed (EOF)", n, err)
	}
}

// TestCloseEchoedByMessageReader: the message-level reader answers a received
// close with the same code, closes the connection and returns the *CloseError.
func TestCloseEchoedByMessageReader(t *testing.T) {
	eachTransportTwice(t, "server", "client", func(t *testing.T, tr transport, client bool) {
		c, raw := tr.pair(t, client, connConfig{})
		go raw.Write(rawFrame(true, 0, OpClose, !client, []byte(closeBody(4001, "x"))))
		res := async(func() error { _, _, err := c.readMessage(); return err })
		h, p, err := func() (Header, []byte, error) {
			_ = raw.SetReadDeadline(time.Now().Add(2 * time.Second))
			return readRawFrame(raw)
		}()
		if err != nil {
			t.Fatal(err)
		}
		if h.OpCode != OpClose || h.Masked != client {
			t.Fatalf("peer got %+v, want a close frame (masked=%v)", h, client)
		}
		code, _, perr := ParseClosePayload(p)
		if perr != nil || code != 4001 {
			t.Errorf("echoed close = %v %v, want 4001", code, perr)
		}
		err = waitErr(t, res, 2*time.Second, "ReadMessage")
		var ce *CloseError
		if !errors.As(err, &ce) || ce.Code != 4001 || ce.Reason != "x" {
			t.Fatalf("ReadMessage error = %v, want *CloseError 4001 \"x\"", err)
		}
		if CloseStatus(err) != 4001 {
			t.Errorf("CloseStatus = %v", CloseStatus(err))
		}
		if got := c.closeReceived(); got == nil || got.Code != 4001 {
			t.Errorf("CloseReceived = %v", got)
		}
		expectEOF(t, raw, 2*time.Second)
		// Later reads and writes see the closed connection.
		if _, _, err := c.readMessage(); !errors.As(err, &ce) {
			t.Errorf("second ReadMessage = %v, want the *CloseError again", err)
		}
		if err := c.writeMessage(OpText, []byte("late")); !errors.Is(err, ErrCloseSent) && !errors.Is(err, ErrClosed) {
			t.Errorf("WriteMessage after close = %v", err)
		}
	})
}

// TestCloseEmptyBodyEchoedEmpty: a close without a body is reported as 1005 and
// answered with an empty body; 1005 never appears on the wire.
func TestCloseEmptyBodyEchoedEmpty(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c, raw := tr.pair(t, false, connConfig{})
			go raw.Write(clientFrame(OpClose, ""))
			res := async(func() error { _, _, err := c.readMessage(); return err })
			_ = raw.SetReadDeadline(time.Now().Add(2 * time.Second))
			h, p, err := readRawFrame(raw)
			if err != nil {
				t.Fatal(err)
			}
			if h.OpCode != OpClose || h.Length != 0 || len(p) != 0 {
				t.Errorf("peer got %+v %x, want a close frame with an empty body", h, p)
			}
			err = waitErr(t, res, 2*time.Second, "ReadMessage")
			var ce *CloseError
			if !errors.As(err, &ce) || ce.Code != StatusNoStatusRcvd || ce.Reason != "" {
				t.Fatalf("error = %v, want *CloseError 1005", err)
			}
		})
	}
}

// TestCloseHandshake: Close sends its frame, waits for the peer's close, then closes TCP.
func TestCloseHandshake(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c, raw := tr.pair(t, false, connConfig{closeTimeout: 5 * time.Second})
			start := time.Now()
			res := async(func() error { return c.Close(StatusNormalClosure, "bye") })
			code, reason, _ := expectClose(t, raw, 2*time.Second)
			if code != StatusNormalClosure || reason != "bye" {
				t.Errorf("peer got close %v %q, want 1000 \"bye\"", code, reason)
			}
			// Close must still be waiting for our answer.
			time.Sleep(150 * time.Millisecond)
			select {
			case err := <-res:
				t.Fatalf("Close returned (%v) before the peer answered", err)
			default:
			}
			// Data frames before the peer's close are read and dropped by Close.
			raw.Write(concat(clientFrame(OpText, "late data"), clientFrame(OpPing, "p"), clientFrame(OpClose, closeBody(1000, "ok"))))
			if err := waitErr(t, res, 2*time.Second, "Close"); err != nil {
				t.Errorf("Close = %v", err)
			}
			if d := time.Since(start); d < 150*time.Millisecond || d > 3*time.Second {
				t.Errorf("Close took %v", d)
			}
			if ce := c.closeReceived(); ce == nil || ce.Code != 1000 || ce.Reason != "ok" {
				t.Errorf("CloseReceived = %v", ce)
			}
			// The pong for the ping may or may not have been sent after our close
			// (it is not: a pong after a close is refused); then EOF.
			_ = raw.SetReadDeadline(time.Now().Add(2 * time.Second))
			for {
				h, _, err := readRawFrame(raw)
				if err != nil {
					if !errors.Is(err, io.EOF) {
						t.Errorf("peer: %v, want EOF", err)
					}
					break
				}
				t.Errorf("peer got a %v frame after the close frame", h.OpCode)
			}
			if err := c.writeMessage(OpText, []byte("x")); err == nil {
				t.Error("WriteMessage after Close succeeded")
			}
		})
	}
}

// TestCloseAfterPeerClose: Close after the peer's close was received answers it and returns at once.
func TestCloseAfterPeerClose(t *testing.T) {
	c, raw := tcpPair(t, false, connConfig{closeTimeout: 5 * time.Second})
	go raw.Write(clientFrame(OpClose, closeBody(1001, "going")))
	h, err := c.nextFrame()
	if err != nil || h.OpCode != OpClose {
		t.Fatalf("NextFrame = %+v %v", h, err)
	}
	start := time.Now()
	if err := c.Close(StatusGoingAway, ""); err != nil {
		t.Errorf("Close = %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v after the peer's close was received", d)
	}
	code, _, _ := expectClose(t, raw, 2*time.Second)
	if code != StatusGoingAway {
		t.Errorf("peer got %v, want 1001", code)
	}
	expectEOF(t, raw, 2*time.Second)
}

// TestCloseUnresponsivePeer: with a peer that never answers, Close returns after
// about the close timeout and the TCP connection is closed.
func TestCloseUnresponsivePeer(t *testing.T) {
	eachTransportTwice(t, "idle", "reader-blocked", func(t *testing.T, tr transport, reading bool) {
		t.Parallel()
		const timeout = 200 * time.Millisecond
		c, raw := tr.pair(t, false, connConfig{closeTimeout: timeout})
		var readRes <-chan error
		if reading {
			readRes = async(func() error { _, _, err := c.readMessage(); return err })
			time.Sleep(50 * time.Millisecond)
		}
		// The peer reads the close (net.Pipe needs a reader) but never answers.
		got := make(chan StatusCode, 1)
		go func() {
			_ = raw.SetReadDeadline(time.Now().Add(3 * time.Second))
			h, p, err := readRawFrame(raw)
			if err != nil || h.OpCode != OpClose {
				got <- -1
				return
			}
			code, _, _ := ParseClosePayload(p)
			got <- code
		}()
		start := time.Now()
		err := waitErr(t, async(func() error { return c.Close(StatusGoingAway, "") }), 3*time.Second, "Close")
		d := time.Since(start)
		if err != nil {
			t.Errorf("Close = %v", err)
		}
		if d < timeout-20*time.Millisecond || d > timeout+1500*time.Millisecond {
			t.Errorf("Close took %v with a close timeout of %v", d, timeout)
		}
		if code := <-got; code != StatusGoingAway {
			t.Errorf("peer got close %v, want 1001", code)
		}
		expectEOF(t, raw, 2*time.Second)
		if reading {
			err := waitErr(t, readRes, 2*time.Second, "ReadMessage")
			if err == nil {
				t.Error("ReadMessage returned no error after Close")
			}
		}
	})
}

// TestCloseWhileReading: Close from another goroutine while ReadMessage is
// blocked; the reader receives the peer's close and Close returns promptly.
func TestCloseWhileReading(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c, raw := tr.pair(t, false, connConfig{closeTimeout: 5 * time.Second})
			readRes := async(func() error { _, _, err := c.readMessage(); return err })
			time.Sleep(50 * time.Millisecond) // let the reader block
			start := time.Now()
			closeRes := async(func() error { return c.Close(StatusNormalClosure, "done") })
			code, reason, _ := expectClose(t, raw, 2*time.Second)
			if code != StatusNormalClosure || reason != "done" {
				t.Errorf("peer got %v %q", code, reason)
			}
			go raw.Write(clientFrame(OpClose, closeBody(4002, "ack")))
			err := waitErr(t, readRes, 2*time.Second, "ReadMessage")
			var ce *CloseError
			if !errors.As(err, &ce) || ce.Code != 4002 || ce.Reason != "ack" {
				t.Errorf("reader got %v, want the peer's *CloseError 4002", err)
			}
			if err := waitErr(t, closeRes, 2*time.Second, "Close"); err != nil {
				t.Errorf("Close = %v", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Close took %v", d)
			}
			expectEOF(t, raw, 2*time.Second)
		})
	}
}

// TestWriteCloseCodes: codes reserved for reporting are written as an empty body;
// other invalid codes are refused; valid ones are written as given.
func TestWriteCloseCodes(t *testing.T) {
	for _, code := range []StatusCode{StatusNoStatusRcvd, StatusAbnormalClosure, StatusTLSHandshake} {
		t.Run(code.String(), func(t *testing.T) {
			c, raw := tcpPair(t, false, connConfig{})
			if err := c.sendClose(code, "ignored reason"); err != nil {
				t.Fatalf("WriteClose(%v) = %v", code, err)
			}
			_ = raw.SetReadDeadline(time.Now().Add(2 * time.Second))
			h, p, err := readRawFrame(raw)
			if err != nil {
				t.Fatal(err)
			}
			if h.OpCode != OpClose || h.Length != 0 || len(p) != 0 || h.Masked || !h.Fin {
				t.Errorf("WriteClose(%v) wrote %+v %x, want an empty close frame", code, h, p)
			}
		})
	}
	for _, code := range []StatusCode{0, 999, 1004, 1016, 2999, 5000, -1} {
		t.Run(code.String(), func(t *testing.T) {
			c, raw := tcpPair(t, false, connConfig{})
			if err := c.sendClose(code, ""); !errors.Is(err, ErrBadWrite) {
				t.Errorf("WriteClose(%v) = %v, want ErrBadWrite", code, err)
			}
			// Nothing was written and the connection is still usable.
			if err := c.writeMessage(OpText, []byte("still open")); err != nil {
				t.Fatal(err)
			}
			_ = raw.SetReadDeadline(time.Now().Add(2 * time.Second))
			h, p, err := readRawFrame(raw)
			if err != nil || h.OpCode != OpText || string(p) != "still open" {
				t.Errorf("peer got %+v %q %v", h, p, err)
			}
		})
	}
	for _, client := range []bool{false, true} {
		t.Run(map[bool]string{false: "Valid/server", true: "Valid/client"}[client], func(t *testing.T) {
			c, raw := tcpPair(t, client, connConfig{})
			long := ""
			for len(long) < 200 {
				long += "é"
			}
			if err := c.sendClose(4123, long); err != nil {
				t.Fatal(err)
			}
			_ = raw.SetReadDeadline(time.Now().Add(2 * time.Second))
			h, p, err := readRawFrame(raw)
			if err != nil {
				t.Fatal(err)
			}
			if h.Masked != client || h.Length > 125 {
				t.Errorf("header %+v", h)
			}
			code, reason, err := ParseClosePayload(p)
			if err != nil || code != 4123 || len(reason) != 122 {
				t.Errorf("close %v %d-byte reason %v; want 4123 with the reason cut to 122 bytes", code, len(reason), err)
			}
		})
	}
}

// TestWriteCloseInvalidReason: a reason that is not UTF-8 must not produce a
// close frame the peer would reject (RFC 6455 §5.5.1: the reason is UTF-8).
func TestWriteCloseInvalidReason(t *testing.T) {
	c, raw := tcpPair(t, false, connConfig{})
	if err := c.sendClose(StatusGoingAway, "bye\xff\xce"); err != nil {
		t.Fatal(err)
	}
	code, reason, _ := expectClose(t, raw, 2*time.Second) // fails if the payload does not parse
	if code != StatusGoingAway || reason != "bye\uFFFD" { // a run of bad bytes becomes one U+FFFD
		t.Errorf("close %v %q", code, reason)
	}
}

// TestWriteAfterCloseSent: once a close frame is written, data and control frames
// are refused with ErrCloseSent, and a second close is refused too.
func TestWriteAfterCloseSent(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c, raw := tr.pair(t, false, connConfig{})
			go io.Copy(io.Discard, raw)
			if err := c.sendClose(StatusNormalClosure, ""); err != nil {
				t.Fatal(err)
			}
			if err := c.writeMessage(OpText, []byte("x")); !errors.Is(err, ErrCloseSent) {
				t.Errorf("WriteMessage = %v, want ErrCloseSent", err)
			}
			if err := c.WriteFrame(Header{Fin: true, OpCode: OpBinary}, []byte("x")); !errors.Is(err, ErrCloseSent) {
				t.Errorf("WriteFrame = %v, want ErrCloseSent", err)
			}
			if err := c.Ping(nil); !errors.Is(err, ErrCloseSent) {
				t.Errorf("Ping = %v, want ErrCloseSent", err)
			}
			if err := c.sendClose(StatusNormalClosure, ""); !errors.Is(err, ErrCloseSent) {
				t.Errorf("second WriteClose = %v, want ErrCloseSent", err)
			}
			if err := c.WriteFrame(Header{OpCode: OpText}, []byte("x")); !errors.Is(err, ErrCloseSent) {
				t.Errorf("WriteFrame of a first fragment = %v, want ErrCloseSent", err)
			}
		})
	}
}

// TestPingAfterCloseSentNotAnswered: a ping that arrives after our close is not
// answered (no pong after a close frame) and does not break the read.
func TestPingAfterCloseSentNotAnswered(t *testing.T) {
	c, raw := tcpPair(t, false, connConfig{})
	if err := c.sendClose(StatusNormalClosure, ""); err != nil {
		t.Fatal(err)
	}
	go raw.Write(concat(clientFrame(OpPing, "p"), clientFrame(OpClose, closeBody(1000, ""))))
	_, _, err := c.readMessage()
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != 1000 {
		t.Fatalf("ReadMessage = %v, want *CloseError 1000", err)
	}
	code, _, _ := expectClose(t, raw, 2*time.Second)
	if code != 1000 {
		t.Errorf("close code %v", code)
	}
	_ = raw.SetReadDeadline(time.Now().Add(2 * time.Second))
	if h, _, err := readRawFrame(raw); err == nil {
		t.Errorf("peer got a %v frame after the close", h.OpCode)
	}
}
