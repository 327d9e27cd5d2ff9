package wsmw

import (
	"bytes"
	"errors"
	"net"
	"testing"
)

// remaskRig connects: raw client peer → in (server role, reads masked frames)
// and out (client role) → raw upstream peer, over loopback TCP.
func remaskRig(t *testing.T) (clientPeer net.Conn, in, out *Conn, upPeer net.Conn) {
	t.Helper()
	a, b := rawTCPPair(t)
	c, d := rawTCPPair(t)
	in = newConn(b, nil, false, connConfig{})
	out = newConn(c, nil, true, connConfig{})
	t.Cleanup(func() { a.Close(); in.CloseNow(); out.CloseNow(); d.Close() })
	return a, in, out, d
}

func TestRemaskFrameForwardsWithAFreshKey(t *testing.T) {
	for _, size := range []int{0, 1, 5, 4096, 70000, 1 << 20} {
		clientPeer, in, out, upPeer := remaskRig(t)
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(i*13 + 1)
		}
		key := [4]byte{0xde, 0xad, 0xbe, 0xef}
		masked := append([]byte(nil), payload...)
		Mask(key, 0, masked)
		go clientPeer.Write(append(AppendHeader(nil, Header{Fin: true, OpCode: OpBinary, Masked: true, Mask: key, Length: int64(size)}), masked...))
		h, err := in.NextFrame()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		reads := 0
		go func() {
			ok, err := out.RemaskFrame(h, in, func() { reads++ })
			if !ok {
				err = errors.New("RemaskFrame did not apply")
			}
			done <- err
		}()
		got, err := ReadHeader(upPeer)
		if err != nil || !got.Masked || got.Length != int64(size) || got.OpCode != OpBinary {
			t.Fatalf("size %d: header %+v %v", size, got, err)
		}
		if size >= 4 && got.Mask == key {
			t.Fatalf("size %d: the client's key was reused", size)
		}
		buf := make([]byte, size)
		if _, err := readFullConn(upPeer, buf); err != nil {
			t.Fatal(err)
		}
		Mask(got.Mask, 0, buf)
		if !bytes.Equal(buf, payload) {
			t.Fatalf("size %d: payload differs after re-masking", size)
		}
		if err := <-done; err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if size > 0 && reads == 0 {
			t.Fatalf("size %d: progress never called", size)
		}
	}
}

func TestRemaskFrameDoesNotApplyToText(t *testing.T) {
	clientPeer, in, out, _ := remaskRig(t)
	key := [4]byte{1, 2, 3, 4}
	p := []byte("hello")
	Mask(key, 0, p)
	go clientPeer.Write(append(AppendHeader(nil, Header{Fin: true, OpCode: OpText, Masked: true, Mask: key, Length: 5}), p...))
	h, err := in.NextFrame()
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := out.RemaskFrame(h, in, nil); ok || err != nil {
		t.Fatalf("applied to a text frame: %v %v", ok, err)
	}
}

func TestRemaskFrameSourceEndsBeforeAnythingIsSent(t *testing.T) {
	clientPeer, in, out, upPeer := remaskRig(t)
	key := [4]byte{1, 2, 3, 4}
	clientPeer.Write(AppendHeader(nil, Header{Fin: true, OpCode: OpBinary, Masked: true, Mask: key, Length: 1000}))
	clientPeer.Write(make([]byte, 10))
	clientPeer.Close()
	h, err := in.NextFrame()
	if err != nil {
		t.Fatal(err)
	}
	ok, err := out.RemaskFrame(h, in, nil)
	if !ok || !errors.Is(err, ErrIncompleteFrame) {
		t.Fatalf("got %v %v", ok, err)
	}
	// Nothing was sent: the upstream connection is still usable.
	go out.WriteMessage(OpBinary, []byte("next"))
	got, err := ReadHeader(upPeer)
	if err != nil || got.Length != 4 {
		t.Fatalf("upstream after an abandoned frame: %+v %v", got, err)
	}
}
