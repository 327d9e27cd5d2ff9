//go:build unix

package wsmw

import (
	"errors"
	"os"
	"testing"
	"time"
)

// TestTLSIdle: idle tells, on TLS, whether the TLS layer still holds bytes
// (then the next frame is read from them), and when it holds none the next
// read waits on the socket and still gets the frame that comes later. The
// read deadline set before the probe is in force after it.
func TestTLSIdle(t *testing.T) {
	a, s := tlsPair(t)
	server := newConn(s, nil, false, connConfig{})
	defer server.CloseNow()
	defer a.Close()
	if server.rd.tls == nil {
		t.Fatal("a TLS connection over TCP has no tlsIdle")
	}
	if !server.idle() {
		t.Fatal("idle before anything was sent: want true")
	}

	// Two frames in one TLS record, the first of 14 bytes, which is what the
	// reader takes from TLS while it waits: after it is read, the second is in
	// the TLS layer, not in the reader nor on the socket.
	first := clientFrame(OpText, "8 bytes!")
	if len(first) != MaxHeaderSize {
		t.Fatalf("first frame of %d bytes", len(first))
	}
	if _, err := a.Write(concat(first, clientFrame(OpText, "two"))); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"8 bytes!", "two"} {
		if _, p, err := server.readMessage(); err != nil || string(p) != want {
			t.Fatalf("read %q %v, want %q", p, err, want)
		}
		if want == "two" {
			break
		}
		if server.rd.buffered() != 0 {
			t.Fatalf("the reader holds %d bytes: the test needs the TLS layer to hold them", server.rd.buffered())
		}
		if server.idle() {
			t.Fatal("idle with a frame buffered in the TLS layer: want false")
		}
	}
	if !server.idle() {
		t.Fatal("idle with nothing buffered: want true")
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		a.Write(clientFrame(OpBinary, "three"))
	}()
	if _, p, err := server.readMessage(); err != nil || string(p) != "three" {
		t.Fatalf("read after waiting on the socket: %q %v", p, err)
	}

	// The deadline survives the probe's own.
	if err := server.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if !server.idle() {
		t.Fatal("idle: want true")
	}
	start := time.Now()
	_, _, err := server.readMessage()
	if d := time.Since(start); !errors.Is(err, os.ErrDeadlineExceeded) || d > 2*time.Second {
		t.Fatalf("read after the probe: %v after %v, want the deadline's timeout at about 100ms", err, d)
	}
}
