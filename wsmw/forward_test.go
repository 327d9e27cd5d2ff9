package wsmw

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// forwardRig connects: raw client peer → in (server role, reads masked frames)
// and out (client role) → raw upstream peer, over loopback TCP.
func forwardRig(t *testing.T) (clientPeer net.Conn, in, out *Conn, upPeer net.Conn) {
	t.Helper()
	a, b := rawTCPPair(t)
	c, d := rawTCPPair(t)
	in = newConn(b, nil, false, connConfig{closeTimeout: 200 * time.Millisecond}) // a failing in waits that long for the raw peer's close
	out = newConn(c, nil, true, connConfig{})
	t.Cleanup(func() { a.Close(); in.CloseNow(); out.CloseNow(); d.Close() })
	return a, in, out, d
}

func TestForwardFrameForwardsWithAFreshKey(t *testing.T) {
	for _, size := range []int{0, 1, 5, 4096, 70000, 1 << 20} {
		clientPeer, in, out, upPeer := forwardRig(t)
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(i*13 + 1)
		}
		key := [4]byte{0xde, 0xad, 0xbe, 0xef}
		masked := append([]byte(nil), payload...)
		Mask(key, 0, masked)
		go clientPeer.Write(append(AppendHeader(nil, Header{Fin: true, OpCode: OpBinary, Masked: true, Mask: key, Length: int64(size)}), masked...))
		h, err := in.nextFrame()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		reads := 0
		go func() {
			err := out.forwardFrame(h, in, func() { reads++ })
			if err == nil {
				err = out.flush()
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

func TestForwardFrameChecksText(t *testing.T) {
	valid := []byte("héllo wörld, ☃ and 𝄞")
	for _, tc := range []struct {
		name   string
		frames [][]byte // one text message, in fragments
		bad    bool     // the last fragment must fail with 1007
	}{
		{"valid", [][]byte{valid}, false},
		{"valid, split inside a character", [][]byte{valid[:2], valid[2:]}, false},
		{"invalid byte", [][]byte{[]byte("ok \xff not ok")}, true},
		{"invalid in the second fragment", [][]byte{[]byte("fine "), []byte("\xc0\xaf")}, true},
		{"ends inside a character", [][]byte{valid[:2]}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clientPeer, in, out, upPeer := forwardRig(t)
			var wire []byte
			for i, f := range tc.frames {
				op := OpContinuation
				if i == 0 {
					op = OpText
				}
				wire = append(wire, keyedFrame([4]byte{1, 2, 3, byte(i)}, i == len(tc.frames)-1, op, f)...)
			}
			go clientPeer.Write(wire)
			var err error
			for i := range tc.frames {
				var h Header
				if h, err = in.nextFrame(); err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				err = out.forwardFrame(h, in, nil)
				if err != nil && i != len(tc.frames)-1 {
					t.Fatalf("frame %d: %v", i, err)
				}
			}
			if !tc.bad {
				if err != nil {
					t.Fatal(err)
				}
				out.flush()
				var got []byte
				for range tc.frames {
					_, p := readFrame(t, upPeer)
					got = append(got, p...)
				}
				if !bytes.Equal(got, bytes.Join(tc.frames, nil)) {
					t.Fatalf("forwarded %q", got)
				}
				return
			}
			if !errors.Is(err, ErrIncompleteFrame) {
				t.Fatalf("got %v, want ErrIncompleteFrame", err)
			}
			var fe *FailError
			if _, nerr := in.nextFrame(); !errors.As(nerr, &fe) || fe.Code != StatusInvalidPayload {
				t.Fatalf("source's next read: %v, want a 1007 failure", nerr)
			}
			// The bad frame was not forwarded; frames before it were, and the upstream leg is usable.
			go out.writeMessage(OpBinary, []byte("after"))
			for range len(tc.frames) - 1 {
				if h, _ := readFrame(t, upPeer); h.OpCode == OpBinary {
					t.Fatal("an earlier fragment is missing")
				}
			}
			if h, p := readFrame(t, upPeer); h.OpCode != OpBinary || string(p) != "after" {
				t.Fatalf("after the bad frame: %+v %q", h, p)
			}
		})
	}
}

func TestForwardFrameSourceEndsBeforeAnythingIsSent(t *testing.T) {
	clientPeer, in, out, upPeer := forwardRig(t)
	key := [4]byte{1, 2, 3, 4}
	clientPeer.Write(AppendHeader(nil, Header{Fin: true, OpCode: OpBinary, Masked: true, Mask: key, Length: 1000}))
	clientPeer.Write(make([]byte, 10))
	clientPeer.Close()
	h, err := in.nextFrame()
	if err != nil {
		t.Fatal(err)
	}
	if err := out.forwardFrame(h, in, nil); !errors.Is(err, ErrIncompleteFrame) {
		t.Fatalf("got %v", err)
	}
	// Nothing was sent: the upstream connection is still usable.
	go out.writeMessage(OpBinary, []byte("next"))
	got, err := ReadHeader(upPeer)
	if err != nil || got.Length != 4 {
		t.Fatalf("upstream after an abandoned frame: %+v %v", got, err)
	}
}

// writeCounter counts the writes made on a connection.
type writeCounter struct {
	net.Conn
	writes atomic.Int32
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes.Add(1)
	return w.Conn.Write(p)
}

func TestForwardFrameBatchesFramesThatArriveTogether(t *testing.T) {
	a, b := rawTCPPair(t)
	c, d := rawTCPPair(t)
	wc := &writeCounter{Conn: c}
	in := newConn(b, nil, false, connConfig{})
	out := newConn(wc, nil, true, connConfig{})
	t.Cleanup(func() { a.Close(); in.CloseNow(); out.CloseNow(); d.Close() })

	// Five frames of one fragmented message, sent in one write.
	var wire []byte
	var want [][]byte
	for i := range 5 {
		p := bytes.Repeat([]byte{byte(i + 1)}, 10000+i)
		op := OpContinuation
		if i == 0 {
			op = OpBinary
		}
		wire = append(wire, keyedFrame([4]byte{9, 8, 7, byte(i)}, i == 4, op, p)...)
		want = append(want, p)
	}
	if _, err := a.Write(wire); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		for i := range want {
			h, p := readFrame(t, d)
			if !bytes.Equal(p, want[i]) || h.Fin != (i == 4) || !h.Masked {
				got <- fmt.Errorf("frame %d: %+v, payload equal %v", i, h, bytes.Equal(p, want[i]))
				return
			}
		}
		got <- nil
	}()
	for i := range want {
		if i > 0 && !in.frameReady() {
			t.Fatalf("frame %d: not ready although it arrived with the others", i)
		}
		h, err := in.nextFrame()
		if err != nil {
			t.Fatal(err)
		}
		if err := out.forwardFrame(h, in, nil); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	if w := wc.writes.Load(); w != 0 {
		t.Fatalf("%d writes before Flush; the frames should wait in the batch", w)
	}
	if err := out.flush(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if w := wc.writes.Load(); w != 1 {
		t.Fatalf("%d writes for 5 frames that arrived together, want 1", w)
	}
	if in.frameReady() {
		t.Fatal("FrameReady with nothing buffered")
	}
}

func TestForwardFrameKeepsOrderWithOtherWrites(t *testing.T) {
	clientPeer, in, out, upPeer := forwardRig(t)
	clientPeer.Write(keyedFrame([4]byte{1, 2, 3, 4}, true, OpBinary, []byte("first")))
	h, err := in.nextFrame()
	if err != nil {
		t.Fatal(err)
	}
	if err := out.forwardFrame(h, in, nil); err != nil {
		t.Fatal(err)
	}
	// A ping written after the batched frame goes out after it.
	if err := out.Ping([]byte("p")); err != nil {
		t.Fatal(err)
	}
	if h, p := readFrame(t, upPeer); h.OpCode != OpBinary || string(p) != "first" {
		t.Fatalf("first frame: %+v %q", h, p)
	}
	if h, p := readFrame(t, upPeer); h.OpCode != OpPing || string(p) != "p" {
		t.Fatalf("second frame: %+v %q", h, p)
	}
}

func TestForwardFrameWritesCompleteFramesBeforeWaiting(t *testing.T) {
	clientPeer, in, out, upPeer := forwardRig(t)
	key := [4]byte{5, 6, 7, 8}
	second := keyedFrame(key, true, OpBinary, bytes.Repeat([]byte("y"), 3000))
	clientPeer.Write(append(keyedFrame(key, true, OpBinary, []byte("complete")), second[:1000]...))

	h, err := in.nextFrame()
	if err != nil {
		t.Fatal(err)
	}
	if err := out.forwardFrame(h, in, nil); err != nil {
		t.Fatal(err)
	}
	h, err = in.nextFrame()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- out.forwardFrame(h, in, nil)
	}()
	// The second frame waits for the rest of its payload; the first must not wait with it.
	if h, p := readFrame(t, upPeer); string(p) != "complete" {
		t.Fatalf("first frame: %+v %q", h, p)
	}
	upPeer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := upPeer.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatal("bytes of the incomplete frame were written")
	}
	// The client vanishes: the incomplete frame is dropped whole and the upstream leg stays usable.
	clientPeer.Close()
	if err := <-done; !errors.Is(err, ErrIncompleteFrame) {
		t.Fatalf("got %v, want ErrIncompleteFrame", err)
	}
	go out.writeMessage(OpBinary, []byte("next"))
	if h, p := readFrame(t, upPeer); string(p) != "next" {
		t.Fatalf("after the dropped frame: %+v %q", h, p)
	}
}

func TestForwardFrameCopiesServerFramesUnmasked(t *testing.T) {
	// Upstream → client: an unmasked frame leaves unmasked and unchanged.
	a, b := rawTCPPair(t)
	c, d := rawTCPPair(t)
	in := newConn(b, nil, true, connConfig{})   // client role: reads unmasked frames
	out := newConn(c, nil, false, connConfig{}) // server role: writes unmasked frames
	t.Cleanup(func() { a.Close(); in.CloseNow(); out.CloseNow(); d.Close() })
	payload := bytes.Repeat([]byte("0123456789"), 2000)
	a.Write(append(AppendHeader(nil, Header{Fin: true, OpCode: OpBinary, Length: int64(len(payload))}), payload...))
	h, err := in.nextFrame()
	if err != nil {
		t.Fatal(err)
	}
	if err := out.forwardFrame(h, in, nil); err != nil {
		t.Fatal(err)
	}
	if err := out.flush(); err != nil {
		t.Fatal(err)
	}
	got, p := readFrame(t, d)
	if got.Masked || !bytes.Equal(p, payload) {
		t.Fatalf("header %+v, payload equal %v", got, bytes.Equal(p, payload))
	}
}

func TestFrameReadyWaitsForAControlPayload(t *testing.T) {
	clientPeer, in, _, _ := forwardRig(t)
	if in.frameReady() {
		t.Fatal("ready with nothing received")
	}
	ping := keyedFrame([4]byte{1, 1, 1, 1}, true, OpPing, []byte("hello"))
	// One write: a binary frame, then the ping's header and one byte of its payload.
	clientPeer.Write(append(keyedFrame([4]byte{2, 2, 2, 2}, true, OpBinary, []byte("data")), ping[:7]...))
	in.SetReadDeadline(time.Now().Add(5 * time.Second))
	readData := func() {
		t.Helper()
		h, err := in.nextFrame()
		if err != nil || h.OpCode != OpBinary {
			t.Fatalf("%+v %v", h, err)
		}
		if _, err := io.Copy(io.Discard, payloadReader{in}); err != nil {
			t.Fatal(err)
		}
	}
	readData()
	if in.frameReady() {
		t.Fatal("ready with the ping's payload incomplete")
	}
	// The rest of the ping, and a whole binary frame behind it: both frames are then ready.
	clientPeer.Write(append(ping[7:], keyedFrame([4]byte{3, 3, 3, 3}, true, OpBinary, []byte("more"))...))
	if h, err := in.nextFrame(); err != nil || h.OpCode != OpPing {
		t.Fatalf("%+v %v", h, err)
	}
	if !in.frameReady() {
		t.Fatal("not ready with a whole frame buffered")
	}
	readData()
	if in.frameReady() {
		t.Fatal("ready with nothing buffered")
	}
}

// TestForwardFrameRandomStreams forwards random mixes of binary frames (around
// and above the batch size), fragments and pings, sent in random pieces with
// random pauses, the way the proxy's pump does, and checks that the upstream
// receives every frame whole, in order, with its payload.
func TestForwardFrameRandomStreams(t *testing.T) {
	sizes := []int{0, 1, 13, 125, 4095, 4096, 4097, 65535, 65536, 70000, batchSize - 20, batchSize, batchSize + 7, 600 << 10}
	for seed := range 12 {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 7))
			clientPeer, in, out, upPeer := forwardRig(t)
			type sent struct {
				h Header
				p []byte
			}
			var frames []sent
			var wire []byte
			inMsg := false
			for range 40 {
				var h Header
				var p []byte
				switch {
				case rng.IntN(6) == 0:
					h = Header{Fin: true, OpCode: OpPing}
					p = bytes.Repeat([]byte{byte(rng.IntN(256))}, rng.IntN(126))
				default:
					p = make([]byte, sizes[rng.IntN(len(sizes))])
					for i := range p {
						p[i] = byte(rng.Uint32())
					}
					h = Header{Fin: rng.IntN(3) > 0, OpCode: OpBinary}
					if inMsg {
						h.OpCode = OpContinuation
					}
					inMsg = !h.Fin
				}
				frames = append(frames, sent{h, p})
				wire = append(wire, keyedFrame([4]byte{byte(rng.Uint32()), 2, 3, byte(len(frames))}, h.Fin, h.OpCode, p)...)
			}
			if inMsg {
				frames = append(frames, sent{Header{Fin: true, OpCode: OpContinuation}, nil})
				wire = append(wire, keyedFrame([4]byte{1, 2, 3, 4}, true, OpContinuation, nil)...)
			}
			go func() { // the client: random pieces, sometimes a pause
				for len(wire) > 0 {
					k := min(len(wire), 1+rng.IntN(200<<10))
					if _, err := clientPeer.Write(wire[:k]); err != nil {
						return
					}
					wire = wire[k:]
					if rng.IntN(4) == 0 {
						time.Sleep(time.Millisecond)
					}
				}
			}()
			pumpErr := make(chan error, 1)
			go func() { // the proxy's pump, reduced to what forwardFrame needs
				in.SetPingHandler(func([]byte) error { return nil })
				for {
					if !in.frameReady() {
						if err := out.flush(); err != nil {
							pumpErr <- err
							return
						}
					}
					h, err := in.nextFrame()
					if err != nil {
						pumpErr <- err
						return
					}
					if h.OpCode.IsControl() {
						err = out.WriteFrame(Header{Fin: true, OpCode: h.OpCode}, in.controlPayload())
					} else {
						err = out.forwardFrame(h, in, nil)
					}
					if err != nil {
						pumpErr <- err
						return
					}
				}
			}()
			for i, want := range frames {
				h, p := readFrame(t, upPeer)
				if h.OpCode != want.h.OpCode || h.Fin != want.h.Fin || !h.Masked || !bytes.Equal(p, want.p) {
					t.Fatalf("frame %d: got %v fin %v len %d, want %v fin %v len %d (payload equal %v)",
						i, h.OpCode, h.Fin, len(p), want.h.OpCode, want.h.Fin, len(want.p), bytes.Equal(p, want.p))
				}
			}
			clientPeer.Close()
			if err := <-pumpErr; !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("pump ended with %v", err)
			}
		})
	}
}
