package wsmw

import (
	"bytes"
	"errors"
	"net"
	"testing"
)

// spliceRig connects: raw upstream peer → up (client role, reads unmasked frames)
// and down (server role) → raw downstream peer, all over loopback TCP.
func spliceRig(t *testing.T) (upPeer net.Conn, up *Conn, down *Conn, downPeer net.Conn) {
	t.Helper()
	a, b := rawTCPPair(t)
	c, d := rawTCPPair(t)
	up = newConn(b, nil, true, connConfig{})
	down = newConn(c, nil, false, connConfig{})
	t.Cleanup(func() { a.Close(); up.CloseNow(); down.CloseNow(); d.Close() })
	return a, up, down, d
}

func TestSpliceFrameForwardsBinaryFramesExactly(t *testing.T) {
	for _, size := range []int{spliceMin, 100 << 10, 3 << 20} {
		upPeer, up, down, downPeer := spliceRig(t)
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		frame := append(AppendHeader(nil, Header{Fin: true, OpCode: OpBinary, Length: int64(size)}), payload...)
		go upPeer.Write(frame)
		h, err := up.nextFrame()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			ok, err := down.spliceFrame(h, up, nil)
			if !ok {
				err = errors.New("SpliceFrame did not apply")
			}
			done <- err
		}()
		got, err := ReadHeader(downPeer)
		if err != nil || got.Length != int64(size) || got.Masked || got.OpCode != OpBinary || !got.Fin {
			t.Fatalf("size %d: header %+v, %v", size, got, err)
		}
		buf := make([]byte, size)
		if _, err := readFullConn(downPeer, buf); err != nil || !bytes.Equal(buf, payload) {
			t.Fatalf("size %d: payload differs (%v)", size, err)
		}
		if err := <-done; err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		// The source is at a frame boundary again.
		go upPeer.Write(AppendHeader(nil, Header{Fin: true, OpCode: OpPing}))
		if h, err := up.nextFrame(); err != nil || h.OpCode != OpPing {
			t.Fatalf("next frame after splice: %+v %v", h, err)
		}
	}
}

func readFullConn(c net.Conn, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k, err := c.Read(p[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func TestSpliceFrameDoesNotApply(t *testing.T) {
	big := int64(spliceMin)
	for _, tc := range []struct {
		name string
		h    Header
	}{
		{"text needs UTF-8 checks", Header{Fin: true, OpCode: OpText, Length: big}},
		{"small frame", Header{Fin: true, OpCode: OpBinary, Length: 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			upPeer, up, down, _ := spliceRig(t)
			go upPeer.Write(AppendHeader(nil, tc.h))
			h, err := up.nextFrame()
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := down.spliceFrame(h, up, nil); ok || err != nil {
				t.Fatalf("applied: %v %v", ok, err)
			}
		})
	}
	t.Run("client role destination masks", func(t *testing.T) {
		upPeer, up, _, _ := spliceRig(t)
		a, b := rawTCPPair(t)
		defer a.Close()
		dst := newConn(b, nil, true, connConfig{})
		defer dst.CloseNow()
		go upPeer.Write(AppendHeader(nil, Header{Fin: true, OpCode: OpBinary, Length: big}))
		h, _ := up.nextFrame()
		if ok, _ := dst.spliceFrame(h, up, nil); ok {
			t.Fatal("spliced into a masking connection")
		}
	})
}

func TestSpliceFrameSourceEndsInsideFrame(t *testing.T) {
	upPeer, up, down, downPeer := spliceRig(t)
	go func() {
		upPeer.Write(AppendHeader(nil, Header{Fin: true, OpCode: OpBinary, Length: 1 << 20}))
		upPeer.Write(make([]byte, 100<<10))
		upPeer.Close()
	}()
	go func() { // drain what reaches the downstream peer
		buf := make([]byte, 64<<10)
		for {
			if _, err := downPeer.Read(buf); err != nil {
				return
			}
		}
	}()
	h, err := up.nextFrame()
	if err != nil {
		t.Fatal(err)
	}
	ok, err := down.spliceFrame(h, up, nil)
	if !ok || !errors.Is(err, ErrIncompleteFrame) {
		t.Fatalf("got %v %v, want ErrIncompleteFrame", ok, err)
	}
	if _, err := up.nextFrame(); !errors.Is(err, ErrIncompleteFrame) {
		t.Fatalf("source's next read: %v", err)
	}
	if err := down.writeMessage(OpBinary, []byte("x")); err == nil {
		t.Fatal("destination still usable after an incomplete frame")
	}
}
