package wsmw

import (
	"context"
	"testing"
	"time"
)

// TestCloseAfterFailureWaitsForPeer: Close right after a read failed the
// connection does not cut short the close handshake going on in the
// background: the peer's answer is received before the connection closes.
// (This is what lets a failed stream end in order rather than be reset.)
func TestCloseAfterFailureWaitsForPeer(t *testing.T) {
	for _, tr := range wtTransports {
		t.Run(tr.name, func(t *testing.T) {
			c, raw := tr.pair(t, false, connConfig{closeTimeout: 5 * time.Second})
			read := make(chan struct{})
			go func() {
				raw.Write(wtFrame(true, 0, OpText, false, []byte("unmasked")))
				if h, _, err := wtReadFrame(raw); err != nil || h.OpCode != OpClose {
					t.Errorf("peer read %v %v, want the close", h, err)
				}
				<-read
				time.Sleep(20 * time.Millisecond) // the answer comes after Close was called
				raw.Write(wtCF(OpClose, wtCloseBody(1002, "")))
			}()
			_, _, err := c.Read(context.Background(), nil)
			if CloseStatus(err) != StatusProtocolError {
				t.Fatalf("read %v, want a 1002 failure", err)
			}
			close(read)
			c.Close(StatusNormalClosure, "")
			if ce := c.closeReceived(); ce == nil || ce.Code != StatusProtocolError {
				t.Errorf("peer's close %v, want 1002 received before the connection closed", ce)
			}
		})
	}
}
